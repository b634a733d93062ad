//! Client connections of one worker: which are open, which are idle, which have overstayed.
//!
//! hyper closes neither a connection that never sends a byte (the protocol sniffing of its
//! `auto` server waits for ever) nor an HTTP/2 connection that sends only its preface, so
//! each worker keeps a registry of its connections and a sweeper task that closes:
//! - a connection that has not started a request within [`ClientTimeouts::first_request`] of
//!   being accepted (silent, slow TLS handshake, HTTP/2 preface only, slowloris headers);
//! - a connection that has had no request in progress for [`ClientTimeouts::idle`]
//!   (keep-alive HTTP/1.1 and HTTP/2 alike, and headers trickled in after the first request).
//!
//! This also replaces hyper's HTTP/1 header read timeout, which arms a boxed timer per
//! request: here the per-request cost is two relaxed atomic increments and one decrement,
//! and time is read only by the sweeper. When a worker runs out of connection slots, [`Registry::reclaim`]
//! closes its longest-idle connections, as nginx closes idle keep-alive connections when it
//! runs short, so idle sockets cannot keep real requests out.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// nginx's `client_header_timeout` is 60 s; a client that connects on purpose sends its
/// request (or finishes its TLS handshake and sends it) within a few round trips, so 10 s
/// is generous for real clients and short for sockets held open to exhaust the proxy.
pub const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// nginx's `keepalive_timeout` is 75 s; browsers keep idle connections for about 60 s, so
/// a connection idle longer than that is not going to be reused by them anyway.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections closed at once when a worker is out of slots: enough to admit a burst of
/// new clients, few enough that legitimate keep-alive clients mostly keep theirs.
const RECLAIM_BATCH: usize = 64;
/// A keep-alive connection is reclaimed only once idle this long: a client with more to
/// ask reuses its connection within milliseconds. A connection that never sent a request
/// is reclaimed at any age, oldest first: it holds a slot without having asked anything.
const RECLAIM_AFTER: Duration = Duration::from_secs(1);
/// The sweeper looks at every connection this many times per (shorter) timeout, so a
/// connection is closed at most a quarter of the timeout late.
const SWEEPS_PER_TIMEOUT: u32 = 4;
/// No sweep more often than this, however short the timeouts (tests use short ones).
const MIN_SWEEP: Duration = Duration::from_millis(20);

/// How long client connections may stay silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientTimeouts {
    /// From accept to the first request's headers (TLS handshake included).
    pub first_request: Duration,
    /// With no request in progress, from the end of the last request to the close.
    pub idle: Duration,
}

impl Default for ClientTimeouts {
    fn default() -> Self {
        Self {
            first_request: FIRST_REQUEST_TIMEOUT,
            idle: IDLE_TIMEOUT,
        }
    }
}

/// What a connection did, counted by its task and read by the sweeper.
#[derive(Debug, Default)]
pub struct Activity {
    /// Requests whose headers were read.
    started: AtomicU64,
    /// Requests whose response has not been sent completely.
    active: AtomicUsize,
    /// Set before the connection's token is cancelled by the sweeper or a reclaim: close
    /// now, rather than finish the current request as at shutdown.
    killed: AtomicBool,
}

impl Activity {
    /// Whether the connection was told to close at once.
    pub fn killed(&self) -> bool {
        self.killed.load(Ordering::Relaxed)
    }
}

struct Entry {
    activity: Arc<Activity>,
    token: CancellationToken,
    accepted: Instant,
    /// `started` at the last sweep that saw a change.
    seen: u64,
    quiet_since: Instant,
}

impl Entry {
    fn kill(&self) {
        self.activity.killed.store(true, Ordering::Relaxed);
        self.token.cancel();
    }

    fn idle(&self) -> bool {
        self.activity.active.load(Ordering::Relaxed) == 0
    }
}

/// One worker's open client connections.
pub struct Registry {
    entries: Mutex<HashMap<u64, Entry>>,
    next: AtomicU64,
    timeouts: ClientTimeouts,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
    }
}

/// A connection's place in the registry; leaving it (drop) removes the entry.
pub struct Registered {
    registry: Arc<Registry>,
    id: u64,
    pub activity: Arc<Activity>,
    /// Cancelled at shutdown (finish the current request, then close) or by the sweeper
    /// (close now: see [`Activity::killed`]).
    pub token: CancellationToken,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
    }
}

impl Registry {
    pub fn new(timeouts: ClientTimeouts) -> Arc<Self> {
        Arc::new(Self {
            entries: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
            timeouts,
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Entry>> {
        match self.entries.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        }
    }

    /// Open connections.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Registers a connection accepted now; its token is a child of `closing`.
    pub fn register(self: &Arc<Self>, closing: &CancellationToken) -> Registered {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let activity = Arc::new(Activity::default());
        let token = closing.child_token();
        let now = Instant::now();
        self.lock().insert(
            id,
            Entry {
                activity: Arc::clone(&activity),
                token: token.clone(),
                accepted: now,
                seen: 0,
                quiet_since: now,
            },
        );
        Registered {
            registry: Arc::clone(self),
            id,
            activity,
            token,
        }
    }

    /// Closes the connections that have overstayed a timeout at `now`.
    fn sweep(&self, now: Instant) {
        let timeouts = self.timeouts;
        for entry in self.lock().values_mut() {
            let started = entry.activity.started.load(Ordering::Relaxed);
            if started == 0 {
                if now.duration_since(entry.accepted) >= timeouts.first_request {
                    entry.kill();
                }
                continue;
            }
            if !entry.idle() || started != entry.seen {
                entry.seen = started;
                entry.quiet_since = now;
            } else if now.duration_since(entry.quiet_since) >= timeouts.idle {
                entry.kill();
            }
        }
    }

    /// Runs the sweeper until `stop` is cancelled.
    pub async fn sweep_until(self: Arc<Self>, stop: CancellationToken) {
        let shorter = self.timeouts.first_request.min(self.timeouts.idle);
        let every = (shorter / SWEEPS_PER_TIMEOUT).max(MIN_SWEEP);
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                now = ticks.tick() => self.sweep(now),
            }
        }
    }

    /// Closes up to [`RECLAIM_BATCH`] connections with no request in progress: first those
    /// that never sent one, then keep-alive ones idle for [`RECLAIM_AFTER`], the longest
    /// idle first; returns how many were told to close.
    pub fn reclaim(&self) -> usize {
        let now = Instant::now();
        let entries = self.lock();
        let mut idle: Vec<(bool, Instant, u64)> = entries
            .iter()
            .filter(|(_, e)| e.idle() && !e.activity.killed())
            .filter_map(|(id, e)| {
                let started = e.activity.started.load(Ordering::Relaxed);
                if started == 0 {
                    Some((false, e.accepted, *id))
                } else {
                    let quiet =
                        started == e.seen && now.duration_since(e.quiet_since) >= RECLAIM_AFTER;
                    quiet.then_some((true, e.quiet_since, *id))
                }
            })
            .collect();
        idle.sort_unstable();
        let mut closed = 0;
        for (_, _, id) in idle.into_iter().take(RECLAIM_BATCH) {
            if let Some(e) = entries.get(&id) {
                e.kill();
                closed += 1;
            }
        }
        closed
    }
}

/// Marks one request in progress on its connection until dropped (with the response body).
#[derive(Debug)]
pub struct Busy(Arc<Activity>);

impl Busy {
    pub fn start(activity: &Arc<Activity>) -> Self {
        activity.started.fetch_add(1, Ordering::Relaxed);
        activity.active.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(activity))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request marked in progress until hyper is done with it.
pub struct Counted<B> {
    inner: B,
    _busy: Busy,
}

impl<B> Counted<B> {
    pub fn new(inner: B, busy: Busy) -> Self {
        Self { inner, _busy: busy }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Counted<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The optional cap on connections from one client address, shared by all workers.
#[derive(Debug)]
pub struct ClientCap {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection counted against its client's cap until dropped.
#[derive(Debug)]
pub struct ClientSlot {
    cap: Arc<ClientCap>,
    ip: IpAddr,
}

impl ClientCap {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            open: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        match self.open.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        }
    }

    /// A slot for one more connection from `ip`, or `None` when it has `max` open already.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<ClientSlot> {
        let mut open = self.lock();
        let count = open.entry(ip).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(ClientSlot {
            cap: Arc::clone(self),
            ip,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.cap.lock();
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeouts() -> ClientTimeouts {
        ClientTimeouts {
            first_request: Duration::from_secs(10),
            idle: Duration::from_secs(60),
        }
    }

    /// A connection that starts no request is closed once the first-request timeout has
    /// passed, and not before.
    #[tokio::test(start_paused = true)]
    async fn no_request_within_the_first_request_timeout_is_closed() {
        let registry = Registry::new(timeouts());
        let closing = CancellationToken::new();
        let silent = registry.register(&closing);
        let served = registry.register(&closing);
        drop(Busy::start(&served.activity));
        tokio::time::advance(Duration::from_secs(9)).await;
        registry.sweep(Instant::now());
        assert!(!silent.token.is_cancelled());
        tokio::time::advance(Duration::from_secs(1)).await;
        registry.sweep(Instant::now());
        assert!(silent.token.is_cancelled() && silent.activity.killed());
        assert!(!served.token.is_cancelled());
    }

    /// A keep-alive connection is closed once it has had no request for the idle timeout,
    /// never while a request on it is in progress, however long that takes.
    #[tokio::test(start_paused = true)]
    async fn idle_connections_close_busy_ones_do_not() {
        let registry = Registry::new(timeouts());
        let closing = CancellationToken::new();
        let idle = registry.register(&closing);
        let busy = registry.register(&closing);
        drop(Busy::start(&idle.activity));
        let slow = Busy::start(&busy.activity);
        registry.sweep(Instant::now());
        tokio::time::advance(Duration::from_secs(59)).await;
        registry.sweep(Instant::now());
        assert!(!idle.token.is_cancelled());
        tokio::time::advance(Duration::from_secs(1)).await;
        registry.sweep(Instant::now());
        assert!(idle.token.is_cancelled());
        assert!(!busy.token.is_cancelled());
        drop(slow);
        registry.sweep(Instant::now());
        tokio::time::advance(Duration::from_secs(60)).await;
        registry.sweep(Instant::now());
        assert!(busy.token.is_cancelled());
    }

    /// Out of slots, the worker closes connections that never sent a request, then
    /// keep-alive connections idle for a while, and leaves those with a request in progress
    /// or just served alone; shutdown is not a kill.
    #[tokio::test(start_paused = true)]
    async fn reclaim_takes_idle_connections_only() {
        let registry = Registry::new(timeouts());
        let closing = CancellationToken::new();
        let busy = registry.register(&closing);
        let _in_progress = Busy::start(&busy.activity);
        let kept_alive = registry.register(&closing);
        drop(Busy::start(&kept_alive.activity));
        registry.sweep(Instant::now());
        let silent: Vec<Registered> = (0..RECLAIM_BATCH + 1)
            .map(|_| registry.register(&closing))
            .collect();
        assert_eq!(registry.reclaim(), RECLAIM_BATCH);
        assert!(!busy.token.is_cancelled() && !kept_alive.token.is_cancelled());
        assert_eq!(
            silent.iter().filter(|r| r.token.is_cancelled()).count(),
            RECLAIM_BATCH
        );
        drop(silent);
        assert_eq!(registry.reclaim(), 0, "just served: kept");
        tokio::time::advance(RECLAIM_AFTER).await;
        assert_eq!(registry.reclaim(), 1);
        assert!(kept_alive.token.is_cancelled() && !busy.token.is_cancelled());
        drop(kept_alive);
        assert_eq!(registry.len(), 1);
        closing.cancel();
        assert!(busy.token.is_cancelled() && !busy.activity.killed());
    }

    /// The per-client cap admits up to its number of connections per address and frees a
    /// slot when a connection ends.
    #[test]
    fn client_cap_counts_per_address() {
        let cap = ClientCap::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = cap.admit(a).unwrap();
        let _second = cap.admit(a).unwrap();
        assert!(cap.admit(a).is_none());
        assert!(cap.admit(b).is_some());
        drop(first);
        assert!(cap.admit(a).is_some());
    }
}
