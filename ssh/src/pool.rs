//! The connection pool: one connection per host, shared by every command to that host; at
//! most `max_concurrent_starts` handshakes in flight; idle connections closed; a dead
//! connection replaced on next use.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::{Mutex, Semaphore};
use tokio::time::Instant;

use crate::Error;
use crate::connect::{handshake, open_stream};
use crate::session::{Connection, MAX_SESSIONS_PER_CONNECTION, Output, Session};
use crate::settings::{Settings, Target, Via};

/// The idle reaper wakes at half the idle timeout, but never more often than this, so a tiny
/// `pool_idle_timeout` does not turn it into a busy loop.
const MIN_REAP_PERIOD: Duration = Duration::from_secs(1);

/// A pool of SSH connections. Cheap to clone (clones share the connections).
#[derive(Clone, Debug)]
pub struct Pool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    settings: Settings,
    /// One permit per handshake in flight (`sshkit.max_concurrent_starts`).
    starts: Semaphore,
    /// One slot per host; its async lock makes concurrent first uses share one handshake.
    hosts: std::sync::Mutex<HashMap<String, Arc<Mutex<Option<Session>>>>>,
    handshakes: AtomicUsize,
    in_flight: AtomicUsize,
    peak_in_flight: AtomicUsize,
}

/// Counters for progress output and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolStats {
    /// Open connections held by the pool.
    pub connections: usize,
    /// Handshakes completed or attempted since the pool was made.
    pub handshakes: usize,
    /// The most handshakes that were ever in flight at once.
    pub peak_concurrent_handshakes: usize,
}

impl Pool {
    /// A pool with `settings`. When called inside a tokio runtime it also starts the task
    /// that closes idle connections (it ends when the last clone of the pool is dropped).
    pub fn new(settings: Settings) -> Pool {
        let inner = Arc::new(Inner {
            starts: Semaphore::new(settings.max_concurrent_starts),
            settings,
            hosts: std::sync::Mutex::new(HashMap::new()),
            handshakes: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            peak_in_flight: AtomicUsize::new(0),
        });
        if tokio::runtime::Handle::try_current().is_ok() && !inner.settings.idle_timeout.is_zero() {
            tokio::spawn(reap_idle(Arc::downgrade(&inner)));
        }
        Pool { inner }
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// The connection to `host` (a name from deploy.yml), made on first use and reused after;
    /// a connection that died is replaced.
    pub async fn session(&self, host: &str) -> Result<Session, Error> {
        let slot = self.slot(host);
        let mut guard = slot.lock().await;
        if let Some(s) = guard.as_ref()
            && !s.is_closed()
        {
            return Ok(s.clone());
        }
        *guard = None;
        let target = self.inner.settings.target(host)?;
        // The jump host's connection is made before this host's handshake takes its permit,
        // so a chain never waits on itself when the cap is 1.
        let jump = match &target.via {
            Via::Jump(spec) => Some(self.jump_session(spec).await?),
            _ => None,
        };
        let session = self.establish(host, &target, jump).await?;
        *guard = Some(session.clone());
        Ok(session)
    }

    /// Runs `command` on `host`. If the pooled connection turns out dead when the command's
    /// channel is opened (so the command never started), it reconnects and tries once more.
    pub async fn exec(&self, host: &str, command: &str) -> Result<Output, Error> {
        let session = self.session(host).await?;
        match session.exec(command).await {
            Err(e) if e.is_dead_connection() => {
                self.evict(host, &session).await;
                self.session(host).await?.exec(command).await
            }
            other => other,
        }
    }

    /// Closes every pooled connection not in use and unused for at least the idle timeout;
    /// returns how many were closed. The pool's background task calls this periodically.
    pub async fn close_idle(&self) -> usize {
        close_idle(&self.inner).await
    }

    /// Disconnects every pooled connection (sessions still held elsewhere keep theirs).
    pub async fn close(&self) {
        let slots: Vec<_> = self.lock_hosts().drain().map(|(_, s)| s).collect();
        for slot in slots {
            if let Some(s) = slot.lock().await.take() {
                disconnect(&s).await;
            }
        }
    }

    pub fn stats(&self) -> PoolStats {
        let connections = self
            .lock_hosts()
            .values()
            .filter(|s| s.try_lock().map(|g| g.is_some()).unwrap_or(true))
            .count();
        PoolStats {
            connections,
            handshakes: self.inner.handshakes.load(Ordering::Relaxed),
            peak_concurrent_handshakes: self.inner.peak_in_flight.load(Ordering::Relaxed),
        }
    }

    fn lock_hosts(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Mutex<Option<Session>>>>> {
        // A panic while holding this lock cannot leave the map inconsistent (inserts and
        // removals are single calls), so a poisoned lock is still usable.
        self.inner
            .hosts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn slot(&self, host: &str) -> Arc<Mutex<Option<Session>>> {
        self.lock_hosts()
            .entry(host.to_owned())
            .or_default()
            .clone()
    }

    async fn evict(&self, host: &str, dead: &Session) {
        let slot = self.slot(host);
        let mut guard = slot.lock().await;
        if guard
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(&s.conn, &dead.conn))
        {
            *guard = None;
        }
    }

    /// The connection to the last hop of a jump spec (`ProxyJump`: `[user@]host[:port]`, or a
    /// comma-separated chain, each hop reached through the one before). Jump hosts are pooled
    /// under their own keys and connected directly: Kamal's `proxy` settings are for the
    /// fleet's hosts, not for the jump host itself.
    async fn jump_session(&self, spec: &str) -> Result<Session, Error> {
        let mut prev: Option<Session> = None;
        let mut key = String::from("jump");
        for hop in spec.split(',').map(str::trim) {
            key = format!("{key} {hop}");
            let slot = self.slot(&key);
            let mut guard = slot.lock().await;
            if let Some(s) = guard.as_ref()
                && !s.is_closed()
            {
                prev = Some(s.clone());
                continue;
            }
            let mut target = self.inner.settings.jump_target(hop)?;
            if let Some(p) = &prev {
                target.via = Via::Jump(p.host().to_owned());
            }
            let session = self.establish(hop, &target, prev.take()).await?;
            *guard = Some(session.clone());
            prev = Some(session);
        }
        prev.ok_or_else(|| Error::BadJump { spec: spec.into() })
    }

    /// Stream, handshake and authentication for one target, under a handshake permit.
    async fn establish(
        &self,
        name: &str,
        target: &Target,
        jump: Option<Session>,
    ) -> Result<Session, Error> {
        let settings = &self.inner.settings;
        // The semaphore is never closed, so acquiring cannot fail.
        let _permit = self.inner.starts.acquire().await.ok();
        self.inner.handshakes.fetch_add(1, Ordering::Relaxed);
        let now = self.inner.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.inner.peak_in_flight.fetch_max(now, Ordering::SeqCst);
        let result = tokio::time::timeout(settings.handshake_timeout, async {
            let stream = open_stream(settings, target, jump.clone()).await?;
            handshake(settings, target, stream).await
        })
        .await;
        self.inner.in_flight.fetch_sub(1, Ordering::SeqCst);
        let connected = result.map_err(|_| Error::HandshakeTimeout {
            host: name.to_owned(),
            after: settings.handshake_timeout,
        })??;
        if settings.log_level.as_deref() == Some("debug") {
            tracing::info!(host = name, fingerprint = %connected.fingerprint, "ssh connected");
        } else {
            tracing::debug!(host = name, fingerprint = %connected.fingerprint, "ssh connected");
        }
        Ok(Session {
            conn: Arc::new(Connection {
                handle: connected.handle,
                host: name.to_owned(),
                fingerprint: connected.fingerprint,
                last_used: std::sync::Mutex::new(Instant::now()),
                sessions: Arc::new(Semaphore::new(MAX_SESSIONS_PER_CONNECTION)),
                _jump: jump,
            }),
        })
    }
}

async fn disconnect(s: &Session) {
    let _ = s
        .conn
        .handle
        .disconnect(russh::Disconnect::ByApplication, "", "en")
        .await;
}

async fn close_idle(inner: &Inner) -> usize {
    let slots: Vec<_> = inner
        .hosts
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .values()
        .cloned()
        .collect();
    let mut closed = 0;
    for slot in slots {
        // A slot being connected right now is busy, not idle.
        let Ok(mut guard) = slot.try_lock() else {
            continue;
        };
        let idle = guard.as_ref().is_some_and(|s| {
            // Only the pool's own handle left: nobody is using the connection.
            let unused = Arc::strong_count(&s.conn) == 1;
            let since = s
                .conn
                .last_used
                .lock()
                .map(|t| t.elapsed())
                .unwrap_or_default();
            unused && since >= inner.settings.idle_timeout
        });
        if idle && let Some(s) = guard.take() {
            disconnect(&s).await;
            closed += 1;
        }
    }
    closed
}

async fn reap_idle(inner: Weak<Inner>) {
    let period = match inner.upgrade() {
        Some(i) => (i.settings.idle_timeout / 2).max(MIN_REAP_PERIOD),
        None => return,
    };
    loop {
        tokio::time::sleep(period).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        close_idle(&inner).await;
    }
}
