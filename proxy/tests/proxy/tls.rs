//! HTTPS: static certificates by SNI, HTTP/2 by ALPN, and the redirect from HTTP.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use flotilla_proxy::TlsSpec;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::support::{App, Proxy, config, deploy, get, http_client};

/// GET `path` over TLS with SNI `host`, trusting only `roots`, offering `alpn`;
/// returns the HTTP version used, the status and the body.
pub async fn tls_get(
    addr: SocketAddr,
    host: &str,
    roots: RootCertStore,
    alpn: &[&[u8]],
    path: &str,
) -> Result<(http::Version, u16, String), String> {
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(host.to_owned()).unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("tls: {e}"))?;
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let io = TokioIo::new(tls);
    let request = |version| {
        let mut b = http::Request::get(format!("https://{host}{path}")).version(version);
        if version == http::Version::HTTP_11 {
            b = b.header(http::header::HOST, host);
        }
        b.body(Empty::<Bytes>::new()).unwrap()
    };
    let response = if h2 {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        sender.send_request(request(http::Version::HTTP_2)).await
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        sender.send_request(request(http::Version::HTTP_11)).await
    }
    .map_err(|e| e.to_string())?;
    let version = response.version();
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((
        version,
        status,
        String::from_utf8_lossy(&body).trim().to_owned(),
    ))
}

/// A test CA and a certificate it signed for `host`, written as PEM files in `dir`.
fn issue(dir: &std::path::Path, host: &str) -> (RootCertStore, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec![host.to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &rcgen::Issuer::from_params(&ca_params, &ca_key))
        .unwrap();
    let cert_path = dir.join(format!("{host}.crt"));
    let key_path = dir.join(format!("{host}.key"));
    std::fs::write(&cert_path, leaf.pem()).unwrap();
    std::fs::write(&key_path, leaf_key.serialize_pem()).unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(ca.der().to_vec())).unwrap();
    (
        roots,
        cert_path.display().to_string(),
        key_path.display().to_string(),
    )
}

/// A service with static certificate files is served over HTTPS by SNI, over HTTP/2 and
/// HTTP/1.1 as the client offers; plain HTTP redirects to HTTPS; a bad key fails the deploy.
#[tokio::test]
async fn static_certificates_by_sni() {
    let v1 = App::start("v1", "healthy");
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.https = Some("127.0.0.1:0".parse().unwrap());
    let (roots, cert_path, key_path) = issue(dir.path(), "secure.test");
    let proxy = Proxy::start_with(cfg, dir).await;
    let https = proxy.running.as_ref().unwrap().https_addr.unwrap();

    let mut request = deploy("web", "secure.test", &v1.addr, "v1");
    request.service.tls = Some(TlsSpec::Static {
        cert_path: cert_path.clone(),
        key_path: "/nonexistent/key.pem".into(),
    });
    let refused = proxy.admin.deploy(request.clone()).await.unwrap_err();
    assert!(
        refused.to_string().contains("cert") || refused.to_string().contains("key"),
        "{refused}"
    );
    assert!(
        proxy.admin.list().await.unwrap().is_empty(),
        "a failed deploy changed routing"
    );

    request.service.tls = Some(TlsSpec::Static {
        cert_path,
        key_path,
    });
    request.service.redirect_https = true;
    proxy.admin.deploy(request).await.unwrap();

    let h2 = tls_get(
        https,
        "secure.test",
        roots.clone(),
        &[b"h2", b"http/1.1"],
        "/version",
    )
    .await
    .unwrap();
    assert_eq!(h2, (http::Version::HTTP_2, 200, "v1".to_owned()));
    let h1 = tls_get(
        https,
        "secure.test",
        roots.clone(),
        &[b"http/1.1"],
        "/version",
    )
    .await
    .unwrap();
    assert_eq!(h1, (http::Version::HTTP_11, 200, "v1".to_owned()));
    let unknown = tls_get(https, "other.test", roots, &[b"h2"], "/")
        .await
        .unwrap_err();
    assert!(unknown.contains("tls"), "{unknown}");

    let redirected = get(&http_client(), proxy.http, "secure.test", "/version?x=1")
        .await
        .unwrap();
    assert_eq!(redirected.status, 308);
    assert_eq!(
        redirected.headers["location"],
        "https://secure.test/version?x=1"
    );
}

/// Other clients' sessions since a client's last visit: more than the 256 sessions rustls
/// keeps in memory by default, so only a session ticket can still resume it.
const OTHER_CLIENTS: usize = 300;

/// One `Connection: close` request over a new TLS connection with `cfg` (whose session
/// store keeps what the server gives it); the kind of handshake that connection had.
async fn visit(
    addr: SocketAddr,
    host: &str,
    cfg: Arc<rustls::ClientConfig>,
) -> rustls::HandshakeKind {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(host.to_owned()).unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
        .unwrap();
    let kind = tls.get_ref().1.handshake_kind().unwrap();
    let request = format!("GET /version HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    // Reading to the end also takes in the session tickets sent after the handshake.
    let mut answer = Vec::new();
    tls.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    kind
}

/// A returning HTTPS client resumes its TLS session (an abbreviated handshake, without the
/// key exchange and signature of a full one) even after hundreds of other clients connected
/// in between: the proxy issues session tickets, as nginx does by default.
#[tokio::test]
async fn returning_clients_resume_their_tls_session() {
    let v1 = App::start("v1", "healthy");
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.https = Some("127.0.0.1:0".parse().unwrap());
    let (roots, cert_path, key_path) = issue(dir.path(), "secure.test");
    let proxy = Proxy::start_with(cfg, dir).await;
    let https = proxy.running.as_ref().unwrap().https_addr.unwrap();
    let mut request = deploy("web", "secure.test", &v1.addr, "v1");
    request.service.tls = Some(TlsSpec::Static {
        cert_path,
        key_path,
    });
    proxy.admin.deploy(request).await.unwrap();

    let client = || {
        let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(cfg)
    };
    let returning = client();
    let first = visit(https, "secure.test", Arc::clone(&returning)).await;
    assert_eq!(first, rustls::HandshakeKind::Full);
    for _ in 0..OTHER_CLIENTS {
        visit(https, "secure.test", client()).await;
    }
    let again = visit(https, "secure.test", returning).await;
    assert_eq!(again, rustls::HandshakeKind::Resumed);
}
