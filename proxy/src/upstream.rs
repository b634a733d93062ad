//! Keep-alive HTTP/1.1 connections to upstream targets, one pool per worker thread.
//!
//! A connection is leased for one request and comes back to the pool only when
//! the response body has been read to its end ([`Lease::release`]); a body that
//! is abandoned half-way takes its connection with it. A request that could not
//! be written on a pooled connection (the upstream had closed it) is retried
//! once on a fresh connection; one that was written is never retried.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::uri::Authority;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::body::ProxyBody;

/// Idle connections kept per target.
const MAX_IDLE: usize = 256;
/// Idle connections older than this are closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Reaching an upstream failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect to {0}: timed out")]
    ConnectTimeout(Authority),
    #[error("connect to {0}: {1}")]
    Connect(Authority, #[source] std::io::Error),
    #[error("http handshake with {0}: {1}")]
    Handshake(Authority, #[source] hyper::Error),
    #[error("request to {0}: {1}")]
    Request(Authority, #[source] hyper::Error),
}

struct Idle {
    sender: SendRequest<ProxyBody>,
    since: Instant,
}

/// One worker's connections, by target.
#[derive(Default)]
pub struct Pool {
    idle: Mutex<HashMap<Authority, Vec<Idle>>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").finish_non_exhaustive()
    }
}

/// A connection lent for one request; see [`Lease::release`].
pub struct Lease {
    sender: SendRequest<ProxyBody>,
    authority: Authority,
    pool: Arc<Pool>,
}

impl Lease {
    /// Gives the connection back once its response has been read completely.
    pub fn release(self) {
        if self.sender.is_closed() {
            return;
        }
        let mut idle = match self.pool.idle.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        let list = idle.entry(self.authority).or_default();
        if list.len() < MAX_IDLE {
            list.push(Idle {
                sender: self.sender,
                since: Instant::now(),
            });
        }
    }
}

impl Pool {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn take(&self, authority: &Authority) -> Option<SendRequest<ProxyBody>> {
        let mut idle = match self.idle.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        let list = idle.get_mut(authority)?;
        while let Some(conn) = list.pop() {
            if !conn.sender.is_closed() && conn.since.elapsed() < IDLE_TIMEOUT {
                return Some(conn.sender);
            }
        }
        None
    }

    async fn connect(
        &self,
        authority: &Authority,
    ) -> Result<SendRequest<ProxyBody>, UpstreamError> {
        let stream =
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(authority.as_str()))
                .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return Err(UpstreamError::Connect(authority.clone(), e)),
                Err(_) => return Err(UpstreamError::ConnectTimeout(authority.clone())),
            };
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| UpstreamError::Handshake(authority.clone(), e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        Ok(sender)
    }

    /// Sends `request` to `authority` on a pooled or new connection.
    pub async fn send(
        self: &Arc<Self>,
        authority: &Authority,
        request: http::Request<ProxyBody>,
    ) -> Result<(http::Response<Incoming>, Lease), UpstreamError> {
        let mut request = request;
        let mut pooled = self.take(authority);
        loop {
            let fresh = pooled.is_none();
            let mut sender = match pooled.take() {
                Some(s) => s,
                None => self.connect(authority).await?,
            };
            // A pooled connection may still be finishing its previous exchange.
            if let Err(e) = sender.ready().await {
                if fresh {
                    return Err(UpstreamError::Handshake(authority.clone(), e));
                }
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let lease = Lease {
                        sender,
                        authority: authority.clone(),
                        pool: Arc::clone(self),
                    };
                    return Ok((response, lease));
                }
                Err(mut e) => match e.take_message() {
                    // Not written: the pooled connection was closed under us; try a new one.
                    Some(unsent) if !fresh => request = unsent,
                    _ => return Err(UpstreamError::Request(authority.clone(), e.into_error())),
                },
            }
        }
    }
}
