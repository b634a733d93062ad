//! The deploy lock, held in NATS so that every machine deploying the same service sees it.
//!
//! One key per service and destination in the `flotilla-locks` key-value bucket. Taking the
//! lock is an atomic create; holding it is renewing the key (compare-and-set on its revision)
//! well within the bucket's expiry, so a lock whose holder died frees itself. Kamal keeps its
//! lock as a directory on the primary host; this one also works when hosts are many.

use async_nats::jetstream;
use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The key-value bucket holding deploy locks.
pub const LOCK_BUCKET: &str = "flotilla-locks";

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
    #[error("deploy lock bucket: {0}")]
    Nats(String),
    #[error("the deploy lock for {key} holds unreadable data: {detail}")]
    Corrupt { key: String, detail: String },
}

fn nats_err(e: impl std::fmt::Display) -> LockError {
    LockError::Nats(e.to_string())
}

/// The lock key for a service and destination (`myapp`, `myapp.staging`).
pub fn lock_key(service: &str, destination: Option<&str>) -> String {
    match destination {
        Some(d) => format!("{service}.{d}"),
        None => service.to_owned(),
    }
}

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
    /// Opens (creating if needed) the lock bucket. `ttl` is how long a lock outlives its
    /// holder's last renewal.
    pub async fn open(js: &jetstream::Context, ttl: Duration) -> Result<Locks, LockError> {
        // async-nats's `create_key_value` first asks for the account info, whose 2.9 form it
        // cannot parse; creating the bucket's stream directly (the same configuration a KV
        // bucket has) works on 2.9 and later alike.
        let stream = jetstream::stream::Config {
            name: format!("KV_{LOCK_BUCKET}"),
            description: Some("Flotilla deploy locks".to_owned()),
            subjects: vec![format!("$KV.{LOCK_BUCKET}.>")],
            max_messages_per_subject: 1,
            max_age: ttl,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            num_replicas: 1,
            discard: jetstream::stream::DiscardPolicy::New,
            ..Default::default()
        };
        js.get_or_create_stream(stream).await.map_err(nats_err)?;
        let kv = js.get_key_value(LOCK_BUCKET).await.map_err(nats_err)?;
        let ttl = kv.status().await.map(|s| s.max_age()).unwrap_or(ttl);
        Ok(Locks { kv, ttl })
    }

    /// Who holds the lock, if anyone.
    pub async fn status(&self, key: &str) -> Result<Option<LockInfo>, LockError> {
        Ok(self.current(key).await?.map(|(info, _)| info))
    }

    async fn current(&self, key: &str) -> Result<Option<(LockInfo, u64)>, LockError> {
        let Some(entry) = self.kv.entry(key).await.map_err(nats_err)? else {
            return Ok(None);
        };
        if entry.operation != kv::Operation::Put {
            return Ok(None);
        }
        let info = serde_json::from_slice(&entry.value).map_err(|e| LockError::Corrupt {
            key: key.to_owned(),
            detail: e.to_string(),
        })?;
        Ok(Some((info, entry.revision)))
    }

    /// Takes the lock now or fails with who holds it.
    pub async fn acquire(&self, key: &str, info: &LockInfo) -> Result<HeldLock, LockError> {
        let value = serde_json::to_vec(info).map_err(nats_err)?;
        match self.kv.create(key, value.clone().into()).await {
            Ok(revision) => Ok(HeldLock::start(self.clone(), key, info, value, revision)),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                match self.current(key).await? {
                    Some((held, _)) => Err(LockError::Held {
                        key: key.to_owned(),
                        info: Box::new(held),
                    }),
                    // Released between our create and our read: try once more.
                    None => match self.kv.create(key, value.clone().into()).await {
                        Ok(revision) => {
                            Ok(HeldLock::start(self.clone(), key, info, value, revision))
                        }
                        Err(e) => Err(nats_err(e)),
                    },
                }
            }
            Err(e) => Err(nats_err(e)),
        }
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
    fn start(locks: Locks, key: &str, info: &LockInfo, value: Vec<u8>, revision: u64) -> HeldLock {
        let (tx, rx) = watch::channel(Some(revision));
        let every = (locks.ttl / 3).max(Duration::from_millis(100));
        let kv = locks.kv.clone();
        let k = key.to_owned();
        let renewer = tokio::spawn(async move {
            let mut revision = revision;
            loop {
                tokio::time::sleep(every).await;
                match kv.update(&k, value.clone().into(), revision).await {
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
            Some((info, revision)) if info == self.info => self
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
