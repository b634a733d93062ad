//! The HTTP/1.1 fast path for the common request: `GET` or `HEAD`, no body, keep-alive.
//!
//! Profiled (BENCHMARKS.md), hyper's path spends most of its user time outside the proxy's
//! own logic: a `HeaderMap` built and torn down on each side, boxed bodies, and for the
//! upstream request a channel and a task hop to the client connection's task and a body
//! channel back, so every request wakes three tasks. Here the client's task does it all:
//! the request head is parsed in place (httparse, as hyper does), the upstream head is
//! written from those slices into one buffer, the response head is parsed likewise and
//! relayed with the first body bytes in one write, and the rest of the body is copied as
//! it arrives.
//!
//! A request with `Connection: close` is served here too, answered with `connection: close`.
//! Anything else hands the connection, with the bytes read so far, to hyper for the rest of
//! its life ([`Handoff`]): other methods, request bodies, upgrades, `Expect`, HTTP/1.0,
//! HTTP/2, absolute-form targets, a missing, repeated or malformed `Host` (hyper's path
//! answers 400), an unknown host (404), paused or maintenance routes, HTTPS redirects,
//! stripped prefixes and ACME challenges; over TLS, connections that negotiated HTTP/2.
//! Decisions and guarantees are the same on both
//! paths: the in-flight guard is taken with the route and held until the body has been
//! sent, the response timeout gives 504, a drained target 502, and metrics count both.
//!
//! Layout: this module reads requests and decides; `response` frames and relays what the
//! upstream answers; `pool` keeps the upstream connections and buffers.

mod pool;
mod response;

use std::io::Write as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;

use crate::body::PROXY_HEADER;
use crate::conns::{Busy, Registered};
use crate::forward::{CHALLENGE_PREFIX, DataPath, host_without_port};
use crate::router::Resolved;
pub use pool::{Buffers, RawPool, UPSTREAM_CONNECTIONS_PER_TARGET};
use response::{BodyLength, Relayed, finish_head, relay_body};

/// Headers parsed per message; a request with more goes to hyper (which allows 100).
const MAX_HEADERS: usize = 64;
/// The largest request or response head read here; a larger request goes to hyper, which
/// answers 431 past its own limit; a larger response is a 502.
const MAX_HEAD: usize = 16 * 1024;
/// Room for the `X-Forwarded-*` headers added to the upstream request head.
const FORWARDING_HEADERS: usize = 160;
/// A client connection's own read buffer, grown only for larger heads: kept small because
/// an idle keep-alive connection holds it (nginx's `client_header_buffer_size` is 1k too).
const CLIENT_BUF: usize = 1024;
/// At shutdown, how long a connection that has not sent its first request yet is still
/// given to send it. Such a connection was accepted in the proxy's last instant (during a
/// listener hand-over, the old proxy's last accept): its client sends the request right
/// after connecting, within a round trip, and has no reason to expect a close before its
/// first answer (issue 11: one connection in ~40,000 was closed that way). 5 s covers slow
/// round trips and a loaded host; a silent connection (a browser's preconnect) delays the
/// end of the drain by at most that.
const FIRST_REQUEST_AT_SHUTDOWN: Duration = Duration::from_secs(5);

/// A client connection's stream, as the fast path reads it.
pub trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send {
    /// Reads what has arrived into `buf`, growing it by [`CLIENT_BUF`] when short of room.
    /// A stream that can wait for bytes without a buffer overrides this to allocate `buf`
    /// only once they are there and to release it while it waits (an idle keep-alive
    /// connection then holds no read buffer).
    fn read_arrived<'a>(
        &'a mut self,
        buf: &'a mut BytesMut,
    ) -> impl Future<Output = std::io::Result<usize>> + Send + 'a {
        async move {
            make_room(buf);
            self.read_buf(buf).await
        }
    }
}

fn make_room(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < CLIENT_BUF / 4 {
        buf.reserve(CLIENT_BUF);
    }
}

impl ClientStream for tokio::net::TcpStream {
    async fn read_arrived(&mut self, buf: &mut BytesMut) -> std::io::Result<usize> {
        std::future::poll_fn(|cx| {
            make_room(buf);
            // `poll_read`, not `try_read`: after a read shorter than the room given, tokio
            // knows the socket drained and forgets its readiness, so waiting for the next
            // request costs no read that would block (with `try_read` it cost one more
            // `recvfrom` per request, issue 18).
            let read = tokio_util::io::poll_read_buf(Pin::new(&mut *self), cx, buf);
            // Waiting: without the buffer if it holds nothing (the task is polled again only
            // once the socket is readable, and allocates it then).
            if read.is_pending() && buf.is_empty() {
                *buf = BytesMut::new();
            }
            read
        })
        .await
    }
}

/// rustls may hold decrypted bytes the socket no longer shows as readable: read at once.
impl<S: AsyncRead + AsyncWrite + Unpin + Send> ClientStream for tokio_rustls::server::TlsStream<S> {}

/// A connection the fast path does not serve: hyper continues with `read` replayed first.
pub struct Handoff<S> {
    pub stream: S,
    pub read: Bytes,
}

/// Serves requests on `stream` until the client closes, the connection is told to close,
/// or a request is not for this path (`Some(handoff)`).
pub async fn serve<S>(
    data: &DataPath,
    mut stream: S,
    peer: SocketAddr,
    https: bool,
    registered: &Registered,
) -> Option<Handoff<S>>
where
    S: ClientStream,
{
    // Allocated when bytes arrive ([`ClientStream::read_arrived`]); the upstream head is
    // built in `out`, lent by the worker per request: idle connections hold neither.
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    // No request served yet: at shutdown, the first one is still awaited and answered.
    let mut first = true;
    loop {
        if registered.token.is_cancelled() && (!first || registered.activity.killed()) {
            return None;
        }
        let (len, forward) = loop {
            if !buf.is_empty() {
                if out.capacity() == 0 {
                    out = data.buffers.take_head();
                }
                match plan(data, &buf, peer, https, &mut out) {
                    Parsed::Forward(len, forward) => break (len, forward),
                    Parsed::Partial if buf.len() < MAX_HEAD => {}
                    Parsed::Partial | Parsed::NotOurs => {
                        return Some(Handoff {
                            stream,
                            read: buf.freeze(),
                        });
                    }
                }
            }
            let read = tokio::select! {
                r = stream.read_arrived(&mut buf) => r,
                () = told_to_close(registered, first) => return None,
            };
            if !matches!(read, Ok(n) if n > 0) {
                return None;
            }
        };
        buf.advance(len);
        first = false;
        let busy = Busy::start(&registered.activity);
        // Idle connections hold no upstream buffer: it is lent for the exchange only.
        let mut upstream_buf = data.buffers.take();
        // Boxed: the exchange's state (upstream connect, relay) is most of a connection
        // task's size, and an idle connection need not hold it (3.5 KB against 1.2 KB per
        // task in a debug build). One allocation per request.
        let keep_open = Box::pin(exchange(
            data,
            &mut stream,
            forward,
            &mut out,
            &mut upstream_buf,
            registered,
        ))
        .await;
        data.buffers.give_back(upstream_buf);
        data.buffers.give_back_head(std::mem::take(&mut out));
        drop(busy);
        if !keep_open {
            let _ = stream.shutdown().await;
            return None;
        }
    }
}

/// Resolves when the connection is to close rather than wait for more of a request: when the
/// sweeper or a reclaim closes it, or at shutdown; at shutdown a connection that has not had
/// its `first` request yet still gets [`FIRST_REQUEST_AT_SHUTDOWN`] to send it.
async fn told_to_close(registered: &Registered, first: bool) {
    registered.token.cancelled().await;
    if first && !registered.activity.killed() {
        tokio::time::sleep(FIRST_REQUEST_AT_SHUTDOWN).await;
    }
}

/// Room for a message's headers, left uninitialised: httparse writes each one it parses
/// before it is read. `[EMPTY_HEADER; 64]` wrote 2 KB per parse, twice per request (the
/// request and the response): about 600 instructions (callgrind, issue 18).
fn uninit_headers<'b>() -> [std::mem::MaybeUninit<httparse::Header<'b>>; MAX_HEADERS] {
    [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS]
}

/// What the buffered bytes hold.
enum Parsed {
    /// A complete request head of this many bytes, for this path; its upstream head is in
    /// the `out` buffer given to [`plan`].
    Forward(usize, Forward),
    /// Not a complete head yet.
    Partial,
    /// A request for hyper, or bytes that are not HTTP/1.1.
    NotOurs,
}

/// A request the fast path forwards.
struct Forward {
    resolved: Resolved,
    head_request: bool,
    /// The client sent `Connection: close`: this is its last request on the connection.
    client_close: bool,
}

/// Parses the request head at the start of `bytes` and decides whether it is ours; if so,
/// writes the upstream request head into `out`.
fn plan(data: &DataPath, bytes: &[u8], peer: SocketAddr, https: bool, out: &mut Vec<u8>) -> Parsed {
    let mut headers = uninit_headers();
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(bytes, &mut headers) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::NotOurs,
    };
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return Parsed::NotOurs;
    };
    let head_request = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Parsed::NotOurs,
    };
    if !target.starts_with('/') || target.starts_with(CHALLENGE_PREFIX) {
        return Parsed::NotOurs;
    }
    let mut host = None;
    let mut client_close = false;
    let mut client_xff = None;
    let (mut client_xfp, mut client_xfh) = (false, false);
    for h in req.headers.iter() {
        let name = h.name;
        // Matched by length first: most names have none of these lengths.
        match name.len() {
            4 if named(name, "host") => {
                if host.is_some() {
                    return Parsed::NotOurs;
                }
                host = Some(h.value);
            }
            10 if named(name, "connection") => {
                // `keep-alive` or `close` (clients that make one request per connection, as
                // on new TLS connections); anything naming other hop-by-hop headers goes to
                // hyper.
                let value = h.value.trim_ascii();
                if value.eq_ignore_ascii_case(b"close") {
                    client_close = true;
                } else if !value.eq_ignore_ascii_case(b"keep-alive") {
                    return Parsed::NotOurs;
                }
            }
            2 | 6 | 7 | 14 | 17
                if ["te", "expect", "upgrade", "trailer", "content-length"]
                    .iter()
                    .chain(&["transfer-encoding"])
                    .any(|n| named(name, n)) =>
            {
                return Parsed::NotOurs;
            }
            15 if named(name, "x-forwarded-for") => client_xff = client_xff.or(Some(h.value)),
            17 if named(name, "x-forwarded-proto") => client_xfp = true,
            16 if named(name, "x-forwarded-host") => client_xfh = true,
            _ => {}
        }
    }
    let Some(host) = host
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::trim)
        .and_then(host_without_port)
    else {
        return Parsed::NotOurs;
    };
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    let Some(resolved) = data.router.resolve(&host, path) else {
        return Parsed::NotOurs;
    };
    let route = &resolved.route;
    let spec = &route.spec;
    if route.gate.is_paused()
        || route.maintenance.is_some()
        || (spec.redirect_https && !https)
        || (spec.strip_prefix && spec.path_prefix.is_some())
    {
        return Parsed::NotOurs;
    }

    let trust = spec.forward_headers;
    out.clear();
    // The request head less hop-by-hop headers, plus the forwarding headers: one allocation.
    out.reserve(len + FORWARDING_HEADERS);
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    // Hop-by-hop headers and the forwarding headers replaced below are left out. Matched
    // by length first: most names have none of these lengths.
    copy_headers(out, bytes, req.headers, len, |name| {
        let left_out = match name.len() {
            10 => named(name, "connection") || named(name, "keep-alive"),
            15 => named(name, "x-forwarded-for"),
            16 => named(name, "proxy-connection") || (!trust && named(name, "x-forwarded-host")),
            17 => !trust && named(name, "x-forwarded-proto"),
            18 => named(name, "proxy-authenticate"),
            19 => named(name, "proxy-authorization"),
            _ => false,
        };
        !left_out
    });
    out.extend_from_slice(b"x-forwarded-for: ");
    if let (true, Some(prior)) = (trust, client_xff) {
        out.extend_from_slice(prior);
        out.extend_from_slice(b", ");
    }
    push_ip(out, peer.ip());
    out.extend_from_slice(b"\r\n");
    if !(trust && client_xfp) {
        out.extend_from_slice(if https {
            b"x-forwarded-proto: https\r\n"
        } else {
            b"x-forwarded-proto: http\r\n"
        });
    }
    if !(trust && client_xfh) {
        out.extend_from_slice(b"x-forwarded-host: ");
        out.extend_from_slice(host.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Parsed::Forward(
        len,
        Forward {
            resolved,
            head_request,
            client_close,
        },
    )
}

/// Appends the lines of `headers` (parsed from `head`, a complete head of `head_len` bytes)
/// whose name `keep` accepts. Lines are copied as they arrived, each run of kept lines in one
/// copy: writing `name`, `: `, the value and CRLF separately cost four small copies per
/// header (callgrind, issue 18). A head with a line ending in a bare LF (httparse accepts
/// them) is written out header by header instead, with CRLF.
fn copy_headers(
    out: &mut Vec<u8>,
    head: &[u8],
    headers: &[httparse::Header<'_>],
    head_len: usize,
    mut keep: impl FnMut(&str) -> bool,
) {
    let start = out.len();
    // Whether the line before `at` ends with CRLF.
    let crlf_before =
        |at: usize| at.checked_sub(2).and_then(|from| head.get(from..at)) == Some(b"\r\n");
    // The header section ends at `end`, before the final empty line.
    let end = head_len.saturating_sub(2);
    let mut whole = crlf_before(head_len) && (headers.is_empty() || crlf_before(end));
    let mut run: Option<usize> = None;
    for h in headers {
        if !whole {
            break;
        }
        // Where the header's line starts: its name is a slice of `head`.
        let at = (h.name.as_ptr() as usize).wrapping_sub(head.as_ptr() as usize);
        whole = at <= end && crlf_before(at);
        match (keep(h.name), run) {
            (true, None) => run = Some(at),
            (false, Some(from)) if whole => {
                // httparse hands the headers out in order, so `from..at` is a range of
                // `head`; were it not, the head is written header by header below.
                match head.get(from..at) {
                    Some(lines) => out.extend_from_slice(lines),
                    None => whole = false,
                }
                run = None;
            }
            _ => {}
        }
    }
    if let (true, Some(from)) = (whole, run) {
        match head.get(from..end) {
            Some(lines) => out.extend_from_slice(lines),
            None => whole = false,
        }
    }
    if whole {
        return;
    }
    out.truncate(start);
    for h in headers.iter().filter(|h| keep(h.name)) {
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
}

/// Whether the header name `name` is `lower`, ignoring case; `lower` is made of lower-case
/// ASCII letters and `-` only. Setting bit 0x20 of each byte lower-cases letters and leaves
/// `-` as it is; of the bytes a header name may hold (httparse checks they are token
/// characters), only the letter's two cases map to a letter and only `-` to `-`. Eight bytes
/// at a time: `eq_ignore_ascii_case`, a byte loop, cost about 450 instructions per request
/// here (callgrind, issue 18).
#[inline]
fn named(name: &str, lower: &str) -> bool {
    let (name, lower) = (name.as_bytes(), lower.as_bytes());
    if name.len() != lower.len() {
        return false;
    }
    let word = |b: &[u8]| {
        let mut w = [0u8; 8];
        w[..b.len()].copy_from_slice(b);
        u64::from_le_bytes(w)
    };
    name.chunks(8)
        .zip(lower.chunks(8))
        .all(|(n, l)| word(n) | 0x2020_2020_2020_2020 == word(l) | 0x2020_2020_2020_2020)
}

/// Appends `ip` as text. IPv4 by hand: `core::fmt` cost about 1,000 instructions per
/// request here, 6 % of the connection task's (callgrind, issue 18).
fn push_ip(out: &mut Vec<u8>, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_decimal(out, u16::from(octet));
            }
        }
        // Writing into a Vec cannot fail.
        std::net::IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// Appends `n` in decimal, without leading zeros.
fn push_decimal(out: &mut Vec<u8>, n: u16) {
    let mut digits = [0u8; 5];
    let mut rest = n;
    let mut start = digits.len();
    loop {
        start -= 1;
        // A digit: `rest % 10` fits in a u8.
        digits[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

/// Forwards one request (its upstream head in `head`, where the client's response head is
/// then built) and relays the response; returns whether the client connection stays open.
async fn exchange<S>(
    data: &DataPath,
    client: &mut S,
    forward: Forward,
    head: &mut Vec<u8>,
    buf: &mut BytesMut,
    registered: &Registered,
) -> bool
where
    S: AsyncWrite + Unpin,
{
    let Forward {
        resolved,
        head_request,
        client_close,
    } = forward;
    // Borrowed, not cloned: every `Arc` clone and drop here would write a reference count
    // that both workers' threads write too (issue 18).
    let route = &*resolved.route;
    let target = &*route.target;
    let method = if head_request {
        http::Method::HEAD
    } else {
        http::Method::GET
    };
    let started = Instant::now();
    let timeout = Duration::from_millis(route.spec.response_timeout_ms);
    let pooled = data.raw.target(&target.addr);
    let sent = tokio::select! {
        // From `started` rather than a clock read of its own (as a pooled connection's age).
        r = tokio::time::timeout_at(started + timeout, data.raw.request(&pooled, &target.addr, started, head, buf, head_request)) => r,
        () = target.cancelled() => {
            let keep = write_proxy_response(client, 502, "drained", "request cancelled: target drained\n").await;
            route.metrics.observe(&method, 502, started.elapsed());
            return keep;
        }
    };
    let (mut upstream, response) = match sent {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::warn!(service = %route.spec.name, target = %target.addr, error = %e, "upstream request failed");
            let text = format!("upstream {} failed\n", target.addr);
            route.metrics.observe(&method, 502, started.elapsed());
            return write_proxy_response(client, 502, "upstream-error", &text).await;
        }
        Err(_) => {
            let text = format!(
                "upstream gave no response within {}ms\n",
                timeout.as_millis()
            );
            route.metrics.observe(&method, 504, started.elapsed());
            return write_proxy_response(client, 504, "upstream-timeout", &text).await;
        }
    };
    // At shutdown the client is told this is the last response on the connection.
    let closing = registered.token.is_cancelled();
    let close = closing || client_close || response.body == BodyLength::UntilClose;
    finish_head(head, close);
    buf.advance(response.head_len);
    route
        .metrics
        .observe(&method, response.status, started.elapsed());
    // The request stays counted against its target until its body has been read.
    let held = Held::new(resolved);
    let relayed = relay_body(client, &mut upstream.stream, buf, head, response.body, held).await;
    match relayed {
        Relayed::Complete { reusable } => {
            if reusable && response.keep_alive {
                upstream.put();
            }
            !close
        }
        Relayed::Failed => false,
    }
}

/// A forwarded request's hold on its route until its body has been read: counted against
/// its target (for the drain) and in the route's in-flight gauge.
pub(super) struct Held(Resolved);

impl Held {
    fn new(resolved: Resolved) -> Self {
        resolved.route.metrics.in_flight_gauge().inc();
        Self(resolved)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.route.metrics.in_flight_gauge().dec();
    }
}

/// Writes a short response of the proxy's own; returns whether the connection stays open.
async fn write_proxy_response<S>(client: &mut S, status: u16, reason: &str, text: &str) -> bool
where
    S: AsyncWrite + Unpin,
{
    let phrase = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let mut out = Vec::with_capacity(200 + text.len());
    let _ = write!(
        out,
        "HTTP/1.1 {status} {phrase}\r\n{PROXY_HEADER}: {reason}\r\ncontent-type: text/plain; charset=utf-8\r\ncache-control: no-store\r\ncontent-length: {}\r\n\r\n{text}",
        text.len()
    );
    client.write_all(&out).await.is_ok() && client.flush().await.is_ok()
}

/// A stream that first replays bytes already read from it, for the hand-off to hyper.
pub struct Rewind<S> {
    prefix: Bytes,
    io: S,
}

impl<S> Rewind<S> {
    pub fn new(prefix: Bytes, io: S) -> Self {
        Self { prefix, io }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The upstream gets the client's header lines as sent (spacing included), less the
    /// hop-by-hop and replaced ones wherever they stand, whatever the case of their names;
    /// a head with bare-LF line endings is forwarded with CRLF.
    #[test]
    fn forwarded_request_headers() {
        fn forwarded(head: &[u8], trust: bool) -> String {
            let mut headers = uninit_headers();
            let mut req = httparse::Request::new(&mut []);
            let len = match req.parse_with_uninit_headers(head, &mut headers) {
                Ok(httparse::Status::Complete(n)) => n,
                other => panic!("{other:?}"),
            };
            let mut out = Vec::new();
            copy_headers(&mut out, head, req.headers, len, |name| {
                !(named(name, "connection")
                    || named(name, "x-forwarded-for")
                    || (!trust && named(name, "x-forwarded-proto")))
            });
            String::from_utf8(out).unwrap()
        }
        let head = b"GET / HTTP/1.1\r\nConnection: keep-alive\r\nHost:  a.test \r\nX-Forwarded-Proto: https\r\nAccept: */*\r\nX-FORWARDED-FOR: 1.2.3.4\r\nX-App: 1\r\n\r\n";
        assert_eq!(
            forwarded(head, false),
            "Host:  a.test \r\nAccept: */*\r\nX-App: 1\r\n"
        );
        assert_eq!(
            forwarded(head, true),
            "Host:  a.test \r\nX-Forwarded-Proto: https\r\nAccept: */*\r\nX-App: 1\r\n"
        );
        let bare = b"GET / HTTP/1.1\r\nHost: a.test\nConnection: close\nX-App: 1\n\n";
        assert_eq!(forwarded(bare, false), "Host: a.test\r\nX-App: 1\r\n");
        assert_eq!(forwarded(b"GET / HTTP/1.1\r\n\r\n", false), "");
        let last_dropped = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
        assert_eq!(forwarded(last_dropped, false), "Host: a\r\n");
    }

    /// Header names match whatever their case, and only the name asked for: every token
    /// character at every position is tried against each letter and `-`.
    #[test]
    fn header_names_match_ignoring_case_only() {
        for lower in [
            "te",
            "host",
            "connection",
            "x-forwarded-proto",
            "proxy-authorization",
        ] {
            assert!(named(lower, lower));
            assert!(named(&lower.to_ascii_uppercase(), lower));
            for i in 0..lower.len() {
                for c in (0x21u8..0x7f).filter(|c| !b"\"(),/:;<=>?@[\\]{}".contains(c)) {
                    let mut other = lower.as_bytes().to_vec();
                    other[i] = c;
                    let other = String::from_utf8(other).unwrap();
                    assert_eq!(
                        named(&other, lower),
                        other.eq_ignore_ascii_case(lower),
                        "{other} against {lower}"
                    );
                }
            }
            assert!(!named(&format!("{lower}x"), lower));
        }
    }

    /// The `X-Forwarded-For` address an app sees is the client's address as Rust prints it,
    /// for every IPv4 octet width and for IPv6.
    #[test]
    fn client_address_text() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.255.9",
            "255.255.255.255",
            "192.168.100.1",
            "::1",
            "2001:db8::8a2e:370:7334",
            "::ffff:10.0.0.1",
        ] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            let mut out = b"x".to_vec();
            push_ip(&mut out, ip);
            assert_eq!(out, format!("x{ip}").into_bytes());
        }
    }
}
