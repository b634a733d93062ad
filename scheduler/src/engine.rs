//! The rollout engine: one deploy from plan to outcome.
//!
//! It reads like the procedure it is: record the request, learn each host's key from its
//! heartbeat, then loop — ask the rollout policy what to start, publish those hosts' signed
//! jobs, take each reported event, make it durable in the log, acknowledge it, and feed it to
//! the policy — until the policy says the deploy is over; then record the outcome.
//!
//! `request` records the deploy first; `run` then rolls it out. Resuming is the same `run`: the
//! log says which steps each host finished, and each host's
//! job starts after them. Hosts that already succeeded are not touched again.

use crate::jobs::{JobContext, JobError, job_for};
use crate::rollout::{Decision, Outcome, Policy, Rollout, Target};
use crate::transport::bus::{Bus, BusError, Delivery};
use flotilla_deploy::Config;
use flotilla_deploy::plan::{Plan, Step};
use flotilla_events::event::{
    DeployCompleted, DeployFailed, DeployKind, DeployRequested, DeployStarted, Event, HostFailed,
    PlannedHost,
};
use flotilla_events::{DeployId, Envelope, EventLog, LogError, NewEvent, Timestamp};
use flotilla_executor::signing::JobSigner;
use flotilla_executor::wire::Report;
use futures::FutureExt as _;
use std::collections::BTreeMap;
use std::time::Duration;

/// At most this many reports are made durable by one append: enough to spread one flush of
/// the log over a busy moment, few enough that acknowledgements are not held back long.
const MAX_REPORTS_PER_APPEND: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("event log: {0}")]
    Log(#[from] LogError),
    #[error(transparent)]
    Job(#[from] JobError),
    #[error("signing a job: {0}")]
    Sign(String),
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
}

/// Runs deploys: publishes jobs on `bus`, records events in `log`, signs with `signer`.
pub struct Engine<'a> {
    pub bus: &'a Bus,
    pub log: &'a dyn EventLog,
    pub signer: &'a JobSigner,
}

impl std::fmt::Debug for Engine<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Engine")
    }
}

impl Engine<'_> {
    /// Appends an event and tells the watcher.
    fn record(&self, event: NewEvent, watch: &mut dyn FnMut(&Envelope)) -> Result<(), EngineError> {
        let seq = self.log.append(event.clone())?.seq();
        watch(&event.into_envelope(seq));
        Ok(())
    }

    /// Appends reported events in one durable batch, then acknowledges each report (a crash
    /// in between redelivers them, and the append is idempotent by event id), then tells the
    /// policy what each host did. A refused job fails its host.
    async fn take_reports(
        &self,
        run: &DeployRun<'_>,
        deliveries: Vec<Delivery>,
        rollout: &mut Rollout,
        started: tokio::time::Instant,
        watch: &mut dyn FnMut(&Envelope),
    ) -> Result<(), EngineError> {
        let mut events = Vec::with_capacity(deliveries.len());
        for delivery in &deliveries {
            match &delivery.report {
                Ok(Report::Event(job_event)) => events.push(job_event.event.clone()),
                Ok(Report::Refused(refusal)) => {
                    let mut failed = NewEvent::new(
                        run.deploy_id.clone(),
                        &run.actor,
                        HostFailed {
                            step: flotilla_events::event::Step::PullImage,
                            error: format!(
                                "the executor refused the job: {:?}: {}",
                                refusal.reason, refusal.detail
                            ),
                        },
                    );
                    failed.host = Some(refusal.host.clone());
                    events.push(failed);
                }
                Err(e) => tracing::warn!(error = %e, "undecodable report dropped"),
            }
        }
        let progress: Vec<(String, bool, bool)> = events
            .iter()
            .map(|e| {
                (
                    e.host.clone().unwrap_or_default(),
                    matches!(e.event, Event::HostSucceeded(_)),
                    matches!(e.event, Event::HostFailed(_)),
                )
            })
            .collect();
        self.record_all(events, watch)?;
        for delivery in deliveries {
            delivery.ack().await?;
        }
        let now = started.elapsed();
        for (host, succeeded, failed) in progress {
            if succeeded {
                rollout.succeeded(&host, now);
            } else if failed {
                rollout.failed(&host, now);
            } else {
                rollout.progressed(&host, now);
            }
        }
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
        self.record(
            NewEvent::new(
                run.deploy_id.clone(),
                &run.actor,
                DeployRequested {
                    kind: run.kind,
                    service: run.plan.service.clone(),
                    destination: run.plan.destination.clone(),
                    version: run.plan.release.version.clone(),
                    config_digest: run.config_digest.clone(),
                    hosts,
                },
            ),
            watch,
        )
    }

    /// Runs one deploy to its outcome, calling `watch` with every event as it lands in the log.
    pub async fn run(
        &self,
        run: DeployRun<'_>,
        watch: &mut dyn FnMut(&Envelope),
    ) -> Result<RunOutcome, EngineError> {
        let id = run.deploy_id.clone();
        let history = self.log.read_deploy(&id)?;
        let (done_steps, already_done) = resume_points(&run.plan, &history);

        let todo: Vec<String> = run
            .plan
            .hosts
            .iter()
            .map(|h| h.host.clone())
            .filter(|h| !already_done.contains(h))
            .collect();
        let heartbeats = self.bus.heartbeats(&todo, run.heartbeat_wait).await?;
        let host_keys: BTreeMap<String, String> = heartbeats
            .iter()
            .map(|(h, hb)| (h.clone(), hb.sealing_key.clone()))
            .collect();

        let mut events = self.bus.deploy_events(id.as_str()).await?;
        let batch = run.policy.batch.map_or(todo.len(), |b| b.of(todo.len()));
        self.record(
            NewEvent::new(
                id.clone(),
                &run.actor,
                DeployStarted {
                    batch_size: u32::try_from(batch).unwrap_or(u32::MAX),
                },
            ),
            watch,
        )?;

        let targets = run
            .plan
            .hosts
            .iter()
            .filter(|h| todo.contains(&h.host))
            .map(|h| Target {
                host: h.host.clone(),
                primary: h.primary,
            })
            .collect();
        let mut rollout = Rollout::new(targets, run.policy.clone());
        let started = tokio::time::Instant::now();
        let outcome = loop {
            let now = started.elapsed();
            let wake = match rollout.decide(now) {
                Decision::Start(hosts) => {
                    // All of a batch's jobs at once: their stream acks are awaited together,
                    // not one round trip after another.
                    futures::future::try_join_all(hosts.iter().map(|host| {
                        self.dispatch(
                            &run,
                            host,
                            done_steps.get(host).copied().unwrap_or(0),
                            &host_keys,
                        )
                    }))
                    .await?;
                    continue;
                }
                Decision::TimedOut(hosts) => {
                    let timeout = run.policy.step_timeout.unwrap_or_default();
                    for host in hosts {
                        let mut failed = NewEvent::new(
                            id.clone(),
                            &run.actor,
                            HostFailed {
                                step: flotilla_events::event::Step::AwaitHealthy,
                                error: format!(
                                    "no word from the executor for {}s (step_timeout)",
                                    timeout.as_secs()
                                ),
                            },
                        );
                        failed.host = Some(host);
                        self.record(failed, watch)?;
                    }
                    continue;
                }
                Decision::Done(outcome) => break outcome,
                Decision::WaitUntil(at) => started + at,
                // Wake now and then anyway, so step timeouts are noticed without an event.
                Decision::Wait => tokio::time::Instant::now() + Duration::from_secs(1),
            };
            tokio::select! {
                delivery = events.next() => {
                    // The pull stream ends only when the connection is gone for good: going
                    // round again would spin, so stop with the reason.
                    let Some(delivery) = delivery else {
                        return Err(EngineError::Bus(BusError::Nats(
                            "the deploy's event subscription ended".into(),
                        )));
                    };
                    let mut deliveries = vec![delivery?];
                    // Take every report that is already here too, so one durable append (one
                    // flush of the log) covers them all.
                    while deliveries.len() < MAX_REPORTS_PER_APPEND {
                        match events.next().now_or_never() {
                            Some(Some(delivery)) => deliveries.push(delivery?),
                            _ => break,
                        }
                    }
                    self.take_reports(&run, deliveries, &mut rollout, started, watch)
                        .await?;
                }
                _ = tokio::time::sleep_until(wake) => {}
            }
        };

        let end = match &outcome {
            Outcome::Succeeded => Event::from(DeployCompleted {}),
            Outcome::Degraded { failed } => Event::from(DeployFailed {
                reason: format!("{} host(s) failed: {}", failed.len(), failed.join(", ")),
            }),
            Outcome::Failed { reason, failed } => Event::from(DeployFailed {
                reason: format!("{reason}: {}", failed.join(", ")),
            }),
        };
        self.record(NewEvent::new(id.clone(), &run.actor, end), watch)?;
        Ok(RunOutcome {
            succeeded: rollout.hosts_with(crate::rollout::HostStatus::Succeeded),
            failed: rollout.hosts_with(crate::rollout::HostStatus::Failed),
            already_done,
            outcome,
        })
    }

    async fn dispatch(
        &self,
        run: &DeployRun<'_>,
        host: &str,
        from: usize,
        host_keys: &BTreeMap<String, String>,
    ) -> Result<(), EngineError> {
        let Some(host_plan) = run.plan.host(host) else {
            return Ok(());
        };
        let ctx = JobContext {
            config: run.config,
            deploy_id: &run.deploy_id,
            host_keys,
            now: Timestamp::now(),
            validity: Duration::from_secs(3600),
        };
        let job = job_for(&run.plan, host_plan, from, &ctx)?;
        let payload = self
            .signer
            .sign(&job)
            .map_err(|e| EngineError::Sign(e.to_string()))?;
        self.bus.publish_job(host, &job.id, payload).await?;
        Ok(())
    }
}

/// From a deploy's events so far: per host, how many leading plan steps finished, and which
/// hosts already succeeded. A step counts as finished when its finishing event is in the log,
/// in plan order; pruning reports nothing and is always redone (it is harmless).
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
            let found = events[cursor..].iter().position(|e| finishes(step, e));
            match found {
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

/// Whether `event` reports `step` done.
fn finishes(step: &Step, event: &Event) -> bool {
    match (step, event) {
        (Step::PullImage { .. }, Event::ImagePulled(_)) => true,
        (Step::StartContainer(s), Event::ContainerStarted(c)) => c.name == s.container,
        (Step::AwaitHealthy { .. }, Event::HealthPassed(_)) => true,
        (Step::SwitchProxy(s), Event::ProxySwitched(p)) => {
            p.to.contains(&s.container) || p.to == s.container
        }
        (Step::StopOldContainers { .. }, Event::OldContainerStopped(_)) => true,
        _ => false,
    }
}
