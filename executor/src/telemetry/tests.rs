#![allow(clippy::unwrap_used)]

use super::*;
use flotilla_events::event::{FailureCause, HealthFailed, HostFailed, ImagePulled, Step};
use flotilla_events::{DeployId, Event};
use flotilla_protocol::wire::{AwaitHealthy, JobEvent, JobStep, PullImage};

const DEPLOY: &str = "01JZ8XK6Q0V3M9N4B2C7D5E8F1";
const T0: i64 = 1_795_000_000_000;

fn job() -> Job {
    Job {
        id: "01JOBTEST".into(),
        deploy_id: DeployId::from(DEPLOY),
        host: "10.0.0.5".into(),
        issued_at: Timestamp::from_unix_ms(T0 - 50),
        expires_at: Timestamp::from_unix_ms(T0 + 60_000),
        generation: 1,
        scope: "app".into(),
        steps: vec![
            JobStep::PullImage(PullImage {
                image: "r/app:v1".into(),
                auth: None,
            }),
            JobStep::AwaitHealthy(AwaitHealthy {
                container: "app-web-v1".into(),
                readiness_delay_ms: 0,
                timeout_ms: 1000,
                interval_ms: 100,
            }),
        ],
    }
}

fn report(step: Option<u16>, at: i64, event: impl Into<Event>) -> Report {
    Report::Event(JobEvent {
        job_id: "01JOBTEST".into(),
        step,
        event: NewEvent::new(DeployId::from(DEPLOY), "executor@10.0.0.5", event)
            .on_host("10.0.0.5")
            .at(Timestamp::from_unix_ms(T0 + at)),
    })
}

fn reports() -> Vec<Report> {
    vec![
        report(
            Some(0),
            400,
            ImagePulled {
                image: "r/app:v1".into(),
                digest: "sha256:aa".into(),
                bytes: 1,
                duration_ms: 400,
            },
        ),
        report(
            Some(1),
            1400,
            HealthFailed {
                attempts: 10,
                last_response: None,
                error: "unhealthy".into(),
            },
        ),
        report(
            None,
            1401,
            HostFailed {
                step: Step::AwaitHealthy,
                error: "unhealthy after 1s".into(),
                cause: FailureCause::StepFailed,
            },
        ),
    ]
}

/// A finished job is an `executor job` span under the deploy's root span (the same id the
/// scheduler gives its root), with its steps under it, timed from when the job was taken to
/// each step's last event, the failure on the step that failed.
#[test]
fn a_job_is_a_span_under_the_deploy_root_with_its_steps() {
    let taken = Timestamp::from_unix_ms(T0);
    let steps = steps(&job(), &reports(), taken);
    assert_eq!(steps.len(), 2);
    assert_eq!(
        (steps[0].name, steps[1].name),
        ("pull_image", "await_healthy")
    );
    assert_eq!(steps[0].start, taken);
    assert_eq!(steps[0].end, steps[1].start);
    assert_eq!(steps[1].error.as_deref(), Some("unhealthy after 1s"));

    let spans = spans(&job(), &steps, taken);
    let trace = TraceId::for_deploy(DEPLOY);
    let job_span = spans.iter().find(|s| s.name == "executor job").unwrap();
    assert_eq!(job_span.parent, Some(trace.root()));
    assert_eq!(job_span.start_unix_nanos, ms_to_nanos(T0));
    assert_eq!(job_span.end_unix_nanos, ms_to_nanos(T0 + 1400));
    assert_eq!(job_span.attr("flotilla.outcome"), Some("failed"));
    let children: Vec<&Span> = spans
        .iter()
        .filter(|s| s.parent == Some(job_span.span_id))
        .collect();
    assert_eq!(children.len(), 2);
    assert!(
        children
            .iter()
            .all(|s| s.trace_id == trace && s.attr("flotilla.host") == Some("10.0.0.5"))
    );
    assert_eq!(
        children[1].status,
        Status::Error("unhealthy after 1s".into())
    );
}

/// A step that failed without reporting an event (a pull that never got its image) is still
/// a failed span, not an error pinned on the step before it.
#[test]
fn a_step_failing_silently_is_its_own_failed_span() {
    let taken = Timestamp::from_unix_ms(T0);
    let reports = vec![report(
        None,
        700,
        HostFailed {
            step: Step::PullImage,
            error: "pull: manifest unknown".into(),
            cause: FailureCause::StepFailed,
        },
    )];
    let steps = steps(&job(), &reports, taken);
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].name, "pull_image");
    assert_eq!(
        (steps[0].start, steps[0].end),
        (taken, Timestamp::from_unix_ms(T0 + 700))
    );
    assert_eq!(steps[0].error.as_deref(), Some("pull: manifest unknown"));
}

/// The step metrics count each step by outcome and observe its duration, per host.
#[test]
fn step_metrics_count_steps_by_host_and_outcome() {
    let m = StepMetrics::new().unwrap();
    let taken = Timestamp::from_unix_ms(T0);
    m.observe("10.0.0.5", &steps(&job(), &reports(), taken));
    let text = String::from_utf8(m.render()).unwrap();
    assert!(
        text.contains(r#"flotilla_executor_steps_total{host="10.0.0.5",outcome="succeeded",step="pull_image"} 1"#),
        "{text}"
    );
    assert!(text.contains(
        r#"flotilla_executor_steps_total{host="10.0.0.5",outcome="failed",step="await_healthy"} 1"#
    ));
    assert!(text.contains(
        r#"flotilla_executor_step_duration_seconds_sum{host="10.0.0.5",step="await_healthy"} 1"#
    ));
}
