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
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;

use crate::forward::DataPath;

/// Pending connections the kernel queues per listening socket.
const BACKLOG: u32 = 1024;

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
    let worker = Worker {
        data: Arc::new(shared.data.for_worker()),
        permits: Arc::new(Semaphore::new(shared.connections_per_worker.max(1))),
        connections: connections.clone(),
        stop: shared.stop.clone(),
        closing: shared.closing.clone(),
    };
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
}

#[derive(Clone)]
struct Worker {
    data: Arc<DataPath>,
    permits: Arc<Semaphore>,
    connections: TaskTracker,
    stop: CancellationToken,
    closing: CancellationToken,
}

impl Worker {
    async fn accept_loop(self, listener: TcpListener, tls: Option<TlsAcceptor>) {
        loop {
            let permit = tokio::select! {
                () = self.stop.cancelled() => return,
                p = Arc::clone(&self.permits).acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            let (stream, peer) = tokio::select! {
                () = self.stop.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let this = self.clone();
            let tls = tls.clone();
            self.connections.spawn(async move {
                let _permit = permit;
                this.connection(stream, peer, tls).await;
            });
        }
    }

    async fn connection(&self, stream: TcpStream, peer: SocketAddr, tls: Option<TlsAcceptor>) {
        match tls {
            None => self.serve(TokioIo::new(stream), peer, false).await,
            Some(acceptor) => {
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                    Ok(Ok(s)) => self.serve(TokioIo::new(s), peer, true).await,
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "tls handshake failed"),
                    Err(_) => tracing::debug!(%peer, "tls handshake timed out"),
                }
            }
        }
    }

    async fn serve<I>(&self, io: TokioIo<I>, peer: SocketAddr, https: bool)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let data = Arc::clone(&self.data);
        let service = service_fn(move |req| {
            let data = Arc::clone(&data);
            async move { Ok::<_, Infallible>(data.handle(req, peer, https).await) }
        });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(30));
        let conn = builder.serve_connection_with_upgrades(io, service);
        tokio::pin!(conn);
        let ended = tokio::select! {
            r = conn.as_mut() => r,
            () = self.closing.cancelled() => {
                // Finish the request in progress, then close; idle connections close now.
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = ended {
            tracing::debug!(%peer, error = %e, "connection ended with error");
        }
    }
}
