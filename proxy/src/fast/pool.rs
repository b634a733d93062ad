//! The fast path's upstream side: one worker's idle upstream connections and spare buffers,
//! and the exchange of a request head for a response head.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::MAX_HEAD;
use super::response::{Response, parse_response};

/// Upstream read buffer: a typical response head and a small body in one read.
pub(super) const READ_BUF: usize = 8 * 1024;
/// Upstream read buffers kept per worker between requests: enough for the requests in
/// progress at once on a busy worker, few enough that idle memory stays small.
const SPARE_BUFFERS: usize = 64;
/// Idle upstream connections kept per target and worker, as [`crate::upstream`]'s pool.
const MAX_IDLE: usize = 256;
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

    pub(super) fn take(&self) -> BytesMut {
        self.lock()
            .pop()
            .unwrap_or_else(|| BytesMut::with_capacity(READ_BUF))
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

    pub(super) fn put(&self, addr: &str, conn: TcpStream) {
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
    pub(super) async fn request(
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
