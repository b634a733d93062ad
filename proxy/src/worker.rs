//! Data-plane workers: one thread per core, each a single-threaded tokio runtime
//! with its own listening sockets (`SO_REUSEPORT`, so the kernel spreads new
//! connections) and its own upstream connection pool. A request, its upstream
//! connection and their wake-ups stay on one thread, as in nginx's worker
//! processes; measured, this doubled throughput against one shared runtime.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;

use crate::conns::{Busy, ClientCap, ClientTimeouts, Counted, Registered, Registry};
use crate::fast::Rewind;
use crate::forward::DataPath;

/// Pending connections the kernel queues per listening socket.
const BACKLOG: u32 = 1024;
/// How often a connection waiting for a slot in a full worker reclaims idle connections
/// again: the connections that became idle meanwhile are then reclaimable too.
const RECLAIM_WAIT: Duration = Duration::from_secs(1);
/// After a failed accept (out of file descriptors and the like), before the next: backing
/// off lets connections close instead of spinning on the error.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// One worker's listening sockets.
#[derive(Debug)]
pub struct Sockets {
    pub http: std::net::TcpListener,
    pub https: Option<std::net::TcpListener>,
}

/// What every worker shares.
#[derive(Clone)]
pub struct Shared {
    pub data: Arc<DataPath>,
    /// Client connections each worker serves at once (the limit split evenly, like nginx's
    /// `worker_connections`): a shared semaphore could be held by a worker idle on its own
    /// socket while another's queue waits.
    pub connections_per_worker: usize,
    pub tls: Option<TlsAcceptor>,
    /// Cancelled at shutdown: stop accepting.
    pub stop: CancellationToken,
    /// Cancelled right after `stop`: open connections finish their current request and close.
    pub closing: CancellationToken,
    pub grace_period: Duration,
    pub timeouts: ClientTimeouts,
    /// The optional cap on connections per client address, across all workers.
    pub per_client: Option<Arc<ClientCap>>,
}

/// Binds `count` sockets on `addr` with `SO_REUSEPORT`; with port 0 the first picks the port.
/// Must run inside a tokio runtime; the sockets are handed to workers as std listeners.
pub fn bind_reuseport(
    addr: SocketAddr,
    count: usize,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    let mut addr = addr;
    let mut out = Vec::with_capacity(count);
    for _ in 0..count.max(1) {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(true)?;
        socket.bind(addr)?;
        let listener = socket.listen(BACKLOG)?;
        addr = listener.local_addr()?;
        out.push(listener.into_std()?);
    }
    Ok(out)
}

/// Starts worker `id` on its own thread; `done` is dropped when it has stopped.
pub fn spawn(
    id: usize,
    sockets: Sockets,
    shared: Shared,
    done: TaskTrackerToken,
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name(format!("proxy-worker-{id}"))
        .spawn(move || {
            runtime.block_on(run(sockets, shared));
            drop(done);
        })?;
    Ok(())
}

async fn run(sockets: Sockets, shared: Shared) {
    let connections = TaskTracker::new();
    let registry = Registry::new(shared.timeouts);
    let worker = Worker {
        data: Arc::new(shared.data.for_worker()),
        permits: Arc::new(Semaphore::new(shared.connections_per_worker.max(1))),
        connections: connections.clone(),
        registry: Arc::clone(&registry),
        per_client: shared.per_client.clone(),
        first_request: shared.timeouts.first_request,
        stop: shared.stop.clone(),
        closing: shared.closing.clone(),
    };
    // Sweeps until the end of the drain: a connection idle during the drain is closed too.
    let sweeping = CancellationToken::new();
    let sweeper = tokio::spawn(Arc::clone(&registry).sweep_until(sweeping.clone()));
    let mut loops = tokio::task::JoinSet::new();
    match TcpListener::from_std(sockets.http) {
        Ok(l) => {
            loops.spawn(worker.clone().accept_loop(l, None));
        }
        Err(e) => tracing::error!(error = %e, "http listener unusable in worker"),
    }
    if let (Some(https), Some(tls)) = (sockets.https, shared.tls.clone()) {
        match TcpListener::from_std(https) {
            Ok(l) => {
                loops.spawn(worker.clone().accept_loop(l, Some(tls)));
            }
            Err(e) => tracing::error!(error = %e, "https listener unusable in worker"),
        }
    }
    while loops.join_next().await.is_some() {}
    connections.close();
    if tokio::time::timeout(shared.grace_period, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = connections.len(),
            "grace period over; closing the rest"
        );
    }
    sweeping.cancel();
    let _ = sweeper.await;
}

#[derive(Clone)]
struct Worker {
    data: Arc<DataPath>,
    permits: Arc<Semaphore>,
    connections: TaskTracker,
    registry: Arc<Registry>,
    per_client: Option<Arc<ClientCap>>,
    first_request: Duration,
    stop: CancellationToken,
    closing: CancellationToken,
}

impl Worker {
    async fn accept_loop(self, listener: TcpListener, tls: Option<TlsAcceptor>) {
        loop {
            let (stream, peer) = tokio::select! {
                () = self.stop.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                },
            };
            // Slots are taken after accept: a connection over the per-client cap is closed
            // at once, and a full worker closes idle connections to make room.
            let client = match &self.per_client {
                Some(cap) => match cap.admit(peer.ip()) {
                    Some(slot) => Some(slot),
                    None => {
                        tracing::debug!(%peer, "per-client connection cap reached; closed");
                        continue;
                    }
                },
                None => None,
            };
            let Some(permit) = self.slot(peer).await else {
                return;
            };
            let _ = stream.set_nodelay(true);
            let registered = self.registry.register(&self.closing);
            let this = self.clone();
            let tls = tls.clone();
            self.connections.spawn(async move {
                let _held = (permit, client);
                this.connection(stream, peer, tls, registered).await;
            });
        }
    }

    /// A connection slot; when the worker is full, reclaims idle connections and waits for
    /// one to close, as long as it takes (meanwhile newer clients wait in the kernel's
    /// queue, as before the limit). `None` at shutdown.
    async fn slot(&self, peer: SocketAddr) -> Option<OwnedSemaphorePermit> {
        if let Ok(p) = Arc::clone(&self.permits).try_acquire_owned() {
            return Some(p);
        }
        loop {
            let closed = self.registry.reclaim();
            tracing::debug!(%peer, closed, "connection limit reached; reclaiming idle ones");
            let wait =
                tokio::time::timeout(RECLAIM_WAIT, Arc::clone(&self.permits).acquire_owned());
            tokio::select! {
                () = self.stop.cancelled() => return None,
                waited = wait => match waited {
                    Ok(Ok(p)) => return Some(p),
                    Ok(Err(_)) => return None,
                    Err(_) => {}
                },
            }
        }
    }

    async fn connection(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        tls: Option<TlsAcceptor>,
        registered: Registered,
    ) {
        match tls {
            None => {
                // Plain HTTP/1.1 takes the fast path; whatever it does not serve continues
                // on hyper with the bytes already read.
                if let Some(handoff) =
                    crate::fast::serve(&self.data, stream, peer, false, &registered).await
                {
                    let io = Rewind::new(handoff.read, handoff.stream);
                    // Boxed: hyper's connection state would otherwise make every connection task
                    // that large, fast path or not.
                    Box::pin(self.serve(TokioIo::new(io), peer, false, registered)).await;
                }
            }
            // Boxed, as TLS state is large: plain connections' tasks stay small.
            Some(acceptor) => Box::pin(self.tls(stream, peer, acceptor, registered)).await,
        }
    }

    async fn tls(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        acceptor: TlsAcceptor,
        registered: Registered,
    ) {
        let handshake = tokio::time::timeout(self.first_request, acceptor.accept(stream));
        match handshake.await {
            // HTTP/1.1 over TLS takes the fast path too; HTTP/2 (ALPN) goes to hyper.
            Ok(Ok(s)) if s.get_ref().1.alpn_protocol() == Some(b"h2") => {
                Box::pin(self.serve(TokioIo::new(s), peer, true, registered)).await;
            }
            Ok(Ok(s)) => {
                if let Some(handoff) =
                    crate::fast::serve(&self.data, s, peer, true, &registered).await
                {
                    let io = Rewind::new(handoff.read, handoff.stream);
                    Box::pin(self.serve(TokioIo::new(io), peer, true, registered)).await;
                }
            }
            Ok(Err(e)) => tracing::debug!(%peer, error = %e, "tls handshake failed"),
            Err(_) => tracing::debug!(%peer, "tls handshake timed out"),
        }
    }

    async fn serve<I>(&self, io: TokioIo<I>, peer: SocketAddr, https: bool, registered: Registered)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let data = Arc::clone(&self.data);
        let activity = Arc::clone(&registered.activity);
        let service = service_fn(move |req| {
            let data = Arc::clone(&data);
            // Taken before the response exists, so a request the client abandons ends too.
            let busy = Busy::start(&activity);
            async move {
                let response = data.handle(req, peer, https).await;
                Ok::<_, Infallible>(response.map(|body| Counted::new(body, busy)))
            }
        });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // No header read timeout from hyper: the registry's first-request and idle timeouts
        // cover HTTP/1 and HTTP/2 alike without a timer armed per request.
        builder.http1().header_read_timeout(None);
        let conn = builder.serve_connection_with_upgrades(io, service);
        tokio::pin!(conn);
        let ended = tokio::select! {
            r = conn.as_mut() => r,
            () = registered.token.cancelled() => {
                if registered.activity.killed() {
                    // Silent or idle past its timeout, or reclaimed: nothing in progress.
                    tracing::debug!(%peer, "idle connection closed");
                    return;
                }
                // Shutdown: finish the request in progress, then close; idle ones close now.
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = ended {
            tracing::debug!(%peer, error = %e, "connection ended with error");
        }
    }
}
