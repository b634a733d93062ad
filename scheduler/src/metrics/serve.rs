//! `GET /metrics` over HTTP/1 on the configured listen address, for as long as the returned
//! [`MetricsServer`] lives.

use super::Metrics;
use super::standby::{Standby, handoff_path};
use flotilla_events::{Envelope, EventLog};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::TcpListener;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("metrics: cannot listen on {listen}: {source}")]
    Bind {
        listen: String,
        source: std::io::Error,
    },
    #[error("metrics: folding the event log: {0}")]
    Log(#[from] flotilla_events::LogError),
    #[error("metrics: writing {path}: {source}")]
    Handoff {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A scheduler run's metrics: folded from the log when it starts, fed each event as it lands,
/// served on `x-flotilla.metrics.listen` until dropped. Without a listen address it does nothing.
///
/// When `flotilla metrics serve` already listens there, the run serves on a loopback port
/// instead and writes it to the hand-off file next to the log, so the standby forwards
/// scrapes to it (see [`super::standby`]).
#[derive(Debug, Default)]
pub struct Live {
    metrics: Option<Arc<Metrics>>,
    server: Option<MetricsServer>,
    /// The hand-off file this run wrote, removed when it ends.
    handoff: Option<PathBuf>,
}

impl Live {
    /// Rebuilds the metrics from `log` (stored in `log_dir`, if on disk) and serves them on
    /// `listen`, if given.
    pub async fn start(
        listen: Option<&str>,
        log: &dyn EventLog,
        log_dir: Option<&Path>,
    ) -> Result<Live, ServeError> {
        let Some(listen) = listen else {
            return Ok(Live::default());
        };
        let metrics = Arc::new(Metrics::rebuild(log)?);
        let (server, handoff) = match serve(listen, metrics.clone()).await {
            Ok(server) => (server, None),
            Err(ServeError::Bind { source, .. })
                if source.kind() == std::io::ErrorKind::AddrInUse && log_dir.is_some() =>
            {
                let path = handoff_path(log_dir.unwrap_or(Path::new("")));
                let server = serve("127.0.0.1:0", metrics.clone()).await?;
                std::fs::write(&path, server.addr().to_string()).map_err(|source| {
                    ServeError::Handoff {
                        path: path.clone(),
                        source,
                    }
                })?;
                (server, Some(path))
            }
            Err(e) => return Err(e),
        };
        tracing::info!(addr = %server.addr(), "serving metrics");
        Ok(Live {
            metrics: Some(metrics),
            server: Some(server),
            handoff,
        })
    }

    /// Folds in an event that just landed in the log.
    pub fn observe(&self, event: &Envelope) {
        if let Some(m) = &self.metrics {
            m.observe(event);
        }
    }

    /// Where the metrics are served, if they are.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.server.as_ref().map(MetricsServer::addr)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if let Some(path) = &self.handoff {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// What a metrics endpoint answers with.
#[derive(Debug, Clone)]
enum Source {
    /// A scheduler run's own fold.
    Live(Arc<Metrics>),
    /// `flotilla metrics serve` between deploys.
    Standby(Arc<Standby>),
}

impl Source {
    async fn body(self) -> Vec<u8> {
        match self {
            Source::Live(m) => m.render(),
            Source::Standby(s) => s.scrape().await,
        }
    }
}

/// The running metrics endpoint; dropping it stops serving.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl MetricsServer {
    /// The address it listens on (the port is the real one when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `listen` (`HOST:PORT`) and serves `metrics` on it in a task of the current runtime.
pub async fn serve(listen: &str, metrics: Arc<Metrics>) -> Result<MetricsServer, ServeError> {
    serve_source(listen, Source::Live(metrics)).await
}

/// Binds `listen` and serves the metrics of the log in `log_dir` between deploys, and a running
/// deploy's live metrics while it runs: `flotilla metrics serve`.
pub async fn serve_standby(listen: &str, log_dir: &Path) -> Result<MetricsServer, ServeError> {
    serve_source(listen, Source::Standby(Arc::new(Standby::new(log_dir)))).await
}

async fn serve_source(listen: &str, source: Source) -> Result<MetricsServer, ServeError> {
    let bind = |source| ServeError::Bind {
        listen: listen.to_owned(),
        source,
    };
    let listener = TcpListener::bind(listen).await.map_err(bind)?;
    let addr = listener.local_addr().map_err(bind)?;
    let task = tokio::spawn(accept_loop(listener, source));
    Ok(MetricsServer { addr, task })
}

/// `/metrics` answered from `source`, on the one server loop the executor and the proxy
/// use too.
async fn accept_loop(listener: TcpListener, source: Source) {
    flotilla_telemetry::metrics_http::serve(
        listener,
        move || source.clone().body(),
        None,
        std::future::pending(),
    )
    .await;
}
