//! The executor's own telemetry, off unless configured (`flotilla executor run
//! --otlp-endpoint URL`, or `OTEL_EXPORTER_OTLP_ENDPOINT`; `--metrics-listen ADDR`):
//! - spans: a finished job is one `executor job` span under the deploy's root span, with a
//!   span per step under it, in the deploy's trace. Both ids derive from what the job already
//!   carries (deploy id, host, job id), so no trace context travels on the wire.
//! - metrics: this host's steps by step and outcome, and their durations, on `/metrics`.
//!
//! Both are computed from a finished job's reports (the events' own times, and when the job
//! was taken), after the reports are durable: telemetry never holds a job up, and an
//! exporter that fails only logs. Installed once per process by the CLI (`install`), so the
//! job loop's one hook (`job_finished`) needs no new parameter.

use std::sync::{Arc, OnceLock};

use flotilla_events::{NewEvent, Timestamp};
use flotilla_protocol::wire::{Job, Report};
use flotilla_telemetry::span::ms_to_nanos;
use flotilla_telemetry::{Attr, Exporter, Span, Status, TraceId};
use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

/// The `service.name` the executor's spans are reported under.
pub const SERVICE_NAME: &str = "flotilla-executor";

static INSTALLED: OnceLock<Telemetry> = OnceLock::new();

/// What the executor reports beyond its events.
#[derive(Debug, Default)]
pub struct Telemetry {
    exporter: Option<Exporter>,
    metrics: Option<Arc<StepMetrics>>,
}

impl Telemetry {
    /// Spans to `exporter` (if any), metrics kept (if `metrics`).
    pub fn new(exporter: Option<Exporter>, metrics: Option<Arc<StepMetrics>>) -> Self {
        Self { exporter, metrics }
    }
}

/// Makes `telemetry` the process's; a second call is ignored (one executor per process).
pub fn install(telemetry: Telemetry) {
    let _ = INSTALLED.set(telemetry);
}

/// The hook the job loop calls once a job's reports are durable.
pub(crate) fn job_finished(job: &Job, reports: &[Report], taken: Timestamp) {
    let Some(t) = INSTALLED.get() else {
        return;
    };
    let steps = steps(job, reports, taken);
    if let Some(m) = &t.metrics {
        m.observe(&job.host, &steps);
    }
    if let Some(exporter) = &t.exporter {
        let spans = spans(job, &steps, taken);
        let exporter = exporter.clone();
        tokio::spawn(async move {
            if let Err(e) = exporter.export(&spans).await {
                tracing::warn!(error = %e, "traces: export failed");
            }
        });
    }
}

/// One step of a finished job, as its reports tell it.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRun {
    /// Its place in the job.
    pub index: usize,
    /// `pull_image`, `await_healthy`, ...
    pub name: &'static str,
    /// From the previous step's last event (the job's taking, for the first).
    pub start: Timestamp,
    /// Its last event.
    pub end: Timestamp,
    /// The error, when it failed.
    pub error: Option<String>,
}

/// The steps `reports` tell of, in order.
pub fn steps(job: &Job, reports: &[Report], taken: Timestamp) -> Vec<StepRun> {
    let mut out: Vec<StepRun> = Vec::new();
    let events: Vec<(Option<u16>, &NewEvent)> = reports
        .iter()
        .filter_map(|r| match r {
            Report::Event(e) => Some((e.step, &e.event)),
            Report::Refused(_) => None,
        })
        .collect();
    for (step, e) in &events {
        let Some(index) = step.map(usize::from) else {
            if let flotilla_events::Event::HostFailed(f) = &e.event {
                failed(job, &mut out, f, e.at, taken);
            }
            continue;
        };
        let Some(kind) = job.steps.get(index).map(|s| s.kind()) else {
            continue;
        };
        match out.last_mut() {
            Some(s) if s.index == index => s.end = e.at,
            _ => {
                let start = out.last().map_or(taken, |s| s.end);
                out.push(StepRun {
                    index,
                    name: kind.label(),
                    start,
                    end: e.at,
                    error: None,
                });
            }
        }
    }
    out
}

/// Puts a job's `HostFailed` on the step that failed: the last one reported if it is of that
/// kind (it reported events before failing), else the next step of that kind, which failed
/// without reporting any.
fn failed(
    job: &Job,
    out: &mut Vec<StepRun>,
    f: &flotilla_events::event::HostFailed,
    at: Timestamp,
    taken: Timestamp,
) {
    if let Some(s) = out.last_mut()
        && s.name == f.step.label()
    {
        s.error = Some(f.error.clone());
        return;
    }
    let from = out.last().map_or(0, |s| s.index + 1);
    let Some(index) = (from..job.steps.len()).find(|&i| job.steps[i].kind() == f.step) else {
        return;
    };
    out.push(StepRun {
        index,
        name: f.step.label(),
        start: out.last().map_or(taken, |s| s.end),
        end: at,
        error: Some(f.error.clone()),
    });
}

/// The job's spans: `executor job` under the deploy's root, a span per step under it.
pub fn spans(job: &Job, steps: &[StepRun], taken: Timestamp) -> Vec<Span> {
    let trace = TraceId::for_deploy(job.deploy_id.as_str());
    let issued = job.issued_at.unix_ms().to_string();
    let job_span = trace.span(&["executor", &job.host, &job.id, &issued]);
    let common = |extra: Vec<(String, Attr)>| {
        let mut a = vec![
            (
                "flotilla.deploy.id".to_owned(),
                Attr::Str(job.deploy_id.to_string()),
            ),
            ("flotilla.host".to_owned(), Attr::Str(job.host.clone())),
            ("flotilla.job.id".to_owned(), Attr::Str(job.id.clone())),
        ];
        a.extend(extra);
        a
    };
    let status = |error: &Option<String>| match error {
        Some(e) => Status::Error(e.clone()),
        None => Status::Ok,
    };
    let outcome = |error: &Option<String>| {
        let mut a = vec![(
            "flotilla.outcome".to_owned(),
            Attr::Str(
                if error.is_some() {
                    "failed"
                } else {
                    "succeeded"
                }
                .to_owned(),
            ),
        )];
        if let Some(e) = error {
            a.push(("flotilla.error".to_owned(), Attr::Str(e.clone())));
        }
        a
    };
    let mut spans: Vec<Span> = steps
        .iter()
        .map(|s| {
            let mut extra = vec![("flotilla.step".to_owned(), Attr::Str(s.name.to_owned()))];
            extra.extend(outcome(&s.error));
            Span {
                trace_id: trace,
                span_id: trace.span(&[
                    "executor",
                    &job.host,
                    &job.id,
                    &issued,
                    &s.index.to_string(),
                ]),
                parent: Some(job_span),
                name: s.name.to_owned(),
                start_unix_nanos: ms_to_nanos(s.start.unix_ms()),
                end_unix_nanos: ms_to_nanos(s.end.unix_ms()),
                attributes: common(extra),
                status: status(&s.error),
            }
        })
        .collect();
    let error = steps.iter().find_map(|s| s.error.clone());
    let end = steps.last().map_or(taken, |s| s.end);
    spans.push(Span {
        trace_id: trace,
        span_id: job_span,
        parent: Some(trace.root()),
        name: "executor job".to_owned(),
        start_unix_nanos: ms_to_nanos(taken.unix_ms()),
        end_unix_nanos: ms_to_nanos(end.unix_ms()),
        attributes: common(outcome(&error)),
        status: status(&error),
    });
    spans
}

/// This host's step counts and durations, for `/metrics`.
#[derive(Debug)]
pub struct StepMetrics {
    registry: Registry,
    steps: IntCounterVec,
    duration: HistogramVec,
}

impl StepMetrics {
    /// Empty metrics in their own registry.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let steps = IntCounterVec::new(
            Opts::new(
                "flotilla_executor_steps_total",
                "Steps this executor ran, by host, step and outcome",
            ),
            &["host", "step", "outcome"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "flotilla_executor_step_duration_seconds",
                "How long this executor's steps took, by host and step",
            )
            .buckets(vec![
                0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
            ]),
            &["host", "step"],
        )?;
        registry.register(Box::new(steps.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        Ok(Self {
            registry,
            steps,
            duration,
        })
    }

    fn observe(&self, host: &str, steps: &[StepRun]) {
        for s in steps {
            let outcome = if s.error.is_some() {
                "failed"
            } else {
                "succeeded"
            };
            self.steps.with_label_values(&[host, s.name, outcome]).inc();
            self.duration
                .with_label_values(&[host, s.name])
                .observe(s.end.millis_since(s.start).max(0) as f64 / 1000.0);
        }
    }

    /// The Prometheus text of these metrics.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Err(e) = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "metrics: encoding failed");
        }
        out
    }
}

#[cfg(test)]
mod tests;
