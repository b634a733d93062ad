//! The proxy as its own process: signals and restarts, as on a host.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flotilla_proxy::admin::Client;

use crate::support::{App, deploy, free_port, get, heavy, http_client, wait_until};

/// Starts `flotilla-proxy` on a free loopback port with its files in `dir`.
fn spawn_proxy(dir: &Path) -> (Child, u16) {
    let port = free_port();
    let socket = dir.join("admin.sock");
    let _ = std::fs::remove_file(&socket);
    let child = Command::new(env!("CARGO_BIN_EXE_flotilla-proxy"))
        .args([
            "--http-port",
            &format!("127.0.0.1:{port}"),
            "--https-port",
            "off",
            "--grace-period",
            "10",
        ])
        .arg("--state-file")
        .arg(dir.join("state.json"))
        .arg("--admin-socket")
        .arg(&socket)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn flotilla-proxy");
    wait_until("proxy admin socket", Duration::from_secs(10), || {
        std::os::unix::net::UnixStream::connect(&socket).is_ok()
    });
    (child, port)
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// On SIGTERM the proxy stops accepting new connections, lets an in-flight slow request
/// finish with 200, and exits 0; started again, it serves the saved route at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_then_restart_restores() {
    let _heavy = heavy().await;
    let v1 = App::start("v1", "healthy");
    let dir = tempfile::tempdir().unwrap();
    let (mut child, port) = spawn_proxy(dir.path());
    let admin = Client::new(dir.path().join("admin.sock"));
    admin
        .deploy(deploy("web", "app.test", &v1.addr, "v1"))
        .await
        .unwrap();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();

    let mut slow =
        tokio::spawn(async move { get(&http_client(), addr, "app.test", "/slow?ms=3000").await });
    let deadline = Instant::now() + Duration::from_secs(5);
    while admin.list().await.unwrap()[0].in_flight == 0 {
        assert!(
            Instant::now() < deadline,
            "slow request never reached the proxy"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sigterm(&child);
    wait_until("listener closed", Duration::from_secs(2), || {
        std::net::TcpStream::connect(addr).is_err()
    });
    assert!(
        tokio::time::timeout(Duration::ZERO, &mut slow)
            .await
            .is_err(),
        "slow request ended before the drain"
    );
    let got = slow.await.unwrap().unwrap();
    assert_eq!((got.status, got.body.trim()), (200, "slow 3000ms from v1"));
    let mut status = None;
    wait_until("proxy exit", Duration::from_secs(10), || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    assert!(status.unwrap().success(), "{status:?}");

    let (mut again, port) = spawn_proxy(dir.path());
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let got = get(&http_client(), addr, "app.test", "/version")
        .await
        .unwrap();
    assert_eq!((got.status, got.body.trim()), (200, "v1"));
    sigterm(&again);
    assert!(again.wait().unwrap().success());
}
