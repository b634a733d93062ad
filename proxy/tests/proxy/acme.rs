//! ACME HTTP-01 against a real ACME server: Debian's `pebble`, with
//! `pebble-challtestsrv` as its DNS so the test host name resolves to 127.0.0.1.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flotilla_proxy::TlsSpec;
use flotilla_proxy::acme::AcmeConfig;
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;

use crate::support::{App, Proxy, config, deploy, free_port, heavy, wait_until};
use crate::tls::tls_get;

/// Kills a child process when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn require(binary: &str) -> String {
    let path = format!("/usr/bin/{binary}");
    assert!(
        Path::new(&path).exists(),
        "{path} is missing: install the Debian package `pebble` (apt-get install -y pebble)"
    );
    path
}

/// A CA and a certificate for `localhost`/127.0.0.1 that pebble serves its API with.
fn pebble_tls(dir: &Path) -> RootCertStore {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let cert = params
        .signed_by(&key, &rcgen::Issuer::from_params(&ca_params, &ca_key))
        .unwrap();
    std::fs::write(dir.join("pebble-ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("pebble.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("pebble.key"), key.serialize_pem()).unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(ca.der().to_vec())).unwrap();
    roots
}

/// Starts the DNS stand-in answering 127.0.0.1 for every name, and pebble validating
/// HTTP-01 challenges on `http_port` (the proxy's); returns pebble's API and management ports.
fn start_pebble(dir: &Path, http_port: u16, acme_port: u16) -> (Killed, Killed, u16) {
    let pebble = require("pebble");
    let challtestsrv = require("pebble-challtestsrv");
    let dns_port = free_port();
    let dns = Killed(
        Command::new(challtestsrv)
            .args([
                "-dns01",
                &format!("127.0.0.1:{dns_port}"),
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
            ])
            .args(["-management", &format!("127.0.0.1:{}", free_port())])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn pebble-challtestsrv"),
    );
    let management_port = free_port();
    let config = serde_json::json!({
        "pebble": {
            "listenAddress": format!("127.0.0.1:{acme_port}"),
            "managementListenAddress": format!("127.0.0.1:{management_port}"),
            "certificate": dir.join("pebble.crt"),
            "privateKey": dir.join("pebble.key"),
            "httpPort": http_port,
            "tlsPort": free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false
        }
    });
    let config_path = dir.join("pebble.json");
    std::fs::write(&config_path, config.to_string()).unwrap();
    let server = Killed(
        Command::new(pebble)
            .arg("-config")
            .arg(&config_path)
            .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
            // No random validation delay, and no deliberately rejected nonces: the
            // challenge itself is still validated for real over HTTP.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn pebble"),
    );
    wait_until("pebble", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", acme_port)).is_ok()
            && std::net::TcpStream::connect(("127.0.0.1", management_port)).is_ok()
    });
    (dns, server, management_port)
}

/// A service deployed with `tls: acme` gets a certificate from a real ACME server through
/// an HTTP-01 challenge the proxy answers itself, and is served over HTTPS with it; the
/// certificate is cached, so a restarted proxy serves HTTPS without asking again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_http01_with_pebble() {
    let _heavy = heavy().await;
    let v1 = App::start("v1", "healthy");
    let dir = tempfile::tempdir().unwrap();
    let pebble_roots = pebble_tls(dir.path());
    let acme_port = free_port();
    let mut cfg = config(dir.path());
    cfg.https = Some("127.0.0.1:0".parse().unwrap());
    cfg.acme = Some(AcmeConfig {
        directory_url: format!("https://127.0.0.1:{acme_port}/dir"),
        cache_dir: dir.path().join("certs"),
        contact: None,
        server_ca: Some(dir.path().join("pebble-ca.pem")),
    });
    let mut proxy = Proxy::start_with(cfg, dir).await;
    let dir = proxy.dir.path().to_owned();
    let https = proxy.running.as_ref().unwrap().https_addr.unwrap();
    let (_dns, pebble, management_port) = start_pebble(&dir, proxy.http.port(), acme_port);

    let host = "app.flotilla.test";
    let mut request = deploy("web", host, &v1.addr, "v1");
    request.service.tls = Some(TlsSpec::Acme);
    proxy.admin.deploy(request).await.unwrap();

    // Pebble makes a new root for every run; trust exactly that one.
    let management = format!("127.0.0.1:{management_port}").parse().unwrap();
    let (_, status, root_pem) = tls_get(
        management,
        "localhost",
        pebble_roots,
        &[b"http/1.1"],
        "/roots/0",
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    let mut roots = RootCertStore::empty();
    for der in rustls_pemfile::certs(&mut root_pem.as_bytes()) {
        roots.add(der.unwrap()).unwrap();
    }

    let deadline = Instant::now() + Duration::from_secs(60);
    let served = loop {
        match tls_get(https, host, roots.clone(), &[b"h2"], "/version").await {
            Ok(got) => break got,
            Err(e) => assert!(
                Instant::now() < deadline,
                "no acme certificate after 60s: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(served, (http::Version::HTTP_2, 200, "v1".to_owned()));
    let key_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.join(format!("certs/{host}.key")))
            .unwrap()
            .permissions(),
    );
    assert_eq!(key_mode & 0o777, 0o600);

    // Without pebble, a restarted proxy serves the cached certificate.
    drop(pebble);
    proxy.stop().await;
    let mut cfg = proxy.config.clone();
    cfg.http = "127.0.0.1:0".parse().unwrap();
    let again = Proxy::start_with(cfg, proxy.dir).await;
    let https = again.running.as_ref().unwrap().https_addr.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let served = loop {
        match tls_get(https, host, roots.clone(), &[b"http/1.1"], "/version").await {
            Ok(got) => break got,
            Err(e) => assert!(
                Instant::now() < deadline,
                "cached certificate not served: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(served.2, "v1");
}
