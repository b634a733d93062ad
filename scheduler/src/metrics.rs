//! Prometheus metrics of rollouts, as a fold of the event log.
//!
//! The scheduler is the only writer of the log, so everything here is computed from events:
//! [`Metrics::rebuild`] folds the whole log when the scheduler starts, then [`Metrics::observe`]
//! takes each event as it lands (the engine's `watch` callback). A restarted scheduler therefore
//! reports the same counts as the one before it, and Prometheus never sees a counter go down.
//!
//! The one exception is [`REDELIVERED`]: a report delivered again leaves no trace in the log
//! (appends are idempotent by event id), so it counts what this process saw.
//!
//! [`serve`] answers `GET /metrics` with the text exposition format; [`Live`] is what a
//! scheduler run holds: the rebuilt metrics, fed each event, served while it lives;
//! [`Standby`] is `flotilla metrics serve`, for Prometheus between deploys.

mod serve;
mod standby;

pub use serve::{Live, MetricsServer, ServeError, serve, serve_standby};
pub use standby::{Standby, handoff_path};

use flotilla_events::event::{DeployKind, Step};
use flotilla_events::projection::HostStatus;
use flotilla_events::{
    DeployId, DeployState, Envelope, Event, EventLog, LogError, Projection, Seq, Timestamp,
};
use prometheus::core::Collector;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use std::collections::HashMap;
use std::sync::Mutex;

/// Deploys by service, destination, kind and outcome.
pub const DEPLOYS: &str = "flotilla_deploys_total";
/// Deploy durations: from the run's first event to its outcome.
pub const DEPLOY_DURATION: &str = "flotilla_deploy_duration_seconds";
/// Step durations: between a host's consecutive step events, by step.
pub const STEP_DURATION: &str = "flotilla_step_duration_seconds";
/// Hosts of each service's latest deploy, by state.
pub const HOSTS: &str = "flotilla_hosts";
/// Events appended to the log, by type.
pub const EVENTS: &str = "flotilla_events_appended_total";
/// Reports delivered to the scheduler again after they were already in the log.
pub const REDELIVERED: &str = "flotilla_events_redelivered_total";
/// Position of the last event in the log.
pub const LOG_POSITION: &str = "flotilla_event_log_position";
/// Reports dropped instead of appended (forged, misrouted, for another deploy or job), by
/// reason ([`crate::admission::Dropped::label`]).
pub const REPORTS_DROPPED: &str = "flotilla_reports_dropped_total";

/// Dropped reports are counted where they are dropped (the engine), in this process: they
/// never reach the log, so they cannot be rebuilt from it.
static DROPPED: std::sync::LazyLock<IntCounterVec> = std::sync::LazyLock::new(|| {
    IntCounterVec::new(
        Opts::new(
            REPORTS_DROPPED,
            "Reports not appended because they failed verification (signature, host, deploy \
             or job), by reason; counted by this process only",
        ),
        &["reason"],
    )
    .expect("static metric definition")
});

/// Counts one dropped report.
pub fn count_dropped(reason: &str) {
    DROPPED.with_label_values(&[reason]).inc();
}

/// Every host state the [`HOSTS`] gauge reports, so each shows up even at zero.
pub const HOST_STATES: [&str; 4] = ["pending", "running", "succeeded", "failed"];

/// The scheduler's metrics: Prometheus collectors and the fold state behind them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    deploys: IntCounterVec,
    deploy_duration: HistogramVec,
    step_duration: HistogramVec,
    hosts: IntGaugeVec,
    events: IntCounterVec,
    redelivered: IntCounter,
    position: prometheus::IntGauge,
    fold: Mutex<Fold>,
}

/// What the fold remembers between events.
#[derive(Debug, Default)]
struct Fold {
    last_seq: Seq,
    deploys: HashMap<DeployId, DeployInfo>,
    /// The latest deploy of each (service, destination), whose hosts the gauge shows.
    latest: HashMap<(String, String), DeployState>,
}

/// One deploy's labels and the clocks its durations are measured with.
#[derive(Debug)]
struct DeployInfo {
    service: String,
    destination: String,
    kind: &'static str,
    /// The first event of the current run (a resumed deploy runs again after its outcome).
    run_started: Option<Timestamp>,
    /// Each host's previous step event in the current run.
    host_last: HashMap<String, Timestamp>,
}

impl DeployInfo {
    fn unknown() -> Self {
        Self {
            service: "unknown".into(),
            destination: String::new(),
            kind: "deploy",
            run_started: None,
            host_last: HashMap::new(),
        }
    }
}

impl Metrics {
    /// Empty metrics, before any event.
    pub fn new() -> Self {
        let registry = Registry::new();
        let deploys = IntCounterVec::new(
            Opts::new(
                DEPLOYS,
                "Deploys that ended, by outcome (a resumed deploy counts each run)",
            ),
            &["service", "destination", "kind", "outcome"],
        )
        .expect("static metric definition");
        let deploy_duration = HistogramVec::new(
            HistogramOpts::new(
                DEPLOY_DURATION,
                "Time from a deploy run's first event to its outcome",
            )
            .buckets(vec![
                1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 3600.0,
            ]),
            &["service", "destination", "kind", "outcome"],
        )
        .expect("static metric definition");
        let step_duration = HistogramVec::new(
            HistogramOpts::new(
                STEP_DURATION,
                "Time between a host's consecutive step events, by the step that finished",
            )
            .buckets(vec![
                0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
            ]),
            &["step"],
        )
        .expect("static metric definition");
        let hosts = IntGaugeVec::new(
            Opts::new(HOSTS, "Hosts of each service's latest deploy, by state"),
            &["service", "destination", "state"],
        )
        .expect("static metric definition");
        let events = IntCounterVec::new(
            Opts::new(EVENTS, "Events appended to the event log, by type"),
            &["type"],
        )
        .expect("static metric definition");
        let redelivered = IntCounter::new(
            REDELIVERED,
            "Reports delivered to this scheduler again after they were in the log (a redelivered \
             job reports its steps again with the same event ids); not rebuilt from the log",
        )
        .expect("static metric definition");
        let position =
            prometheus::IntGauge::new(LOG_POSITION, "Position of the last event in the log")
                .expect("static metric definition");
        for c in [
            Box::new(deploys.clone()) as Box<dyn Collector>,
            Box::new(deploy_duration.clone()),
            Box::new(step_duration.clone()),
            Box::new(hosts.clone()),
            Box::new(events.clone()),
            Box::new(redelivered.clone()),
            Box::new(position.clone()),
            Box::new(DROPPED.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Self {
            registry,
            deploys,
            deploy_duration,
            step_duration,
            hosts,
            events,
            redelivered,
            position,
            fold: Mutex::new(Fold::default()),
        }
    }

    /// Metrics folded from every event in `log`: what a scheduler starting on this log reports.
    pub fn rebuild(log: &dyn EventLog) -> Result<Self, LogError> {
        let metrics = Self::new();
        for event in log.read_all()? {
            metrics.observe(&event?);
        }
        Ok(metrics)
    }

    /// The name of every metric this registry exports (histograms without their suffixes).
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = [
            self.deploys.desc(),
            self.deploy_duration.desc(),
            self.step_duration.desc(),
            self.hosts.desc(),
            self.events.desc(),
            self.redelivered.desc(),
            self.position.desc(),
        ]
        .into_iter()
        .flatten()
        .map(|d| d.fq_name.clone())
        .collect();
        names.sort();
        names
    }

    /// Position of the last event folded in, 0 before any.
    pub fn last_seq(&self) -> Seq {
        self.fold.lock().unwrap_or_else(|p| p.into_inner()).last_seq
    }

    /// Folds one event in, as it lands in the log. An event at or before the last position
    /// seen is a redelivery the log stored once: it counts as redelivered, nothing else.
    pub fn observe(&self, e: &Envelope) {
        // A poisoned lock only means an observer panicked; the counts stay usable.
        let mut fold = self.fold.lock().unwrap_or_else(|p| p.into_inner());
        if e.seq <= fold.last_seq {
            self.redelivered.inc();
            return;
        }
        fold.last_seq = e.seq;
        self.position.set(i64::try_from(e.seq).unwrap_or(i64::MAX));
        self.events.with_label_values(&[e.type_name()]).inc();
        self.durations(&mut fold, e);
        self.host_states(&mut fold, e);
    }

    /// Deploy outcomes and durations, step durations.
    fn durations(&self, fold: &mut Fold, e: &Envelope) {
        let info = fold
            .deploys
            .entry(e.deploy_id.clone())
            .or_insert_with(DeployInfo::unknown);
        if let Event::DeployRequested(r) = &e.event {
            info.service.clone_from(&r.service);
            info.destination = r.destination.clone().unwrap_or_default();
            info.kind = kind_label(r.kind);
        }
        let run_started = *info.run_started.get_or_insert(e.at);
        let outcome = match &e.event {
            Event::DeployCompleted(_) => Some("succeeded"),
            Event::DeployFailed(_) => Some("failed"),
            Event::DeployCancelled(_) => Some("cancelled"),
            _ => None,
        };
        if let Some(outcome) = outcome {
            let labels = [
                info.service.as_str(),
                info.destination.as_str(),
                info.kind,
                outcome,
            ];
            self.deploys.with_label_values(&labels).inc();
            self.deploy_duration
                .with_label_values(&labels)
                .observe(seconds(e.at.millis_since(run_started)));
            info.run_started = None;
            info.host_last.clear();
            return;
        }
        let Some(host) = e.host.as_deref() else {
            return;
        };
        let Some(step) = finished_step(&e.event) else {
            return;
        };
        let took = match (info.host_last.get(host), &e.event) {
            (Some(last), _) => Some(seconds(e.at.millis_since(*last))),
            // A host's first step has no event before it; the pull reports its own duration.
            (None, Event::ImagePulled(p)) => Some(p.duration_ms as f64 / 1000.0),
            (None, _) => None,
        };
        if let Some(took) = took {
            self.step_duration
                .with_label_values(&[step_label(step)])
                .observe(took);
        }
        info.host_last.insert(host.to_owned(), e.at);
    }

    /// The hosts gauge: each service's latest deploy, its hosts by state.
    fn host_states(&self, fold: &mut Fold, e: &Envelope) {
        if let Event::DeployRequested(r) = &e.event {
            let key = (r.service.clone(), r.destination.clone().unwrap_or_default());
            let mut state = DeployState::new(e.deploy_id.clone());
            state.apply(e);
            let mut counts = [0i64; 4];
            for h in state.hosts.values() {
                counts[state_index(&h.status)] += 1;
            }
            for (label, count) in HOST_STATES.iter().zip(counts) {
                self.hosts
                    .with_label_values(&[key.0.as_str(), key.1.as_str(), label])
                    .set(count);
            }
            fold.latest.insert(key, state);
            return;
        }
        let Some(host) = e.host.as_deref() else {
            return;
        };
        let Some((key, state)) = fold
            .latest
            .iter_mut()
            .find(|(_, s)| s.deploy_id == e.deploy_id)
        else {
            return;
        };
        let before = state.hosts.get(host).map(|h| state_index(&h.status));
        state.apply(e);
        let after = state.hosts.get(host).map(|h| state_index(&h.status));
        if before != after {
            if let Some(i) = before {
                self.hosts
                    .with_label_values(&[key.0.as_str(), key.1.as_str(), HOST_STATES[i]])
                    .dec();
            }
            if let Some(i) = after {
                self.hosts
                    .with_label_values(&[key.0.as_str(), key.1.as_str(), HOST_STATES[i]])
                    .inc();
            }
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Encoding well-formed families into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The step an event reports finished on its host, if it is a step event.
pub(crate) fn finished_step(event: &Event) -> Option<Step> {
    Some(match event {
        Event::ImagePulled(_) => Step::PullImage,
        Event::ContainerStarted(_) => Step::StartContainer,
        Event::HealthPassed(_) => Step::AwaitHealthy,
        Event::ProxySwitched(_) => Step::SwitchProxy,
        Event::OldContainerStopped(_) => Step::StopOldContainer,
        Event::AccessoryBooted(_) => Step::BootAccessory,
        _ => return None,
    })
}

pub(crate) fn step_label(step: Step) -> &'static str {
    step.label()
}

pub(crate) fn kind_label(kind: DeployKind) -> &'static str {
    match kind {
        DeployKind::Deploy => "deploy",
        DeployKind::Rollback => "rollback",
        DeployKind::Accessory => "accessory",
    }
}

/// Index into [`HOST_STATES`].
fn state_index(status: &HostStatus) -> usize {
    match status {
        HostStatus::Pending => 0,
        HostStatus::Running => 1,
        HostStatus::Succeeded => 2,
        HostStatus::Failed { .. } => 3,
    }
}

/// Milliseconds as seconds; producers' clocks may disagree a little, never below zero.
fn seconds(ms: i64) -> f64 {
    ms.max(0) as f64 / 1000.0
}

#[cfg(test)]
mod tests;
