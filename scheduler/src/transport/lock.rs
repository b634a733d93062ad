//! The deploy lock, held in NATS so that every machine deploying the same service sees it.
//!
//! One key per service and destination in the `flotilla-locks` key-value bucket. Taking the
//! lock is an atomic create (or a compare-and-set over an expired lock); holding it is
//! renewing its expiry well before it passes, so a lock whose holder died frees itself. A lock
//! taken by hand (`flotilla lock acquire`) has no expiry. Kamal keeps its lock as a directory
//! on the primary host; this one also works when hosts are many.

use async_nats::jetstream;
use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Asked, answered};

pub use flotilla_protocol::names::lock_key;
pub use flotilla_protocol::subjects::LOCK_BUCKET;

/// Who holds a lock and why, as `flotilla lock status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    pub holder: String,
    pub message: String,
    /// RFC 3339.
    pub acquired_at: String,
    /// The machine the holder runs on.
    pub machine: String,
    pub version: Option<String>,
    /// The deploy holding the lock; resuming that deploy takes the lock over.
    #[serde(default)]
    pub deploy_id: Option<String>,
    /// Milliseconds since the epoch after which the lock is free; `None`: held until released.
    #[serde(default)]
    pub expires_at_ms: Option<i64>,
}

impl LockInfo {
    fn expired(&self, now_ms: i64) -> bool {
        self.expires_at_ms.is_some_and(|t| now_ms >= t)
    }

    /// The same holder, whatever the expiry says (renewals change only that).
    fn same_holder(&self, other: &LockInfo) -> bool {
        LockInfo {
            expires_at_ms: None,
            ..self.clone()
        } == LockInfo {
            expires_at_ms: None,
            ..other.clone()
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "the deploy lock for {key} is held by {} since {} ({:?})",
        .info.holder, .info.acquired_at, .info.message
    )]
    Held { key: String, info: Box<LockInfo> },
    #[error("waited {waited:?} for the deploy lock for {key}; it is still held by {}", .info.holder)]
    WaitTimedOut {
        key: String,
        waited: Duration,
        info: Box<LockInfo>,
    },
    #[error("the deploy lock for {0} was lost (it expired or was released by someone else)")]
    Lost(String),
    #[error("deploy lock bucket")]
    Nats(#[source] super::BoxError),
    #[error("the deploy lock for {key} holds unreadable data")]
    Corrupt {
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

fn nats_err<E: std::error::Error + Send + Sync + 'static>(e: E) -> LockError {
    LockError::Nats(Box::new(e))
}

/// How long one attempt to create or read the lock entry waits for JetStream: it answers in
/// milliseconds, but an attempt sent while the bucket's stream re-elects its leader (a NATS
/// node lost with the last scheduler) is never answered. At the client's 5 s timeout such an
/// attempt held a fleet failover 10 s; given up after this and made again, the take goes
/// through within about an attempt of the re-election.
const LOCK_ATTEMPT: Duration = Duration::from_secs(2);
/// Attempts before the take fails with the last one's error: 3 x 2 s, a little longer than
/// the single 5 s attempt before, so a loaded machine is given no less time.
const LOCK_ATTEMPTS: u32 = 3;

/// Handle on the lock bucket.
#[derive(Clone)]
pub struct Locks {
    kv: kv::Store,
    ttl: Duration,
}

impl std::fmt::Debug for Locks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Locks").field("ttl", &self.ttl).finish()
    }
}

impl Locks {
    /// Opens (creating if needed) the lock bucket. `ttl` is how long a lock taken through this
    /// handle outlives its holder's last renewal.
    pub async fn open(js: &jetstream::Context, ttl: Duration) -> Result<Locks, LockError> {
        // async-nats's `create_key_value` first asks for the account info, whose 2.9 form it
        // cannot parse; creating the bucket's stream directly (the same configuration a KV
        // bucket has) works on 2.9 and later alike.
        let stream = crate::transport::bus::replicated(
            js,
            &flotilla_protocol::subjects::lock_bucket_stream(),
        );
        js.get_or_create_stream(stream).await.map_err(nats_err)?;
        let kv = js.get_key_value(LOCK_BUCKET).await.map_err(nats_err)?;
        Ok(Locks { kv, ttl })
    }

    /// Who holds the lock, if anyone (an expired lock is free).
    pub async fn status(&self, key: &str) -> Result<Option<LockInfo>, LockError> {
        Ok(self
            .current(key)
            .await?
            .map(|(info, _)| info)
            .filter(|i| !i.expired(now_ms())))
    }

    /// The entry under `key`, read in [`LOCK_ATTEMPT`]-long attempts: a read is a direct
    /// get, answered by any replica, so until the cluster notices a lost node some go to it
    /// and are never answered.
    async fn current(&self, key: &str) -> Result<Option<(LockInfo, u64)>, LockError> {
        let read = answered(LOCK_ATTEMPTS, LOCK_ATTEMPT, LOCK_BUCKET, || {
            self.kv.entry(key)
        });
        let Some(entry) = read.await.map_err(nats_err)? else {
            return Ok(None);
        };
        if entry.operation != kv::Operation::Put {
            return Ok(None);
        }
        let info = serde_json::from_slice(&entry.value).map_err(|source| LockError::Corrupt {
            key: key.to_owned(),
            source,
        })?;
        Ok(Some((info, entry.revision)))
    }

    /// Takes the lock now or fails with who holds it. `info.expires_at_ms` is set here.
    pub async fn acquire(&self, key: &str, info: &LockInfo) -> Result<HeldLock, LockError> {
        let mut info = info.clone();
        info.expires_at_ms = (!self.ttl.is_zero()).then(|| {
            now_ms().saturating_add(i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX))
        });
        let value = serde_json::to_vec(&info).map_err(nats_err)?;
        let create = || self.kv.create(key, value.clone().into());
        let revision = match answered(LOCK_ATTEMPTS, LOCK_ATTEMPT, LOCK_BUCKET, create).await {
            Ok(revision) => revision,
            Err(Asked::Answered(e)) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                match self.current(key).await? {
                    // Our own entry: an attempt that timed out had been applied.
                    Some((held, revision)) if held == info => revision,
                    Some((held, _))
                        if !held.expired(now_ms())
                            && (held.deploy_id.is_none() || held.deploy_id != info.deploy_id) =>
                    {
                        return Err(LockError::Held {
                            key: key.to_owned(),
                            info: Box::new(held),
                        });
                    }
                    // Expired, or left by the very deploy being resumed: take it over, unless
                    // someone else just did.
                    Some((_, revision)) => self
                        .kv
                        .update(key, value.into(), revision)
                        .await
                        .map_err(nats_err)?,
                    // Released between our create and our read.
                    None => self.kv.create(key, value.into()).await.map_err(nats_err)?,
                }
            }
            Err(e) => return Err(nats_err(e)),
        };
        Ok(HeldLock::start(self.clone(), key, &info, revision))
    }

    /// Takes the lock, waiting up to `wait` (checking every `interval`) while another holds
    /// it: Kamal's `--lock-wait`.
    pub async fn acquire_waiting(
        &self,
        key: &str,
        info: &LockInfo,
        wait: Duration,
        interval: Duration,
    ) -> Result<HeldLock, LockError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match self.acquire(key, info).await {
                Err(LockError::Held { info: held, .. }) => {
                    if tokio::time::Instant::now() + interval > deadline {
                        return Err(LockError::WaitTimedOut {
                            key: key.to_owned(),
                            waited: wait,
                            info: held,
                        });
                    }
                    // Watching the key would wake us sooner, but a poll bounded by the
                    // interval is what Kamal users configure and expect.
                    tokio::time::sleep(interval).await;
                }
                other => return other,
            }
        }
    }

    /// Removes the lock whoever holds it (`flotilla lock release`). Says whether one was held.
    pub async fn force_release(&self, key: &str) -> Result<bool, LockError> {
        let held = self.current(key).await?.is_some();
        if held {
            self.kv.delete(key).await.map_err(nats_err)?;
        }
        Ok(held)
    }
}

/// A lock this process holds; renewed in the background until released or dropped.
#[derive(Debug)]
pub struct HeldLock {
    locks: Locks,
    key: String,
    info: LockInfo,
    revision: watch::Receiver<Option<u64>>,
    renewer: JoinHandle<()>,
}

impl HeldLock {
    fn start(locks: Locks, key: &str, info: &LockInfo, revision: u64) -> HeldLock {
        let (tx, rx) = watch::channel(Some(revision));
        let ttl = locks.ttl;
        let every = (ttl / 3).max(Duration::from_millis(100));
        let kv = locks.kv.clone();
        let k = key.to_owned();
        let mut renewed = info.clone();
        let renewer = tokio::spawn(async move {
            let mut revision = revision;
            // A lock without expiry needs no renewal.
            if ttl.is_zero() || renewed.expires_at_ms.is_none() {
                return;
            }
            loop {
                tokio::time::sleep(every).await;
                renewed.expires_at_ms = Some(
                    now_ms().saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)),
                );
                let Ok(value) = serde_json::to_vec(&renewed) else {
                    return;
                };
                match kv.update(&k, value.into(), revision).await {
                    Ok(r) => {
                        revision = r;
                        if tx.send(Some(r)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(key = %k, error = %e, "deploy lock renewal failed");
                        let _ = tx.send(None);
                        return;
                    }
                }
            }
        });
        HeldLock {
            locks,
            key: key.to_owned(),
            info: info.clone(),
            revision: rx,
            renewer,
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// Fails if the lock was lost (a renewal failed), so a deploy can stop rather than run
    /// unprotected.
    pub fn check(&self) -> Result<(), LockError> {
        match *self.revision.borrow() {
            Some(_) => Ok(()),
            None => Err(LockError::Lost(self.key.clone())),
        }
    }

    /// Releases the lock, only if it is still ours.
    pub async fn release(self) -> Result<(), LockError> {
        self.renewer.abort();
        // The renewer may have renewed once more after our last look at the revision, so ask
        // the bucket for the current one rather than trusting ours.
        match self.locks.current(&self.key).await? {
            Some((info, revision)) if info.same_holder(&self.info) => self
                .locks
                .kv
                .delete_expect_revision(&self.key, Some(revision))
                .await
                .map_err(nats_err),
            _ => Err(LockError::Lost(self.key.clone())),
        }
    }
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        // Without renewal the lock expires by itself after the bucket's TTL.
        self.renewer.abort();
    }
}
