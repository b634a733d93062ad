//! Setup shared by the proxy tests: the test app as real processes, a proxy in
//! this process or as its own process, and a small HTTP client.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use flotilla_proxy::admin::{Client, DeployRequest};
use flotilla_proxy::{HealthCheck, ProxyConfig, Running, ServiceSpec};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// A free loopback port: bound to :0, then released for the child to take.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `ready` until it holds or `within` passes (for external processes only).
pub fn wait_until(what: &str, within: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "{what}: not ready within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The directory holding this build's binaries (`target/debug`).
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/debug/deps/proxy-HASH -> target/debug
    exe.parent().and_then(Path::parent).unwrap().to_owned()
}

/// The test app binary, built with cargo if this build has not made it yet.
pub fn testapp_bin() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let path = bin_dir().join("flotilla-testapp");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "-q", "-p", "flotilla-testapp"])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .expect("run cargo build -p flotilla-testapp");
            assert!(status.success(), "cargo build -p flotilla-testapp failed");
            assert!(path.exists(), "{} missing after build", path.display());
            path
        })
        .clone()
}

/// A running test app on a loopback port, killed when dropped.
pub struct App {
    pub addr: String,
    child: Child,
}

impl App {
    /// Starts the app with `APP_VERSION=version` and `APP_MODE=mode`; waits until it accepts.
    pub fn start(version: &str, mode: &str) -> App {
        let port = free_port();
        let child = Command::new(testapp_bin())
            .env("PORT", port.to_string())
            .env("APP_VERSION", version)
            .env("APP_MODE", mode)
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn flotilla-testapp");
        let addr = format!("127.0.0.1:{port}");
        let a = addr.clone();
        wait_until("test app", Duration::from_secs(10), || {
            TcpStream::connect(&a).is_ok()
        });
        App { addr, child }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A proxy in this process, with its state and admin socket in a temporary directory.
pub struct Proxy {
    pub running: Option<Running>,
    pub http: SocketAddr,
    pub admin: Client,
    pub config: ProxyConfig,
    pub dir: tempfile::TempDir,
}

pub fn config(dir: &Path) -> ProxyConfig {
    ProxyConfig {
        http: "127.0.0.1:0".parse().unwrap(),
        https: None,
        admin_socket: dir.join("admin.sock"),
        state_file: dir.join("state.json"),
        metrics: None,
        max_connections: 1000,
        max_connections_per_client: None,
        timeouts: flotilla_proxy::ClientTimeouts::default(),
        grace_period: Duration::from_secs(10),
        acme: None,
        workers: 2,
        listeners_socket: None,
    }
}

impl Proxy {
    pub async fn start() -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        Self::start_with(config(dir.path()), dir).await
    }

    pub async fn start_with(config: ProxyConfig, dir: tempfile::TempDir) -> Proxy {
        let running = flotilla_proxy::start(config.clone()).await.unwrap();
        Proxy {
            http: running.http_addr,
            admin: Client::new(&config.admin_socket),
            running: Some(running),
            config,
            dir,
        }
    }

    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

/// A deploy of `service` for `host` to `target`, with quick health checks.
pub fn deploy(service: &str, host: &str, target: &str, version: &str) -> DeployRequest {
    let mut spec = ServiceSpec::new(service, target, vec![host.to_owned()]);
    spec.version = Some(version.to_owned());
    DeployRequest {
        service: spec,
        health: HealthCheck {
            path: "/up".into(),
            interval_ms: 100,
            timeout_ms: 1000,
        },
        deploy_timeout_ms: 10_000,
        drain_timeout_ms: 10_000,
    }
}

pub type Http = HttpClient<HttpConnector, Empty<Bytes>>;

/// A pooled keep-alive HTTP/1.1 client, as browsers and load balancers are.
pub fn http_client() -> Http {
    HttpClient::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// What a request got back.
#[derive(Debug)]
pub struct Got {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

/// GET `path` through the proxy at `proxy` with `Host: host`.
pub async fn get(client: &Http, proxy: SocketAddr, host: &str, path: &str) -> Result<Got, String> {
    let request = http::Request::get(format!("http://{proxy}{path}"))
        .header(http::header::HOST, host)
        .body(Empty::new())
        .unwrap();
    let response = client
        .request(request)
        .await
        .map_err(|e| format!("{e:?}"))?;
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| format!("{e:?}"))?
        .to_bytes();
    Ok(Got {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Serialises tests that put load on the machine, so two cores are not oversubscribed
/// and timing-sensitive checks (deploy timeouts) keep their margin.
pub async fn heavy() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}
