//! The one `/metrics` HTTP server: the scheduler's, the executor's and the proxy's
//! Prometheus endpoints are this loop with their own body.

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;

/// The exposition format the bodies are in (Prometheus text 0.0.4).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";
/// How long to wait after a failed accept (out of file descriptors and the like) before
/// the next: long enough not to spin, short enough that scrapes barely notice.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A header every answer that is not the metrics carries (the proxy marks what it wrote
/// itself with `x-flotilla-proxy`).
pub type ExtraHeader = Option<(http::HeaderName, http::HeaderValue)>;

/// Answers `GET /metrics` on `listener` with `body()` and anything else with 404, until
/// `stop` resolves. Each connection runs in its own task.
pub async fn serve<F, Fut>(
    listener: TcpListener,
    body: F,
    not_found_header: ExtraHeader,
    stop: impl Future<Output = ()>,
) where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Vec<u8>> + Send + 'static,
{
    tokio::pin!(stop);
    loop {
        let stream = tokio::select! {
            () = &mut stop => return,
            a = listener.accept() => match a {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let body = body.clone();
        let header = not_found_header.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let body = body.clone();
                let header = header.clone();
                async move {
                    let metrics = if req.uri().path() == "/metrics" {
                        Some(body().await)
                    } else {
                        None
                    };
                    Ok::<_, Infallible>(respond(metrics, header))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// `Some(metrics)` for `/metrics`, `None` for any other path.
fn respond(metrics: Option<Vec<u8>>, not_found_header: ExtraHeader) -> http::Response<Full<Bytes>> {
    let (status, content_type, body) = match metrics {
        Some(m) => (http::StatusCode::OK, CONTENT_TYPE, Bytes::from(m)),
        None => (
            http::StatusCode::NOT_FOUND,
            "text/plain",
            Bytes::from_static(b"try /metrics\n"),
        ),
    };
    let mut response = http::Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    if status == http::StatusCode::NOT_FOUND
        && let Some((name, value)) = not_found_header
    {
        response.headers_mut().insert(name, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    /// `/metrics` answers the body in Prometheus's text format; any other path is a 404
    /// carrying the caller's marker header (the proxy's `x-flotilla-proxy`); the server stops
    /// when told.
    #[tokio::test]
    async fn serves_metrics_and_marks_its_404s() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let marker = (
            http::HeaderName::from_static("x-flotilla-proxy"),
            http::HeaderValue::from_static("no-route"),
        );
        let server = tokio::spawn(serve(
            listener,
            || async { b"up 1\n".to_vec() },
            Some(marker),
            async {
                let _ = stop_rx.await;
            },
        ));
        let ok = get(addr, "/metrics").await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.contains(CONTENT_TYPE), "{ok}");
        assert!(ok.ends_with("up 1\n"), "{ok}");
        assert!(!ok.contains("x-flotilla-proxy"), "{ok}");
        let missing = get(addr, "/").await;
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        assert!(missing.contains("x-flotilla-proxy: no-route"), "{missing}");
        stop_tx.send(()).unwrap();
        server.await.unwrap();
    }
}
