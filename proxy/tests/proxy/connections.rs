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

/// Clients of the many-clients test: more than a worker's upstream connections to one target.
const MANY_CLIENTS: usize = 1_500;
/// Descriptors the proxy process needs besides client and upstream sockets (runtime,
/// listeners, admin socket, state file, standard streams), with room to spare.
const PROXY_OWN_FILES: usize = 200;
/// How long the many-clients test may take at most on a loaded machine; only a hang hits it.
const MANY_CLIENTS_PATIENCE: Duration = Duration::from_secs(120);

/// A local upstream that answers `/up` at once and holds every other request until
/// `hold_until` requests are waiting at the same time, then answers all of them and the rest
/// at once: so that many requests are in flight together whatever the machine's speed.
/// Returns its address and the most connections that carried requests other than `/up`
/// (the proxy's health checks) it ever had open at once.
async fn holding_upstream(
    hold_until: usize,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let open = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let waiting = Arc::new(AtomicUsize::new(0));
    let (release, released) = tokio::sync::watch::channel(false);
    let release = Arc::new(release);
    let most_seen = Arc::clone(&most);
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                continue;
            };
            let (open, most) = (Arc::clone(&open), Arc::clone(&most));
            let (waiting, release) = (Arc::clone(&waiting), Arc::clone(&release));
            let mut released = released.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let mut counted = false;
                'conn: loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head: Vec<u8> = buf.drain(..end + 4).collect();
                        if !head.starts_with(b"GET /up ") {
                            if !counted {
                                counted = true;
                                let now = open.fetch_add(1, Ordering::SeqCst) + 1;
                                most.fetch_max(now, Ordering::SeqCst);
                            }
                            if waiting.fetch_add(1, Ordering::SeqCst) + 1 >= hold_until {
                                release.send_replace(true);
                            }
                            if released.wait_for(|r| *r).await.is_err() {
                                break 'conn;
                            }
                        }
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n";
                        if conn.write_all(answer).await.is_err() {
                            break 'conn;
                        }
                    }
                    match conn.read(&mut chunk).await {
                        Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                        _ => break,
                    }
                }
                if counted {
                    open.fetch_sub(1, Ordering::SeqCst);
                }
            });
        }
    });
    (addr, most_seen)
}

/// One request on a new connection; the status the proxy answered.
async fn one_request(addr: SocketAddr) -> Result<u16, String> {
    let mut conn = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    conn.write_all(b"GET /many HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = conn.read(&mut chunk).await.map_err(|e| e.to_string())?;
        got.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(_)) = response.parse(&got) {
            return Ok(response.code.unwrap_or(0));
        }
        if n == 0 {
            return Err(format!("closed after {:?}", String::from_utf8_lossy(&got)));
        }
    }
}

/// 1,500 clients sending at once through one proxy worker whose open-file limit leaves room
/// for fewer than 1,500 client and 1,500 upstream sockets (as 10,000 clients under a limit of
/// 20,000 did in issue 18's benchmark) all get a 200: the worker holds at most
/// `UPSTREAM_CONNECTIONS_PER_TARGET` connections to the app and the other requests wait for
/// one, instead of failing with 502 when a connect runs out of descriptors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_at_once_all_get_answers() {
    let _heavy = heavy().await;
    let cap = flotilla_proxy::UPSTREAM_CONNECTIONS_PER_TARGET;
    assert!(
        raise_fd_limit() >= MANY_CLIENTS + cap,
        "open-file hard limit too low"
    );
    let (upstream, most_open) = holding_upstream(cap).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let socket = dir.path().join("admin.sock");
    let limit = MANY_CLIENTS + cap + PROXY_OWN_FILES;
    assert!(
        limit < 2 * MANY_CLIENTS,
        "the limit must not fit a socket per request"
    );
    let mut child = Command::new("prlimit")
        .arg(format!("--nofile={limit}:{limit}"))
        .arg(env!("CARGO_BIN_EXE_flotilla-proxy"))
        .args(["--http-port", &format!("127.0.0.1:{port}")])
        .args(["--https-port", "off", "--workers", "1"])
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
    Client::new(&socket)
        .deploy(deploy("web", "app.test", &upstream, "v1"))
        .await
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();

    let clients: Vec<_> = (0..MANY_CLIENTS)
        .map(|_| tokio::spawn(one_request(addr)))
        .collect();
    let all = tokio::time::timeout(MANY_CLIENTS_PATIENCE, async {
        let mut statuses = std::collections::BTreeMap::<String, usize>::new();
        for c in clients {
            let status = match c.await.unwrap() {
                Ok(s) => s.to_string(),
                Err(e) => e,
            };
            *statuses.entry(status).or_default() += 1;
        }
        statuses
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let statuses = all.expect("clients still waiting");
    assert_eq!(
        statuses,
        [("200".to_owned(), MANY_CLIENTS)].into_iter().collect(),
        "every client answered 200"
    );
    let most = most_open.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        most <= cap,
        "{most} upstream connections at once, over {cap}"
    );
}

/// A connection the proxy accepted just before it stopped (as the old proxy's last accept
/// in a listener hand-over) still gets an answer to its first request, marked
/// `connection: close`, instead of being closed unanswered (issue 11), while an idle
/// keep-alive connection is closed at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_accepted_before_shutdown_gets_its_first_answer() {
    let v1 = App::start("v1", "healthy");
    let mut proxy = proxy_with(ClientTimeouts::default(), None).await;
    proxy
        .admin
        .deploy(deploy("web", "app.test", &v1.addr, "v1"))
        .await
        .unwrap();
    let mut fresh = TcpStream::connect(proxy.http).await.unwrap();
    // Accepted after `fresh` (one worker accepts in order): once it is answered, `fresh`
    // has been accepted too.
    let mut other = TcpStream::connect(proxy.http).await.unwrap();
    other
        .write_all(b"GET /version HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("v1") {
        let n = other.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed before answering");
        got.extend_from_slice(&chunk[..n]);
    }
    let stopping = tokio::spawn(proxy.running.take().unwrap().shutdown());
    // The idle keep-alive connection is closed by the shutdown: the proxy is stopping now.
    closed_by_proxy(&mut other).await;
    fresh
        .write_all(b"GET /version HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, fresh.read_to_end(&mut answer))
        .await
        .expect("no answer")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 200"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    assert!(answer.ends_with("v1\n"), "{answer}");
    stopping.await.unwrap();
}
