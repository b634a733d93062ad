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
//! Anything else hands the connection, with the bytes read so far, to hyper for the rest of
//! its life ([`Handoff`]): other methods, request bodies, upgrades, `Expect`, HTTP/1.0,
//! HTTP/2, absolute-form targets, a missing, repeated or malformed `Host` (hyper's path
//! answers 400), an unknown host (404), paused or maintenance routes, HTTPS redirects,
//! stripped prefixes and ACME challenges; over TLS, connections that negotiated HTTP/2.
//! Decisions and guarantees are the same on both
//! paths: the in-flight guard is taken with the route and held until the body has been
//! sent, the response timeout gives 504, a drained target 502, and metrics count both.

use std::collections::HashMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::body::{GaugeGuard, PROXY_HEADER};
use crate::conns::{Busy, Registered};
use crate::forward::{CHALLENGE_PREFIX, DataPath, host_without_port};
use crate::router::Resolved;

/// Headers parsed per message; a request with more goes to hyper (which allows 100).
const MAX_HEADERS: usize = 64;
/// The largest request or response head read here; a larger request goes to hyper, which
/// answers 431 past its own limit; a larger response is a 502.
const MAX_HEAD: usize = 16 * 1024;
/// Upstream read buffer: a typical response head and a small body in one read.
const READ_BUF: usize = 8 * 1024;
/// A client connection's own read buffer, grown only for larger heads: kept small because
/// an idle keep-alive connection holds it (nginx's `client_header_buffer_size` is 1k too).
const CLIENT_BUF: usize = 1024;
/// Upstream read buffers kept per worker between requests: enough for the requests in
/// progress at once on a busy worker, few enough that idle memory stays small.
const SPARE_BUFFERS: usize = 64;
/// Idle upstream connections kept per target and worker, as [`crate::upstream`]'s pool.
const MAX_IDLE: usize = 256;
/// Idle upstream connections older than this are closed rather than reused (apps commonly
/// close keep-alive connections after 60 s or more; a stale one costs a retry).
const UPSTREAM_IDLE: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

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
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(CLIENT_BUF);
    let mut out = Vec::new();
    loop {
        if registered.token.is_cancelled() {
            return None;
        }
        let (len, forward) = loop {
            if !buf.is_empty() {
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
            if buf.capacity() - buf.len() < CLIENT_BUF / 4 {
                buf.reserve(CLIENT_BUF);
            }
            let read = tokio::select! {
                r = stream.read_buf(&mut buf) => r,
                () = registered.token.cancelled() => return None,
            };
            if !matches!(read, Ok(n) if n > 0) {
                return None;
            }
        };
        buf.advance(len);
        let busy = Busy::start(&registered.activity);
        // Idle connections hold no upstream buffer: it is lent for the exchange only.
        let mut upstream_buf = data.buffers.take();
        let keep_open = exchange(
            data,
            &mut stream,
            forward,
            &out,
            &mut upstream_buf,
            registered,
        )
        .await;
        data.buffers.give_back(upstream_buf);
        drop(busy);
        if !keep_open {
            let _ = stream.shutdown().await;
            return None;
        }
    }
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
}

/// Parses the request head at the start of `bytes` and decides whether it is ours; if so,
/// writes the upstream request head into `out`.
fn plan(data: &DataPath, bytes: &[u8], peer: SocketAddr, https: bool, out: &mut Vec<u8>) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(bytes) {
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
    let mut client_xff = None;
    let (mut client_xfp, mut client_xfh) = (false, false);
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("host") {
            if host.is_some() {
                return Parsed::NotOurs;
            }
            host = Some(h.value);
        } else if name.eq_ignore_ascii_case("connection") {
            // `close` and anything naming other hop-by-hop headers go to hyper.
            if !h.value.trim_ascii().eq_ignore_ascii_case(b"keep-alive") {
                return Parsed::NotOurs;
            }
        } else if [
            "content-length",
            "transfer-encoding",
            "upgrade",
            "expect",
            "te",
            "trailer",
        ]
        .iter()
        .any(|n| name.eq_ignore_ascii_case(n))
        {
            return Parsed::NotOurs;
        } else if name.eq_ignore_ascii_case("x-forwarded-for") {
            client_xff = client_xff.or(Some(h.value));
        } else if name.eq_ignore_ascii_case("x-forwarded-proto") {
            client_xfp = true;
        } else if name.eq_ignore_ascii_case("x-forwarded-host") {
            client_xfh = true;
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
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for h in req.headers.iter() {
        let name = h.name;
        let hop = ["connection", "keep-alive", "proxy-connection"]
            .iter()
            .chain(&["proxy-authorization", "proxy-authenticate"])
            .any(|n| name.eq_ignore_ascii_case(n));
        let replaced = name.eq_ignore_ascii_case("x-forwarded-for")
            || (!trust
                && (name.eq_ignore_ascii_case("x-forwarded-proto")
                    || name.eq_ignore_ascii_case("x-forwarded-host")));
        if hop || replaced {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    if let (true, Some(prior)) = (trust, client_xff) {
        out.extend_from_slice(prior);
        out.extend_from_slice(b", ");
    }
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{}\r\n", peer.ip());
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
        },
    )
}

/// Forwards one request (its upstream head in `request`) and relays the response; returns
/// whether the client connection stays open.
async fn exchange<S>(
    data: &DataPath,
    client: &mut S,
    forward: Forward,
    request: &[u8],
    buf: &mut BytesMut,
    registered: &Registered,
) -> bool
where
    S: AsyncWrite + Unpin,
{
    let Forward {
        resolved,
        head_request,
    } = forward;
    let route = Arc::clone(&resolved.route);
    let target = Arc::clone(&route.target);
    let method = if head_request {
        http::Method::HEAD
    } else {
        http::Method::GET
    };
    let started = Instant::now();
    let timeout = Duration::from_millis(route.spec.response_timeout_ms);
    let sent = tokio::select! {
        r = tokio::time::timeout(timeout, data.raw.request(&target.addr, request, buf, head_request)) => r,
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
    let gauge = GaugeGuard::new(route.metrics.in_flight());
    // At shutdown the client is told this is the last response on the connection.
    let closing = registered.token.is_cancelled();
    let Ok(head) = response_head(buf, response.head_len, closing) else {
        route.metrics.observe(&method, 502, started.elapsed());
        return write_proxy_response(client, 502, "upstream-error", "bad upstream response\n")
            .await;
    };
    buf.advance(response.head_len);
    route
        .metrics
        .observe(&method, response.status, started.elapsed());
    // The request stays counted against its target until its body has been read.
    let held = (gauge, resolved);
    let relayed = relay_body(client, &mut upstream, buf, head, response.body, held).await;
    match relayed {
        Relayed::Complete { reusable } => {
            if reusable && response.keep_alive {
                data.raw.put(&target.addr, upstream);
            }
            !closing && response.body != BodyLength::UntilClose
        }
        Relayed::Failed => false,
    }
}

/// How the response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyLength {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// What the upstream's response head said.
#[derive(Debug)]
struct Response {
    head_len: usize,
    status: u16,
    body: BodyLength,
    keep_alive: bool,
}

/// Upstream responses are not what was expected.
#[derive(Debug, thiserror::Error)]
pub enum RawError {
    #[error("connect to {addr}: timed out")]
    ConnectTimeout { addr: String },
    #[error("connect to {addr}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("exchange with {addr}")]
    Io {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{addr} closed the connection before responding")]
    Closed { addr: String },
    #[error("{addr} sent a malformed response head")]
    Malformed { addr: String },
}

/// Parses the response head in `bytes`: `Ok(None)` when incomplete.
fn parse_response(bytes: &[u8], head_request: bool) -> Result<Option<Response>, ()> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(()),
    };
    let status = resp.code.ok_or(())?;
    let mut keep_alive = resp.version == Some(1);
    let mut length = None;
    let mut chunked = None;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or(())?;
            if length.is_some_and(|l| l != n) {
                return Err(());
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let last = h.value.rsplit(|b| *b == b',').next().unwrap_or_default();
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|b| *b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if !token.eq_ignore_ascii_case(b"keep-alive") {
                    // Headers named in Connection would have to be removed: let it close.
                    keep_alive = false;
                }
            }
        }
    }
    let body = if head_request || status == 204 || status == 304 || (100..200).contains(&status) {
        BodyLength::None
    } else {
        match (chunked, length) {
            (Some(true), _) => BodyLength::Chunked,
            (Some(false), _) => BodyLength::UntilClose,
            (None, Some(n)) => BodyLength::Length(n),
            (None, None) => BodyLength::UntilClose,
        }
    };
    if body == BodyLength::UntilClose {
        keep_alive = false;
    }
    Ok(Some(Response {
        head_len,
        status,
        body,
        keep_alive,
    }))
}

/// The client's response head from the upstream's in `bytes` (already parsed once):
/// HTTP/1.1, hop-by-hop headers dropped, `connection: close` when closing.
fn response_head(bytes: &[u8], head_len: usize, closing: bool) -> Result<Vec<u8>, ()> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    resp.parse(&bytes[..head_len]).map_err(|_| ())?;
    let code = resp.code.ok_or(())?;
    let mut out = Vec::with_capacity(head_len + 32);
    let _ = write!(out, "HTTP/1.1 {code} {}\r\n", resp.reason.unwrap_or(""));
    let mut until_close = true;
    for h in resp.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("transfer-encoding")
        {
            until_close = false;
        }
        if ["connection", "keep-alive", "proxy-connection"]
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n))
        {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    if closing || (until_close && !(code == 204 || code == 304 || code < 200)) {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(out)
}

enum Relayed {
    /// The body was sent; `reusable` when the upstream sent nothing past it.
    Complete { reusable: bool },
    /// The client or the upstream went away mid-body: close both.
    Failed,
}

/// Sends `head` and the body: what `buf` holds already, then what `upstream` sends.
async fn relay_body<S>(
    client: &mut S,
    upstream: &mut TcpStream,
    buf: &mut BytesMut,
    mut head: Vec<u8>,
    body: BodyLength,
    held: (GaugeGuard, Resolved),
) -> Relayed
where
    S: AsyncWrite + Unpin,
{
    let mut held = Some(held);
    let mut chunks = ChunkScanner::default();
    let mut remaining = match body {
        BodyLength::Length(n) => n,
        _ => 0,
    };
    let mut first = true;
    loop {
        // How much of `buf` belongs to this body, and whether the body ends there.
        let (take, done) = match body {
            BodyLength::None => (0, true),
            BodyLength::Length(_) => {
                let take = usize::try_from(remaining).map_or(buf.len(), |r| r.min(buf.len()));
                remaining -= take as u64;
                (take, remaining == 0)
            }
            BodyLength::Chunked => match chunks.feed(buf) {
                Ok(Some(end)) => (end, true),
                Ok(None) => (buf.len(), false),
                Err(()) => return Relayed::Failed,
            },
            BodyLength::UntilClose => (buf.len(), false),
        };
        if done {
            // As on hyper's path, the request stops counting (in flight, draining) once its
            // body has been read whole, before the last bytes are written to the client.
            drop(held.take());
        }
        let written = if first {
            first = false;
            head.extend_from_slice(&buf[..take]);
            client.write_all(&head).await
        } else {
            client.write_all(&buf[..take]).await
        };
        // TLS streams buffer what they encrypt until flushed; for TCP this does nothing.
        let written = match written {
            Ok(()) => client.flush().await,
            e => e,
        };
        if written.is_err() {
            return Relayed::Failed;
        }
        let extra = buf.len() > take;
        buf.advance(take);
        if done {
            buf.clear();
            return Relayed::Complete { reusable: !extra };
        }
        buf.clear();
        if buf.capacity() < READ_BUF {
            buf.reserve(READ_BUF);
        }
        match upstream.read_buf(buf).await {
            Ok(0) if body == BodyLength::UntilClose => {
                return Relayed::Complete { reusable: false };
            }
            Ok(0) | Err(_) => return Relayed::Failed,
            Ok(_) => {}
        }
    }
}

/// Finds the end of a chunked body as it streams past, without changing it.
#[derive(Debug, Default)]
struct ChunkScanner {
    state: ChunkState,
}

#[derive(Debug, Default, Clone, Copy)]
enum ChunkState {
    /// Reading the hex size; `digits` once one was seen.
    #[default]
    SizeStart,
    Size {
        size: u64,
    },
    /// Chunk extensions (or whitespace) up to the CR.
    Extension {
        size: u64,
    },
    SizeLf {
        size: u64,
    },
    Data {
        left: u64,
    },
    DataCr,
    DataLf,
    /// A trailer line (or the final empty line); `empty` while the line has no byte yet.
    Trailer {
        empty: bool,
    },
    TrailerLf {
        empty: bool,
    },
    Done,
}

impl ChunkScanner {
    /// Scans `bytes`, the body's next bytes; `Ok(Some(n))` when the body ends after `n` of them.
    fn feed(&mut self, bytes: &[u8]) -> Result<Option<usize>, ()> {
        use ChunkState::*;
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            self.state = match self.state {
                SizeStart | Size { .. } => {
                    let size = match self.state {
                        Size { size } => size,
                        _ => 0,
                    };
                    match (b as char).to_digit(16) {
                        Some(d) => Size {
                            size: size
                                .checked_mul(16)
                                .and_then(|s| s.checked_add(u64::from(d)))
                                .ok_or(())?,
                        },
                        None if matches!(self.state, SizeStart) => return Err(()),
                        None if b == b'\r' => SizeLf { size },
                        None if b == b';' || b == b' ' || b == b'\t' => Extension { size },
                        None => return Err(()),
                    }
                }
                Extension { size } => match b {
                    b'\r' => SizeLf { size },
                    b'\n' => return Err(()),
                    _ => Extension { size },
                },
                SizeLf { size } => match (b, size) {
                    (b'\n', 0) => Trailer { empty: true },
                    (b'\n', left) => Data { left },
                    _ => return Err(()),
                },
                Data { left } => {
                    let available = (bytes.len() - i) as u64;
                    let step = left.min(available);
                    // `step` fits: it is at most what is left of `bytes`.
                    i += step as usize;
                    self.state = if step == left {
                        DataCr
                    } else {
                        Data { left: left - step }
                    };
                    continue;
                }
                DataCr if b == b'\r' => DataLf,
                DataLf if b == b'\n' => SizeStart,
                DataCr | DataLf => return Err(()),
                Trailer { empty } => match b {
                    b'\r' => TrailerLf { empty },
                    _ => Trailer { empty: false },
                },
                TrailerLf { empty } => match (b, empty) {
                    (b'\n', true) => Done,
                    (b'\n', false) => Trailer { empty: true },
                    _ => return Err(()),
                },
                Done => return Ok(Some(i)),
            };
            i += 1;
            if matches!(self.state, Done) {
                return Ok(Some(i));
            }
        }
        Ok(None)
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

/// One worker's spare upstream read buffers.
#[derive(Debug, Default)]
pub struct Buffers(Mutex<Vec<BytesMut>>);

impl Buffers {
    fn lock(&self) -> MutexGuard<'_, Vec<BytesMut>> {
        match self.0.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        }
    }

    fn take(&self) -> BytesMut {
        self.lock()
            .pop()
            .unwrap_or_else(|| BytesMut::with_capacity(READ_BUF))
    }

    fn give_back(&self, mut buf: BytesMut) {
        buf.clear();
        // On an empty buffer this reclaims the space consumed at its front; no allocation.
        buf.reserve(READ_BUF);
        let mut spare = self.lock();
        // A buffer grown for an unusually large head is not kept.
        if spare.len() < SPARE_BUFFERS && buf.capacity() <= 2 * MAX_HEAD {
            spare.push(buf);
        }
    }
}

/// One worker's idle upstream connections for the fast path, by target address.
#[derive(Debug, Default)]
pub struct RawPool {
    idle: Mutex<HashMap<String, Vec<(TcpStream, Instant)>>>,
}

impl RawPool {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Vec<(TcpStream, Instant)>>> {
        match self.idle.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        }
    }

    fn take(&self, addr: &str) -> Option<TcpStream> {
        let mut idle = self.lock();
        let list = idle.get_mut(addr)?;
        while let Some((conn, since)) = list.pop() {
            if since.elapsed() < UPSTREAM_IDLE {
                return Some(conn);
            }
        }
        None
    }

    fn put(&self, addr: &str, conn: TcpStream) {
        let mut idle = self.lock();
        let list = match idle.get_mut(addr) {
            Some(l) => l,
            None => idle.entry(addr.to_owned()).or_default(),
        };
        if list.len() < MAX_IDLE {
            list.push((conn, Instant::now()));
        }
    }

    async fn connect(addr: &str) -> Result<TcpStream, RawError> {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                Ok(s)
            }
            Ok(Err(source)) => Err(RawError::Connect {
                addr: addr.to_owned(),
                source,
            }),
            Err(_) => Err(RawError::ConnectTimeout {
                addr: addr.to_owned(),
            }),
        }
    }

    /// Sends `request` to `addr` and reads the response head into `buf`, on a pooled
    /// connection or a new one. A pooled connection that fails before the first response
    /// byte (the upstream closed it while idle) is replaced once: `GET` and `HEAD` are
    /// idempotent, so sending again is safe.
    async fn request(
        &self,
        addr: &str,
        request: &[u8],
        buf: &mut BytesMut,
        head_request: bool,
    ) -> Result<(TcpStream, Response), RawError> {
        let mut pooled = self.take(addr);
        loop {
            let reused = pooled.is_some();
            let mut conn = match pooled.take() {
                Some(c) => c,
                None => Self::connect(addr).await?,
            };
            buf.clear();
            let io = |source| RawError::Io {
                addr: addr.to_owned(),
                source,
            };
            let result = match conn.write_all(request).await {
                Ok(()) => read_response(&mut conn, buf, head_request, addr).await,
                Err(e) => Err(io(e)),
            };
            match result {
                Ok(r) => return Ok((conn, r)),
                Err(_) if reused && buf.is_empty() => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

async fn read_response(
    conn: &mut TcpStream,
    buf: &mut BytesMut,
    head_request: bool,
    addr: &str,
) -> Result<Response, RawError> {
    loop {
        if buf.capacity() - buf.len() < READ_BUF / 4 {
            buf.reserve(READ_BUF);
        }
        match conn.read_buf(buf).await {
            Ok(0) => {
                return Err(RawError::Closed {
                    addr: addr.to_owned(),
                });
            }
            Ok(_) => {}
            Err(source) => {
                return Err(RawError::Io {
                    addr: addr.to_owned(),
                    source,
                });
            }
        }
        let malformed = || RawError::Malformed {
            addr: addr.to_owned(),
        };
        match parse_response(buf, head_request).map_err(|()| malformed())? {
            // Informational responses (103 Early Hints) are dropped: they are optional hints,
            // and a `GET` without `Expect` never waits for a 100.
            Some(r) if (100..200).contains(&r.status) && r.status != 101 => {
                buf.advance(r.head_len);
            }
            Some(r) if r.status == 101 => return Err(malformed()),
            Some(r) => return Ok(r),
            None if buf.len() >= MAX_HEAD => return Err(malformed()),
            None => {}
        }
    }
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

    /// The end of a chunked body is found however the bytes are split, extensions and
    /// trailers included; malformed framing is an error.
    #[test]
    fn chunked_end_is_found_across_reads() {
        let body = b"4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nx-trailer: 1\r\n\r\n";
        for split in 0..body.len() {
            let mut s = ChunkScanner::default();
            let (a, b) = body.split_at(split);
            let end = match s.feed(a).unwrap() {
                Some(n) => n,
                None => split + s.feed(b).unwrap().unwrap(),
            };
            assert_eq!(end, body.len(), "split at {split}");
        }
        let mut s = ChunkScanner::default();
        assert_eq!(s.feed(b"0\r\n\r\nNEXT").unwrap(), Some(5));
        assert!(ChunkScanner::default().feed(b"zz\r\n").is_err());
        assert!(ChunkScanner::default().feed(b"1\r\nab\r\n").is_err());
    }

    /// Response framing: length, chunked, bodiless statuses and HEAD, close-delimited, and
    /// whether the connection may be reused.
    #[test]
    fn response_framing() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false)
            .unwrap()
            .unwrap();
        assert_eq!(
            (r.body, r.keep_alive, r.head_len),
            (BodyLength::Length(5), true, 38)
        );
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.body, BodyLength::Chunked);
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true)
            .unwrap()
            .unwrap();
        assert_eq!(r.body, BodyLength::None);
        let r = parse_response(b"HTTP/1.1 200 OK\r\n\r\n", false)
            .unwrap()
            .unwrap();
        assert_eq!((r.body, r.keep_alive), (BodyLength::UntilClose, false));
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert!(!r.keep_alive);
        assert!(
            parse_response(
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                false
            )
            .is_err()
        );
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent", false)
                .unwrap()
                .is_none()
        );
    }

    /// The client gets HTTP/1.1 with the upstream's headers minus hop-by-hop ones, and is
    /// told the connection closes when the body is close-delimited or the proxy stops.
    #[test]
    fn client_response_head() {
        let up = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\nX-App: 1\r\n\r\n";
        let head = response_head(up, up.len(), false).unwrap();
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-App: 1\r\n\r\n"
        );
        let up = b"HTTP/1.1 200 OK\r\n\r\n";
        let head = response_head(up, up.len(), false).unwrap();
        assert!(
            String::from_utf8(head)
                .unwrap()
                .contains("connection: close")
        );
        let up = b"HTTP/1.1 204 No Content\r\n\r\n";
        let head = String::from_utf8(response_head(up, up.len(), true).unwrap()).unwrap();
        assert!(head.contains("connection: close"));
    }
}
