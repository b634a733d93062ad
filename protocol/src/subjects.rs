//! The NATS contract in one place: subject names, stream, consumer and key-value settings.
//!
//! Settings are plain data ([`StreamSpec`], [`ConsumerSpec`]): this crate depends on no NATS
//! client; the `nats` feature turns them into async-nats's config types for the two transport
//! modules (the scheduler's and the executor's), so both ends agree. Host ids and deploy ids become subject
//! *tokens*: lowercase, with every character outside `[a-z0-9_-]` turned into `-`, so
//! `10.0.0.5` is `10-0-0-5` and `Web.Example` is `web-example`.

use std::time::Duration;

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
/// Heartbeats missed in a row before a running host's executor counts as lost (its deploy
/// fails that host at once instead of waiting for `step_timeout`). Three: one lost message or
/// a slow beat is not a dead executor.
pub const BEATS_MISSED_BEFORE_LOST: u32 = 3;

/// How long a heartbeat still vouches for its executor: a bit over two of the executor's
/// default 5 s periods. An executor beating less often is simply waited for, as before.
pub const HEARTBEAT_KEPT: Duration = Duration::from_secs(12);

/// How a stream keeps its messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retention {
    /// Kept until the limits say otherwise (age, count, size).
    Limits,
    /// Gone once acknowledged: each message is work for exactly one consumer.
    WorkQueue,
}

/// Where a stream keeps its messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    File,
    Memory,
}

/// Which messages a full stream refuses or drops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Discard {
    /// Drop the oldest to make room.
    Old,
    /// Refuse the new message.
    New,
}

/// A JetStream stream's settings, as plain data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamSpec {
    pub name: String,
    pub description: String,
    pub subjects: Vec<String>,
    pub retention: Retention,
    pub storage: Storage,
    pub discard: Discard,
    /// `None`: kept regardless of age.
    pub max_age: Option<Duration>,
    /// The stream's size cap; the oldest go first (or the newest are refused, per `discard`).
    pub max_bytes: i64,
    /// `None`: no per-subject limit.
    pub max_messages_per_subject: Option<i64>,
    /// Window in which a second message with the same `Nats-Msg-Id` is dropped.
    pub duplicate_window: Option<Duration>,
    /// Key-value buckets: rollups allowed, deletes denied, direct gets on.
    pub key_value: bool,
}

/// Where a consumer starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliverFrom {
    All,
    LastPerSubject,
}

/// A pull consumer's settings, as plain data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerSpec {
    /// `None`: an ephemeral consumer.
    pub durable_name: Option<String>,
    pub description: String,
    pub filter_subject: String,
    pub deliver_from: DeliverFrom,
    /// Explicit acks (`true`) or none.
    pub explicit_ack: bool,
    pub ack_wait: Option<Duration>,
    pub max_deliver: Option<i64>,
    pub max_ack_pending: Option<i64>,
    /// A consumer unused this long is deleted by the server.
    pub inactive_threshold: Option<Duration>,
}

/// Executors publish heartbeats with core NATS; this stream captures them, latest per host.
pub fn heartbeats_stream() -> StreamSpec {
    StreamSpec {
        name: HEARTBEATS_STREAM.to_owned(),
        description: "flotilla: each executor's latest heartbeat".to_owned(),
        subjects: vec![format!("{HEARTBEAT_PREFIX}.*")],
        retention: Retention::Limits,
        storage: Storage::Memory,
        discard: Discard::Old,
        max_age: Some(HEARTBEAT_KEPT),
        max_bytes: HEARTBEATS_MAX_BYTES,
        max_messages_per_subject: Some(1),
        duplicate_window: None,
        key_value: false,
    }
}

/// Every host's heartbeats (a subscription or consumer filter).
pub fn all_heartbeats() -> String {
    format!("{HEARTBEAT_PREFIX}.*")
}

/// The durable consumer name of a host's executor on the jobs stream.
pub fn job_consumer(host: &str) -> String {
    format!("executor-{}", token(host))
}

/// The jobs stream: work-queue retention (a job is gone once acked), file storage,
/// duplicates by `Nats-Msg-Id` (= job id) dropped within [`JOB_DEDUP_WINDOW`].
pub fn jobs_stream() -> StreamSpec {
    StreamSpec {
        name: JOBS_STREAM.to_owned(),
        description: "flotilla: signed jobs, one subject per host".to_owned(),
        subjects: vec![format!("{JOB_PREFIX}.*")],
        retention: Retention::WorkQueue,
        storage: Storage::File,
        // New jobs are refused rather than old ones silently dropped when full.
        discard: Discard::New,
        // A job is useless once expired: nothing older is kept.
        max_age: Some(crate::signing::MAX_JOB_VALIDITY),
        max_bytes: JOBS_MAX_BYTES,
        max_messages_per_subject: None,
        duplicate_window: Some(JOB_DEDUP_WINDOW),
        key_value: false,
    }
}

/// Size caps of the streams, so a flood (or a bug) fills no control host's disk. JetStream
/// reserves each cap when the stream is made, so they must also fit a small server's disk
/// and memory (a 10 GB VPS): jobs are a few KB each and consumed within minutes; heartbeats
/// keep one small message per host (in memory); events are ~200 bytes and kept a month
/// (512 MiB holds about 2.5 million: a 100-host fleet deploying hourly for a month).
pub const JOBS_MAX_BYTES: i64 = 64 << 20;
pub const HEARTBEATS_MAX_BYTES: i64 = 8 << 20;
pub const EVENTS_MAX_BYTES: i64 = 512 << 20;

/// How long executors' reports are kept in NATS: far longer than any scheduler restart, and
/// the source `flotilla events` can rebuild a lost log from.
pub const EVENTS_KEPT: Duration = Duration::from_secs(30 * 24 * 3600);

/// The events stream: limits retention (kept until the scheduler's log has them and
/// beyond, for `flotilla events` to rebuild from), duplicates by event id dropped.
pub fn events_stream() -> StreamSpec {
    StreamSpec {
        name: EVENTS_STREAM.to_owned(),
        description: "flotilla: events reported by executors".to_owned(),
        subjects: vec![format!("{EVENT_PREFIX}.>")],
        retention: Retention::Limits,
        storage: Storage::File,
        discard: Discard::Old,
        max_age: Some(EVENTS_KEPT),
        max_bytes: EVENTS_MAX_BYTES,
        max_messages_per_subject: None,
        duplicate_window: Some(JOB_DEDUP_WINDOW),
        key_value: false,
    }
}

/// A host's durable pull consumer: only its own subject, explicit ack, bounded redelivery.
pub fn job_consumer_spec(host: &str) -> ConsumerSpec {
    ConsumerSpec {
        durable_name: Some(job_consumer(host)),
        description: format!("flotilla executor on {host}"),
        filter_subject: job_subject(host),
        deliver_from: DeliverFrom::All,
        explicit_ack: true,
        ack_wait: Some(JOB_ACK_WAIT),
        max_deliver: Some(JOB_MAX_DELIVER),
        max_ack_pending: Some(1),
        inactive_threshold: None,
    }
}

/// A report not acknowledged this long (its scheduler died before making it durable) is
/// delivered again, to a resumed scheduler.
pub const REPORT_ACK_WAIT: Duration = Duration::from_secs(10);
/// A deploy's consumer outlives a scheduler that died mid-deploy this long, so
/// `flotilla replay --resume` the next day still gets the reports it had not acknowledged.
pub const DEPLOY_CONSUMER_KEPT: Duration = Duration::from_secs(24 * 3600);

/// The scheduler's durable consumer of one deploy's reports.
pub fn deploy_consumer(deploy: &str) -> String {
    format!("scheduler-{}", token(deploy))
}

/// See [`deploy_consumer`]: every host's reports of one deploy, explicit ack.
pub fn deploy_consumer_spec(deploy: &str) -> ConsumerSpec {
    ConsumerSpec {
        durable_name: Some(deploy_consumer(deploy)),
        description: format!("flotilla scheduler: reports of deploy {deploy}"),
        filter_subject: deploy_events_filter(deploy),
        deliver_from: DeliverFrom::All,
        explicit_ack: true,
        ack_wait: Some(REPORT_ACK_WAIT),
        max_deliver: None,
        max_ack_pending: None,
        inactive_threshold: Some(DEPLOY_CONSUMER_KEPT),
    }
}

/// An ephemeral consumer cleaned up this long after its reader is gone.
pub const EPHEMERAL_CONSUMER_KEPT: Duration = Duration::from_secs(5);

/// The heartbeats the server kept, latest per host, read once without acks.
pub fn kept_heartbeats_spec() -> ConsumerSpec {
    ConsumerSpec {
        durable_name: None,
        description: "flotilla scheduler: kept heartbeats".to_owned(),
        filter_subject: all_heartbeats(),
        deliver_from: DeliverFrom::LastPerSubject,
        explicit_ack: false,
        ack_wait: None,
        max_deliver: None,
        max_ack_pending: None,
        inactive_threshold: Some(EPHEMERAL_CONSUMER_KEPT),
    }
}

/// The key-value bucket holding deploy locks (keys from [`crate::names::lock_key`]).
pub const LOCK_BUCKET: &str = "flotilla-locks";

/// The lock bucket's stream: what NATS makes for a key-value bucket (one value per key,
/// rollups, no deletes of history), created directly because async-nats's bucket creation
/// cannot parse nats-server 2.9's account info.
pub fn lock_bucket_stream() -> StreamSpec {
    StreamSpec {
        name: format!("KV_{LOCK_BUCKET}"),
        description: "Flotilla deploy locks".to_owned(),
        subjects: vec![format!("$KV.{LOCK_BUCKET}.>")],
        retention: Retention::Limits,
        storage: Storage::File,
        discard: Discard::New,
        max_age: None,
        // One small value per service and destination.
        max_bytes: 1 << 20,
        max_messages_per_subject: Some(1),
        duplicate_window: None,
        key_value: true,
    }
}

/// The scheduler instances' leader lease (HA): one key, [`LEADER_KEY`], whose holder runs
/// deploys; the others stand by.
pub const LEADER_BUCKET: &str = "flotilla-leader";
/// The one key of [`LEADER_BUCKET`].
pub const LEADER_KEY: &str = "scheduler";

/// The lease bucket's stream: entries live `ttl` after their last write (`max_age`), so a
/// lease whose holder stopped renewing it (its host lost) is gone after `ttl` and another
/// instance's create succeeds. Duplicates are not looked for beyond the lease's own life.
pub fn leader_bucket_stream(ttl: Duration) -> StreamSpec {
    StreamSpec {
        name: format!("KV_{LEADER_BUCKET}"),
        description: "flotilla: the scheduler leader lease".to_owned(),
        subjects: vec![format!("$KV.{LEADER_BUCKET}.>")],
        retention: Retention::Limits,
        storage: Storage::File,
        discard: Discard::New,
        max_age: Some(ttl),
        max_bytes: 1 << 16,
        max_messages_per_subject: Some(1),
        duplicate_window: Some(ttl),
        key_value: true,
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
        let c = job_consumer_spec("10.0.0.5");
        assert_eq!(c.filter_subject, "flotilla.job.10-0-0-5");
        assert!(c.explicit_ack);
        assert!(c.max_deliver.is_some_and(|n| n > 1));
        assert_eq!(jobs_stream().retention, Retention::WorkQueue);
        assert_eq!(
            deploy_consumer_spec("01JD").filter_subject,
            "flotilla.evt.01jd.>"
        );
    }
}
