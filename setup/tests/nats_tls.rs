//! The NATS configuration setup renders, run by a real `nats-server` (Debian's, on loopback)
//! with a certificate from the project's CA: the server demands TLS, a client pinning the
//! project's CA completes the handshake, one pinning another CA refuses the server, and a
//! running server that gets TLS by reload (what a second setup does on a host set up before
//! TLS) demands it from then on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use flotilla_setup::plan::{NATS_CERT_IN, NATS_KEY_IN, NatsSettings, User, nats_config};
use flotilla_setup::tls::ProjectCa;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a freshly started (or reloaded) nats-server may take to answer.
const SERVER_WAIT: Duration = Duration::from_secs(10);
/// A read that gets nothing for this long has failed (the server answers in microseconds).
const READ_TIMEOUT: Duration = Duration::from_secs(5);

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Writes setup's config (paths moved into `dir`) and the certificate files.
fn write_config(dir: &Path, port: u16, tls: bool) -> std::path::PathBuf {
    let operator = User {
        nkey: nkeys::KeyPair::new_user().public_key(),
        permissions: flotilla_protocol::access::operator_permissions(),
    };
    let mut settings = NatsSettings::for_host("127.0.0.1", vec![operator]);
    settings.port = port;
    settings.store_dir = dir.join("js").display().to_string();
    settings.tls = tls;
    let conf = nats_config(&settings)
        .replace(NATS_CERT_IN, &dir.join("cert.pem").display().to_string())
        .replace(NATS_KEY_IN, &dir.join("key.pem").display().to_string());
    let path = dir.join("nats.conf");
    std::fs::write(&path, format!("listen: \"127.0.0.1:{port}\"\n{conf}")).unwrap();
    path
}

fn start(conf: &Path, port: u16) -> Server {
    let child = Command::new("nats-server")
        .arg("-c")
        .arg(conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run nats-server ({e}): apt-get install nats-server"));
    let server = Server(child);
    let deadline = Instant::now() + SERVER_WAIT;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nats-server did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    server
}

/// Connects and reads the server's plaintext INFO line.
fn info(port: u16) -> (TcpStream, String) {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let mut line = String::new();
    BufReader::new(stream.try_clone().unwrap())
        .read_line(&mut line)
        .unwrap();
    (stream, line)
}

/// A TLS handshake after INFO (NATS's upgrade), trusting `ca_pem` alone, for 127.0.0.1.
fn handshake(port: u16, ca_pem: &str) -> Result<(), rustls::Error> {
    let (mut tcp, _) = info(port);
    let (_, ca) = x509_parser::pem::parse_x509_pem(ca_pem.as_bytes()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(ca.contents))
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    while conn.is_handshaking() {
        match conn.complete_io(&mut tcp) {
            Ok(_) => {}
            Err(e) => {
                return match e
                    .into_inner()
                    .and_then(|i| i.downcast::<rustls::Error>().ok())
                {
                    Some(tls) => Err(*tls),
                    None => Err(rustls::Error::General("i/o during the handshake".into())),
                };
            }
        }
    }
    Ok(())
}

/// A client that speaks plaintext after INFO: what it gets back before the server closes
/// the connection (a read timeout would mean the server still listens to it).
fn plaintext_answer(port: u16) -> String {
    let (mut tcp, _) = info(port);
    tcp.write_all(b"CONNECT {\"verbose\":false}\r\nPING\r\n")
        .unwrap();
    let mut answer = Vec::new();
    match tcp.read_to_end(&mut answer) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the server kept a plaintext client connected: {e}"),
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// NATS with setup's TLS block requires TLS, and is accepted by a client pinning the
/// project's CA only; a client pinning another CA refuses it (the check every Flotilla
/// client makes, so a listener with any other certificate is refused the same way).
#[test]
fn nats_demands_tls_and_only_the_project_ca_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ProjectCa::load_or_create(&dir.path().join(".flotilla")).unwrap();
    let cert = ca
        .issue(&["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap();
    std::fs::write(dir.path().join("cert.pem"), &cert.cert_pem).unwrap();
    std::fs::write(dir.path().join("key.pem"), cert.key_pem.as_bytes()).unwrap();
    let port = free_port();
    let conf = write_config(dir.path(), port, true);
    let _server = start(&conf, port);

    let (_, line) = info(port);
    assert!(line.contains("\"tls_required\":true"), "{line}");
    // The server reads the client's bytes as a TLS hello, fails it and hangs up.
    let answer = plaintext_answer(port);
    assert!(
        !answer.contains("PONG"),
        "a plaintext client got: {answer:?}"
    );
    handshake(port, &ca.cert_pem).expect("the project's CA accepts NATS's certificate");
    let other = ProjectCa::load_or_create(&dir.path().join("other")).unwrap();
    let err = handshake(port, &other.cert_pem).expect_err("another CA refuses it");
    assert!(
        matches!(err, rustls::Error::InvalidCertificate(_)),
        "{err:?}"
    );
}

/// A NATS set up before TLS gets it by reload (SIGHUP, no restart): from then on every new
/// connection must speak TLS with the project's certificate.
#[test]
fn reload_turns_tls_on_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ProjectCa::load_or_create(&dir.path().join(".flotilla")).unwrap();
    let cert = ca.issue(&["127.0.0.1".to_owned()]).unwrap();
    let port = free_port();
    let conf = write_config(dir.path(), port, false);
    let server = start(&conf, port);
    let (_, line) = info(port);
    assert!(!line.contains("\"tls_required\":true"), "{line}");

    std::fs::write(dir.path().join("cert.pem"), &cert.cert_pem).unwrap();
    std::fs::write(dir.path().join("key.pem"), cert.key_pem.as_bytes()).unwrap();
    write_config(dir.path(), port, true);
    let status = Command::new("kill")
        .args(["-HUP", &server.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + SERVER_WAIT;
    loop {
        let (_, line) = info(port);
        if line.contains("\"tls_required\":true") {
            break;
        }
        assert!(Instant::now() < deadline, "TLS not on after reload: {line}");
        std::thread::sleep(Duration::from_millis(50));
    }
    handshake(port, &ca.cert_pem).expect("the reloaded server serves the project's certificate");
}
