//! The fast path's upstream side: one worker's upstream connections and spare buffers, and
//! the exchange of a request head for a response head.
//!
//! A worker opens at most [`UPSTREAM_CONNECTIONS_PER_TARGET`] connections to one target; a
//! request past that waits for one to come back (nginx's `max_conns` with a queue). Without
//! the cap, 10,000 clients sending at once made a worker open an upstream connection per
//! request in flight: the proxy then held a descriptor per client *and* per upstream request
//! (20,000 under this container's limit of 20,000 open files), and connects failing with
//! `EMFILE` were answered 502 (issue 18: 310 to 10,966 non-2xx per 10 s run).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::MAX_HEAD;
use super::response::{Response, parse_response};

/// Upstream read buffer: a typical response head and a small body in one read.
pub(super) const READ_BUF: usize = 8 * 1024;
/// Upstream read buffers kept per worker between requests: enough for the requests in
/// progress at once on a busy worker, few enough that idle memory stays small.
const SPARE_BUFFERS: usize = 64;
/// The largest head buffer kept spare: a request head with the forwarding headers, or a
/// response head with a small body, fits; at most `SPARE_BUFFERS` of them per worker.
const SPARE_HEAD_MAX: usize = 4 * 1024;
/// Idle upstream connections kept per target and worker, as [`crate::upstream`]'s pool.
const MAX_IDLE: usize = 256;
/// Upstream connections one worker holds open to one target, idle or busy. Far above what an
/// app serves at once (a Rails app's Puma runs a few threads per process), so requests queue
/// here only where they would queue in the app's own accept backlog; low enough that two
/// workers' upstream descriptors (2,048) and 10,000 clients fit in 20,000 open files.
pub const UPSTREAM_CONNECTIONS_PER_TARGET: usize = 1024;
/// Idle upstream connections older than this are closed rather than reused (apps commonly
/// close keep-alive connections after 60 s or more; a stale one costs a retry).
const UPSTREAM_IDLE: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

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

/// One worker's spare upstream read buffers and upstream request heads. Lent per request
/// so that idle connections hold neither, and kept here so that lending one costs no
/// allocation (issue 18: allocating them per request cost ~2 % more instructions).
#[derive(Debug, Default)]
pub struct Buffers {
    reads: Mutex<Vec<BytesMut>>,
    heads: Mutex<Vec<Vec<u8>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(m) => m,
        Err(p) => p.into_inner(),
    }
}

impl Buffers {
    fn lock(&self) -> MutexGuard<'_, Vec<BytesMut>> {
        lock(&self.reads)
    }

    pub(super) fn take(&self) -> BytesMut {
        self.lock()
            .pop()
            .unwrap_or_else(|| BytesMut::with_capacity(READ_BUF))
    }

    /// An empty buffer for an upstream request head, and then the client's response head
    /// (with the first body bytes).
    pub(super) fn take_head(&self) -> Vec<u8> {
        lock(&self.heads).pop().unwrap_or_default()
    }

    pub(super) fn give_back_head(&self, mut head: Vec<u8>) {
        head.clear();
        let mut spare = lock(&self.heads);
        // A head grown for an unusually large request, or by the first bytes of a large
        // body, is not kept: the spare list stays small at idle.
        if spare.len() < SPARE_BUFFERS && head.capacity() <= SPARE_HEAD_MAX {
            spare.push(head);
        }
    }

    pub(super) fn give_back(&self, mut buf: BytesMut) {
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

/// An open upstream connection, holding its place among its target's open connections.
#[derive(Debug)]
pub(super) struct Conn {
    pub(super) stream: TcpStream,
    open: OwnedSemaphorePermit,
    /// Where it goes back to ([`Conn::put`]), without looking the target up again.
    target: Arc<Target>,
}

impl Conn {
    /// Keeps the connection for the next request to its target.
    pub(super) fn put(self) {
        let Self {
            stream,
            open,
            target,
        } = self;
        target.put(Idle { stream, open });
    }
}

/// An idle connection as its target keeps it (without a reference back to the target).
#[derive(Debug)]
struct Idle {
    stream: TcpStream,
    open: OwnedSemaphorePermit,
}

/// One worker's connections to one target.
#[derive(Debug)]
pub(super) struct Target {
    idle: Mutex<Vec<(Idle, Instant)>>,
    /// One permit per connection this worker may hold open to the target.
    open: Arc<Semaphore>,
    /// Signalled when a connection goes back to `idle`, for requests waiting for one.
    returned: Notify,
}

impl Default for Target {
    fn default() -> Self {
        Self {
            idle: Mutex::default(),
            open: Arc::new(Semaphore::new(UPSTREAM_CONNECTIONS_PER_TARGET)),
            returned: Notify::new(),
        }
    }
}

impl Target {
    fn idle(&self) -> MutexGuard<'_, Vec<(Idle, Instant)>> {
        lock(&self.idle)
    }

    /// The most recently returned idle connection that is not too old at `now`.
    fn take(&self, now: Instant) -> Option<Idle> {
        let mut idle = self.idle();
        while let Some((conn, since)) = idle.pop() {
            if now.saturating_duration_since(since) < UPSTREAM_IDLE {
                return Some(conn);
            }
        }
        None
    }

    fn put(&self, conn: Idle) {
        let mut idle = self.idle();
        // While requests wait, every connection is busy and `idle` is (nearly) empty, so
        // the one coming back is kept for them.
        if idle.len() < MAX_IDLE {
            idle.push((conn, Instant::now()));
            drop(idle);
            self.returned.notify_one();
        }
    }

    /// An idle connection (`true`: reused), or a new one while under the cap, or else the
    /// first connection to come back or place to free up.
    async fn acquire(self: &Arc<Self>, addr: &str, now: Instant) -> Result<(Conn, bool), RawError> {
        let mut now = now;
        loop {
            let returned = self.returned.notified();
            tokio::pin!(returned);
            // Registered before looking, so a connection returned meanwhile is not missed.
            returned.as_mut().enable();
            if let Some(Idle { stream, open }) = self.take(now) {
                let target = Arc::clone(self);
                return Ok((
                    Conn {
                        stream,
                        open,
                        target,
                    },
                    true,
                ));
            }
            let open = match Arc::clone(&self.open).try_acquire_owned() {
                Ok(open) => open,
                Err(_) => {
                    let waited = tokio::select! {
                        () = returned => None,
                        // The semaphore is never closed (`None` would only look again).
                        open = Arc::clone(&self.open).acquire_owned() => open.ok(),
                    };
                    match waited {
                        Some(open) => open,
                        None => {
                            // After a wait, the idle connections' ages are judged anew.
                            now = Instant::now();
                            continue;
                        }
                    }
                }
            };
            let stream = connect(addr).await?;
            let conn = Conn {
                stream,
                open,
                target: Arc::clone(self),
            };
            return Ok((conn, false));
        }
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

/// One worker's upstream connections for the fast path, by target address.
#[derive(Debug, Default)]
pub struct RawPool {
    /// Looked up on every request: foldhash rather than SipHash (issue 18); the keys are the
    /// configured target addresses.
    targets: Mutex<HashMap<String, Arc<Target>, foldhash::fast::RandomState>>,
}

impl RawPool {
    /// This worker's connections to `addr`.
    pub(super) fn target(&self, addr: &str) -> Arc<Target> {
        let mut targets = lock(&self.targets);
        match targets.get(addr) {
            Some(t) => Arc::clone(t),
            None => Arc::clone(targets.entry(addr.to_owned()).or_default()),
        }
    }

    /// Sends the request head in `head` to `addr` (whose connections `target` holds; idle
    /// ones judged by their age at `now`) and reads the response head into `buf`
    /// (and the client's response head, less its last line, into `head`), on a pooled
    /// connection or a new one. A pooled connection that fails before the first response
    /// byte (the upstream closed it while idle) is dropped and the request sent again on the
    /// next (idle, else new): `GET` and `HEAD` are idempotent, so sending again is safe, and
    /// a new connection's failure is final.
    pub(super) async fn request(
        &self,
        target: &Arc<Target>,
        addr: &str,
        now: Instant,
        head: &mut Vec<u8>,
        buf: &mut BytesMut,
        head_request: bool,
    ) -> Result<(Conn, Response), RawError> {
        loop {
            let (mut conn, reused) = target.acquire(addr, now).await?;
            buf.clear();
            let io = |source| RawError::Io {
                addr: addr.to_owned(),
                source,
            };
            // `head` is replaced only once a whole final response head has arrived, so a
            // retry below still sends the request.
            let result = match conn.stream.write_all(head).await {
                Ok(()) => read_response(&mut conn.stream, buf, head_request, addr, head).await,
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
    head: &mut Vec<u8>,
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
        match parse_response(buf, head_request, head).map_err(|()| malformed())? {
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
