//! Running one verified job: its steps in order, each step's events reported as soon as the
//! step is done, then `HostSucceeded` or `HostFailed`. Between steps the runner looks at the
//! stop signal: on shutdown it finishes the current step, reports it, and hands the job back
//! (the transport NAKs it; the rerun skips what is done because steps are idempotent).

use std::future::Future;

use flotilla_events::event::{FailureCause, HostFailed, HostSucceeded};
use tokio::sync::watch;

use crate::runtime::{Proxy, Runtime};
use crate::steps::Executor;
use flotilla_protocol::wire::{Job, JobEvent, Report};

/// Publishing a report failed (NATS unreachable, no stream ack).
#[derive(Debug, thiserror::Error)]
#[error("publish report: {0}")]
pub struct SinkError(pub String);

/// Where reports go: JetStream in production, a vector in tests.
pub trait Sink: Send + Sync {
    /// Publishes `report` and returns once it is durable.
    fn report(&self, report: &Report) -> impl Future<Output = Result<(), SinkError>> + Send;
}

/// How a job run ended.
#[derive(Debug)]
pub enum JobOutcome {
    /// Every step ran or one failed: the job is done; these are all its reports, in order.
    Finished(Vec<Report>),
    /// Shutdown came between two steps: the job must be delivered again.
    Interrupted,
}

/// Runs `job`'s steps, reporting each step's events through `sink`.
pub async fn run_job<R: Runtime, P: Proxy, S: Sink>(
    ex: &Executor<R, P>,
    job: &Job,
    sink: &S,
    stop: &watch::Receiver<bool>,
) -> Result<JobOutcome, SinkError> {
    let mut reports = Vec::new();
    let mut failed = None;
    for (index, step) in job.steps.iter().enumerate() {
        if *stop.borrow() {
            tracing::info!(job = %job.id, step = index, "shutting down: job handed back before this step");
            return Ok(JobOutcome::Interrupted);
        }
        let started = tokio::time::Instant::now();
        let (events, error) = match ex.run_step(step).await {
            Ok(events) => (events, None),
            Err(f) => (f.events, Some(f.error)),
        };
        tracing::info!(
            job = %job.id,
            step = index,
            kind = ?step.kind(),
            ms = started.elapsed().as_millis() as u64,
            ok = error.is_none(),
            "step done"
        );
        for (k, event) in events.into_iter().enumerate() {
            let report = Report::Event(JobEvent {
                job_id: job.id.clone(),
                step: u16::try_from(index).ok(),
                event: ex.envelope(job, Some(index), k, event),
            });
            sink.report(&report).await?;
            reports.push(report);
        }
        if let Some(error) = error {
            tracing::warn!(job = %job.id, step = index, %error, "step failed");
            failed = Some(HostFailed {
                step: step.kind(),
                error,
                cause: FailureCause::StepFailed,
            });
            break;
        }
    }
    let last = match failed {
        Some(f) => f.into(),
        None => HostSucceeded {}.into(),
    };
    let report = Report::Event(JobEvent {
        job_id: job.id.clone(),
        step: None,
        event: ex.envelope(job, None, 0, last),
    });
    sink.report(&report).await?;
    reports.push(report);
    Ok(JobOutcome::Finished(reports))
}
