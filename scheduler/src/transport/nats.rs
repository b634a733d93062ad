//! [`Transport`] over NATS JetStream: [`Bus`] for jobs, reports and heartbeats, [`Locks`] for
//! the deploy lock. The only place the two meet.

use super::bus::{Bus, Delivery, DeployEvents};
use super::lock::{HeldLock as NatsLock, LockError, LockInfo, Locks};
use super::{
    Beats, Delivery as DeliveryTrait, HeldLock, JobTicket, Reports, Transport, TransportError,
};
use flotilla_protocol::wire::{Heartbeat, SignedReport, WireError};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// How long a deploy lock outlives its holder's last renewal: a deploy whose process died
/// frees its lock after this, without anyone running `flotilla lock release`.
pub const LOCK_TTL: Duration = Duration::from_secs(60);
/// How often a waiting deploy (`--lock-wait`) looks at the lock again: what Kamal users
/// configure and expect is a poll, not a watch.
pub const LOCK_POLL: Duration = Duration::from_secs(1);

/// The scheduler's connection to the fleet through NATS.
#[derive(Debug, Clone)]
pub struct NatsTransport {
    pub bus: Bus,
    pub locks: Locks,
}

impl NatsTransport {
    /// Connects (with a credentials file if given), makes sure the streams and the lock bucket
    /// exist.
    pub async fn connect(url: &str, creds: Option<&Path>) -> Result<Self, ConnectError> {
        let bus = Bus::connect(url, creds).await?;
        let locks = Locks::open(bus.jetstream(), LOCK_TTL).await?;
        Ok(NatsTransport { bus, locks })
    }

    /// Connects with `auth`, makes sure the streams and the lock bucket exist.
    pub async fn connect_with(
        url: &str,
        auth: &super::bus::NatsAuth,
    ) -> Result<Self, ConnectError> {
        let bus = Bus::connect_with(url, auth).await?;
        let locks = Locks::open(bus.jetstream(), LOCK_TTL).await?;
        Ok(NatsTransport { bus, locks })
    }
}

/// Connecting failed: NATS itself, or the lock bucket.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Lock(#[from] LockError),
}

impl Transport for NatsTransport {
    type Reports = DeployEvents;
    type Lock = NatsLock;
    type Beats = LiveBeats;

    async fn beats(&self) -> Result<LiveBeats, TransportError> {
        Ok(LiveBeats(self.bus.live_heartbeats().await?))
    }

    async fn heartbeats(
        &self,
        hosts: &[String],
        wait: Duration,
    ) -> Result<BTreeMap<String, Heartbeat>, TransportError> {
        self.bus.heartbeats(hosts, wait).await
    }

    async fn prepare_hosts(&self, hosts: &[String]) -> Result<(), TransportError> {
        self.bus.ensure_job_consumers(hosts).await
    }

    async fn settle_jobs(
        &self,
        hosts: &[String],
        wait: Duration,
    ) -> Result<Vec<String>, TransportError> {
        self.bus.settle_jobs(hosts, wait).await
    }

    async fn publish_job(
        &self,
        host: &str,
        job_id: &str,
        payload: Vec<u8>,
    ) -> Result<JobTicket, TransportError> {
        let seq = self.bus.publish_job(host, job_id, payload).await?;
        Ok(JobTicket {
            host: host.to_owned(),
            job_id: job_id.to_owned(),
            seq,
        })
    }

    async fn revoke_jobs(&self, tickets: &[JobTicket]) -> Result<(), TransportError> {
        let seqs: Vec<u64> = tickets.iter().map(|t| t.seq).collect();
        self.bus.delete_jobs(&seqs).await
    }

    async fn reports(&self, deploy_id: &str) -> Result<DeployEvents, TransportError> {
        self.bus.deploy_events(deploy_id).await
    }

    async fn forget_reports(&self, deploy_id: &str) -> Result<(), TransportError> {
        self.bus.forget_deploy_events(deploy_id).await
    }

    async fn acquire_lock(
        &self,
        key: &str,
        info: &LockInfo,
        wait: Option<Duration>,
    ) -> Result<NatsLock, LockError> {
        match wait {
            None => self.locks.acquire(key, info).await,
            Some(wait) => self.locks.acquire_waiting(key, info, wait, LOCK_POLL).await,
        }
    }
}

impl Reports for DeployEvents {
    type Delivery = Delivery;

    fn waiting(&self) -> u64 {
        self.waiting
    }

    async fn next(&mut self) -> Option<Result<Delivery, TransportError>> {
        DeployEvents::next(self).await
    }
}

impl DeliveryTrait for Delivery {
    fn signed(&self) -> Result<&SignedReport, &WireError> {
        self.report.as_ref()
    }

    fn subject_host(&self) -> Option<&str> {
        Delivery::subject_host(self)
    }

    async fn ack(self) -> Result<(), TransportError> {
        Delivery::ack(self).await
    }
}

impl HeldLock for NatsLock {
    fn check(&self) -> Result<(), LockError> {
        NatsLock::check(self)
    }

    async fn release(self) -> Result<(), LockError> {
        NatsLock::release(self).await
    }
}

/// Heartbeats as they arrive on `flotilla.hb.*`.
#[derive(Debug)]
pub struct LiveBeats(async_nats::Subscriber);

impl Beats for LiveBeats {
    async fn next(&mut self) -> Option<Heartbeat> {
        use futures::StreamExt as _;
        loop {
            let msg = self.0.next().await?;
            match flotilla_protocol::wire::decode::<Heartbeat>(&msg.payload) {
                // A beat counts for the host of its subject only.
                Ok(hb)
                    if msg.subject.as_str()
                        == flotilla_protocol::subjects::heartbeat_subject(&hb.host) =>
                {
                    return Some(hb);
                }
                _ => tracing::debug!(subject = %msg.subject, "heartbeat ignored"),
            }
        }
    }
}
