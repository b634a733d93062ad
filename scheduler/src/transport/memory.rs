//! [`Transport`] in process: the same contract as NATS, with channels and maps. Tests and
//! benchmarks run the whole procedure against it with simulated executors (no server, no
//! root, tokio's paused clock allowed).
//!
//! It keeps NATS's semantics where the procedure depends on them: a job published twice with
//! one id is stored once; a report is queued until acknowledged, a delivery dropped
//! unacknowledged goes back to the front of the queue, and a new subscription to a deploy's
//! reports gets everything not yet acknowledged (a restarted scheduler); reports with an
//! event id seen before are dropped (the events stream's dedup); a held lock refuses others.
//!
//! The executor side is plain methods: [`MemoryTransport::beat`], [`MemoryTransport::jobs`],
//! [`MemoryTransport::report`].

use super::lock::{LockError, LockInfo};
use super::{Beats, Delivery, HeldLock, JobTicket, Reports, Transport, TransportError};
use flotilla_protocol::wire::{self, Heartbeat, Report, SignedReport, WireError};
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;

/// The fleet, in process. Clones share it.
#[derive(Debug, Clone, Default)]
pub struct MemoryTransport {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    /// Woken on every heartbeat, report and lock release.
    changed: Notify,
    /// Every heartbeat, to live subscribers.
    beats: tokio::sync::broadcast::Sender<Heartbeat>,
}

/// Heartbeats a slow subscriber may fall behind by before it misses some (it then sees the
/// newer ones, which is all liveness needs).
const BEATS_BUFFERED: usize = 1024;

impl Default for Inner {
    fn default() -> Self {
        Inner {
            state: Mutex::default(),
            changed: Notify::new(),
            beats: tokio::sync::broadcast::channel(BEATS_BUFFERED).0,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    heartbeats: BTreeMap<String, Heartbeat>,
    job_queues: BTreeMap<String, Queue>,
    job_ids: HashSet<String>,
    deploys: BTreeMap<String, DeployQueue>,
    locks: BTreeMap<String, LockInfo>,
    /// Locks whose renewal "failed" (a test breaks them).
    lost_locks: HashSet<String>,
    /// Jobs published, in order: (host, job id).
    published: Vec<(String, String)>,
    /// Deploys whose report subscription was forgotten, in order.
    forgotten: Vec<String>,
}

/// A host's jobs not yet taken, as on the work-queue stream.
#[derive(Debug, Default)]
struct Queue {
    waiting: VecDeque<(String, Vec<u8>)>,
    /// The host's (simulated) executor took its queue.
    taken: bool,
}

#[derive(Debug, Default)]
struct DeployQueue {
    pending: VecDeque<Queued>,
    event_ids: HashSet<String>,
}

#[derive(Debug, Clone)]
struct Queued {
    /// The subject's host token (`flotilla.evt.<deploy>.<host>`), as NATS would give it.
    subject_host: String,
    bytes: Vec<u8>,
}

impl MemoryTransport {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a test failure already; the state is still usable.
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// An executor's heartbeat (what the fleet's `flotilla.hb.<host>` carries).
    pub fn beat(&self, heartbeat: Heartbeat) {
        self.state()
            .heartbeats
            .insert(heartbeat.host.clone(), heartbeat.clone());
        // Nobody listening is fine: no deploy runs.
        let _ = self.inner.beats.send(heartbeat);
        self.inner.changed.notify_waiters();
    }

    /// A host's job queue, for its (simulated) executor; taken once per host.
    pub fn jobs(&self, host: &str) -> Option<JobQueue> {
        let mut state = self.state();
        let queue = state.job_queues.entry(host.to_owned()).or_default();
        if queue.taken {
            return None;
        }
        queue.taken = true;
        Some(JobQueue {
            transport: self.clone(),
            host: host.to_owned(),
        })
    }

    /// How many of `host`'s jobs wait, not yet taken.
    pub fn waiting_jobs(&self, host: &str) -> usize {
        self.state()
            .job_queues
            .get(host)
            .map_or(0, |q| q.waiting.len())
    }

    /// Publishes an executor's signed report on `flotilla.evt.<deploy>.<host>`; a report whose
    /// event id was seen before is dropped, as the events stream's dedup does.
    pub fn report(
        &self,
        deploy_id: &str,
        host: &str,
        signed: &SignedReport,
    ) -> Result<(), WireError> {
        let bytes = wire::encode(signed)?;
        let report: Report = wire::decode(&signed.report)?;
        let mut state = self.state();
        let queue = state.deploys.entry(deploy_id.to_owned()).or_default();
        if let Report::Event(e) = &report
            && !queue.event_ids.insert(e.event.id.to_string())
        {
            return Ok(());
        }
        queue.pending.push_back(Queued {
            subject_host: flotilla_protocol::subjects::token(host),
            bytes,
        });
        drop(state);
        self.inner.changed.notify_waiters();
        Ok(())
    }

    /// Raw bytes on a deploy's report subject (what a forger or a broken executor sends).
    pub fn report_bytes(&self, deploy_id: &str, host: &str, bytes: Vec<u8>) {
        self.state()
            .deploys
            .entry(deploy_id.to_owned())
            .or_default()
            .pending
            .push_back(Queued {
                subject_host: flotilla_protocol::subjects::token(host),
                bytes,
            });
        self.inner.changed.notify_waiters();
    }

    /// Every job published so far, in order: (host, job id).
    pub fn published(&self) -> Vec<(String, String)> {
        self.state().published.clone()
    }

    /// Deploys whose report subscription was forgotten (they finished), in order.
    pub fn forgotten(&self) -> Vec<String> {
        self.state().forgotten.clone()
    }

    /// Who holds lock `key`, if anyone.
    pub fn lock_holder(&self, key: &str) -> Option<LockInfo> {
        self.state().locks.get(key).cloned()
    }

    /// Drops lock `key` as NATS does when its holder stopped renewing it for the lock's TTL
    /// (a killed deploy's lock, a minute later).
    pub fn expire_lock(&self, key: &str) {
        self.state().locks.remove(key);
    }

    /// Makes the holder of lock `key` see it as lost (its renewal failed).
    pub fn lose_lock(&self, key: &str) {
        self.state().lost_locks.insert(key.to_owned());
    }
}

impl Transport for MemoryTransport {
    type Reports = MemoryReports;
    type Lock = MemoryLock;
    type Beats = MemoryBeats;

    async fn beats(&self) -> Result<MemoryBeats, TransportError> {
        Ok(MemoryBeats(self.inner.beats.subscribe()))
    }

    async fn heartbeats(
        &self,
        hosts: &[String],
        wait: Duration,
    ) -> Result<BTreeMap<String, Heartbeat>, TransportError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let changed = self.inner.changed.notified();
            let seen: BTreeMap<String, Heartbeat> = {
                let state = self.state();
                hosts
                    .iter()
                    .filter_map(|h| state.heartbeats.get(h).map(|hb| (h.clone(), hb.clone())))
                    .collect()
            };
            if seen.len() == hosts.len() {
                return Ok(seen);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Err(TransportError::HostsSilent {
                    hosts: hosts
                        .iter()
                        .filter(|h| !seen.contains_key(*h))
                        .cloned()
                        .collect(),
                    waited: wait,
                });
            }
        }
    }

    async fn publish_job(
        &self,
        host: &str,
        job_id: &str,
        payload: Vec<u8>,
    ) -> Result<JobTicket, TransportError> {
        let mut state = self.state();
        let ticket = JobTicket {
            host: host.to_owned(),
            job_id: job_id.to_owned(),
            seq: 0,
        };
        if !state.job_ids.insert(job_id.to_owned()) {
            return Ok(ticket);
        }
        state.published.push((host.to_owned(), job_id.to_owned()));
        // Nobody listening is a silent host: the job waits, as on a work queue.
        state
            .job_queues
            .entry(host.to_owned())
            .or_default()
            .waiting
            .push_back((job_id.to_owned(), payload));
        drop(state);
        self.inner.changed.notify_waiters();
        Ok(JobTicket {
            host: host.to_owned(),
            job_id: job_id.to_owned(),
            seq: 0,
        })
    }

    async fn revoke_jobs(&self, tickets: &[JobTicket]) -> Result<(), TransportError> {
        let mut state = self.state();
        for t in tickets {
            if let Some(q) = state.job_queues.get_mut(&t.host) {
                q.waiting.retain(|(id, _)| id != &t.job_id);
            }
        }
        Ok(())
    }

    async fn settle_jobs(
        &self,
        _hosts: &[String],
        _wait: Duration,
    ) -> Result<Vec<String>, TransportError> {
        // In process a job is a call: nothing outlives the scheduler that made it.
        Ok(Vec::new())
    }

    async fn prepare_hosts(&self, _hosts: &[String]) -> Result<(), TransportError> {
        // Each host's queue exists from the moment its simulated executor takes it.
        Ok(())
    }

    async fn reports(&self, deploy_id: &str) -> Result<MemoryReports, TransportError> {
        let waiting = self
            .state()
            .deploys
            .get(deploy_id)
            .map_or(0, |q| q.pending.len() as u64);
        Ok(MemoryReports {
            transport: self.clone(),
            deploy_id: deploy_id.to_owned(),
            waiting,
        })
    }

    async fn forget_reports(&self, deploy_id: &str) -> Result<(), TransportError> {
        let mut state = self.state();
        state.forgotten.push(deploy_id.to_owned());
        Ok(())
    }

    async fn acquire_lock(
        &self,
        key: &str,
        info: &LockInfo,
        wait: Option<Duration>,
    ) -> Result<MemoryLock, LockError> {
        let deadline = wait.map(|w| tokio::time::Instant::now() + w);
        loop {
            let changed = self.inner.changed.notified();
            {
                let mut state = self.state();
                let held = state.locks.get(key).cloned();
                match held {
                    Some(held) if held.deploy_id.is_none() || held.deploy_id != info.deploy_id => {
                        let Some(deadline) = deadline else {
                            return Err(LockError::Held {
                                key: key.to_owned(),
                                info: Box::new(held),
                            });
                        };
                        if tokio::time::Instant::now() >= deadline {
                            return Err(LockError::WaitTimedOut {
                                key: key.to_owned(),
                                waited: wait.unwrap_or_default(),
                                info: Box::new(held),
                            });
                        }
                    }
                    _ => {
                        state.locks.insert(key.to_owned(), info.clone());
                        state.lost_locks.remove(key);
                        return Ok(MemoryLock {
                            transport: self.clone(),
                            key: key.to_owned(),
                            info: info.clone(),
                        });
                    }
                }
            }
            if let Some(deadline) = deadline {
                let _ = tokio::time::timeout_at(deadline, changed).await;
            }
        }
    }
}

/// One deploy's reports, in process.
#[derive(Debug)]
pub struct MemoryReports {
    transport: MemoryTransport,
    deploy_id: String,
    waiting: u64,
}

impl Reports for MemoryReports {
    type Delivery = MemoryDelivery;

    fn waiting(&self) -> u64 {
        self.waiting
    }

    async fn next(&mut self) -> Option<Result<MemoryDelivery, TransportError>> {
        loop {
            let changed = self.transport.inner.changed.notified();
            let queued = self
                .transport
                .state()
                .deploys
                .entry(self.deploy_id.clone())
                .or_default()
                .pending
                .pop_front();
            if let Some(queued) = queued {
                return Some(Ok(MemoryDelivery {
                    report: wire::decode(&queued.bytes),
                    queued: Some(queued),
                    transport: self.transport.clone(),
                    deploy_id: self.deploy_id.clone(),
                }));
            }
            changed.await;
        }
    }
}

/// A report taken from the queue; back to its front unless acknowledged.
#[derive(Debug)]
pub struct MemoryDelivery {
    report: Result<SignedReport, WireError>,
    queued: Option<Queued>,
    transport: MemoryTransport,
    deploy_id: String,
}

impl Delivery for MemoryDelivery {
    fn signed(&self) -> Result<&SignedReport, &WireError> {
        self.report.as_ref()
    }

    fn subject_host(&self) -> Option<&str> {
        self.queued.as_ref().map(|q| q.subject_host.as_str())
    }

    async fn ack(mut self) -> Result<(), TransportError> {
        self.queued = None;
        Ok(())
    }
}

impl Drop for MemoryDelivery {
    fn drop(&mut self) {
        if let Some(queued) = self.queued.take() {
            self.transport
                .state()
                .deploys
                .entry(self.deploy_id.clone())
                .or_default()
                .pending
                .push_front(queued);
            self.transport.inner.changed.notify_waiters();
        }
    }
}

/// A lock held in process.
#[derive(Debug)]
pub struct MemoryLock {
    transport: MemoryTransport,
    key: String,
    info: LockInfo,
}

impl HeldLock for MemoryLock {
    fn check(&self) -> Result<(), LockError> {
        if self.transport.state().lost_locks.contains(&self.key) {
            return Err(LockError::Lost(self.key.clone()));
        }
        Ok(())
    }

    async fn release(self) -> Result<(), LockError> {
        let mut state = self.transport.state();
        let ours = state.locks.get(&self.key) == Some(&self.info);
        if !ours || state.lost_locks.contains(&self.key) {
            return Err(LockError::Lost(self.key.clone()));
        }
        state.locks.remove(&self.key);
        drop(state);
        self.transport.inner.changed.notify_waiters();
        Ok(())
    }
}

/// Heartbeats as they are given to [`MemoryTransport::beat`].
#[derive(Debug)]
pub struct MemoryBeats(tokio::sync::broadcast::Receiver<Heartbeat>);

impl Beats for MemoryBeats {
    async fn next(&mut self) -> Option<Heartbeat> {
        loop {
            match self.0.recv().await {
                Ok(hb) => return Some(hb),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// A host's jobs, for its simulated executor: the oldest waiting job, as a pull consumer
/// takes it.
#[derive(Debug)]
pub struct JobQueue {
    transport: MemoryTransport,
    host: String,
}

impl JobQueue {
    /// The next job, waiting for one; taken jobs are gone from the queue.
    pub async fn recv(&mut self) -> Option<Vec<u8>> {
        loop {
            let changed = self.transport.inner.changed.notified();
            let next = self
                .transport
                .state()
                .job_queues
                .get_mut(&self.host)
                .and_then(|q| q.waiting.pop_front());
            if let Some((_, payload)) = next {
                return Some(payload);
            }
            changed.await;
        }
    }
}
