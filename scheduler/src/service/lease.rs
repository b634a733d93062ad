//! The leader lease (HA): with several scheduler instances (one per control host), the one
//! holding the lease runs deploys and answers requests; the others stand by. No consensus
//! code of our own: the lease is one NATS key-value entry ([`LEADER_BUCKET`]/[`LEADER_KEY`])
//! whose bucket drops entries `ttl` after their last write (`max_age`), taken with an atomic
//! create and held by updates that name the revision last written (compare-and-set). NATS's
//! own Raft replicates the bucket (R3 on a three-node cluster), so every instance sees one
//! answer.
//!
//! - Taking it: `create` succeeds only when no live entry exists.
//! - Holding it: `update(revision)` every `renew`; an update that finds another revision means
//!   someone else holds it now, and a holder that could not renew for `ttl` must assume the
//!   entry aged out: both end the leadership ([`Leadership::lost`]). `renew` is a third of
//!   `ttl`, so a leader that can reach NATS never lets its lease lapse.
//! - Losing the holder: its entry ages out `ttl` after its last renewal; a standby polling
//!   every `poll` takes it within `ttl + poll` (an expiry by `max_age` sends no watch event,
//!   so polling is the way to see it).

use async_nats::jetstream::{self, kv};
use flotilla_protocol::subjects::{LEADER_BUCKET, LEADER_KEY, leader_bucket_stream};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long a lease outlives its holder's last renewal: with [`LEASE_POLL`], a standby takes
/// over within about 6.5 s of the leader's loss (the goal for the resumed rollout:
/// under 10 s), while a leader survives a NATS hiccup of a few seconds.
pub const LEASE_TTL: Duration = Duration::from_secs(6);
/// How often the leader renews: a third of [`LEASE_TTL`], so two renewals may fail (a NATS
/// node restarting under it) before the lease lapses.
pub const LEASE_RENEW: Duration = Duration::from_secs(2);
/// How often a standby looks whether the lease is free: on average half of it is added to
/// the ttl before a takeover; one `get` per standby this often is nothing to NATS.
pub const LEASE_POLL: Duration = Duration::from_millis(500);
/// How long a standby's attempt to take the lease waits for JetStream's answer (renewals keep
/// the default 5 s: they must survive a loaded machine). When the lost leader's NATS node also
/// led the lease bucket, an attempt made before the bucket's re-election is never answered;
/// at the default it cost up to 5 s of the failover, at this it costs at most 2 s. An
/// attempt that timed out but was applied leaves this instance's own entry, which ages out
/// after the ttl like a lost leader's.
const LEASE_TAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// The lease's timings (tests shorten them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseTimes {
    pub ttl: Duration,
    pub renew: Duration,
    pub poll: Duration,
}

impl Default for LeaseTimes {
    fn default() -> Self {
        LeaseTimes {
            ttl: LEASE_TTL,
            renew: LEASE_RENEW,
            poll: LEASE_POLL,
        }
    }
}

/// The lease bucket could not be reached or read.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("creating the leader lease bucket")]
    Bucket(#[source] async_nats::jetstream::context::CreateStreamError),
    #[error("opening the leader lease bucket")]
    Open(#[source] async_nats::jetstream::context::KeyValueError),
    #[error("taking the leader lease")]
    Create(#[source] kv::CreateError),
    #[error("reading the leader lease")]
    Read(#[source] kv::EntryError),
}

/// One scheduler instance competing for the lease.
#[derive(Clone)]
pub struct Contender {
    kv: kv::Store,
    /// The same bucket, asked with [`LEASE_TAKE_TIMEOUT`]: for taking the lease.
    taking: kv::Store,
    holder: String,
    times: LeaseTimes,
}

impl std::fmt::Debug for Contender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Contender")
            .field("holder", &self.holder)
            .field("times", &self.times)
            .finish()
    }
}

impl Contender {
    /// Opens (creating if needed) the lease bucket; `holder` names this instance (its host),
    /// which is what [`Contender::leader`] shows the others.
    pub async fn open(
        js: &jetstream::Context,
        holder: &str,
        times: LeaseTimes,
    ) -> Result<Contender, LeaseError> {
        // The bucket's stream made directly, as the lock bucket's is (async-nats's
        // `create_key_value` cannot parse an older server's account info).
        let stream = crate::transport::bus::replicated(js, &leader_bucket_stream(times.ttl));
        js.get_or_create_stream(stream)
            .await
            .map_err(LeaseError::Bucket)?;
        let kv = js
            .get_key_value(LEADER_BUCKET)
            .await
            .map_err(LeaseError::Open)?;
        let mut short = js.clone();
        short.set_timeout(LEASE_TAKE_TIMEOUT);
        let taking = short
            .get_key_value(LEADER_BUCKET)
            .await
            .map_err(LeaseError::Open)?;
        Ok(Contender {
            kv,
            taking,
            holder: holder.to_owned(),
            times,
        })
    }

    /// Who holds the lease now, if anyone.
    pub async fn leader(&self) -> Result<Option<String>, LeaseError> {
        let entry = self.kv.entry(LEADER_KEY).await.map_err(LeaseError::Read)?;
        Ok(entry
            .filter(|e| e.operation == kv::Operation::Put)
            .map(|e| String::from_utf8_lossy(&e.value).into_owned()))
    }

    /// Takes the lease if it is free; `None` when another instance holds it.
    pub async fn try_acquire(&self) -> Result<Option<Leadership>, LeaseError> {
        match self
            .taking
            .create(LEADER_KEY, self.holder.clone().into_bytes().into())
            .await
        {
            Ok(revision) => Ok(Some(self.hold(revision))),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(LeaseError::Create(e)),
        }
    }

    /// Waits until this instance holds the lease (`None`: `shutdown` came first). NATS
    /// errors while waiting are logged and tried again: a standby outlives a NATS node.
    pub async fn acquire(&self, shutdown: &CancellationToken) -> Option<Leadership> {
        loop {
            match self.try_acquire().await {
                Ok(Some(leadership)) => return Some(leadership),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "leader lease"),
            }
            tokio::select! {
                () = tokio::time::sleep(self.times.poll) => {}
                () = shutdown.cancelled() => return None,
            }
        }
    }

    fn hold(&self, revision: u64) -> Leadership {
        let lost = CancellationToken::new();
        let renewer = tokio::spawn(renew(
            self.kv.clone(),
            self.holder.clone(),
            revision,
            self.times,
            lost.clone(),
        ));
        Leadership {
            lost,
            renewer: Some(renewer),
            kv: self.kv.clone(),
        }
    }
}

/// Holding the lease: renewed in the background until dropped, released, or lost.
#[derive(Debug)]
pub struct Leadership {
    lost: CancellationToken,
    renewer: Option<JoinHandle<Option<u64>>>,
    kv: kv::Store,
}

impl Leadership {
    /// Cancelled when the lease is lost (another instance holds it, or it could not be
    /// renewed for its whole ttl): the instance must stop acting as the leader at once.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Gives the lease up (a clean stop), so a standby takes over without waiting for it to
    /// age out; only the revision this instance wrote is deleted.
    pub async fn release(mut self) {
        self.lost.cancel();
        let Some(renewer) = self.renewer.take() else {
            return;
        };
        let revision = match renewer.await {
            Ok(Some(r)) => r,
            _ => return,
        };
        if let Err(e) = self
            .kv
            .delete_expect_revision(LEADER_KEY, Some(revision))
            .await
        {
            tracing::warn!(error = %e, "releasing the leader lease");
        }
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        // Not renewed any more: it ages out (a crash looks the same to the others).
        self.lost.cancel();
    }
}

/// Renews until `lost` is cancelled or renewing fails for good; returns the last revision
/// written while still held (`None` once lost to someone else or to age).
async fn renew(
    kv: kv::Store,
    holder: String,
    mut revision: u64,
    times: LeaseTimes,
    lost: CancellationToken,
) -> Option<u64> {
    let mut renewed = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = tokio::time::sleep(times.renew) => {}
            () = lost.cancelled() => return Some(revision),
        }
        match kv
            .update(LEADER_KEY, holder.clone().into_bytes().into(), revision)
            .await
        {
            Ok(r) => {
                revision = r;
                renewed = tokio::time::Instant::now();
            }
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                tracing::warn!("the leader lease is held by another instance now");
                lost.cancel();
                return None;
            }
            Err(e) => {
                if renewed.elapsed() >= times.ttl {
                    tracing::warn!(error = %e, "the leader lease lapsed: not renewed for its ttl");
                    lost.cancel();
                    return None;
                }
                tracing::warn!(error = %e, "renewing the leader lease; trying again");
            }
        }
    }
}
