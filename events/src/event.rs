//! The event model: what happened during a deploy, a rollback or an accessory
//! change, in the past tense, one struct per event.
//!
//! [`Event`] is declared once through `event_enum!`, which also derives each
//! event's stable type name ([`Event::type_name`], [`Event::TYPE_NAMES`]); serde
//! uses the same variant names in JSON lines. The binary log stores the variant
//! *position*, so new events are added at the end of the list, never in between
//! (the fixture test in `codec` fails if that rule is broken).
//!
//! Events carry no secrets: producers put container names, digests and error
//! text here, never environment values.

use serde::{Deserialize, Serialize};

/// Declares an event enum with one payload struct per variant, the stable type
/// names and `From<Payload>` conversions, so none of them is written by hand.
macro_rules! event_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident { $($variant:ident($payload:ty)),+ $(,)? }
    ) => {
        $(#[$meta])*
        $vis enum $name {
            $(#[allow(missing_docs)] $variant($payload)),+
        }

        impl $name {
            /// Every event's stable type name, in declaration order.
            pub const TYPE_NAMES: &'static [&'static str] = &[$(stringify!($variant)),+];

            /// The stable name of this event's type, e.g. `"ImagePulled"`.
            pub fn type_name(&self) -> &'static str {
                match self {
                    $(Self::$variant(_) => stringify!($variant)),+
                }
            }
        }

        $(
            impl From<$payload> for $name {
                fn from(payload: $payload) -> Self {
                    Self::$variant(payload)
                }
            }
        )+
    };
}

event_enum! {
    /// Something that happened. Append new variants at the end only.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub enum Event {
        DeployRequested(DeployRequested),
        DeployStarted(DeployStarted),
        DeployCompleted(DeployCompleted),
        DeployFailed(DeployFailed),
        DeployCancelled(DeployCancelled),
        LockAcquired(LockAcquired),
        LockReleased(LockReleased),
        ImageBuilt(ImageBuilt),
        ImagePushed(ImagePushed),
        ImagePulled(ImagePulled),
        ContainerStarted(ContainerStarted),
        HealthPassed(HealthPassed),
        HealthFailed(HealthFailed),
        ProxySwitched(ProxySwitched),
        OldContainerStopped(OldContainerStopped),
        HostSucceeded(HostSucceeded),
        HostFailed(HostFailed),
        RollbackStarted(RollbackStarted),
        HookRan(HookRan),
        ExecutorSeen(ExecutorSeen),
        AccessoryBooted(AccessoryBooted),
        AccessoryRemoved(AccessoryRemoved),
        HostEnrolled(HostEnrolled),
        OperationStarted(OperationStarted),
        OperationSucceeded(OperationSucceeded),
        OperationFailed(OperationFailed),
        OperationFinished(OperationFinished),
        // Appended (bincode stores the position).
        ImageRemoved(ImageRemoved),
        ImageKept(ImageKept),
    }
}

/// What kind of operation a deploy id stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeployKind {
    /// A new version rolled out.
    Deploy,
    /// An earlier release rolled out again.
    Rollback,
    /// An accessory booted, rebooted or removed.
    Accessory,
}

/// The steps a host goes through, in order; [`HostFailed`] names the one that
/// failed and `DeployState` records the last one reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Step {
    /// Running a hook on this host.
    RunHook,
    /// Pulling the image.
    PullImage,
    /// Starting the new container.
    StartContainer,
    /// Waiting for the new container to pass its health check.
    AwaitHealthy,
    /// Pointing the proxy at the new container.
    SwitchProxy,
    /// Stopping the container that served before.
    StopOldContainer,
    /// Booting an accessory.
    BootAccessory,
    // Appended (bincode stores the position): each step is reported as itself.
    /// Removing stopped containers and unused images (`retain_containers`).
    Prune,
    /// Stopping one named container (`app stop`, not the old version after a switch).
    StopContainer,
    /// Removing one named container.
    RemoveContainer,
    /// Stopping and removing an accessory.
    RemoveAccessory,
    /// Putting a proxied role in maintenance (503 with a message) or live again.
    SetMaintenance,
    /// Removing one image (`accessory remove`).
    RemoveImage,
    /// Replacing the host proxy's container (`proxy boot|reboot`).
    ReplaceProxy,
}

impl Step {
    /// The step's name in metrics labels and span names: `pull_image`, `await_healthy`.
    pub fn label(self) -> &'static str {
        match self {
            Step::RunHook => "run_hook",
            Step::PullImage => "pull_image",
            Step::StartContainer => "start_container",
            Step::AwaitHealthy => "await_healthy",
            Step::SwitchProxy => "switch_proxy",
            Step::StopOldContainer => "stop_old_container",
            Step::BootAccessory => "boot_accessory",
            Step::Prune => "prune",
            Step::StopContainer => "stop_container",
            Step::RemoveContainer => "remove_container",
            Step::RemoveAccessory => "remove_accessory",
            Step::SetMaintenance => "set_maintenance",
            Step::RemoveImage => "remove_image",
            Step::ReplaceProxy => "replace_proxy",
        }
    }
}

/// Why a host stopped short: what happened, never another step's name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FailureCause {
    /// The step ran and failed (Docker's error, a failed health check).
    #[default]
    StepFailed,
    /// The executor refused the job before running it (signature, expiry, wrong host).
    Refused,
    /// No word from the executor within `step_timeout`.
    TimedOut,
    /// The deploy was cancelled before the host finished.
    Cancelled,
    /// The host's executor stopped sending heartbeats while it had a job.
    ExecutorLost,
    /// The host's container engine did not answer while the step ran (dockerd stopped or
    /// hung): the step's outcome, a health check's included, is unknown, not failed.
    EngineUnreachable,
}

/// A host in a deploy's plan and the roles it serves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedHost {
    /// Host name or address as written in `config/deploy.yml`.
    pub host: String,
    /// Roles this host runs in this deploy.
    pub roles: Vec<String>,
}

/// Someone asked for a deploy, rollback or accessory change; the plan is fixed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployRequested {
    /// Deploy, rollback or accessory change.
    pub kind: DeployKind,
    /// Kamal `service` name.
    pub service: String,
    /// Kamal destination (`-d staging`), if any.
    pub destination: Option<String>,
    /// Version being rolled out (Kamal's `VERSION`, usually a git sha).
    pub version: String,
    /// Digest of the resolved configuration, so a release records what ran.
    pub config_digest: String,
    /// Every host the deploy must reach: a release is good only when all succeed.
    pub hosts: Vec<PlannedHost>,
}

/// The scheduler began sending jobs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployStarted {
    /// Hosts per batch, as decided from `boot.limit` and canary settings.
    pub batch_size: u32,
}

/// The deploy finished on every host it planned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployCompleted {}

/// The deploy stopped because of failures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployFailed {
    /// Why, in words for the user.
    pub reason: String,
}

/// The deploy was cancelled (Ctrl-C, `flotilla deploy --cancel`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployCancelled {
    /// Who or what cancelled it.
    pub reason: String,
}

/// The deploy lock was taken.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockAcquired {
    /// Who holds it (user and machine), shown to anyone who finds it taken.
    pub holder: String,
}

/// The deploy lock was given back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockReleased {
    /// Who held it.
    pub holder: String,
}

/// The image was built.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageBuilt {
    /// Image reference with tag, e.g. `registry/app:abc123`.
    pub image: String,
    /// Image id of the built image (`sha256:...`).
    pub digest: String,
}

/// The image was pushed to the registry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImagePushed {
    /// Image reference with tag.
    pub image: String,
    /// Registry manifest digest (`sha256:...`): what a rollback pulls.
    pub digest: String,
}

/// A host pulled the image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImagePulled {
    /// Image reference with tag.
    pub image: String,
    /// Exact digest the host got.
    pub digest: String,
    /// Bytes transferred.
    pub bytes: u64,
    /// Time the pull took.
    pub duration_ms: u64,
}

/// A host started the new container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerStarted {
    /// Kamal container name `service-role[-destination]-version`.
    pub name: String,
    /// Docker container id.
    pub container_id: String,
    /// Version the container runs.
    pub version: String,
    /// Role the container serves.
    pub role: String,
}

/// The new container passed its health check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthPassed {
    /// Checks made until the first success.
    pub attempts: u32,
    /// Time from start to healthy.
    pub duration_ms: u64,
}

/// The new container did not become healthy in time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthFailed {
    /// Checks made.
    pub attempts: u32,
    /// The last HTTP response line, if any answered.
    pub last_response: Option<String>,
    /// The last error, e.g. `connection refused`.
    pub error: String,
}

/// The host's proxy now sends traffic to the new container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxySwitched {
    /// Container that served before, if any.
    pub from: Option<String>,
    /// Container that serves now.
    pub to: String,
}

/// The container that served before was stopped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OldContainerStopped {
    /// Its container name.
    pub name: String,
}

/// Every step on a host succeeded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostSucceeded {}

/// A step on a host failed; the host keeps serving the old version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostFailed {
    /// The step the host had reached: the one that failed, was refused or timed out.
    pub step: Step,
    /// Why, in words for the user.
    pub error: String,
    /// What stopped the host (since schema 3; older records are upcast in `codec/v2.rs`).
    #[serde(default)]
    pub cause: FailureCause,
}

/// A rollback began (asked for, or automatic after a failure).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackStarted {
    /// Version being left, if known.
    pub from_version: Option<String>,
    /// Version being restored.
    pub to_version: String,
    /// Why: `requested` or the failure that triggered it.
    pub reason: String,
}

/// A hook (`.kamal/hooks/NAME`) ran.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookRan {
    /// Hook name, e.g. `pre-deploy`.
    pub name: String,
    /// Its exit code; non-zero stops the deploy for `pre-*` hooks.
    pub exit_code: i32,
    /// Time it took; added in schema 2, so events from schema 1 have none.
    pub duration_ms: Option<u64>,
}

/// A host's executor reported in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutorSeen {
    /// Flotilla version of the executor.
    pub executor_version: String,
    /// Docker Engine version on the host.
    pub docker_version: String,
}

/// An accessory container was booted on a host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessoryBooted {
    /// Accessory name from `accessories:`.
    pub name: String,
    /// Image reference.
    pub image: String,
    /// Exact digest, when known.
    pub digest: Option<String>,
}

/// An accessory container was removed from a host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessoryRemoved {
    /// Accessory name.
    pub name: String,
}

/// A host removed an image (`accessory remove`: the accessory's image, as Kamal's
/// `docker image rm` does). Also reported when the image was already gone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRemoved {
    /// Image reference as configured.
    pub image: String,
}

/// A host was asked to remove an image and kept it, because a container still uses it (another
/// accessory or app on the same image): a warning, not a failure.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageKept {
    /// Image reference as configured.
    pub image: String,
    /// What Docker answered, e.g. which container uses it.
    pub reason: String,
}

/// A state-changing command other than a rollout (Kamal's `app stop`, `accessory reboot`,
/// `prune`, `proxy reboot`, ...), named for what it does: a stop is recorded as a stop.
/// Append new variants at the end only (the binary log stores the position).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// `app start`: the existing container of this version (`None`: the newest) started.
    AppStart { version: Option<String> },
    /// `app stop`: the running app containers stopped.
    AppStop,
    /// `app remove`: the app's containers and images removed.
    AppRemove,
    /// `app stale_containers --stop`: running containers of older versions stopped.
    StaleContainersStop,
    /// `app maintenance`: the proxies answer 503 with this message.
    AppMaintenance { message: Option<String> },
    /// `app live`: the proxies forward to the app again.
    AppLive,
    /// `accessory VERB NAME`.
    Accessory {
        name: String,
        action: AccessoryAction,
    },
    /// `prune`: stopped containers beyond `retain` and/or unused images removed.
    Prune {
        containers: bool,
        images: bool,
        retain: u32,
    },
    /// `proxy VERB`.
    Proxy { action: ProxyAction },
}

/// What an accessory operation did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessoryAction {
    Boot,
    Reboot,
    Start,
    Stop,
    Restart,
    Remove,
    Upgrade,
}

/// What a proxy operation did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProxyAction {
    Boot,
    Reboot,
    Start,
    Stop,
    Restart,
    Remove,
    /// `proxy reboot --rolling`: one host at a time, stopping at the first that fails.
    /// Appended (bincode stores the position).
    RebootRolling,
}

impl std::fmt::Display for Operation {
    /// The command as a user types it (`app stop`, `accessory reboot db`, `prune all`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Operation::AppStart { version: Some(v) } => write!(f, "app start --version {v}"),
            Operation::AppStart { version: None } => f.write_str("app start"),
            Operation::AppStop => f.write_str("app stop"),
            Operation::AppRemove => f.write_str("app remove"),
            Operation::StaleContainersStop => f.write_str("app stale_containers --stop"),
            Operation::AppMaintenance { .. } => f.write_str("app maintenance"),
            Operation::AppLive => f.write_str("app live"),
            Operation::Accessory { name, action } => {
                let verb = format!("{action:?}").to_lowercase();
                write!(f, "accessory {verb} {name}")
            }
            Operation::Prune {
                containers: true,
                images: true,
                ..
            } => f.write_str("prune all"),
            Operation::Prune {
                containers: true,
                retain,
                ..
            } => write!(f, "prune containers --retain {retain}"),
            Operation::Prune { .. } => f.write_str("prune images"),
            Operation::Proxy {
                action: ProxyAction::RebootRolling,
            } => f.write_str("proxy reboot --rolling"),
            Operation::Proxy { action } => {
                write!(f, "proxy {}", format!("{action:?}").to_lowercase())
            }
        }
    }
}

/// A state-changing command began on these hosts, under the deploy lock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationStarted {
    pub operation: Operation,
    pub service: String,
    pub destination: Option<String>,
    /// The hosts it runs on, in order.
    pub hosts: Vec<String>,
}

/// The operation did what it says on the envelope's host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationSucceeded {
    pub operation: Operation,
}

/// The operation failed on the envelope's host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationFailed {
    pub operation: Operation,
    /// Exit status and error text (never a container's log or a secret).
    pub reason: String,
}

/// The operation ended; `failed` names the hosts where it did not succeed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationFinished {
    pub operation: Operation,
    pub failed: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Type names come from the variants, are unique, and match what JSON
    /// lines show, so tools can filter exported logs by name.
    #[test]
    fn type_names_are_unique_and_match_json() {
        let mut names = Event::TYPE_NAMES.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Event::TYPE_NAMES.len());
        let event = Event::from(OldContainerStopped {
            name: "app-web-1".into(),
        });
        assert_eq!(event.type_name(), "OldContainerStopped");
        let json = serde_json::to_string(&event).unwrap_or_default();
        assert_eq!(json, r#"{"OldContainerStopped":{"name":"app-web-1"}}"#);
    }
}

/// A host's executor was enrolled over SSH: its public keys, read back through the connection
/// whose pinned host key is `ssh_host_key`. The scheduler seals secrets for the host and
/// verifies its reports only with the keys of its latest enrolment (the envelope's host).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostEnrolled {
    /// SHA256 fingerprint of the host's SSH host key, as `ssh-keygen -l` prints it.
    pub ssh_host_key: String,
    /// Base64 x25519 public key secrets for the host are sealed to.
    pub sealing_key: String,
    /// Base64 ed25519 public key the host's reports verify against.
    pub signing_key: String,
    /// NATS user public key (`U...`) the host's executor connects with.
    pub nats_key: String,
    /// The signing key this enrolment replaced (`server enroll --replace`), if any.
    pub replaces: Option<String>,
}
