//! The data path: one client request in, one upstream request out.
//!
//! Order of decisions: ACME challenge, route lookup (404), pause (hold, then 503 or
//! look the route up again), HTTPS redirect, maintenance (503), body limit (413), then forward with
//! the response timeout (504) and the target's drain cancellation (502).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body, Incoming};
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use crate::acme::Challenges;
use crate::body::{self, GaugeGuard, ProxyBody, Tracked, proxy_response};
use crate::fast::{Buffers, RawPool};
use crate::metrics::Metrics;
use crate::router::{Resolved, Router};
use crate::upstream::Pool;

pub(crate) const CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// What every request handler shares.
#[derive(Debug)]
pub struct DataPath {
    pub router: Arc<Router>,
    pub metrics: Metrics,
    pub challenges: Arc<Challenges>,
    pool: Arc<Pool>,
    /// The fast path's upstream connections ([`crate::fast`]).
    pub(crate) raw: RawPool,
    pub(crate) buffers: Buffers,
}

impl DataPath {
    pub fn new(router: Arc<Router>, metrics: Metrics, challenges: Arc<Challenges>) -> Self {
        Self {
            router,
            metrics,
            challenges,
            pool: Pool::new(),
            raw: RawPool::default(),
            buffers: Buffers::default(),
        }
    }

    /// The same routes, metrics and challenges with a connection pool of its own, for one
    /// worker thread: its upstream connections then live on the thread that uses them.
    pub fn for_worker(&self) -> Self {
        Self::new(
            Arc::clone(&self.router),
            self.metrics.clone(),
            Arc::clone(&self.challenges),
        )
    }

    /// Answers one request; never fails, errors become small proxy responses.
    pub async fn handle(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        https: bool,
    ) -> Response<ProxyBody> {
        let path = req.uri().path();
        if let Some(token) = path.strip_prefix(CHALLENGE_PREFIX) {
            return match self.challenges.get(token) {
                Some(key_auth) => Response::new(body::full(key_auth)),
                None => proxy_response(
                    StatusCode::NOT_FOUND,
                    "no-challenge",
                    "unknown acme challenge\n".into(),
                ),
            };
        }
        let (host, forward_host) = match request_host(&req) {
            Ok(h) => h,
            Err(bad) => {
                return proxy_response(StatusCode::BAD_REQUEST, "bad-host", format!("{bad}\n"));
            }
        };
        let no_route = || {
            proxy_response(
                StatusCode::NOT_FOUND,
                "no-route",
                format!("no service for host {host:?}\n"),
            )
        };
        let Some(mut resolved) = self.router.resolve(&host, path) else {
            return no_route();
        };
        if resolved.route.gate.is_paused() {
            // Held requests are not counted against a target, and once released they take
            // the route as it is then: a switch during the pause sends them to the new target.
            let gate = Arc::clone(&resolved.route.gate);
            drop(resolved);
            if !gate.pass().await {
                return proxy_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "paused",
                    "service paused, try again\n".into(),
                );
            }
            match self.router.resolve(&host, req.uri().path()) {
                Some(r) => resolved = r,
                None => return no_route(),
            }
        }
        let route = Arc::clone(&resolved.route);
        let spec = &route.spec;
        if spec.redirect_https && !https {
            let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
            let mut r = proxy_response(
                StatusCode::PERMANENT_REDIRECT,
                "redirect-https",
                String::new(),
            );
            if let Ok(location) = HeaderValue::try_from(format!("https://{host}{pq}")) {
                r.headers_mut().insert(header::LOCATION, location);
            }
            return r;
        }
        if let Some(message) = &route.maintenance {
            return proxy_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "maintenance",
                format!("{message}\n"),
            );
        }
        let too_big = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .is_some_and(|len| len > spec.max_body_bytes);
        if too_big {
            return proxy_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                "request body too large\n".into(),
            );
        }
        let started = Instant::now();
        let method = req.method().clone();
        let response = self
            .forward(req, resolved, peer, https, &host, forward_host)
            .await;
        route
            .metrics
            .observe(&method, response.status().as_u16(), started.elapsed());
        response
    }

    async fn forward(
        &self,
        mut req: Request<Incoming>,
        resolved: Resolved,
        peer: SocketAddr,
        https: bool,
        host: &str,
        forward_host: Option<HeaderValue>,
    ) -> Response<ProxyBody> {
        let route = resolved.route;
        let target = Arc::clone(&route.target);
        let spec = &route.spec;
        let upgrade = is_upgrade(req.headers()).then(|| hyper::upgrade::on(&mut req));
        let (parts, incoming) = req.into_parts();
        let path_and_query = match (&spec.path_prefix, spec.strip_prefix) {
            (Some(prefix), true) => {
                let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
                let rest = pq.strip_prefix(prefix.trim_end_matches('/')).unwrap_or(pq);
                let rest = if rest.starts_with('/') {
                    rest.to_owned()
                } else {
                    format!("/{rest}")
                };
                http::uri::PathAndQuery::try_from(rest).ok()
            }
            _ => parts.uri.path_and_query().cloned(),
        };
        // Origin form (`/path?query`), as HTTP/1.1 sends it to a server.
        let uri = http::Uri::from(
            path_and_query.unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
        );
        let mut headers = parts.headers;
        strip_hop_by_hop(&mut headers, upgrade.is_some());
        set_forwarded(&mut headers, peer, https, host, spec.forward_headers);
        if let Some(v) = forward_host {
            headers.insert(header::HOST, v);
        }
        // Most requests have no body: an empty one costs no allocation and no limit check.
        let body = if incoming.is_end_stream() {
            http_body_util::Empty::new()
                .map_err(|never| match never {})
                .boxed_unsync()
        } else {
            let max = usize::try_from(spec.max_body_bytes).unwrap_or(usize::MAX);
            Limited::new(incoming, max).boxed_unsync()
        };
        let mut upstream = Request::new(body);
        *upstream.method_mut() = parts.method;
        *upstream.uri_mut() = uri;
        *upstream.headers_mut() = headers;

        let timeout = Duration::from_millis(spec.response_timeout_ms);
        let sent = tokio::select! {
            r = tokio::time::timeout(timeout, self.pool.send(&target.authority, upstream)) => r,
            () = target.cancelled() => {
                return proxy_response(StatusCode::BAD_GATEWAY, "drained", "request cancelled: target drained\n".into());
            }
        };
        let (mut response, lease) = match sent {
            Ok(Ok(r)) => r,
            Ok(Err(e)) if is_body_limit(&e) => {
                return proxy_response(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body-too-large",
                    "request body too large\n".into(),
                );
            }
            Ok(Err(e)) => {
                tracing::warn!(service = %spec.name, target = %target.addr, error = %error_chain(&e), "upstream request failed");
                return proxy_response(
                    StatusCode::BAD_GATEWAY,
                    "upstream-error",
                    format!("upstream {} failed\n", target.addr),
                );
            }
            Err(_) => {
                return proxy_response(
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream-timeout",
                    format!(
                        "upstream gave no response within {}ms\n",
                        timeout.as_millis()
                    ),
                );
            }
        };
        let gauge = GaugeGuard::new(route.metrics.in_flight());
        if let (Some(client_side), StatusCode::SWITCHING_PROTOCOLS) = (upgrade, response.status()) {
            let upstream_side = hyper::upgrade::on(&mut response);
            let in_flight = resolved.in_flight;
            tokio::spawn(async move {
                // The upgraded connection is never pooled again: the lease goes with the task.
                let _held = (in_flight, gauge, lease);
                if let (Ok(a), Ok(b)) = (client_side.await, upstream_side.await) {
                    let _ =
                        tokio::io::copy_bidirectional(&mut TokioIo::new(a), &mut TokioIo::new(b))
                            .await;
                }
            });
            let (parts, _) = response.into_parts();
            return Response::from_parts(parts, body::empty());
        }
        let (mut parts, incoming) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers, false);
        let tracked = Tracked::new(incoming, resolved.in_flight, gauge, lease);
        Response::from_parts(parts, tracked.map_err(Into::into).boxed_unsync())
    }
}

/// Why a request names no usable host; answered with 400, as nginx does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum BadHost {
    #[error("request without a Host header")]
    Missing,
    #[error("request with more than one Host header")]
    Duplicate,
    #[error("invalid host in request")]
    Invalid,
}

/// The host a request is for, lower case and without port, for routing; and the `Host`
/// header to send upstream when it is not the client's own one.
///
/// The request target's authority wins (absolute form in HTTP/1.1, `:authority` in HTTP/2)
/// and replaces any `Host` header, so the app sees the host the request was routed by.
/// Otherwise exactly one valid `Host` header is required, except from HTTP/1.0 clients,
/// which may send none and reach the host-less services.
fn request_host<B>(req: &Request<B>) -> Result<(String, Option<HeaderValue>), BadHost> {
    if let Some(authority) = req.uri().authority() {
        // Never forward userinfo (`user@host`): it is not part of a Host header.
        let raw = authority.as_str();
        let raw = raw.rsplit('@').next().unwrap_or(raw);
        let host = host_without_port(raw).ok_or(BadHost::Invalid)?;
        let value = HeaderValue::from_str(raw).map_err(|_| BadHost::Invalid)?;
        return Ok((host, Some(value)));
    }
    let mut values = req.headers().get_all(header::HOST).iter();
    match (values.next(), values.next()) {
        (Some(_), Some(_)) => Err(BadHost::Duplicate),
        (Some(v), None) => {
            let raw = v.to_str().map_err(|_| BadHost::Invalid)?;
            Ok((host_without_port(raw).ok_or(BadHost::Invalid)?, None))
        }
        (None, _) if req.version() <= http::Version::HTTP_10 => Ok((String::new(), None)),
        (None, _) => Err(BadHost::Missing),
    }
}

/// `host[:port]` or `[v6][:port]` in lower case without the port; `None` when malformed.
pub(crate) fn host_without_port(raw: &str) -> Option<String> {
    let (host, port) = if let Some(rest) = raw.strip_prefix('[') {
        let end = rest.find(']')?;
        let port = &rest[end + 1..];
        (
            &raw[..end + 2],
            port.strip_prefix(':').or(port.is_empty().then_some(""))?,
        )
    } else {
        match raw.split_once(':') {
            Some((h, p)) => (h, p),
            None => (raw, ""),
        }
    };
    let host_ok = !host.is_empty()
        && !host.starts_with('.')
        && !host.contains("..")
        && host.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'[' | b']' | b':')
        });
    let port_ok = port.bytes().all(|b| b.is_ascii_digit());
    (host_ok && port_ok).then(|| host.to_ascii_lowercase())
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

/// Removes headers that belong to one hop; keeps `Upgrade` and `Connection: upgrade` for upgrades.
fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Most requests carry none: one pass over the few names present beats nine removals.
    let hop = |n: &HeaderName| {
        [
            header::CONNECTION,
            header::TE,
            header::TRAILER,
            header::TRANSFER_ENCODING,
            header::PROXY_AUTHENTICATE,
            header::PROXY_AUTHORIZATION,
            header::UPGRADE,
        ]
        .contains(n)
            || n.as_str() == "keep-alive"
            || n.as_str() == "proxy-connection"
    };
    if !keep_upgrade && !headers.keys().any(hop) {
        return;
    }
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::try_from(t.trim()).ok())
        .collect();
    for name in listed {
        if !(keep_upgrade && name == header::UPGRADE) {
            headers.remove(name);
        }
    }
    for name in [
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
    headers.remove(header::CONNECTION);
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
}

/// Sets `X-Forwarded-For/-Proto/-Host`; with `trust` the client's own values are kept.
fn set_forwarded(headers: &mut HeaderMap, peer: SocketAddr, https: bool, host: &str, trust: bool) {
    let xff = HeaderName::from_static("x-forwarded-for");
    let xfp = HeaderName::from_static("x-forwarded-proto");
    let xfh = HeaderName::from_static("x-forwarded-host");
    let ip = peer.ip().to_string();
    let for_value = match headers.get(&xff).and_then(|v| v.to_str().ok()) {
        Some(prior) if trust => format!("{prior}, {ip}"),
        _ => ip,
    };
    if let Ok(v) = HeaderValue::try_from(for_value) {
        headers.insert(xff, v);
    }
    if !(trust && headers.contains_key(&xfp)) {
        headers.insert(
            xfp,
            HeaderValue::from_static(if https { "https" } else { "http" }),
        );
    }
    if !(trust && headers.contains_key(&xfh))
        && let Ok(v) = HeaderValue::try_from(host)
    {
        headers.insert(xfh, v);
    }
}

fn is_body_limit(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cause = c.source();
    }
    false
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The client's forwarding headers are replaced unless the service trusts them.
    #[test]
    fn forwarded_headers_replace_or_keep() {
        let peer: SocketAddr = "10.1.2.3:5555".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        let mut replaced = h.clone();
        set_forwarded(&mut replaced, peer, false, "a.test", false);
        assert_eq!(replaced["x-forwarded-for"], "10.1.2.3");
        assert_eq!(replaced["x-forwarded-proto"], "http");
        assert_eq!(replaced["x-forwarded-host"], "a.test");
        set_forwarded(&mut h, peer, false, "a.test", true);
        assert_eq!(h["x-forwarded-for"], "6.6.6.6, 10.1.2.3");
        assert_eq!(h["x-forwarded-proto"], "https");
    }

    /// Hop-by-hop headers, including those named by `Connection`, do not cross the proxy.
    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-app", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-app"));
    }

    /// The routing host comes without its port and in lower case.
    #[test]
    fn host_without_port() {
        let req = Request::get("/")
            .header(header::HOST, "App.Test:8080")
            .body(())
            .unwrap();
        assert_eq!(request_host(&req).unwrap(), ("app.test".into(), None));
    }

    /// The absolute-form target decides the route and becomes the forwarded `Host`;
    /// a request with no, two, or a malformed `Host` is refused, except HTTP/1.0 with none.
    #[test]
    fn host_normalisation() {
        let absolute = Request::get("http://Other.Test:81/x")
            .header(header::HOST, "app.test")
            .body(())
            .unwrap();
        assert_eq!(
            request_host(&absolute).unwrap(),
            (
                "other.test".into(),
                Some(HeaderValue::from_static("Other.Test:81"))
            )
        );
        let twice = Request::get("/")
            .header(header::HOST, "a.test")
            .header(header::HOST, "b.test")
            .body(())
            .unwrap();
        assert_eq!(request_host(&twice), Err(BadHost::Duplicate));
        let none = Request::get("/").body(()).unwrap();
        assert_eq!(request_host(&none), Err(BadHost::Missing));
        let old = Request::get("/")
            .version(http::Version::HTTP_10)
            .body(())
            .unwrap();
        assert_eq!(request_host(&old).unwrap(), (String::new(), None));
        for bad in ["a/b", "a..b", ".a", "a:8o", "[::1", "", "a b"] {
            let req = Request::get("/")
                .header(header::HOST, HeaderValue::from_str(bad).unwrap())
                .body(())
                .unwrap();
            assert_eq!(request_host(&req), Err(BadHost::Invalid), "{bad:?}");
        }
        let v6 = Request::get("/")
            .header(header::HOST, "[::1]:8080")
            .body(())
            .unwrap();
        assert_eq!(request_host(&v6).unwrap().0, "[::1]");
    }
}
