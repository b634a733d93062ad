//! Client connections that hold the proxy without asking anything of it (issue 12):
//! silent sockets, HTTP/2 prefaces, idle keep-alive connections, one client hoarding
//! connections, and thousands of idle sockets next to real requests.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use flotilla_proxy::ClientTimeouts;
use flotilla_proxy::admin::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{App, Proxy, config, deploy, free_port, get, heavy, http_client, wait_until};

/// Short client timeouts, so the tests see them expire.
const SHORT: ClientTimeouts = ClientTimeouts {
    first_request: Duration::from_millis(300),
    idle: Duration::from_millis(300),
};
/// Far longer than any timeout under test: a connection still open after this was not
/// going to be closed.
const PATIENCE: Duration = Duration::from_secs(10);
/// The idle sockets of the many-connections test, as in the finding of issue 12.
const IDLE_SOCKETS: usize = 10_000;

async fn proxy_with(timeouts: ClientTimeouts, per_client: Option<usize>) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    // One worker, so connections are accepted in the order they were made.
    config.workers = 1;
    config.timeouts = timeouts;
    config.max_connections_per_client = per_client;
    Proxy::start_with(config, dir).await
}

/// Reads until the proxy closes `stream`; panics if it is still open after [`PATIENCE`].
async fn closed_by_proxy(stream: &mut TcpStream) {
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(PATIENCE, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "connection still open after {PATIENCE:?}");
}

/// A client that connects and never sends a byte is disconnected after the first-request
/// timeout (it used to hold its connection slot for ever).
#[tokio::test]
async fn silent_connection_is_closed() {
    let proxy = proxy_with(SHORT, None).await;
    let mut silent = TcpStream::connect(proxy.http).await.unwrap();
    closed_by_proxy(&mut silent).await;
}

/// A client that sends only the HTTP/2 preface and its settings, and never a request, is
/// disconnected too (hyper's header timeout covers HTTP/1 only).
#[tokio::test]
async fn http2_preface_only_is_closed() {
    let proxy = proxy_with(SHORT, None).await;
    let mut preface = TcpStream::connect(proxy.http).await.unwrap();
    preface
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    // An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
    preface
        .write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0])
        .await
        .unwrap();
    closed_by_proxy(&mut preface).await;
}

/// A keep-alive connection is served, then closed once idle past the idle timeout; a
/// request slower than that timeout still completes on its connection.
#[tokio::test]
async fn idle_keep_alive_closes_but_slow_requests_finish() {
    let v1 = App::start("v1", "healthy");
    let proxy = proxy_with(SHORT, None).await;
    proxy
        .admin
        .deploy(deploy("web", "app.test", &v1.addr, "v1"))
        .await
        .unwrap();
    let got = get(&http_client(), proxy.http, "app.test", "/slow?ms=1000")
        .await
        .unwrap();
    assert_eq!((got.status, got.body.trim()), (200, "slow 1000ms from v1"));

    let mut stream = TcpStream::connect(proxy.http).await.unwrap();
    stream
        .write_all(b"GET /version HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.ends_with(b"v1\n") {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before the response");
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 200"));
    closed_by_proxy(&mut stream).await;
}

/// With a per-client cap, a client's connection over the cap is closed at once, long
/// before any timeout, and the client may connect again once one of its own has ended.
#[tokio::test]
async fn per_client_cap_closes_the_extra_connection() {
    let v1 = App::start("v1", "healthy");
    let patient = ClientTimeouts {
        first_request: Duration::from_secs(60),
        idle: Duration::from_secs(60),
    };
    let proxy = proxy_with(patient, Some(2)).await;
    proxy
        .admin
        .deploy(deploy("web", "app.test", &v1.addr, "v1"))
        .await
        .unwrap();
    let first = TcpStream::connect(proxy.http).await.unwrap();
    let _second = TcpStream::connect(proxy.http).await.unwrap();
    let mut third = TcpStream::connect(proxy.http).await.unwrap();
    closed_by_proxy(&mut third).await;
    drop(first);
    // The proxy notices the close asynchronously: retry until the slot is free.
    let client = http_client();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match get(&client, proxy.http, "app.test", "/version").await {
            Ok(got) => {
                assert_eq!((got.status, got.body.trim()), (200, "v1"));
                break;
            }
            Err(e) => assert!(tokio::time::Instant::now() < deadline, "{e}"),
        }
    }
}

/// Raises this process's open-file limit to its hard limit (children inherit it) and
/// returns how many idle sockets the test can afford: one end here, one in the proxy.
fn raise_fd_limit() -> usize {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    // Headroom for the runtime, the test app, other tests' sockets and the real requests.
    let affordable = usize::try_from(hard.saturating_sub(500)).unwrap_or(usize::MAX);
    affordable.min(IDLE_SOCKETS)
}

/// With 10,000 idle client sockets held open against a proxy with the default connection
/// limit (10,000, as in issue 12's finding), real requests on new connections still get
/// answered: slots are taken after accept and a full worker closes idle connections first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_sockets_do_not_stop_real_requests() {
    let _heavy = heavy().await;
    let sockets = raise_fd_limit();
    if sockets < IDLE_SOCKETS {
        eprintln!("open-file hard limit allows only {sockets} idle sockets");
    }
    let v1 = App::start("v1", "healthy");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let socket = dir.path().join("admin.sock");
    // The proxy as its own process, with its default limits: its sockets do not count
    // against this process's open-file limit.
    let mut child = Command::new(env!("CARGO_BIN_EXE_flotilla-proxy"))
        .args(["--http-port", &format!("127.0.0.1:{port}")])
        .args(["--https-port", "off", "--workers", "2"])
        .arg("--state-file")
        .arg(dir.path().join("state.json"))
        .arg("--admin-socket")
        .arg(&socket)
        .env("RUST_LOG", "error")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("proxy admin socket", PATIENCE, || {
        std::os::unix::net::UnixStream::connect(&socket).is_ok()
    });
    let admin = Client::new(&socket);
    admin
        .deploy(deploy("web", "app.test", &v1.addr, "v1"))
        .await
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();

    let mut idle = Vec::with_capacity(sockets);
    while idle.len() < sockets {
        let batch = (sockets - idle.len()).min(500);
        let connects: Vec<_> = (0..batch)
            .map(|_| tokio::spawn(TcpStream::connect(addr)))
            .collect();
        for c in connects {
            idle.push(c.await.unwrap().unwrap());
        }
    }
    let client = http_client();
    for _ in 0..20 {
        // A new connection each time, as new visitors arrive.
        let got = get(&http_client(), addr, "app.test", "/version")
            .await
            .unwrap();
        assert_eq!((got.status, got.body.trim()), (200, "v1"));
        let got = get(&client, addr, "app.test", "/version").await.unwrap();
        assert_eq!((got.status, got.body.trim()), (200, "v1"));
    }
    drop(idle);
    let _ = child.kill();
    let _ = child.wait();
}
