//! Running one verified job: its steps in order, each step's events reported as soon as the
//! step is done, then `HostSucceeded` or `HostFailed`. Between steps the runner looks at the
//! stop signal: on shutdown it finishes the current step, reports it, and hands the job back
//! (the transport NAKs it; the rerun skips what is done because steps are idempotent).
//! A report that cannot be published is tried again for a while before the job is handed
//! back: the rerun skips a step that is done, and with it the events that step reported.
//! Every event is scrubbed of the secret values the job carried before it is published: an
//! error text that quotes one (a registry's answer, a crash message) says `[secret NAME]`.

use std::future::Future;
use std::time::Duration;

use flotilla_events::event::{HostFailed, HostSucceeded};
use tokio::sync::watch;

use crate::runtime::{Proxy, Runtime};
use crate::steps::Executor;
use flotilla_protocol::text::error_chain;
use flotilla_protocol::wire::{Job, JobEvent, Report};

/// Publishing a report failed (NATS unreachable, no stream ack); the client's error is the
/// source.
#[derive(Debug, thiserror::Error)]
#[error("publishing a report")]
pub struct SinkError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// Where reports go: JetStream in production, a vector in tests.
pub trait Sink: Send + Sync {
    /// Publishes `report` and returns once it is durable.
    fn report(&self, report: &Report) -> impl Future<Output = Result<(), SinkError>> + Send;
}

/// How long one report is tried again before the job is handed back: longer than losing a
/// NATS node takes to heal (the client reconnects to another node within a few backoff
/// steps, and an R3 stream elects a new leader within seconds), so a report sent to the node
/// that died reaches the stream instead of dying with it. Handing the job back would lose it
/// for good when its step does not repeat what it did (a stop finds the container stopped
/// already and reports nothing).
pub const REPORT_RETRY_FOR: Duration = Duration::from_secs(30);
/// The first pause between two tries of a report; it doubles up to [`REPORT_RETRY_MAX_PAUSE`].
const REPORT_RETRY_PAUSE: Duration = Duration::from_millis(100);
/// The longest pause between two tries of a report: short next to [`REPORT_RETRY_FOR`], so a
/// healed cluster is noticed quickly.
const REPORT_RETRY_MAX_PAUSE: Duration = Duration::from_secs(2);

/// Publishes `report`, trying again for up to [`REPORT_RETRY_FOR`] when it fails. Trying the
/// same report again is safe: its event id is the stream's message id (a copy that did reach
/// the stream is deduplicated) and the log appends an event id once.
pub async fn report_durably<S: Sink>(sink: &S, report: &Report) -> Result<(), SinkError> {
    let deadline = tokio::time::Instant::now() + REPORT_RETRY_FOR;
    let mut pause = REPORT_RETRY_PAUSE;
    loop {
        match sink.report(report).await {
            Ok(()) => return Ok(()),
            Err(e) if tokio::time::Instant::now() + pause < deadline => {
                tracing::warn!(error = %error_chain(&e), retry_in_ms = pause.as_millis() as u64, "report not published; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(REPORT_RETRY_MAX_PAUSE);
            }
            Err(e) => return Err(e),
        }
    }
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
    let secrets = ex.job_secrets(job);
    let scrub = |event| scrub(event, &secrets);
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
            Err(f) => (f.events, Some((f.error, f.cause))),
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
                event: ex.envelope(job, Some(index), k, scrub(event)),
            });
            report_durably(sink, &report).await?;
            reports.push(report);
        }
        if let Some((error, cause)) = error {
            tracing::warn!(job = %job.id, step = index, %error, ?cause, "step failed");
            failed = Some(HostFailed {
                step: step.kind(),
                error: scrub_text(&error, &secrets),
                cause,
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
    report_durably(sink, &report).await?;
    reports.push(report);
    Ok(JobOutcome::Finished(reports))
}

/// Secret values shorter than this are not scrubbed: replacing every `true`, `prod` or `demo`
/// in a report would garble its container names and images while hiding nothing a guess
/// would not find (such a value is no real secret).
const SCRUB_MIN_LEN: usize = 8;

/// `text` with every secret value in it replaced by `[secret NAME]`.
pub fn scrub_text(text: &str, secrets: &[(String, flotilla_protocol::sealing::Secret)]) -> String {
    let mut out = text.to_owned();
    for (name, secret) in secrets {
        let value = secret.expose();
        if value.len() >= SCRUB_MIN_LEN && out.contains(value) {
            out = out.replace(value, &format!("[secret {name}]"));
        }
    }
    out
}

/// `event` with every string in it scrubbed ([`scrub_text`]). Events are walked as JSON so
/// no field is forgotten when one is added; an event that would not survive the round trip is
/// reported as it was (its strings hold nothing but what it was made of).
fn scrub(
    event: flotilla_events::Event,
    secrets: &[(String, flotilla_protocol::sealing::Secret)],
) -> flotilla_events::Event {
    if secrets.is_empty() {
        return event;
    }
    let Ok(mut value) = serde_json::to_value(&event) else {
        return event;
    };
    fn walk(v: &mut serde_json::Value, secrets: &[(String, flotilla_protocol::sealing::Secret)]) {
        match v {
            serde_json::Value::String(s) => *s = scrub_text(s, secrets),
            serde_json::Value::Array(items) => items.iter_mut().for_each(|i| walk(i, secrets)),
            serde_json::Value::Object(map) => map.values_mut().for_each(|i| walk(i, secrets)),
            _ => {}
        }
    }
    walk(&mut value, secrets);
    serde_json::from_value(value).unwrap_or(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_events::event::HealthFailed;
    use flotilla_protocol::sealing::{HostKey, seal};

    /// A secret value quoted anywhere in an event's text is replaced by its name before the
    /// event leaves the host; short values and other text are left alone.
    #[test]
    fn secrets_are_scrubbed_from_events() {
        let key = HostKey::generate();
        let open = |v: &str| {
            key.open(&seal(&key.public_key_base64(), v).unwrap())
                .unwrap()
        };
        let secrets = vec![
            ("SECRET_KEY_BASE".to_owned(), open("sk-1234-abcd")),
            ("SHORT".to_owned(), open("demo")),
        ];
        let event: flotilla_events::Event = HealthFailed {
            attempts: 3,
            last_response: Some("500 boom sk-1234-abcd".into()),
            error: "app crashed: key=sk-1234-abcd mode demo".into(),
        }
        .into();
        let flotilla_events::Event::HealthFailed(h) = scrub(event, &secrets) else {
            panic!("same event type")
        };
        assert_eq!(
            h.error,
            "app crashed: key=[secret SECRET_KEY_BASE] mode demo"
        );
        assert_eq!(
            h.last_response.as_deref(),
            Some("500 boom [secret SECRET_KEY_BASE]")
        );
        assert_eq!(h.attempts, 3);
    }
}
