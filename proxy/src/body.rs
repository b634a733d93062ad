//! Body types of the data path and the small responses the proxy writes itself.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::target::InFlight;
use crate::upstream::Lease;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Every body the proxy sends, up or down.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// The header on every response the proxy produced itself, naming why.
pub const PROXY_HEADER: &str = "x-flotilla-proxy";

/// A short text response written by the proxy, marked with [`PROXY_HEADER`].
pub fn proxy_response(
    status: http::StatusCode,
    reason: &'static str,
    text: String,
) -> http::Response<ProxyBody> {
    let mut response = http::Response::new(full(text));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(PROXY_HEADER, http::HeaderValue::from_static(reason));
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    response
}

pub fn full(text: impl Into<Bytes>) -> ProxyBody {
    Full::new(text.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn empty() -> ProxyBody {
    full(Bytes::new())
}

/// An upstream response body that keeps its request counted until fully sent,
/// so draining waits for the body too, not only for the headers; at its end the
/// upstream connection goes back to the pool.
pub struct Tracked {
    inner: Incoming,
    lease: Option<Lease>,
    _in_flight: InFlight,
    _gauge: GaugeGuard,
}

impl Tracked {
    pub fn new(inner: Incoming, in_flight: InFlight, gauge: GaugeGuard, lease: Lease) -> Self {
        let mut tracked = Self {
            inner,
            lease: Some(lease),
            _in_flight: in_flight,
            _gauge: gauge,
        };
        // An empty body (204, 304, HEAD) may never be polled.
        if tracked.inner.is_end_stream() {
            tracked.release();
        }
        tracked
    }

    fn release(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.release();
        }
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.release(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.release(),
            // A failed body leaves the connection in an unknown state: it is not reused.
            Poll::Ready(Some(Err(_))) => drop(self.lease.take()),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Decrements the in-flight gauge when the request is done.
#[derive(Debug)]
pub struct GaugeGuard(prometheus::IntGauge);

impl GaugeGuard {
    pub fn new(gauge: prometheus::IntGauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
