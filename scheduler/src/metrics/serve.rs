//! `GET /metrics` over HTTP/1 on the configured listen address, for as long as the returned
//! [`MetricsServer`] lives.

use super::Metrics;
use bytes::Bytes;
use flotilla_events::{Envelope, EventLog};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
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
}

/// A scheduler run's metrics: folded from the log when it starts, fed each event as it lands,
/// served on `x-flotilla.metrics.listen` until dropped. Without a listen address it does nothing.
#[derive(Debug, Default)]
pub struct Live {
    metrics: Option<Arc<Metrics>>,
    server: Option<MetricsServer>,
}

impl Live {
    /// Rebuilds the metrics from `log` and serves them on `listen`, if given.
    pub async fn start(listen: Option<&str>, log: &dyn EventLog) -> Result<Live, ServeError> {
        let Some(listen) = listen else {
            return Ok(Live::default());
        };
        let metrics = Arc::new(Metrics::rebuild(log)?);
        let server = serve(listen, metrics.clone()).await?;
        tracing::info!(addr = %server.addr(), "serving metrics");
        Ok(Live {
            metrics: Some(metrics),
            server: Some(server),
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
    let bind = |source| ServeError::Bind {
        listen: listen.to_owned(),
        source,
    };
    let listener = TcpListener::bind(listen).await.map_err(bind)?;
    let addr = listener.local_addr().map_err(bind)?;
    let task = tokio::spawn(accept_loop(listener, metrics));
    Ok(MetricsServer { addr, task })
}

async fn accept_loop(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let metrics = metrics.clone();
                async move { Ok::<_, Infallible>(respond(&req, &metrics)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn respond<B>(req: &http::Request<B>, metrics: &Metrics) -> http::Response<Full<Bytes>> {
    let (status, content_type, body) = if req.uri().path() == "/metrics" {
        (
            http::StatusCode::OK,
            "text/plain; version=0.0.4",
            Bytes::from(metrics.render()),
        )
    } else {
        (
            http::StatusCode::NOT_FOUND,
            "text/plain",
            Bytes::from_static(b"try /metrics\n"),
        )
    };
    let mut response = http::Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    response
}
