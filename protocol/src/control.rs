//! The control plane's contract: what the CLI asks the scheduler service (`flotilla.req.*`)
//! and the `FLOTILLA_LOG` stream, where the service publishes every event it appended, after
//! it is durable in its sled log.
//!
//! Requests and answers are framed like every other message ([`crate::wire::encode`]). A
//! rollout request carries everything the CLI decided on the operator's machine (the config
//! as ERB rendered there, the release already built and pushed, narrowing, actor, lock wait);
//! the secrets it needs travel sealed to the service's own x25519 key ([`Request::Key`]
//! answers with it), so NATS never sees them in clear. Only operators may publish on
//! `flotilla.req.>` ([`crate::access`]): a host's credentials cannot ask for a deploy.
//!
//! The deploy lock needs no request: it is a NATS key-value entry the operators' credentials
//! already reach (`flotilla lock` works the same with or without the service), and the
//! service's rollouts take it like the CLI's did.

use crate::subjects::{Discard, JOB_DEDUP_WINDOW, Retention, Storage, StreamSpec, token};
use crate::wire::SealedValue;
use flotilla_events::{DeployId, Envelope, Event};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Prefix of request subjects: `flotilla.req.<verb>`.
pub const REQUEST_PREFIX: &str = "flotilla.req";
/// The scheduler service's event log as a stream: one subject per deploy.
pub const LOG_STREAM: &str = "FLOTILLA_LOG";
/// Prefix of log subjects: `flotilla.log.<deploy>`.
pub const LOG_PREFIX: &str = "flotilla.log";
/// The log stream's size cap: none, like the sled log it mirrors (it is the follow and
/// replication path and the source an empty disk rebuilds from). A cap would also be reserved
/// from the server's store up front, and beside `FLOTILLA_EVENTS`' 4 GiB that is refused on a
/// small control host's disk ("insufficient storage resources", seen on the fleet).
pub const LOG_MAX_BYTES: i64 = -1;
/// Events in one [`Response::Events`] page: far below NATS's 1 MiB payload limit even for
/// events with long error texts.
pub const EVENTS_PAGE: usize = 500;
/// How long a client waits for the service to answer one request (not for a deploy: a
/// rollout request is answered as soon as it is accepted, then followed on the log stream).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What a request asks for; also its subject's last token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verb {
    Key,
    Rollout,
    Cancel,
    Events,
    Status,
    Enroll,
}

impl Verb {
    /// Every verb, in subject order.
    pub const ALL: [Verb; 6] = [
        Verb::Key,
        Verb::Rollout,
        Verb::Cancel,
        Verb::Events,
        Verb::Status,
        Verb::Enroll,
    ];

    /// The subject token.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Key => "key",
            Verb::Rollout => "rollout",
            Verb::Cancel => "cancel",
            Verb::Events => "events",
            Verb::Status => "status",
            Verb::Enroll => "enroll",
        }
    }
}

/// `flotilla.req.<verb>`.
pub fn request_subject(verb: Verb) -> String {
    format!("{REQUEST_PREFIX}.{}", verb.as_str())
}

/// `flotilla.req.>`: every request (the service's subscription).
pub fn all_requests() -> String {
    format!("{REQUEST_PREFIX}.>")
}

/// `flotilla.log.<deploy>`: where the service publishes a deploy's events.
pub fn log_subject(deploy: &str) -> String {
    format!("{LOG_PREFIX}.{}", token(deploy))
}

/// The log stream: kept regardless of age (it is the log, and the source a standby or an
/// empty disk rebuilds from), duplicates by event id dropped so a republish after a restart
/// is harmless.
pub fn log_stream() -> StreamSpec {
    StreamSpec {
        name: LOG_STREAM.to_owned(),
        description: "flotilla: the scheduler's event log".to_owned(),
        subjects: vec![format!("{LOG_PREFIX}.>")],
        retention: Retention::Limits,
        storage: Storage::File,
        discard: Discard::Old,
        max_age: None,
        max_bytes: LOG_MAX_BYTES,
        max_messages_per_subject: None,
        duplicate_window: Some(JOB_DEDUP_WINDOW),
        key_value: false,
    }
}

/// The rollouts the service runs now, kept so that a scheduler taking over (HA failover, or
/// the service restarted after a crash) can resume them: key = the deploy's token, value =
/// the wire-encoded [`Rollout`] as asked (its secrets still sealed to the service's key).
/// An entry is written before the rollout starts and deleted once it ended.
pub const ROLLOUT_BUCKET: &str = "flotilla-rollouts";

/// [`ROLLOUT_BUCKET`]'s stream: one value per running deploy, no age limit (a deploy can
/// run for hours), the latest value only.
pub fn rollout_bucket_stream() -> StreamSpec {
    StreamSpec {
        name: format!("KV_{ROLLOUT_BUCKET}"),
        description: "flotilla: rollouts in progress, for a scheduler taking over".to_owned(),
        subjects: vec![format!("$KV.{ROLLOUT_BUCKET}.>")],
        retention: Retention::Limits,
        storage: Storage::File,
        discard: Discard::New,
        max_age: None,
        // Rendered configs are a few kB; a few deploys run at once.
        max_bytes: 8 << 20,
        max_messages_per_subject: Some(1),
        duplicate_window: None,
        key_value: true,
    }
}

/// A request to the scheduler service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// The service's sealing public key (x25519, base64).
    Key,
    /// Run a deploy, redeploy, rollback or resume.
    Rollout(Box<Rollout>),
    /// Cancel a running deploy: no host starts, running steps finish.
    Cancel { deploy_id: DeployId },
    /// Events from position `from` (inclusive), one deploy's or all: history, events and
    /// replay are folds of these, the same from every machine.
    Events {
        deploy_id: Option<DeployId>,
        from: u64,
    },
    /// The deploys running now.
    Status,
    /// Record a host's executor identity, read by the CLI over the host's pinned SSH
    /// connection (`flotilla setup`, `server enroll`): the service is the log's only writer,
    /// so enrolments land in its log, and it applies the same rule as ever (changed keys
    /// are refused unless `replace`).
    Enroll(Box<Enrolment>),
}

/// What the CLI read from a host for its enrolment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrolment {
    pub host: String,
    /// The SSH host key fingerprint of the connection the identity was read over.
    pub ssh_host_key: String,
    /// The executor's `identity.pub`, as written on the host.
    pub identity: String,
    /// `--replace`: accept keys that differ from the enrolled ones.
    pub replace: bool,
    /// Who asks (Kamal's performer).
    pub actor: String,
}

impl Request {
    /// The verb whose subject this request travels on.
    pub fn verb(&self) -> Verb {
        match self {
            Request::Key => Verb::Key,
            Request::Rollout(_) => Verb::Rollout,
            Request::Cancel { .. } => Verb::Cancel,
            Request::Events { .. } => Verb::Events,
            Request::Status => Verb::Status,
            Request::Enroll(_) => Verb::Enroll,
        }
    }
}

/// What to roll out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RolloutKind {
    Deploy {
        version: String,
    },
    Redeploy {
        version: String,
    },
    /// To `version`, or the release before the current one.
    Rollback {
        version: Option<String>,
    },
    /// Continue deploy `deploy_id` (the request's id).
    Resume,
    /// An app operation other than a rollout (`app stop|start|remove`, `prune containers`):
    /// planned and run by the service like a deploy, recorded as the operation it is.
    /// Appended: the wire stores the variant's position.
    Operation {
        operation: flotilla_events::event::Operation,
    },
    /// An accessory operation (`accessory boot|reboot|...`, an `Operation::Accessory`):
    /// like `Operation`, with the accessory's `files:` as the operator's machine read them
    /// (`.erb` ones rendered there, with the accessory's secrets), sealed to the service's
    /// key. Appended: the wire stores the variant's position.
    Accessory {
        operation: flotilla_events::event::Operation,
        files: Vec<SealedAccessoryFile>,
    },
}

impl RolloutKind {
    /// The operation a [`RolloutKind::Operation`] or [`RolloutKind::Accessory`] runs.
    pub fn operation(&self) -> Option<&flotilla_events::event::Operation> {
        match self {
            RolloutKind::Operation { operation } | RolloutKind::Accessory { operation, .. } => {
                Some(operation)
            }
            _ => None,
        }
    }
}

/// One of an accessory's `files:`, sealed to the service's key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedAccessoryFile {
    pub accessory: String,
    /// The entry's local path as written in deploy.yml.
    pub local: String,
    pub contents: SealedValue,
}

/// One config file as ERB rendered it on the operator's machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigFile {
    pub path: String,
    pub text: String,
}

/// Everything the CLI decided for a rollout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    pub kind: RolloutKind,
    /// Chosen by the CLI, so it can follow `flotilla.log.<id>` before asking.
    pub deploy_id: DeployId,
    /// The base config file, then the destination's.
    pub config: Vec<ConfigFile>,
    pub destination: Option<String>,
    /// Every secret the secrets files defined, sealed to the service's key.
    pub secrets: Vec<(String, SealedValue)>,
    /// Kamal's `-h`, `-r`, `-p`.
    pub hosts: Vec<String>,
    pub roles: Vec<String>,
    pub primary: bool,
    /// Recorded right after the request (image built and pushed on the operator's machine).
    pub preamble: Vec<Event>,
    /// Who asks (Kamal's performer) and from which machine.
    pub actor: String,
    pub machine: String,
    /// `--lock-wait`, in milliseconds.
    pub lock_wait_ms: Option<u64>,
}

/// A deploy the service is running.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Running {
    pub deploy_id: DeployId,
    pub command: String,
    pub actor: String,
}

/// The service's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Key {
        public: String,
    },
    /// The rollout runs; its events follow on `flotilla.log.<deploy>`, ending with the
    /// deploy's last event (`DeploySucceeded`, `DeployFailed`, `DeployCancelled`).
    Accepted {
        deploy_id: DeployId,
    },
    /// A page of events; `next` is where the following page starts (`None`: the end).
    Events {
        events: Vec<Envelope>,
        next: Option<u64>,
    },
    Status {
        running: Vec<Running>,
    },
    /// Done (cancel).
    Done,
    /// Not done, and why, for the user.
    Refused {
        reason: String,
        hint: Option<String>,
    },
    /// An enrolment: recorded now with this signing key, or `None` when the host was
    /// already enrolled with these keys.
    Enrolled {
        signing_key: Option<String>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{decode, encode};

    /// Every verb has its own subject under the one prefix the access rules grant operators.
    #[test]
    fn subjects_are_distinct_and_under_the_prefix() {
        let subjects: std::collections::BTreeSet<_> =
            Verb::ALL.iter().map(|v| request_subject(*v)).collect();
        assert_eq!(subjects.len(), Verb::ALL.len());
        assert!(subjects.iter().all(|s| s.starts_with("flotilla.req.")));
        assert_eq!(log_subject("01ABC"), "flotilla.log.01abc");
    }

    /// A rollout request survives the wire with its secrets still sealed.
    #[test]
    fn rollout_round_trips() {
        let req = Request::Rollout(Box::new(Rollout {
            kind: RolloutKind::Rollback { version: None },
            deploy_id: DeployId::new(),
            config: vec![ConfigFile {
                path: "config/deploy.yml".into(),
                text: "service: app\n".into(),
            }],
            destination: Some("staging".into()),
            secrets: vec![("DB".into(), SealedValue(vec![1, 2, 3]))],
            hosts: vec!["web1".into()],
            roles: vec![],
            primary: false,
            preamble: vec![],
            actor: "ana".into(),
            machine: "laptop".into(),
            lock_wait_ms: Some(5_000),
        }));
        let back: Request = decode(&encode(&req).unwrap()).unwrap();
        assert_eq!(back, req);
    }

    /// An accessory operation names its operation like any other, and its files travel
    /// sealed beside it.
    #[test]
    fn accessory_kind_carries_its_sealed_files() {
        use flotilla_events::event::{AccessoryAction, Operation};
        let operation = Operation::Accessory {
            name: "db".into(),
            action: AccessoryAction::Reboot,
        };
        let kind = RolloutKind::Accessory {
            operation: operation.clone(),
            files: vec![SealedAccessoryFile {
                accessory: "db".into(),
                local: "config/init.sql.erb".into(),
                contents: SealedValue(vec![9; 40]),
            }],
        };
        assert_eq!(kind.operation(), Some(&operation));
        assert_eq!(RolloutKind::Resume.operation(), None);
        let back: RolloutKind = decode(&encode(&kind).unwrap()).unwrap();
        assert_eq!(back, kind);
    }
}
