//! A deploy's trace, rebuilt from its events: one trace per deploy (the trace id is the
//! deploy's ULID), a root span for the deploy, a span per host attempt under it, a span per
//! step under each host, and a span per hook. `TraceFold::apply` returns the spans an event
//! closes, so the live export (`live`) and `flotilla replay ID --otlp` run the same fold and
//! send the same spans with the same ids.
//!
//! Timings come from the events' own times: a step runs from the host's previous step event
//! (a pull from its own reported duration) to the event that finishes it; a host from its
//! first step's start to `HostSucceeded`/`HostFailed`; the deploy from `DeployRequested` to
//! its outcome. A span still open (a deploy still running) is not returned.
//!
//! Attributes (`flotilla.*`): service, destination, version, deploy kind and id, role, host,
//! step, image digest, outcome, error, failure cause. Events carry no secrets, so neither do
//! spans.

use crate::metrics::{finished_step, kind_label, step_label};
use flotilla_events::event::{Event, FailureCause, Step};
use flotilla_events::{Envelope, Timestamp};
use flotilla_telemetry::span::ms_to_nanos;
use flotilla_telemetry::{Attr, Span, SpanId, Status, TraceId};
use std::collections::BTreeMap;

pub mod live;
#[cfg(test)]
mod tests;

/// The `service.name` the scheduler's spans are reported under.
pub const SERVICE_NAME: &str = "flotilla-scheduler";

/// The root span of a deploy's trace: what the executor's spans hang under, computed from
/// the deploy id alone.
pub fn root_span(trace: &TraceId) -> SpanId {
    trace.root()
}

/// The fold of one deploy's events into spans.
#[derive(Debug)]
pub struct TraceFold {
    trace: TraceId,
    deploy_id: String,
    /// When the deploy was asked for (its root span's start).
    started: Option<Timestamp>,
    /// Deploy-wide attributes, learnt from `DeployRequested` and the image events.
    service: String,
    destination: Option<String>,
    version: String,
    kind: &'static str,
    digest: Option<String>,
    /// Each planned host's roles.
    roles: BTreeMap<String, Vec<String>>,
    /// Each host's run in the current attempt (ended ones too: a clean-up step after
    /// `HostFailed` still belongs to it).
    hosts: BTreeMap<String, HostRun>,
    /// The engine run: each `DeployStarted` (the first run, then each resume) starts one,
    /// and a host's span is per run.
    attempt: Option<u32>,
    /// Hooks seen so far, for their span ids.
    hooks: u32,
}

/// A host's run in one attempt.
#[derive(Debug)]
struct HostRun {
    attempt: u32,
    /// Its span was closed.
    ended: bool,
    start: Timestamp,
    /// The end of the host's last step (the next step's start).
    last: Timestamp,
    /// Steps closed so far in this attempt.
    steps: u32,
    digest: Option<String>,
    role: Option<String>,
    /// The step a `HealthFailed` already closed as failed, so `HostFailed` does not close
    /// it twice.
    failed_step: Option<Step>,
}

impl TraceFold {
    /// The fold of deploy `deploy_id`.
    pub fn new(deploy_id: &str) -> Self {
        Self {
            trace: TraceId::for_deploy(deploy_id),
            deploy_id: deploy_id.to_owned(),
            started: None,
            service: String::new(),
            destination: None,
            version: String::new(),
            kind: "deploy",
            digest: None,
            roles: BTreeMap::new(),
            hosts: BTreeMap::new(),
            attempt: None,
            hooks: 0,
        }
    }

    /// The trace id.
    pub fn trace_id(&self) -> TraceId {
        self.trace
    }

    /// Folds in the next event of this deploy; returns the spans it closed.
    pub fn apply(&mut self, e: &Envelope) -> Vec<Span> {
        if e.deploy_id.as_str() != self.deploy_id {
            return Vec::new();
        }
        self.started.get_or_insert(e.at);
        match (&e.event, e.host.as_deref()) {
            (Event::DeployRequested(r), _) => {
                self.started = Some(e.at);
                self.service.clone_from(&r.service);
                self.destination.clone_from(&r.destination);
                self.version.clone_from(&r.version);
                self.kind = kind_label(r.kind);
                for h in &r.hosts {
                    self.roles.insert(h.host.clone(), h.roles.clone());
                }
                Vec::new()
            }
            (Event::DeployStarted(_), _) => {
                self.attempt = Some(self.attempt.map_or(0, |a| a + 1));
                self.hosts.clear();
                Vec::new()
            }
            (Event::ImageBuilt(i), None) => {
                self.digest = Some(i.digest.clone());
                Vec::new()
            }
            (Event::ImagePushed(i), None) => {
                self.digest = Some(i.digest.clone());
                Vec::new()
            }
            (Event::DeployCompleted(_), _) => vec![self.root(e.at, Status::Ok, "succeeded")],
            (Event::DeployFailed(f), _) => {
                vec![self.root(e.at, Status::Error(f.reason.clone()), "failed")]
            }
            (Event::DeployCancelled(c), _) => {
                vec![self.root(e.at, Status::Error(c.reason.clone()), "cancelled")]
            }
            (Event::HookRan(h), _) => vec![self.hook(e, &h.name, h.exit_code, h.duration_ms)],
            (Event::HostSucceeded(_), Some(host)) => self.host_end(host, e.at, Ok(())),
            (Event::HostFailed(f), Some(host)) => {
                let mut spans = Vec::new();
                let already = self.hosts.get(host).and_then(|r| r.failed_step) == Some(f.step);
                if !already {
                    spans.push(self.step(host, e.at, f.step, Some(&f.error), None));
                }
                spans.extend(self.host_end(host, e.at, Err((f.step, &f.error, f.cause))));
                spans
            }
            (Event::HealthFailed(h), Some(host)) => {
                let span = self.step(host, e.at, Step::AwaitHealthy, Some(&h.error), None);
                if let Some(run) = self.hosts.get_mut(host) {
                    run.failed_step = Some(Step::AwaitHealthy);
                }
                vec![span]
            }
            (event, Some(host)) => match finished_step(event) {
                Some(step) => {
                    let own = match event {
                        Event::ImagePulled(p) => {
                            let ms = i64::try_from(p.duration_ms).unwrap_or(i64::MAX);
                            Some(Timestamp::from_unix_ms(e.at.unix_ms().saturating_sub(ms)))
                        }
                        _ => None,
                    };
                    let run = self.run(host, own.unwrap_or(e.at));
                    match event {
                        Event::ImagePulled(p) => run.digest = Some(p.digest.clone()),
                        Event::ContainerStarted(c) => run.role = Some(c.role.clone()),
                        _ => {}
                    }
                    vec![self.step(host, e.at, step, None, own)]
                }
                None => Vec::new(),
            },
            _ => Vec::new(),
        }
    }

    /// The host's attempt in progress, started at `at` if none is.
    fn run(&mut self, host: &str, at: Timestamp) -> &mut HostRun {
        let attempt = self.attempt.unwrap_or(0);
        self.hosts
            .entry(host.to_owned())
            .or_insert_with(|| HostRun {
                attempt,
                ended: false,
                start: at,
                last: at,
                steps: 0,
                digest: None,
                role: None,
                failed_step: None,
            })
    }

    /// Closes a step of `host` at `end`; `own_start` is a start the event itself reports.
    fn step(
        &mut self,
        host: &str,
        end: Timestamp,
        step: Step,
        error: Option<&str>,
        own_start: Option<Timestamp>,
    ) -> Span {
        let trace = self.trace;
        let mut attributes = self.common();
        let run = self.run(host, own_start.unwrap_or(end));
        let start = own_start.filter(|_| run.steps == 0).unwrap_or(run.last);
        let index = run.steps;
        run.steps += 1;
        run.last = end;
        let attempt = run.attempt.to_string();
        let parent = trace.span(&["host", host, &attempt]);
        let span_id = trace.span(&["step", host, &attempt, &index.to_string()]);
        let role = run.role.clone();
        let digest = run.digest.clone();
        attributes.push(str_attr("flotilla.host", host));
        attributes.push(str_attr("flotilla.step", step_label(step)));
        if let Some(role) = role.or_else(|| self.role_of(host)) {
            attributes.push(str_attr("flotilla.role", &role));
        }
        if let (Step::PullImage, Some(d)) = (step, digest) {
            attributes.push(str_attr("flotilla.image.digest", &d));
        }
        let status = outcome(&mut attributes, error, succeeded_or_failed(error));
        Span {
            trace_id: trace,
            span_id,
            parent: Some(parent),
            name: step_label(step).to_owned(),
            start_unix_nanos: ms_to_nanos(start.unix_ms()),
            end_unix_nanos: ms_to_nanos(end.unix_ms()),
            attributes,
            status,
        }
    }

    /// Closes `host`'s attempt at `end`.
    fn host_end(
        &mut self,
        host: &str,
        end: Timestamp,
        result: Result<(), (Step, &str, FailureCause)>,
    ) -> Vec<Span> {
        let mut attributes = self.common();
        let run = self.run(host, end);
        if run.ended {
            return Vec::new();
        }
        run.ended = true;
        let (attempt_no, start, digest) = (run.attempt, run.start, run.digest.clone());
        attributes.push(str_attr("flotilla.host", host));
        if let Some(role) = self.role_of(host) {
            attributes.push(str_attr("flotilla.role", &role));
        }
        if let Some(d) = digest.as_ref().or(self.digest.as_ref()) {
            attributes.push(str_attr("flotilla.image.digest", d));
        }
        attributes.push((
            "flotilla.attempt".to_owned(),
            Attr::Int(i64::from(attempt_no)),
        ));
        let status = match result {
            Ok(()) => outcome(&mut attributes, None, "succeeded"),
            Err((step, error, cause)) => {
                attributes.push(str_attr("flotilla.step", step_label(step)));
                attributes.push(str_attr("flotilla.failure.cause", cause_label(cause)));
                outcome(&mut attributes, Some(error), "failed")
            }
        };
        let attempt = attempt_no.to_string();
        vec![Span {
            trace_id: self.trace,
            span_id: self.trace.span(&["host", host, &attempt]),
            parent: Some(root_span(&self.trace)),
            name: "host".to_owned(),
            start_unix_nanos: ms_to_nanos(start.unix_ms()),
            end_unix_nanos: ms_to_nanos(end.unix_ms()),
            attributes,
            status,
        }]
    }

    /// The deploy's root span, closed at `end`.
    fn root(&mut self, end: Timestamp, status: Status, word: &str) -> Span {
        let mut attributes = self.common();
        attributes.push(str_attr("flotilla.deploy.kind", self.kind));
        if let Some(d) = &self.digest {
            attributes.push(str_attr("flotilla.image.digest", d));
        }
        let error = match &status {
            Status::Error(e) => Some(e.as_str()),
            _ => None,
        };
        let status = outcome(&mut attributes, error, word);
        let start = self.started.unwrap_or(end);
        Span {
            trace_id: self.trace,
            span_id: root_span(&self.trace),
            parent: None,
            name: self.kind.to_owned(),
            start_unix_nanos: ms_to_nanos(start.unix_ms()),
            end_unix_nanos: ms_to_nanos(end.unix_ms()),
            attributes,
            status,
        }
    }

    /// A hook that ran, under the root span.
    fn hook(&mut self, e: &Envelope, name: &str, exit_code: i32, took: Option<u64>) -> Span {
        let index = self.hooks;
        self.hooks += 1;
        let mut attributes = self.common();
        attributes.push(str_attr("flotilla.hook", name));
        attributes.push((
            "flotilla.hook.exit_code".to_owned(),
            Attr::Int(exit_code.into()),
        ));
        let error = (exit_code != 0).then(|| format!("{name} exited with {exit_code}"));
        let status = outcome(
            &mut attributes,
            error.as_deref(),
            succeeded_or_failed(error.as_deref()),
        );
        let took = i64::try_from(took.unwrap_or(0)).unwrap_or(i64::MAX);
        Span {
            trace_id: self.trace,
            span_id: self.trace.span(&["hook", &index.to_string()]),
            parent: Some(root_span(&self.trace)),
            name: format!("hook {name}"),
            start_unix_nanos: ms_to_nanos(e.at.unix_ms().saturating_sub(took)),
            end_unix_nanos: ms_to_nanos(e.at.unix_ms()),
            attributes,
            status,
        }
    }

    /// Attributes every span of the deploy carries.
    fn common(&self) -> Vec<(String, Attr)> {
        let mut a = vec![
            str_attr("flotilla.deploy.id", &self.deploy_id),
            str_attr("flotilla.service", &self.service),
            str_attr("flotilla.version", &self.version),
        ];
        if let Some(d) = &self.destination {
            a.push(str_attr("flotilla.destination", d));
        }
        a
    }

    fn role_of(&self, host: &str) -> Option<String> {
        self.roles
            .get(host)
            .filter(|r| !r.is_empty())
            .map(|r| r.join(","))
    }
}

/// Every closed span of deploy `deploy_id` among `events`, in the order they closed. A
/// resumed deploy closes its root once per run (the live export sends each, the later one
/// replacing the earlier in a collector); here only the last one is kept.
pub fn spans(deploy_id: &str, events: &[Envelope]) -> Vec<Span> {
    let mut fold = TraceFold::new(deploy_id);
    let all: Vec<Span> = events.iter().flat_map(|e| fold.apply(e)).collect();
    let last: BTreeMap<SpanId, usize> = all
        .iter()
        .enumerate()
        .map(|(i, s)| (s.span_id, i))
        .collect();
    all.into_iter()
        .enumerate()
        .filter(|(i, s)| last.get(&s.span_id) == Some(i))
        .map(|(_, s)| s)
        .collect()
}

fn str_attr(key: &str, value: &str) -> (String, Attr) {
    (key.to_owned(), Attr::Str(value.to_owned()))
}

/// Adds `flotilla.outcome` (and `flotilla.error`) and returns the matching status.
fn outcome(attributes: &mut Vec<(String, Attr)>, error: Option<&str>, word: &str) -> Status {
    attributes.push(str_attr("flotilla.outcome", word));
    match error {
        Some(e) => {
            attributes.push(str_attr("flotilla.error", e));
            Status::Error(e.to_owned())
        }
        None => Status::Ok,
    }
}

fn succeeded_or_failed(error: Option<&str>) -> &'static str {
    if error.is_some() {
        "failed"
    } else {
        "succeeded"
    }
}

fn cause_label(cause: FailureCause) -> &'static str {
    match cause {
        FailureCause::StepFailed => "step_failed",
        FailureCause::Refused => "refused",
        FailureCause::TimedOut => "timed_out",
        FailureCause::Cancelled => "cancelled",
        FailureCause::ExecutorLost => "executor_lost",
        FailureCause::EngineUnreachable => "engine_unreachable",
    }
}
