//! The proxy's life: bind listeners, restore state, serve, and shut down gracefully.
//!
//! Connections are bounded by a semaphore; on shutdown the listeners stop
//! accepting, open connections are asked to close after their current request,
//! and the process waits up to the grace period for in-flight requests.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::acme::{Acme, AcmeConfig, Challenges};
use crate::admin::server as admin;
use crate::control::Control;
use crate::forward::DataPath;
use crate::metrics::Metrics;
use crate::router::Router;
use crate::tls::CertStore;

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
    /// Client connections served at once; further clients wait in the accept queue.
    pub max_connections: usize,
    /// How long in-flight requests may run after a shutdown signal.
    pub grace_period: Duration,
    pub acme: Option<AcmeConfig>,
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
    connections: TaskTracker,
    grace_period: Duration,
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, ProxyError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ProxyError::Bind { what, addr, source })
}

/// Binds every listener, restores the saved routes and starts serving.
pub async fn start(config: ProxyConfig) -> Result<Running, ProxyError> {
    let http = bind("http", config.http).await?;
    let https = match config.https {
        Some(a) => Some(bind("https", a).await?),
        None => None,
    };
    let metrics_listener = match config.metrics {
        Some(a) => Some(bind("metrics", a).await?),
        None => None,
    };
    let admin_listener = admin::bind(&config.admin_socket)?;

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
    let closing = CancellationToken::new();
    let connections = TaskTracker::new();
    let permits = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let mut tasks = JoinSet::new();
    let running_addrs = (
        http.local_addr().ok().unwrap_or(config.http),
        https.as_ref().and_then(|l| l.local_addr().ok()),
        metrics_listener.as_ref().and_then(|l| l.local_addr().ok()),
    );
    let listener = Listener {
        data: Arc::clone(&data),
        permits: Arc::clone(&permits),
        connections: connections.clone(),
        stop: stop.clone(),
        closing: closing.clone(),
    };
    tasks.spawn(listener.clone().accept_loop(http, None));
    if let Some(l) = https {
        let acceptor = TlsAcceptor::from(certs.server_config()?);
        tasks.spawn(listener.clone().accept_loop(l, Some(acceptor)));
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
    tracing::info!(http = %running_addrs.0, https = ?running_addrs.1, restored, "proxy started");
    Ok(Running {
        http_addr: running_addrs.0,
        https_addr: running_addrs.1,
        metrics_addr: running_addrs.2,
        restored,
        stop,
        closing,
        tasks,
        connections,
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
        while self.tasks.join_next().await.is_some() {}
        self.closing.cancel();
        self.connections.close();
        tracing::info!(
            open = self.connections.len(),
            "stopped accepting; draining connections"
        );
        if tokio::time::timeout(self.grace_period, self.connections.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                grace_ms = self.grace_period.as_millis() as u64,
                "grace period over; closing the rest"
            );
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

#[derive(Clone)]
struct Listener {
    data: Arc<DataPath>,
    permits: Arc<Semaphore>,
    connections: TaskTracker,
    stop: CancellationToken,
    closing: CancellationToken,
}

impl Listener {
    async fn accept_loop(self, listener: TcpListener, tls: Option<TlsAcceptor>) {
        loop {
            let permit = tokio::select! {
                () = self.stop.cancelled() => return,
                p = Arc::clone(&self.permits).acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            let (stream, peer) = tokio::select! {
                () = self.stop.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let this = self.clone();
            let tls = tls.clone();
            self.connections.spawn(async move {
                let _permit = permit;
                this.connection(stream, peer, tls).await;
            });
        }
    }

    async fn connection(&self, stream: TcpStream, peer: SocketAddr, tls: Option<TlsAcceptor>) {
        match tls {
            None => self.serve(TokioIo::new(stream), peer, false).await,
            Some(acceptor) => {
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                    Ok(Ok(s)) => self.serve(TokioIo::new(s), peer, true).await,
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "tls handshake failed"),
                    Err(_) => tracing::debug!(%peer, "tls handshake timed out"),
                }
            }
        }
    }

    async fn serve<I>(&self, io: TokioIo<I>, peer: SocketAddr, https: bool)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let data = Arc::clone(&self.data);
        let service = service_fn(move |req| {
            let data = Arc::clone(&data);
            async move { Ok::<_, Infallible>(data.handle(req, peer, https).await) }
        });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(30));
        let conn = builder.serve_connection_with_upgrades(io, service);
        tokio::pin!(conn);
        let ended = tokio::select! {
            r = conn.as_mut() => r,
            () = self.closing.cancelled() => {
                // Finish the request in progress, then close; idle connections close now.
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = ended {
            tracing::debug!(%peer, error = %e, "connection ended with error");
        }
    }
}

async fn serve_metrics(listener: TcpListener, metrics: Metrics, stop: CancellationToken) {
    loop {
        let stream = tokio::select! {
            () = stop.cancelled() => return,
            a = listener.accept() => match a {
                Ok((s, _)) => s,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let metrics = metrics.clone();
                async move {
                    let response = if req.uri().path() == "/metrics" {
                        let mut r = http::Response::new(crate::body::full(metrics.render()));
                        r.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            http::HeaderValue::from_static("text/plain; version=0.0.4"),
                        );
                        r
                    } else {
                        crate::body::proxy_response(
                            http::StatusCode::NOT_FOUND,
                            "no-route",
                            "try /metrics\n".into(),
                        )
                    };
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
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
