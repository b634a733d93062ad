//! The plain settings of [`crate::subjects`] as async-nats's config types (feature `nats`), for
//! the scheduler's and the executor's transport modules. Types only: nothing here connects.

use crate::subjects::{ConsumerSpec, DeliverFrom, Discard, Retention, Storage, StreamSpec};
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};

/// How often every Flotilla client pings its NATS server. A node lost with its host's link
/// sends nothing back (no reset), so a client sees its loss only by unanswered pings: after
/// three intervals (async-nats allows two pending), about 6 s, it moves to another node.
/// That keeps an executor's heartbeats flowing well inside the scheduler's 15 s before it
/// counts the host as lost, and the client default (a minute) would not.
pub const PING_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// Replicas of every stream and bucket on a clustered NATS: the three control hosts setup
/// boots NATS on, so a stream outlives the loss of any one of them (R3, a Raft quorum of 2).
pub const CLUSTER_REPLICAS: usize = 3;

/// How many replicas streams get on the server `info` describes: [`CLUSTER_REPLICAS`] when it
/// is part of a cluster (it names one in its INFO), else 1 (a single server has no peers to
/// replicate to, and refuses more). A user's own cluster needs at least three JetStream
/// nodes.
pub fn replicas(info: &async_nats::ServerInfo) -> usize {
    match info.cluster.as_deref() {
        Some(name) if !name.is_empty() => CLUSTER_REPLICAS,
        _ => 1,
    }
}

/// The servers of a NATS URL list (`nats://a:4222,nats://b:4222`): a client is given every
/// node of a cluster, so it fails over to another when its node is lost.
pub fn server_urls(urls: &str) -> Vec<&str> {
    urls.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect()
}

/// The stream config NATS is asked to create for `spec`, with one replica (a single server).
pub fn stream_config(spec: &StreamSpec) -> stream::Config {
    stream_config_for(spec, 1)
}

/// The stream config NATS is asked to create for `spec`, kept on `replicas` servers
/// ([`replicas`] of the server connected to).
pub fn stream_config_for(spec: &StreamSpec, replicas: usize) -> stream::Config {
    stream::Config {
        name: spec.name.clone(),
        description: Some(spec.description.clone()),
        subjects: spec.subjects.clone(),
        retention: match spec.retention {
            Retention::Limits => RetentionPolicy::Limits,
            Retention::WorkQueue => RetentionPolicy::WorkQueue,
        },
        storage: match spec.storage {
            Storage::File => StorageType::File,
            Storage::Memory => StorageType::Memory,
        },
        discard: match spec.discard {
            Discard::Old => DiscardPolicy::Old,
            Discard::New => DiscardPolicy::New,
        },
        max_age: spec.max_age.unwrap_or_default(),
        max_bytes: spec.max_bytes,
        max_messages_per_subject: spec.max_messages_per_subject.unwrap_or(-1),
        duplicate_window: spec.duplicate_window.unwrap_or_default(),
        allow_rollup: spec.key_value,
        deny_delete: spec.key_value,
        allow_direct: spec.key_value,
        num_replicas: replicas,
        ..Default::default()
    }
}

/// The pull consumer config NATS is asked to create for `spec`.
pub fn consumer_config(spec: &ConsumerSpec) -> pull::Config {
    pull::Config {
        durable_name: spec.durable_name.clone(),
        description: Some(spec.description.clone()),
        filter_subject: spec.filter_subject.clone(),
        deliver_policy: match spec.deliver_from {
            DeliverFrom::All => DeliverPolicy::All,
            DeliverFrom::LastPerSubject => DeliverPolicy::LastPerSubject,
        },
        ack_policy: if spec.explicit_ack {
            AckPolicy::Explicit
        } else {
            AckPolicy::None
        },
        ack_wait: spec.ack_wait.unwrap_or_default(),
        max_deliver: spec.max_deliver.unwrap_or_default(),
        max_ack_pending: spec.max_ack_pending.unwrap_or_default(),
        inactive_threshold: spec.inactive_threshold.unwrap_or_default(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subjects;

    /// The specs reach NATS unchanged: work-queue jobs with dedup, a per-host consumer with
    /// explicit acks and bounded redelivery.
    #[test]
    fn specs_become_nats_configs() {
        let jobs = stream_config(&subjects::jobs_stream());
        assert_eq!(jobs.retention, RetentionPolicy::WorkQueue);
        assert_eq!(jobs.duplicate_window, subjects::JOB_DEDUP_WINDOW);
        let c = consumer_config(&subjects::job_consumer_spec("h1"));
        assert_eq!(c.ack_policy, AckPolicy::Explicit);
        assert_eq!(c.max_deliver, subjects::JOB_MAX_DELIVER);
        assert_eq!(c.filter_subject, "flotilla.job.h1");
        assert_eq!(jobs.num_replicas, 1);
        assert_eq!(
            stream_config_for(&subjects::jobs_stream(), CLUSTER_REPLICAS).num_replicas,
            3
        );
    }

    /// A clustered server (it names its cluster) gets R3 streams, a single server R1.
    #[test]
    fn replicas_follow_the_cluster() {
        let mut info = async_nats::ServerInfo::default();
        assert_eq!(replicas(&info), 1);
        info.cluster = Some("flotilla".into());
        assert_eq!(replicas(&info), CLUSTER_REPLICAS);
    }

    /// Every node of a URL list is a server to try; one URL is one server.
    #[test]
    fn url_lists_split() {
        assert_eq!(
            server_urls("nats://a:4222, nats://b:4222,"),
            ["nats://a:4222", "nats://b:4222"]
        );
        assert_eq!(
            server_urls("nats://127.0.0.1:4222"),
            ["nats://127.0.0.1:4222"]
        );
    }
}
