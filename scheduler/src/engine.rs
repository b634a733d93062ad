//! The rollout engine: one deploy from plan to outcome.
//!
//! It reads like the procedure it is: take each host's keys from its enrolment (never from a
//! heartbeat, which only says the executor is alive), then loop —
//! ask the rollout policy what to start, publish those hosts' signed jobs, take each reported
//! event, make it durable in the log, acknowledge it, and feed it to the policy — until the
//! policy says the deploy is over; then record the outcome.
//!
//! `request` records the deploy first; `run` then rolls it out. Resuming is the same `run`:
//! the log says which steps each host finished, and each host's job starts after them. Hosts
//! that already succeeded are not touched again. A cancel stops dispatching; hosts already
//! running finish (or time out), and the deploy ends `DeployCancelled`.

use crate::admission::{self, Dropped, HostKeys, NotEnrolled};
use crate::jobs::{JobContext, JobError, job_for};
use crate::rollout::{Decision, HostStatus, Outcome, Policy, Rollout, Target};
use crate::stored::Stored;
use crate::transport::{Beats, Delivery, JobTicket, Reports, Transport, TransportError};
use flotilla_deploy::Config;
use flotilla_deploy::plan::{Plan, Step as PlanStep};
use flotilla_events::event::{
    DeployCancelled, DeployCompleted, DeployFailed, DeployKind, DeployRequested, DeployStarted,
    Event, FailureCause, HostFailed, Operation, OperationFailed, OperationFinished,
    OperationSucceeded, PlannedHost, Step,
};
use flotilla_events::{DeployId, Enrolled, Envelope, EventLog, LogError, NewEvent, Timestamp};
use flotilla_protocol::finish::finishes;
use flotilla_protocol::signing::JobSigner;
use flotilla_protocol::wire::{Report, WireError};
use futures::FutureExt as _;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// At most this many reports are made durable by one append: enough to spread one flush of
/// the log over a busy moment, few enough that acknowledgements are not held back long.
const MAX_REPORTS_PER_APPEND: usize = 512;
/// With nothing to wait for, the loop still wakes this often, so step timeouts are noticed
/// without an event.
const IDLE_WAKE: Duration = Duration::from_secs(1);
/// How long a resume waits for the reports stored while no scheduler ran: those a dead
/// scheduler took but never acknowledged come again only after the consumer's ack wait.
const DRAIN_WAIT: Duration =
    Duration::from_secs(flotilla_protocol::subjects::REPORT_ACK_WAIT.as_secs() + 5);
/// How long a resume waits for a job the lost scheduler left running on a host to end (its
/// executor acknowledges it once its reports are stored): beyond a health check's usual
/// wait; a host still busy after it is sent its job again.
const SETTLE_WAIT: Duration = Duration::from_secs(30);
/// How long a job stays valid: long enough for a slow pull and health check, short enough
/// that a captured job is useless soon after.
pub const JOB_VALIDITY: Duration = flotilla_protocol::signing::MAX_JOB_VALIDITY;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("event log")]
    Log(#[from] LogError),
    #[error(transparent)]
    Job(#[from] JobError),
    #[error("signing a job")]
    Sign(#[source] WireError),
    #[error(transparent)]
    NotEnrolled(#[from] NotEnrolled),
    #[error(transparent)]
    NotStored(#[from] crate::stored::NotStored),
}

/// One deploy to run (or resume).
#[derive(Debug, Clone)]
pub struct DeployRun<'a> {
    pub config: &'a Config,
    pub plan: Plan,
    pub deploy_id: DeployId,
    pub kind: DeployKind,
    /// Who asked (Kamal's performer).
    pub actor: String,
    pub config_digest: String,
    pub policy: Policy,
    /// How long to wait for every host's heartbeat.
    pub heartbeat_wait: Duration,
}

/// How a run ended, with the hosts by outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    pub outcome: Outcome,
    pub succeeded: Vec<String>,
    pub failed: Vec<String>,
    /// Hosts skipped because they had already succeeded before a resume.
    pub already_done: Vec<String>,
    /// Set when a cancel ended the run (the outcome is then `Failed` with this reason).
    pub cancelled: Option<String>,
}

/// Runs deploys: publishes jobs through `transport`, records events in `log`, signs with
/// `signer`.
pub struct Engine<'a, T: Transport> {
    pub transport: &'a T,
    pub log: &'a dyn EventLog,
    pub signer: &'a JobSigner,
    /// In service mode, how far `FLOTILLA_LOG` holds the log: jobs go out, and reports are
    /// acknowledged, only once it holds every event appended before (see [`crate::stored`]).
    pub stored: Option<&'a Stored>,
}

/// How long a job or a report acknowledgement waits for `FLOTILLA_LOG` to hold the log: long
/// enough for a NATS cluster to re-elect the stream's leader after losing a node (seconds;
/// the service's own readiness wait allows 45 s), short enough that a stream that stays down
/// stops the deploy with a reason instead of holding it forever.
const STORED_WAIT: Duration = Duration::from_secs(60);

impl<T: Transport> std::fmt::Debug for Engine<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Engine")
    }
}

/// Where each host of a run stands: the plan step it has reached (an index into its plan
/// steps), so a refusal or a timeout names the step actually reached.
#[derive(Debug, Default)]
struct Reached(BTreeMap<String, usize>);

impl Reached {
    fn step<'p>(&self, plan: &'p Plan, host: &str) -> Option<&'p PlanStep> {
        let steps = &plan.host(host)?.steps;
        let at = self.0.get(host).copied().unwrap_or(0);
        steps.get(at.min(steps.len().saturating_sub(1)))
    }

    fn kind(&self, plan: &Plan, host: &str) -> Step {
        self.step(plan, host).map_or(Step::PullImage, step_kind)
    }

    /// Moves `host` past its current step if `event` finishes it.
    fn observe(&mut self, plan: &Plan, host: &str, event: &Event) {
        if let Some(step) = self.step(plan, host)
            && finishes(step_kind(step), step_container(step), event)
            && let Some(at) = self.0.get_mut(host)
        {
            *at += 1;
        }
    }
}

/// The least silence that counts an executor as lost, whatever its period: a beat waits for
/// a Docker call (the running containers it reports), and a busy engine or host can hold it
/// back a few seconds without anything being wrong.
const LEAST_SILENCE_BEFORE_LOST: Duration = Duration::from_secs(15);

/// How long an executor that beats every `period_ms` may stay silent before it counts as
/// lost: three of its periods, and never less than [`LEAST_SILENCE_BEFORE_LOST`].
fn lost_after(period_ms: u64) -> Duration {
    let periods = Duration::from_millis(period_ms.max(1))
        * flotilla_protocol::subjects::BEATS_MISSED_BEFORE_LOST;
    periods.max(LEAST_SILENCE_BEFORE_LOST)
}

/// Per host from its heartbeat: its liveness (last seen now, how long it may stay silent).
fn liveness(
    heartbeats: BTreeMap<String, flotilla_protocol::wire::Heartbeat>,
) -> BTreeMap<String, (tokio::time::Instant, Duration)> {
    let now = tokio::time::Instant::now();
    heartbeats
        .into_iter()
        .map(|(host, hb)| (host, (now, lost_after(hb.period_ms))))
        .collect()
}

/// The two live subscriptions a run reads.
struct Streams<'a, T: Transport> {
    reports: &'a mut T::Reports,
    beats: &'a mut T::Beats,
}

/// A planned step as the event model names it.
pub fn step_kind(step: &PlanStep) -> Step {
    match step {
        PlanStep::PullImage { .. } => Step::PullImage,
        PlanStep::StartContainer(_) => Step::StartContainer,
        PlanStep::AwaitHealthy { .. } => Step::AwaitHealthy,
        PlanStep::SwitchProxy(_) => Step::SwitchProxy,
        PlanStep::StopOldContainers { .. } => Step::StopOldContainer,
        PlanStep::Prune { .. } | PlanStep::PruneImages { .. } => Step::Prune,
        PlanStep::StopRole { .. } => Step::StopContainer,
        PlanStep::StartExisting { .. } => Step::StartContainer,
        PlanStep::Maintenance { .. } | PlanStep::Live { .. } => Step::SetMaintenance,
        PlanStep::BootAccessory(_) => Step::BootAccessory,
        PlanStep::StartAccessory { .. } | PlanStep::StartProxy { .. } => Step::StartContainer,
        PlanStep::ReplaceProxy { .. } => Step::ReplaceProxy,
        PlanStep::StopAccessory { .. } | PlanStep::StopProxy { .. } => Step::StopContainer,
        PlanStep::RemoveContainer { .. } => Step::RemoveContainer,
        PlanStep::RemoveAccessory { .. } => Step::RemoveAccessory,
        PlanStep::RemoveImage { .. } => Step::RemoveImage,
    }
}

/// The container a planned step concerns, where a host has several (one per role).
pub fn step_container(step: &PlanStep) -> Option<&str> {
    match step {
        PlanStep::StartContainer(s) => Some(&s.container),
        PlanStep::SwitchProxy(s) => Some(&s.container),
        PlanStep::AwaitHealthy { container, .. } => Some(container),
        PlanStep::StartExisting { container, .. } => Some(container),
        _ => None,
    }
}

/// A run in progress: the policy, where each host stands, the clock.
struct Progress {
    rollout: Rollout,
    reached: Reached,
    started: tokio::time::Instant,
    cancelled: Option<String>,
    /// Per host: when its executor last beat, and how long it may stay silent before it
    /// counts as lost.
    alive: BTreeMap<String, (tokio::time::Instant, Duration)>,
    /// Every job published, revoked when the run ends.
    dispatched: Vec<JobTicket>,
    /// Reports dropped so far, by reason and subject host: each is logged the first time.
    dropped: std::collections::BTreeSet<(&'static str, String)>,
}

impl Progress {
    /// Whether this run sent job `job` to `host`.
    fn dispatched(&self, host: &str, job: &str) -> bool {
        self.dispatched
            .iter()
            .any(|t| t.host == host && t.job_id == job)
    }
}

/// Counts a dropped report and logs it the first time its reason and subject are seen.
fn note_dropped(
    seen: &mut std::collections::BTreeSet<(&'static str, String)>,
    deploy: &DeployId,
    reason: &Dropped,
    subject_host: Option<&str>,
) {
    crate::metrics::count_dropped(reason.label());
    let subject = subject_host.unwrap_or("?").to_owned();
    if seen.insert((reason.label(), subject.clone())) {
        tracing::warn!(deploy = %deploy, subject_host = %subject, reason = reason.label(), "report dropped, not recorded (counted in flotilla_reports_dropped_total)");
    }
}

impl Progress {
    /// A heartbeat from `host`.
    fn beat(&mut self, host: &str) {
        if let Some((last, _)) = self.alive.get_mut(host) {
            *last = tokio::time::Instant::now();
        }
    }

    /// Running hosts whose executor has been silent longer than it may be, with how long.
    fn lost(&self) -> Vec<(String, Duration)> {
        let now = tokio::time::Instant::now();
        self.rollout
            .hosts_with(HostStatus::Running)
            .into_iter()
            .filter_map(|h| {
                let (last, allowed) = self.alive.get(&h)?;
                let silent = now.duration_since(*last);
                (silent > *allowed).then_some((h, silent))
            })
            .collect()
    }
}

impl Progress {
    /// A cancel: no host starts after this; running hosts finish or time out.
    fn cancel(&mut self) {
        let reason = "cancelled: no host starts after this; running hosts finish";
        self.cancelled = Some(reason.to_owned());
        self.rollout.stop(reason);
    }
}

impl<T: Transport> Engine<'_, T> {
    /// Appends an event and tells the watcher.
    fn record(&self, event: NewEvent, watch: &mut dyn FnMut(&Envelope)) -> Result<(), EngineError> {
        let seq = self.log.append(event.clone())?.seq();
        watch(&event.into_envelope(seq));
        Ok(())
    }

    /// Appends events in one batch (one flush) and tells the watcher about each.
    fn record_all(
        &self,
        events: Vec<NewEvent>,
        watch: &mut dyn FnMut(&Envelope),
    ) -> Result<(), EngineError> {
        if events.is_empty() {
            return Ok(());
        }
        let appended = self.log.append_batch(events.clone())?;
        for (event, appended) in events.into_iter().zip(appended) {
            watch(&event.into_envelope(appended.seq()));
        }
        Ok(())
    }

    /// Records that the deploy was asked for (`DeployRequested`): the first event of a deploy,
    /// before hooks, lock and build events. A resumed deploy already has it.
    pub fn request(
        &self,
        run: &DeployRun<'_>,
        watch: &mut dyn FnMut(&Envelope),
    ) -> Result<(), EngineError> {
        let hosts = run
            .plan
            .hosts
            .iter()
            .map(|h| PlannedHost {
                host: h.host.clone(),
                roles: h.roles.clone(),
            })
            .collect();
        let requested = DeployRequested {
            kind: run.kind,
            service: run.plan.service.clone(),
            destination: run.plan.destination.clone(),
            version: run.plan.release.version.clone(),
            config_digest: run.config_digest.clone(),
            hosts,
        };
        self.record(
            NewEvent::new(run.deploy_id.clone(), &run.actor, requested),
            watch,
        )
    }

    /// Runs one deploy to its outcome, calling `watch` with every event as it lands in the
    /// log. `cancel` stops it: no host starts after it fires, running hosts finish.
    pub async fn run(
        &self,
        run: DeployRun<'_>,
        watch: &mut dyn FnMut(&Envelope),
        cancel: &CancellationToken,
    ) -> Result<RunOutcome, EngineError> {
        self.run_as(run, None, watch, cancel).await
    }

    /// Runs an operation other than a rollout (`app stop`, `prune`) as a deploy runs: the same
    /// jobs, policy, admission and timeouts. It is recorded as the operation it is: no
    /// `DeployStarted`, and instead of the deploy's outcome each host's
    /// `OperationSucceeded`/`OperationFailed` (with the reason its executor or the engine
    /// gave) and `OperationFinished` naming the failed hosts.
    pub async fn run_operation(
        &self,
        run: DeployRun<'_>,
        operation: &Operation,
        watch: &mut dyn FnMut(&Envelope),
        cancel: &CancellationToken,
    ) -> Result<RunOutcome, EngineError> {
        self.run_as(run, Some(operation), watch, cancel).await
    }

    async fn run_as(
        &self,
        run: DeployRun<'_>,
        operation: Option<&Operation>,
        watch: &mut dyn FnMut(&Envelope),
        cancel: &CancellationToken,
    ) -> Result<RunOutcome, EngineError> {
        // Subscribed first: reports sent while no scheduler was running (a resume after a
        // crash) are made durable before the resume points are read from the log, so a host
        // that finished meanwhile is not sent again.
        let plan_hosts: Vec<String> = run.plan.hosts.iter().map(|h| h.host.clone()).collect();
        let keys = HostKeys::of(&Enrolled::from_log(self.log)?, &plan_hosts)?;
        // A host the log shows started and not finished may still be running the lost
        // scheduler's job: its reports are stored only once it ends, and sending it the job
        // again would run its steps twice (and a stop run again reports nothing).
        let unfinished = in_flight(&self.log.read_deploy(&run.deploy_id)?);
        if !unfinished.is_empty() {
            let busy = self.transport.settle_jobs(&unfinished, SETTLE_WAIT).await?;
            if !busy.is_empty() {
                tracing::warn!(hosts = ?busy, waited = ?SETTLE_WAIT, "resuming while an earlier job may still run there");
            }
        }
        let mut reports = self.transport.reports(run.deploy_id.as_str()).await?;
        self.drain_waiting(&run, &keys, &mut reports, watch).await?;
        let history = self.log.read_deploy(&run.deploy_id)?;
        let (done_steps, already_done) = resume_points(&run.plan, &history);
        let todo: Vec<&flotilla_deploy::plan::HostPlan> = run
            .plan
            .hosts
            .iter()
            .filter(|h| !already_done.contains(&h.host))
            .collect();
        let names: Vec<String> = todo.iter().map(|h| h.host.clone()).collect();
        self.transport.prepare_hosts(&names).await?;
        let heartbeats = self
            .transport
            .heartbeats(&names, run.heartbeat_wait)
            .await?;
        let alive = liveness(heartbeats);
        let mut beats = self.transport.beats().await?;
        let batch = run.policy.batch.map_or(todo.len(), |b| b.of(todo.len()));
        if operation.is_none() {
            let started = DeployStarted {
                batch_size: u32::try_from(batch).unwrap_or(u32::MAX),
            };
            self.record(
                NewEvent::new(run.deploy_id.clone(), &run.actor, started),
                watch,
            )?;
        }
        let targets = todo
            .iter()
            .map(|h| Target {
                host: h.host.clone(),
                primary: h.primary,
            })
            .collect();
        let mut progress = Progress {
            rollout: Rollout::new(targets, run.policy.clone()),
            reached: Reached(done_steps),
            started: tokio::time::Instant::now(),
            cancelled: None,
            alive,
            dispatched: Vec::new(),
            dropped: Default::default(),
        };
        let mut streams = Streams {
            reports: &mut reports,
            beats: &mut beats,
        };
        let outcome = self
            .roll_out(&run, &mut progress, &mut streams, &keys, watch, cancel)
            .await?;
        match operation {
            None => self.record_outcome(&run, &outcome, progress.cancelled.as_deref(), watch)?,
            Some(op) => self.record_operation_outcome(&run, op, &progress, watch)?,
        }
        drop(reports);
        self.clean_up(&run, &progress.dispatched).await;
        Ok(RunOutcome {
            succeeded: progress.rollout.hosts_with(HostStatus::Succeeded),
            failed: progress.rollout.hosts_with(HostStatus::Failed),
            already_done,
            outcome,
            cancelled: progress.cancelled,
        })
    }

    /// After the outcome is durable: revoke the jobs no executor took (a host that was failed,
    /// timed out or lost, may come back later and must not switch to a version the log says
    /// it does not run) and delete the deploy's report consumer. Failures only warn.
    async fn clean_up(&self, run: &DeployRun<'_>, dispatched: &[JobTicket]) {
        if let Err(e) = self.transport.revoke_jobs(dispatched).await {
            tracing::warn!(error = %e, deploy = %run.deploy_id, "the deploy's waiting jobs were not revoked");
        }
        if let Err(e) = self.transport.forget_reports(run.deploy_id.as_str()).await {
            tracing::warn!(error = %e, deploy = %run.deploy_id, "the deploy's report consumer was not deleted");
        }
    }

    /// Records the reports already stored when the deploy's subscription was made (acknowledging
    /// each after the append), waiting for them up to [`DRAIN_WAIT`]; anything else waiting (a
    /// stale refusal) is acknowledged and dropped. These answer jobs an earlier run of this
    /// deploy dispatched, whose ids this run never saw: they count when signed by an enrolled
    /// host of this deploy, on its own subject, for this deploy.
    async fn drain_waiting(
        &self,
        run: &DeployRun<'_>,
        keys: &HostKeys,
        reports: &mut T::Reports,
        watch: &mut dyn FnMut(&Envelope),
    ) -> Result<(), EngineError> {
        let want = usize::try_from(reports.waiting()).unwrap_or(usize::MAX);
        let deadline = tokio::time::Instant::now() + DRAIN_WAIT;
        let mut deliveries = Vec::new();
        while deliveries.len() < want {
            match tokio::time::timeout_at(deadline, reports.next()).await {
                Ok(Some(delivery)) => deliveries.push(delivery?),
                Ok(None) => return Err(TransportError::Closed.into()),
                Err(_) => {
                    tracing::warn!(
                        got = deliveries.len(),
                        want,
                        "not every stored report arrived before resuming"
                    );
                    break;
                }
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        let events = deliveries
            .iter()
            .filter_map(|d| {
                let admitted = admission::admit(
                    d.signed(),
                    d.subject_host(),
                    &run.deploy_id,
                    keys,
                    |_, _| true,
                );
                match admitted {
                    Ok((_, Report::Event(e))) => Some(e.event),
                    Ok((_, Report::Refused(_))) => None,
                    Err(reason) => {
                        note_dropped(&mut seen, &run.deploy_id, &reason, d.subject_host());
                        None
                    }
                }
            })
            .collect();
        self.record_all(events, watch)?;
        // A report acknowledged is never delivered again: in service mode it must first be
        // where a successor reads the log from.
        self.await_stored().await?;
        for delivery in deliveries {
            delivery.ack().await?;
        }
        Ok(())
    }

    /// The loop: decide, dispatch, time out, take reports, until the policy is done.
    async fn roll_out(
        &self,
        run: &DeployRun<'_>,
        progress: &mut Progress,
        streams: &mut Streams<'_, T>,
        keys: &HostKeys,
        watch: &mut dyn FnMut(&Envelope),
        cancel: &CancellationToken,
    ) -> Result<Outcome, EngineError> {
        let reports = &mut *streams.reports;
        let beats = &mut *streams.beats;
        let mut beats_open = true;
        loop {
            // Beats already delivered count before silence is judged: after a long turn of
            // this loop (a batch of up to 512 reports to verify and append, on a busy
            // service thread) the beats that arrived meanwhile wait in the subscription, and
            // a host whose beat is waiting there is not lost.
            while beats_open {
                match beats.next().now_or_never() {
                    Some(Some(hb)) => progress.beat(&hb.host),
                    Some(None) => beats_open = false,
                    None => break,
                }
            }
            self.lose_silent(run, progress, watch)?;
            // Looked at before every decision, not only while waiting: reports that finish a
            // batch arrive together, and the next batch must not start after a cancel.
            if cancel.is_cancelled() && progress.cancelled.is_none() {
                progress.cancel();
            }
            let now = progress.started.elapsed();
            let wake = match progress.rollout.decide(now) {
                Decision::Start(hosts) => {
                    let tickets = self
                        .dispatch_all(run, &hosts, &progress.reached, &keys.sealing)
                        .await?;
                    progress.dispatched.extend(tickets);
                    // A host's silence counts from its dispatch.
                    let now = tokio::time::Instant::now();
                    for host in &hosts {
                        if let Some((last, _)) = progress.alive.get_mut(host) {
                            *last = now;
                        }
                    }
                    continue;
                }
                Decision::TimedOut(hosts) => {
                    self.time_out(run, &hosts, &progress.reached, watch)?;
                    continue;
                }
                Decision::Done(outcome) => return Ok(outcome),
                Decision::WaitUntil(at) => progress.started + at,
                Decision::Wait => tokio::time::Instant::now() + IDLE_WAKE,
            };
            tokio::select! {
                delivery = reports.next() => {
                    // The subscription ends only when the connection is gone for good: going
                    // round again would spin, so stop with the reason.
                    let delivery = delivery.ok_or(TransportError::Closed)??;
                    let mut deliveries = vec![delivery];
                    // Take every report that is already here too, so one durable append (one
                    // flush of the log) covers them all.
                    while deliveries.len() < MAX_REPORTS_PER_APPEND {
                        match reports.next().now_or_never() {
                            Some(Some(delivery)) => deliveries.push(delivery?),
                            _ => break,
                        }
                    }
                    self.take_reports(run, keys, deliveries, progress, watch).await?;
                }
                beat = beats.next(), if beats_open => match beat {
                    Some(hb) => progress.beat(&hb.host),
                    None => beats_open = false,
                },
                () = cancel.cancelled(), if progress.cancelled.is_none() => progress.cancel(),
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    /// Running hosts whose executor stopped beating: failed now, at the step they reached,
    /// instead of at `step_timeout`.
    fn lose_silent(
        &self,
        run: &DeployRun<'_>,
        progress: &mut Progress,
        watch: &mut dyn FnMut(&Envelope),
    ) -> Result<(), EngineError> {
        for (host, silent) in progress.lost() {
            let failed = HostFailed {
                step: progress.reached.kind(&run.plan, &host),
                error: format!(
                    "the executor on {host} stopped sending heartbeats {}s ago",
                    silent.as_secs()
                ),
                cause: FailureCause::ExecutorLost,
            };
            let mut event = NewEvent::new(run.deploy_id.clone(), &run.actor, failed);
            event.host = Some(host.clone());
            self.record(event, watch)?;
            progress.rollout.failed(&host, progress.started.elapsed());
        }
        Ok(())
    }

    /// In service mode, waits until `FLOTILLA_LOG` holds every event appended so far.
    async fn await_stored(&self) -> Result<(), EngineError> {
        if let Some(stored) = self.stored {
            stored.through(self.log.last_seq(), STORED_WAIT).await?;
        }
        Ok(())
    }

    /// Publishes the jobs of a batch at once: their stream acks are awaited together, not one
    /// round trip after another. First, in service mode, the stream must hold the log: a
    /// successor resumes from what it holds.
    async fn dispatch_all(
        &self,
        run: &DeployRun<'_>,
        hosts: &[String],
        reached: &Reached,
        host_keys: &BTreeMap<String, String>,
    ) -> Result<Vec<JobTicket>, EngineError> {
        self.await_stored().await?;
        let tickets = futures::future::try_join_all(hosts.iter().map(|host| {
            let from = reached.0.get(host).copied().unwrap_or(0);
            self.dispatch(run, host, from, host_keys)
        }))
        .await?;
        Ok(tickets.into_iter().flatten().collect())
    }

    /// Hosts silent past `step_timeout`: failed at the step they had reached, as timed out.
    fn time_out(
        &self,
        run: &DeployRun<'_>,
        hosts: &[String],
        reached: &Reached,
        watch: &mut dyn FnMut(&Envelope),
    ) -> Result<(), EngineError> {
        let timeout = run.policy.step_timeout.unwrap_or_default();
        for host in hosts {
            let failed = HostFailed {
                step: reached.kind(&run.plan, host),
                error: format!(
                    "no word from the executor for {}s (step_timeout)",
                    timeout.as_secs()
                ),
                cause: FailureCause::TimedOut,
            };
            let mut event = NewEvent::new(run.deploy_id.clone(), &run.actor, failed);
            event.host = Some(host.clone());
            self.record(event, watch)?;
        }
        Ok(())
    }

    /// Appends reported events in one durable batch, then acknowledges each report (a crash
    /// in between redelivers them, and the append is idempotent by event id), then tells the
    /// policy what each host did. A refused job fails its host at the step it had reached.
    async fn take_reports(
        &self,
        run: &DeployRun<'_>,
        keys: &HostKeys,
        deliveries: Vec<<T::Reports as Reports>::Delivery>,
        progress: &mut Progress,
        watch: &mut dyn FnMut(&Envelope),
    ) -> Result<(), EngineError> {
        let mut events = Vec::with_capacity(deliveries.len());
        for delivery in &deliveries {
            let admitted = admission::admit(
                delivery.signed(),
                delivery.subject_host(),
                &run.deploy_id,
                keys,
                |host, job| progress.dispatched(host, job),
            );
            let report = match admitted {
                Ok((_, report)) => report,
                Err(reason) => {
                    note_dropped(
                        &mut progress.dropped,
                        &run.deploy_id,
                        &reason,
                        delivery.subject_host(),
                    );
                    continue;
                }
            };
            match report {
                Report::Event(job_event) => events.push(job_event.event),
                Report::Refused(refusal) => {
                    let failed = HostFailed {
                        step: progress.reached.kind(&run.plan, &refusal.host),
                        error: format!(
                            "the executor refused the job: {:?}: {}",
                            refusal.reason, refusal.detail
                        ),
                        cause: FailureCause::Refused,
                    };
                    let mut event = NewEvent::new(run.deploy_id.clone(), &run.actor, failed);
                    event.host = Some(refusal.host.clone());
                    events.push(event);
                }
            }
        }
        // Only hosts of this run move the policy (a stray report is recorded, nothing more).
        let seen: Vec<(String, Event)> = events
            .iter()
            .filter_map(|e| Some((e.host.clone()?, e.event.clone())))
            .collect();
        self.record_all(events, watch)?;
        for delivery in deliveries {
            delivery.ack().await?;
        }
        let now = progress.started.elapsed();
        for (host, event) in seen {
            progress.reached.observe(&run.plan, &host, &event);
            match event {
                Event::HostSucceeded(_) => progress.rollout.succeeded(&host, now),
                Event::HostFailed(_) => progress.rollout.failed(&host, now),
                _ => progress.rollout.progressed(&host, now),
            }
        }
        Ok(())
    }

    /// `DeployCompleted`, `DeployFailed` or `DeployCancelled`.
    fn record_outcome(
        &self,
        run: &DeployRun<'_>,
        outcome: &Outcome,
        cancelled: Option<&str>,
        watch: &mut dyn FnMut(&Envelope),
    ) -> Result<(), EngineError> {
        let end = match (outcome, cancelled) {
            (Outcome::Succeeded, _) => Event::from(DeployCompleted {}),
            (_, Some(reason)) => Event::from(DeployCancelled {
                reason: reason.to_owned(),
            }),
            (Outcome::Degraded { failed }, None) => Event::from(DeployFailed {
                reason: format!("{} host(s) failed: {}", failed.len(), failed.join(", ")),
            }),
            (Outcome::Failed { reason, failed }, None) => Event::from(DeployFailed {
                reason: format!("{reason}: {}", failed.join(", ")),
            }),
        };
        self.record(NewEvent::new(run.deploy_id.clone(), &run.actor, end), watch)
    }

    /// Each planned host's outcome as the operation's, then `OperationFinished`: a host
    /// that did not succeed (failed, timed out, lost, or never started after a cancel) failed,
    /// with the last `HostFailed` reason the log holds for it.
    fn record_operation_outcome(
        &self,
        run: &DeployRun<'_>,
        operation: &Operation,
        progress: &Progress,
        watch: &mut dyn FnMut(&Envelope),
    ) -> Result<(), EngineError> {
        let succeeded = progress.rollout.hosts_with(HostStatus::Succeeded);
        let history = self.log.read_deploy(&run.deploy_id)?;
        let mut events = Vec::new();
        let mut failed = Vec::new();
        for host in run.plan.hosts.iter().map(|h| &h.host) {
            let event: Event = if succeeded.contains(host) {
                OperationSucceeded {
                    operation: operation.clone(),
                }
                .into()
            } else {
                failed.push(host.clone());
                let reason = history
                    .iter()
                    .rev()
                    .find_map(|e| match &e.event {
                        Event::HostFailed(f) if e.host.as_deref() == Some(host) => {
                            Some(f.error.clone())
                        }
                        _ => None,
                    })
                    .or_else(|| progress.cancelled.clone())
                    .unwrap_or_else(|| "not run".to_owned());
                OperationFailed {
                    operation: operation.clone(),
                    reason,
                }
                .into()
            };
            events.push(NewEvent::new(run.deploy_id.clone(), &run.actor, event).on_host(host));
        }
        let finished = OperationFinished {
            operation: operation.clone(),
            failed,
        };
        events.push(NewEvent::new(run.deploy_id.clone(), &run.actor, finished));
        self.record_all(events, watch)
    }

    async fn dispatch(
        &self,
        run: &DeployRun<'_>,
        host: &str,
        from: usize,
        host_keys: &BTreeMap<String, String>,
    ) -> Result<Option<JobTicket>, EngineError> {
        let Some(host_plan) = run.plan.host(host) else {
            return Ok(None);
        };
        let ctx = JobContext {
            config: run.config,
            deploy_id: &run.deploy_id,
            host_keys,
            now: Timestamp::now(),
            validity: JOB_VALIDITY,
        };
        let job = job_for(&run.plan, host_plan, from, &ctx)?;
        let payload = self.signer.sign(&job).map_err(EngineError::Sign)?;
        let ticket = self.transport.publish_job(host, &job.id, payload).await?;
        Ok(Some(ticket))
    }
}

/// The hosts a deploy's history shows started and not ended: their last event is not
/// `HostSucceeded` or `HostFailed` (a host resumed after it failed started again).
fn in_flight(history: &[Envelope]) -> Vec<String> {
    let mut hosts: BTreeMap<&str, bool> = BTreeMap::new();
    for e in history {
        if let Some(host) = e.host.as_deref() {
            let ended = matches!(e.event, Event::HostSucceeded(_) | Event::HostFailed(_));
            hosts.insert(host, ended);
        }
    }
    hosts
        .into_iter()
        .filter(|(_, ended)| !ended)
        .map(|(h, _)| h.to_owned())
        .collect()
}

/// From a deploy's events so far: per host, how many leading plan steps finished, and which
/// hosts already succeeded. A step counts as finished when its finishing event is in the log,
/// in plan order ([`finishes`]); pruning reports nothing and is always redone (harmless).
pub fn resume_points(plan: &Plan, history: &[Envelope]) -> (BTreeMap<String, usize>, Vec<String>) {
    let mut points = BTreeMap::new();
    let mut succeeded = Vec::new();
    for host in &plan.hosts {
        let events: Vec<&Event> = history
            .iter()
            .filter(|e| e.host.as_deref() == Some(host.host.as_str()))
            .map(|e| &e.event)
            .collect();
        if events.iter().any(|e| matches!(e, Event::HostSucceeded(_))) {
            succeeded.push(host.host.clone());
            continue;
        }
        let mut cursor = 0;
        let mut done = 0;
        for step in &host.steps {
            let (kind, container) = (step_kind(step), step_container(step));
            match events[cursor..]
                .iter()
                .position(|e| finishes(kind, container, e))
            {
                Some(i) => {
                    cursor += i + 1;
                    done += 1;
                }
                None => break,
            }
        }
        points.insert(host.host.clone(), done);
    }
    (points, succeeded)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An executor beating every second is not lost after three seconds of a busy host, only
    /// after the floor; a slow one after three of its own periods.
    #[test]
    fn lost_after_three_periods_never_under_the_floor() {
        assert_eq!(lost_after(1_000), LEAST_SILENCE_BEFORE_LOST);
        assert_eq!(lost_after(10_000), Duration::from_secs(30));
    }

    /// A resume waits for the hosts whose last event leaves them mid-job: one that succeeded
    /// or failed is done, and one resumed after it failed and started again is not.
    #[test]
    fn in_flight_hosts_are_those_whose_last_event_is_not_their_end() {
        use flotilla_events::event::{ContainerStarted, HostFailed, HostSucceeded};
        let id = DeployId::from("01INFLIGHT");
        let started = || ContainerStarted {
            name: "app-web-v2".into(),
            container_id: "c".into(),
            version: "v2".into(),
            role: "web".into(),
        };
        let failed = || HostFailed {
            step: Step::AwaitHealthy,
            error: "unhealthy".into(),
            cause: Default::default(),
        };
        let events: Vec<(&str, Event)> = vec![
            ("a", started().into()),
            ("a", HostSucceeded {}.into()),
            ("b", started().into()),
            ("c", started().into()),
            ("c", failed().into()),
            ("d", failed().into()),
            ("d", started().into()),
        ];
        let history: Vec<Envelope> = events
            .into_iter()
            .enumerate()
            .map(|(i, (host, event))| {
                NewEvent::new(id.clone(), "test", event)
                    .on_host(host)
                    .into_envelope(i as u64 + 1)
            })
            .collect();
        assert_eq!(in_flight(&history), ["b", "d"]);
    }
}
