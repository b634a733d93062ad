//! The proxy's life: bind listeners, restore state, serve, and shut down gracefully.
//!
//! Client traffic is served by [`crate::worker`] threads, one per core; the admin
//! socket, the metrics endpoint and ACME renewal run on the caller's runtime.
//! Connections are bounded by a semaphore; on shutdown the listeners stop
//! accepting, open connections are asked to close after their current request,
//! and the process waits up to the grace period for in-flight requests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::acme::{Acme, AcmeConfig, Challenges};
use crate::admin::server as admin;
use crate::conns::{ClientCap, ClientTimeouts};
use crate::control::Control;
use crate::forward::DataPath;
use crate::metrics::Metrics;
use crate::router::Router;
use crate::tls::CertStore;
use crate::worker::{self, Shared, Sockets};

/// How often ACME certificates are checked for renewal.
const RENEW_CHECK: Duration = Duration::from_secs(3600);

/// Everything `flotilla proxy run` is told.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub http: SocketAddr,
    pub https: Option<SocketAddr>,
    pub admin_socket: PathBuf,
    pub state_file: PathBuf,
    pub metrics: Option<SocketAddr>,
    /// Client connections served at once, split evenly across workers; further clients
    /// wait in the kernel's accept queue.
    pub max_connections: usize,
    /// At most this many connections from one client address at once (off when `None`).
    pub max_connections_per_client: Option<usize>,
    /// How long a client connection may go without a request.
    pub timeouts: ClientTimeouts,
    /// How long in-flight requests may run after a shutdown signal.
    pub grace_period: Duration,
    pub acme: Option<AcmeConfig>,
    /// Data-plane worker threads; 0 means one per available core.
    pub workers: usize,
    /// Take the listening sockets from the proxy serving this unix socket (if any answers)
    /// instead of binding, then serve this proxy's own there (`handover`).
    pub listeners_socket: Option<PathBuf>,
}

/// Starting the proxy failed.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("bind {what} on {addr}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Admin(#[from] admin::BindError),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("start worker threads")]
    Workers(#[source] std::io::Error),
    #[error("take over the listening sockets through {path}")]
    Handover {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A started proxy: its bound addresses, and a handle to stop it.
#[derive(Debug)]
pub struct Running {
    pub http_addr: SocketAddr,
    pub https_addr: Option<SocketAddr>,
    pub metrics_addr: Option<SocketAddr>,
    /// Routes restored from the state file at start.
    pub restored: usize,
    stop: CancellationToken,
    /// Cancelled after `stop`: open connections finish their current request and close.
    closing: CancellationToken,
    tasks: JoinSet<()>,
    /// Holds one token per worker thread until it has stopped.
    workers: TaskTracker,
    grace_period: Duration,
}

/// Raises the open-file soft limit to the hard limit, as nginx's `worker_rlimit_nofile`:
/// every client and every upstream connection is a descriptor, and the usual default soft
/// limit (1,024) would cap the proxy far below `--max-connections`.
fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(soft, hard, error = %e, "could not raise the open-file limit");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not read the open-file limit"),
    }
}

/// Binds every listener, restores the saved routes and starts serving.
pub async fn start(config: ProxyConfig) -> Result<Running, ProxyError> {
    raise_open_file_limit();
    let workers = match config.workers {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    let bind_err = |what, addr| move |source| ProxyError::Bind { what, addr, source };
    let taken = match &config.listeners_socket {
        Some(path) => crate::handover::take(path).map_err(|source| ProxyError::Handover {
            path: path.clone(),
            source,
        })?,
        None => None,
    };
    let (http, https) = match taken {
        // The predecessor's sockets: same ports, same accept queues, its worker count.
        Some(l) => {
            tracing::info!(
                http = l.http.len(),
                https = l.https.len(),
                "took the listening sockets over"
            );
            let https = match (l.https.is_empty(), config.https) {
                (false, _) => Some(l.https),
                (true, Some(a)) => {
                    Some(worker::bind_reuseport(a, l.http.len()).map_err(bind_err("https", a))?)
                }
                (true, None) => None,
            };
            (l.http, https)
        }
        None => {
            let http = worker::bind_reuseport(config.http, workers)
                .map_err(bind_err("http", config.http))?;
            let https = match config.https {
                Some(a) => Some(worker::bind_reuseport(a, workers).map_err(bind_err("https", a))?),
                None => None,
            };
            (http, https)
        }
    };
    let offered = match &config.listeners_socket {
        Some(path) => {
            let dups = crate::handover::duplicate(&http, https.as_deref().unwrap_or(&[])).map_err(
                |source| ProxyError::Handover {
                    path: path.clone(),
                    source,
                },
            )?;
            Some((admin::bind(path)?, dups))
        }
        None => None,
    };
    let metrics_listener = match config.metrics {
        // Shared (SO_REUSEPORT, as the data-plane listeners): a successor taking this proxy's
        // place (`--listeners-socket`) binds the metrics port while this one still serves.
        Some(a) => Some(
            worker::bind_reuseport(a, 1)
                .and_then(|mut l| {
                    l.pop()
                        .ok_or_else(|| std::io::Error::other("no listener bound"))
                        .and_then(TcpListener::from_std)
                })
                .map_err(|source| ProxyError::Bind {
                    what: "metrics",
                    addr: a,
                    source,
                })?,
        ),
        None => None,
    };
    let admin_listener = admin::bind(&config.admin_socket)?;
    let http_addr = http
        .first()
        .and_then(|l| l.local_addr().ok())
        .unwrap_or(config.http);
    let https_addr = https.as_ref().and_then(|l| l.first()?.local_addr().ok());
    let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());

    let router = Arc::new(Router::default());
    let metrics = Metrics::new();
    let challenges = Arc::new(Challenges::default());
    let certs = CertStore::new();
    let acme = config
        .acme
        .clone()
        .map(|c| Arc::new(Acme::new(c, Arc::clone(&challenges), Arc::clone(&certs))));
    let data = Arc::new(DataPath::new(router, metrics.clone(), challenges));
    let control = Arc::new(Control::new(
        Arc::clone(&data),
        Arc::clone(&certs),
        acme.clone(),
        config.state_file.clone(),
    ));
    let restored = control.restore()?;

    let stop = CancellationToken::new();
    let shared = Shared {
        data,
        connections_per_worker: config.max_connections.div_ceil(workers),
        tls: match https {
            Some(_) => Some(TlsAcceptor::from(certs.server_config()?)),
            None => None,
        },
        stop: stop.clone(),
        closing: CancellationToken::new(),
        grace_period: config.grace_period,
        timeouts: config.timeouts,
        per_client: config.max_connections_per_client.map(ClientCap::new),
    };
    let closing = shared.closing.clone();
    let worker_tracker = TaskTracker::new();
    let mut https_sockets = https.map(Vec::into_iter);
    for (id, http) in http.into_iter().enumerate() {
        let sockets = Sockets {
            http,
            https: https_sockets.as_mut().and_then(Iterator::next),
        };
        worker::spawn(id, sockets, shared.clone(), worker_tracker.token())
            .map_err(ProxyError::Workers)?;
    }

    let mut tasks = JoinSet::new();
    if let Some((listener, dups)) = offered {
        tasks.spawn(crate::handover::offer(listener, dups, stop.clone()));
    }
    if let Some(l) = metrics_listener {
        tasks.spawn(serve_metrics(l, metrics, stop.clone()));
    }
    tasks.spawn(admin::serve(
        admin_listener,
        Arc::clone(&control),
        stop.clone(),
    ));
    if let Some(acme) = acme {
        tasks.spawn(renew_loop(acme, control, stop.clone()));
    }
    tracing::info!(http = %http_addr, https = ?https_addr, workers, restored, "proxy started");
    Ok(Running {
        http_addr,
        https_addr,
        metrics_addr,
        restored,
        stop,
        closing,
        tasks,
        workers: worker_tracker,
        grace_period: config.grace_period,
    })
}

/// Runs the proxy until `shutdown` resolves, then stops gracefully.
pub async fn run(
    config: ProxyConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ProxyError> {
    let running = start(config).await?;
    shutdown.await;
    running.shutdown().await;
    Ok(())
}

impl Running {
    /// Stops accepting, lets in-flight requests finish up to the grace period, and returns.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        self.closing.cancel();
        while self.tasks.join_next().await.is_some() {}
        self.workers.close();
        tracing::info!("stopped accepting; draining connections");
        // Each worker bounds its own drain by the grace period; this only guards against a
        // worker that cannot stop at all.
        let bound = self.grace_period + Duration::from_secs(2);
        if tokio::time::timeout(bound, self.workers.wait())
            .await
            .is_err()
        {
            tracing::warn!("workers did not stop in time");
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// `/metrics` until `stop`; anything else is a 404 the proxy marks as its own.
async fn serve_metrics(listener: TcpListener, metrics: Metrics, stop: CancellationToken) {
    let own = (
        http::HeaderName::from_static(crate::body::PROXY_HEADER),
        http::HeaderValue::from_static("no-route"),
    );
    flotilla_telemetry::metrics_http::serve(
        listener,
        move || {
            let metrics = metrics.clone();
            async move { metrics.render() }
        },
        Some(own),
        stop.cancelled_owned(),
    )
    .await;
}

async fn renew_loop(acme: Arc<Acme>, control: Arc<Control>, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(RENEW_CHECK) => {}
        }
        let hosts = control.acme_hosts();
        if let Err(e) = acme.ensure(&hosts).await {
            tracing::error!(error = %e, "acme renewal failed; will retry");
        }
    }
}
