//! The scheduler's one seam to the fleet: [`Transport`] (jobs out, reports in, heartbeats, the
//! deploy lock). The engine and the procedures are written against the trait, so they run the
//! same over NATS ([`nats::NatsTransport`], the only NATS code in this crate) and in process
//! ([`memory::MemoryTransport`], for tests and benchmarks: no server, no root).
//!
//! - [`bus`]: jobs out, heartbeats and reports in, on the streams `flotilla_protocol::subjects`
//!   defines;
//! - [`lock`]: the deploy lock, a key in a JetStream key-value bucket with an expiry, renewed
//!   while the deploy runs;
//! - [`nats`]: the two together as a [`Transport`];
//! - [`memory`]: channels and a map, with hooks for simulated executors.

pub mod bus;
pub mod lock;
pub mod memory;
pub mod nats;

use flotilla_protocol::wire::{Heartbeat, SignedReport, WireError};
use lock::{LockError, LockInfo};
use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

/// Any error a transport's client library gives, kept as the source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why [`answered`] has no answer to give.
#[derive(Debug, thiserror::Error)]
pub enum Asked<E: std::error::Error + 'static> {
    #[error("no answer from {what} in {waited:?}")]
    Unanswered {
        what: &'static str,
        waited: Duration,
    },
    #[error(transparent)]
    Answered(E),
}

/// Asks `ask()` up to `attempts` times, each given `wait`: the first answer, or
/// [`Asked::Unanswered`]. For NATS requests that a live server answers in milliseconds but
/// that are never answered when routed to a lost node (until the cluster drops its routes):
/// the client's own 5 s timeout per such request held a fleet failover 10 s.
pub async fn answered<T, E, F>(
    attempts: u32,
    wait: Duration,
    what: &'static str,
    mut ask: impl FnMut() -> F,
) -> Result<T, Asked<E>>
where
    E: std::error::Error + 'static,
    F: Future<Output = Result<T, E>>,
{
    for attempt in 1..=attempts {
        match tokio::time::timeout(wait, ask()).await {
            Ok(answer) => return answer.map_err(Asked::Answered),
            Err(_) => tracing::warn!(what, attempt, "no answer; asking again"),
        }
    }
    Err(Asked::Unanswered { what, waited: wait })
}

/// The fleet could not be reached or did not answer as the contract says.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("connect to NATS at {url}")]
    Connect {
        url: String,
        #[source]
        source: BoxError,
    },
    #[error("NATS")]
    Nats(#[source] BoxError),
    #[error("no heartbeat within {waited:?} from the executor on {}: is `flotilla executor run` running there and connected to NATS?", hosts.join(", "))]
    HostsSilent {
        hosts: Vec<String>,
        waited: Duration,
    },
    /// The report subscription ended (the connection is gone for good).
    #[error("the deploy's report subscription ended")]
    Closed,
}

/// A published job, as stored: what [`Transport::revoke_jobs`] takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobTicket {
    pub host: String,
    pub job_id: String,
    /// The job's position in the jobs stream (0 in process).
    pub seq: u64,
}

/// What the scheduler needs from the fleet.
pub trait Transport: Send + Sync {
    /// One deploy's reports.
    type Reports: Reports;
    /// A deploy lock held by this process.
    type Lock: HeldLock;
    /// Live heartbeats, while a deploy runs.
    type Beats: Beats;

    /// Every host's latest heartbeat, waiting up to `wait` for hosts not heard from yet;
    /// [`TransportError::HostsSilent`] names the ones that stayed silent.
    fn heartbeats(
        &self,
        hosts: &[String],
        wait: Duration,
    ) -> impl Future<Output = Result<BTreeMap<String, Heartbeat>, TransportError>> + Send;

    /// Every heartbeat from now on, as it arrives (liveness only: keys come from
    /// [`Transport::heartbeats`]).
    fn beats(&self) -> impl Future<Output = Result<Self::Beats, TransportError>> + Send;

    /// Makes the per-host plumbing a run needs before its jobs (each host's job consumer,
    /// which only the scheduler may make).
    fn prepare_hosts(
        &self,
        hosts: &[String],
    ) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Waits, up to `wait`, until no job of `hosts` is waiting or being run (a job an earlier
    /// scheduler dispatched, still running after that scheduler was lost); returns the hosts
    /// still busy when `wait` ran out. An executor acknowledges a job only once its reports
    /// are durable, so afterwards every report of it is stored.
    fn settle_jobs(
        &self,
        hosts: &[String],
        wait: Duration,
    ) -> impl Future<Output = Result<Vec<String>, TransportError>> + Send;

    /// Publishes a signed job for `host`; a second copy with the same `job_id` is dropped.
    /// The ticket names the stored job, so it can be revoked.
    fn publish_job(
        &self,
        host: &str,
        job_id: &str,
        payload: Vec<u8>,
    ) -> impl Future<Output = Result<JobTicket, TransportError>> + Send;

    /// Removes jobs not yet taken by their executor (a host that comes back after its deploy
    /// ended must not act on them); jobs already taken or gone are left alone.
    fn revoke_jobs(
        &self,
        tickets: &[JobTicket],
    ) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// The reports of one deploy, from the first not yet acknowledged (a restarted scheduler
    /// gets what it had not made durable).
    fn reports(
        &self,
        deploy_id: &str,
    ) -> impl Future<Output = Result<Self::Reports, TransportError>> + Send;

    /// Forgets the deploy's report subscription once its outcome is durable (a resume makes a
    /// new one; its reports are appended idempotently), so finished deploys leave no consumer.
    fn forget_reports(
        &self,
        deploy_id: &str,
    ) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Takes the deploy lock `key`, waiting up to `wait` while another holds it (Kamal's
    /// `--lock-wait`), or failing at once with who holds it.
    fn acquire_lock(
        &self,
        key: &str,
        info: &LockInfo,
        wait: Option<Duration>,
    ) -> impl Future<Output = Result<Self::Lock, LockError>> + Send;
}

/// Live heartbeats: which host beat, and how often it says it beats.
pub trait Beats: Send {
    /// The next heartbeat; `None` when the subscription ended.
    fn next(&mut self) -> impl Future<Output = Option<Heartbeat>> + Send;
}

/// A stream of one deploy's reports, in order.
pub trait Reports: Send {
    type Delivery: Delivery;
    /// How many reports were already stored when the subscription was made (a resumed
    /// deploy's reports sent while no scheduler ran); they arrive first.
    fn waiting(&self) -> u64;
    /// The next report; `None` when the subscription ended.
    fn next(
        &mut self,
    ) -> impl Future<Output = Option<Result<Self::Delivery, TransportError>>> + Send;
}

/// A report and its acknowledgement. Acknowledge only after the report's event is durable in
/// the log (or deliberately dropped); a delivery dropped unacknowledged is handed back to be
/// delivered again (wadm's `ScopedMessage`), so no exit path can lose a report.
pub trait Delivery: Send {
    /// The signed report as it arrived (not yet verified: see [`crate::admission`]), or why
    /// it did not decode.
    fn signed(&self) -> Result<&SignedReport, &WireError>;
    /// The subject host the report arrived on (as a subject token), where the transport knows.
    fn subject_host(&self) -> Option<&str>;
    /// Acknowledges: the report is durable in the event log.
    fn ack(self) -> impl Future<Output = Result<(), TransportError>> + Send;
}

/// A deploy lock this process holds.
pub trait HeldLock: Send {
    /// Fails if the lock was lost (its renewal failed), so a deploy stops rather than run
    /// unprotected.
    fn check(&self) -> Result<(), LockError>;
    /// Releases the lock, only if it is still ours.
    fn release(self) -> impl Future<Output = Result<(), LockError>> + Send;
}
