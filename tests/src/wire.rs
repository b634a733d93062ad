//! Two small network adversaries for the NATS transport tests, run on a fleet host through
//! `flotilla-fleet relay` and `flotilla-fleet mitm` (inside the host's namespaces, as a
//! process on that host would run):
//! - [`relay`]: a transparent TCP relay that appends every byte it forwards, both ways, to a
//!   file: what a passive observer on the path between an executor and NATS sees.
//! - [`mitm`]: a listener on NATS's port pretending to be NATS. It offers no TLS in its INFO
//!   (a client that does not insist on TLS then talks in clear), and answers a client that
//!   starts TLS anyway with a certificate of its own, made for the names the client expects
//!   but from no CA the client pins. Each connection is written to the record file as one
//!   line: `intercepted` (the client sent its CONNECT to the impostor) or `refused` (the
//!   client hung up before that).

use std::io::{BufRead as _, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A client silent for this long is counted as gone: NATS clients send CONNECT at once.
const CLIENT_SILENCE: Duration = Duration::from_secs(10);

/// Forwards every connection to `listen` to `target`, appending what passes both ways to
/// `record`. Runs until killed.
pub fn relay(listen: &str, target: &str, record: &Path) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen)?;
    let file = Arc::new(Mutex::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(record)?,
    ));
    for client in listener.incoming() {
        let Ok(client) = client else { continue };
        let Ok(server) = TcpStream::connect(target) else {
            continue;
        };
        for (from, to) in [(client.try_clone()?, server.try_clone()?), (server, client)] {
            let file = file.clone();
            std::thread::spawn(move || copy_recording(from, to, &file));
        }
    }
    Ok(())
}

fn copy_recording(mut from: TcpStream, mut to: TcpStream, file: &Mutex<std::fs::File>) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Ok(mut f) = file.lock() {
            let _ = f.write_all(&buf[..n]);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
}

/// Pretends to be NATS on `listen` with a self-made certificate for `names`, recording one
/// line per connection in `record`. Runs until killed.
pub fn mitm(listen: &str, names: &[String], record: &Path) -> anyhow::Result<()> {
    let key = rcgen::KeyPair::generate()?;
    let cert = rcgen::CertificateParams::new(names.to_vec())?.self_signed(&key)?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der())
            .map_err(|e| anyhow::anyhow!("the impostor's key: {e}"))?,
    )?;
    let config = Arc::new(config);
    let listener = TcpListener::bind(listen)?;
    let record: PathBuf = record.to_owned();
    for client in listener.incoming() {
        let Ok(client) = client else { continue };
        let config = config.clone();
        let record = record.clone();
        std::thread::spawn(move || {
            let outcome = impersonate(client, config);
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&record)
            {
                let _ = writeln!(f, "{outcome}");
            }
        });
    }
    Ok(())
}

/// One connection: INFO without TLS, then whatever the client does.
fn impersonate(mut client: TcpStream, config: Arc<rustls::ServerConfig>) -> &'static str {
    let _ = client.set_read_timeout(Some(CLIENT_SILENCE));
    let info = "INFO {\"server_id\":\"NIMPOSTOR\",\"server_name\":\"nats\",\"version\":\"2.15.0\",\
                \"proto\":1,\"host\":\"0.0.0.0\",\"port\":4222,\"headers\":true,\"auth_required\":true,\
                \"max_payload\":1048576,\"nonce\":\"bm9uY2U\"}\r\n";
    if client.write_all(info.as_bytes()).is_err() {
        return "refused";
    }
    let mut first = [0u8; 1];
    match client.peek(&mut first) {
        Ok(1) => {}
        _ => return "refused",
    }
    // 0x16: a TLS handshake record, the client insists on TLS.
    if first[0] != 0x16 {
        let mut line = String::new();
        let _ = BufReader::new(&mut client).read_line(&mut line);
        return if line.starts_with("CONNECT") {
            "intercepted"
        } else {
            "refused"
        };
    }
    let Ok(mut tls) = rustls::ServerConnection::new(config) else {
        return "refused";
    };
    while tls.is_handshaking() {
        if tls.complete_io(&mut client).is_err() {
            return "refused";
        }
    }
    let mut stream = rustls::Stream::new(&mut tls, &mut client);
    let mut line = String::new();
    let _ = BufReader::new(&mut stream).read_line(&mut line);
    if line.starts_with("CONNECT") {
        "intercepted"
    } else {
        "refused"
    }
}
