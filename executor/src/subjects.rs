//! The NATS contract in one place: subject names, stream and consumer settings.
//!
//! The scheduler imports these so both ends agree. Host ids and deploy ids become subject
//! *tokens*: lowercase, with every character outside `[a-z0-9_-]` turned into `-`, so
//! `10.0.0.5` is `10-0-0-5` and `Web.Example` is `web-example`.

use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};

/// The work-queue stream holding signed jobs, one subject per host.
pub const JOBS_STREAM: &str = "FLOTILLA_JOBS";
/// The stream holding what executors report, one subject per deploy and host.
pub const EVENTS_STREAM: &str = "FLOTILLA_EVENTS";
/// Prefix of job subjects: `flotilla.job.<host>`.
pub const JOB_PREFIX: &str = "flotilla.job";
/// Prefix of event subjects: `flotilla.evt.<deploy>.<host>`.
pub const EVENT_PREFIX: &str = "flotilla.evt";
/// Prefix of heartbeat subjects: `flotilla.hb.<host>`. Executors publish with core NATS; the
/// scheduler's [`HEARTBEATS_STREAM`] keeps the latest of each host for [`HEARTBEAT_KEPT`].
pub const HEARTBEAT_PREFIX: &str = "flotilla.hb";

/// How long the server waits for an ack before redelivering a job. The executor sends
/// "in progress" acks while a job runs, so this bounds only how long a crashed executor's
/// job waits before it is delivered again.
pub const JOB_ACK_WAIT: Duration = Duration::from_secs(15);
/// Deliveries of one job before the server gives up on it (bounded redelivery).
pub const JOB_MAX_DELIVER: i64 = 10;
/// Window in which a job published twice with the same id is stored once.
pub const JOB_DEDUP_WINDOW: Duration = Duration::from_secs(120);

/// A host id or deploy id as a subject token: lowercase, dots and anything else outside
/// `[a-z0-9_-]` become dashes; an empty id becomes `_`.
pub fn token(id: &str) -> String {
    if id.is_empty() {
        return "_".to_owned();
    }
    id.chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// `flotilla.job.<host>`: where the scheduler publishes a host's jobs.
pub fn job_subject(host: &str) -> String {
    format!("{JOB_PREFIX}.{}", token(host))
}

/// `flotilla.evt.<deploy>.<host>`: where a host's executor reports a deploy's events.
pub fn event_subject(deploy: &str, host: &str) -> String {
    format!("{EVENT_PREFIX}.{}.{}", token(deploy), token(host))
}

/// `flotilla.evt.<deploy>.>`: every host's events of one deploy (for a subscriber or consumer filter).
pub fn deploy_events_filter(deploy: &str) -> String {
    format!("{EVENT_PREFIX}.{}.>", token(deploy))
}

/// `flotilla.hb.<host>`: a host's heartbeats.
pub fn heartbeat_subject(host: &str) -> String {
    format!("{HEARTBEAT_PREFIX}.{}", token(host))
}

/// The server keeps each host's latest heartbeat here (in memory), for [`HEARTBEAT_KEPT`].
pub const HEARTBEATS_STREAM: &str = "FLOTILLA_HEARTBEATS";
/// How long a heartbeat still vouches for its executor: a bit over two of the executor's
/// default 5 s periods. An executor beating less often is simply waited for, as before.
pub const HEARTBEAT_KEPT: Duration = Duration::from_secs(12);

/// Executors publish heartbeats with core NATS; this stream captures them, latest per host.
pub fn heartbeats_stream_config() -> stream::Config {
    stream::Config {
        name: HEARTBEATS_STREAM.to_owned(),
        description: Some("flotilla: each executor's latest heartbeat".to_owned()),
        subjects: vec![format!("{}.*", HEARTBEAT_PREFIX)],
        retention: RetentionPolicy::Limits,
        storage: StorageType::Memory,
        discard: DiscardPolicy::Old,
        max_messages_per_subject: 1,
        max_age: HEARTBEAT_KEPT,
        ..Default::default()
    }
}

/// The durable consumer name of a host's executor on the jobs stream.
pub fn job_consumer(host: &str) -> String {
    format!("executor-{}", token(host))
}

/// The jobs stream: work-queue retention (a job is gone once acked), file storage,
/// duplicates by `Nats-Msg-Id` (= job id) dropped within [`JOB_DEDUP_WINDOW`].
pub fn jobs_stream_config() -> stream::Config {
    stream::Config {
        name: JOBS_STREAM.to_owned(),
        description: Some("flotilla: signed jobs, one subject per host".to_owned()),
        subjects: vec![format!("{JOB_PREFIX}.*")],
        retention: RetentionPolicy::WorkQueue,
        storage: StorageType::File,
        discard: DiscardPolicy::Old,
        duplicate_window: JOB_DEDUP_WINDOW,
        ..Default::default()
    }
}

/// The events stream: limits retention (kept until the scheduler's log has them and
/// beyond, for `flotilla events` to rebuild from), duplicates by event id dropped.
pub fn events_stream_config() -> stream::Config {
    stream::Config {
        name: EVENTS_STREAM.to_owned(),
        description: Some("flotilla: events reported by executors".to_owned()),
        subjects: vec![format!("{EVENT_PREFIX}.>")],
        retention: RetentionPolicy::Limits,
        storage: StorageType::File,
        max_age: Duration::from_secs(30 * 24 * 3600),
        duplicate_window: JOB_DEDUP_WINDOW,
        ..Default::default()
    }
}

/// A host's durable pull consumer: only its own subject, explicit ack, bounded redelivery.
pub fn job_consumer_config(host: &str) -> pull::Config {
    pull::Config {
        durable_name: Some(job_consumer(host)),
        description: Some(format!("flotilla executor on {host}")),
        filter_subject: job_subject(host),
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ack_wait: JOB_ACK_WAIT,
        max_deliver: JOB_MAX_DELIVER,
        max_ack_pending: 1,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Host ids with dots, capitals or odd characters become single subject tokens, so a
    /// host's subject never spans two tokens and never collides with a wildcard.
    #[test]
    fn ids_become_single_tokens() {
        assert_eq!(token("10.0.0.5"), "10-0-0-5");
        assert_eq!(token("Web-1.Example.COM"), "web-1-example-com");
        assert_eq!(token("a*b>c d"), "a-b-c-d");
        assert_eq!(token(""), "_");
        assert_eq!(job_subject("10.0.0.5"), "flotilla.job.10-0-0-5");
        assert_eq!(
            event_subject("01JDEPLOY", "10.0.0.5"),
            "flotilla.evt.01jdeploy.10-0-0-5"
        );
        assert_eq!(heartbeat_subject("H1"), "flotilla.hb.h1");
        assert_eq!(job_consumer("10.0.0.5"), "executor-10-0-0-5");
    }

    /// Each host's consumer sees only its own jobs and must ack them explicitly.
    #[test]
    fn consumer_is_per_host_with_explicit_ack() {
        let c = job_consumer_config("10.0.0.5");
        assert_eq!(c.filter_subject, "flotilla.job.10-0-0-5");
        assert_eq!(c.ack_policy, AckPolicy::Explicit);
        assert!(c.max_deliver > 1);
        assert_eq!(jobs_stream_config().retention, RetentionPolicy::WorkQueue);
    }
}
