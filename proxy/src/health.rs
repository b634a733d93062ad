//! Health checks of a new target before it takes traffic.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::spec::HealthCheck;

/// Most of a failed health response's body kept for the error message.
const BODY_SNIPPET: usize = 200;

/// One GET of the health path on a fresh connection: `Ok` on 2xx, otherwise what was seen.
pub async fn check(addr: &str, path: &str, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, check_once(addr, path)).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "GET {path} on {addr} timed out after {}ms",
            timeout.as_millis()
        )),
    }
}

async fn check_once(addr: &str, path: &str) -> Result<(), String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("http handshake with {addr}: {e}"))?;
    tokio::spawn(conn);
    let request = http::Request::get(path)
        .header(http::header::HOST, addr)
        .header(http::header::USER_AGENT, "flotilla-proxy-health")
        .header(http::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("bad health path {path:?}: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("GET {path} on {addr}: {e}"))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body = response
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body[..body.len().min(BODY_SNIPPET)]);
    Err(format!(
        "GET {path} on {addr} answered {status}: {}",
        text.trim()
    ))
}

/// Checks every `interval` until healthy or `deadline`; the error is the last failure seen.
pub async fn wait_healthy(addr: &str, hc: &HealthCheck, deadline: Instant) -> Result<(), String> {
    let timeout = Duration::from_millis(hc.timeout_ms.max(1));
    let interval = Duration::from_millis(hc.interval_ms.max(10));
    let mut last = "no health check fitted in the deploy timeout".to_owned();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(last);
        }
        match check(addr, &hc.path, timeout.min(left)).await {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(last);
        }
        tokio::time::sleep(interval.min(left)).await;
    }
}
