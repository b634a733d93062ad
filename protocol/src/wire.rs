//! What travels on NATS between the scheduler and an executor: jobs one way, reports and
//! heartbeats the other. Every message is `[WIRE_VERSION][bincode 2 of the value]`, so the
//! format can move later (a new version byte) without guessing.
//!
//! A [`Job`] is a fully resolved list of [`JobStep`]s for one host of one deploy: images,
//! names, env and health settings are decided by the scheduler; the executor only carries
//! them out. Jobs travel inside a [`SignedJob`] (see [`crate::signing`]). Secret values are
//! [`SealedValue`]s, readable only with the host's own key (see [`crate::sealing`]).

use flotilla_events::codec::{self, CodecError};
use flotilla_events::{DeployId, NewEvent, Timestamp};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// The version byte this build writes. Older versions it can still read are listed in
/// [`decode`], each with its frozen shapes and an upcast. Versions 1 and 2 (before reports
/// were signed and jobs carried a generation) are not read: agents are upgraded with the CLI
/// (`setup`), and a message from an older agent is an "unknown version" error naming both
/// versions; an unsigned report must never be taken for a signed one.
pub const WIRE_VERSION: u8 = 3;

/// A message that is not a value of the expected type in a format this build reads.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error(
        "unknown wire version {0} (this build speaks {WIRE_VERSION}): run the same flotilla version on both ends"
    )]
    UnknownVersion(u8),
    #[error("malformed message")]
    Malformed(#[source] CodecError),
    #[error("cannot encode message")]
    Encode(#[source] CodecError),
}

/// `[WIRE_VERSION][bincode(value)]`, through the event log's codec machinery.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::with_capacity(256);
    codec::encode_framed(WIRE_VERSION, value, &mut out).map_err(WireError::Encode)?;
    Ok(out)
}

/// The inverse of [`encode`]; an unknown version byte, short or trailing bytes are errors.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
    let (version, body) = codec::split_version(bytes).map_err(WireError::Malformed)?;
    match version {
        WIRE_VERSION => codec::decode_framed_body(version, body).map_err(WireError::Malformed),
        other => Err(WireError::UnknownVersion(other)),
    }
}

/// A secret value sealed to one host's public key; only that host's executor can open it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedValue(pub Vec<u8>);

impl std::fmt::Debug for SealedValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealedValue({} bytes)", self.0.len())
    }
}

/// A job, as signed: the encoded [`Job`] and the scheduler's ed25519 signature over it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedJob {
    /// `encode(&Job)`: the exact bytes the signature covers.
    pub job: Vec<u8>,
    /// 64-byte ed25519 signature over `JOB_SIGNING_CONTEXT || job`; empty when unsigned.
    pub signature: Vec<u8>,
}

/// Everything one host does for one deploy (or accessory change), in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Unique id (a ULID); also the `Nats-Msg-Id`, so a job published twice is stored once.
    pub id: String,
    /// The deploy this job belongs to; its events carry it.
    pub deploy_id: DeployId,
    /// The host id the job is for, as the executor was started with (`--host-id`).
    pub host: String,
    /// When the scheduler made the job.
    pub issued_at: Timestamp,
    /// After this the executor refuses the job: a captured job cannot be replayed later.
    pub expires_at: Timestamp,
    /// Grows with every job the scheduler issues to a host (its issue time in milliseconds,
    /// never below the last one it issued there): an executor refuses a job older than the
    /// newest it applied, so a captured job that never ran cannot roll a host back later.
    pub generation: u64,
    /// What the generation counts within: the deploy lock's key (`service[.destination]`,
    /// [`crate::names::lock_key`]). Jobs of one scope are issued one deploy at a time (the
    /// lock), so their order is their issue order; two services on one host never refuse
    /// each other's jobs.
    pub scope: String,
    /// What to do, in order; the first failure stops the job.
    pub steps: Vec<JobStep>,
}

/// One step of a job. Each knows the events that finish it ([`JobStep::finished_by`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobStep {
    /// Pull an image and report its exact digest.
    PullImage(PullImage),
    /// Create and start the role's container for this version (Kamal name, labels, env).
    StartContainer(StartContainer),
    /// Wait until a container is running (and healthy, if the image has a health check).
    AwaitHealthy(AwaitHealthy),
    /// Health-check a container through the host proxy, then switch the proxy to it.
    SwitchProxy(SwitchProxy),
    /// Stop the role's other running containers.
    StopOldContainers(StopOldContainers),
    /// Remove stopped containers and unused images beyond the newest `retain`.
    Prune(Prune),
    /// Boot an accessory (directories, files, container); a second boot is a no-op.
    BootAccessory(BootAccessory),
    /// Stop and remove an accessory's container, and its directories when asked.
    RemoveAccessory(RemoveAccessory),
    /// Start an existing (stopped) container.
    StartExisting(ContainerRef),
    /// Stop a running container.
    StopContainer(StopContainer),
    /// Remove a container (stopping it first).
    RemoveContainer(ContainerRef),
    /// Answer a proxied service with 503 and a message (`app maintenance`), or forward to it
    /// again (`app live`). Appended: the wire stores the variant's position.
    SetMaintenance(SetMaintenance),
    /// Remove the service's images no container uses (`prune images`), never a protected one.
    /// Appended: the wire stores the variant's position.
    PruneImages(PruneImages),
    /// Boot an accessory as Kamal's `accessory boot|reboot|upgrade` do, with its `files:`
    /// sealed to the host (an `.erb` one is rendered with the accessory's secrets) and its own
    /// registry's credentials. What the scheduler sends; [`JobStep::BootAccessory`] (files in
    /// clear, no registry, a stopped container replaced) stays readable for older jobs.
    /// Appended: the wire stores the variant's position.
    BootSealedAccessory(BootSealedAccessory),
    /// Remove one image by reference (`accessory remove`, as Kamal's `docker image rm`). An
    /// image a container still uses is kept and reported so ([`flotilla_events::event::ImageKept`]),
    /// not a failure. Appended: the wire stores the variant's position.
    RemoveImage(ImageRef),
    /// Replace the host proxy's container by one with these settings (`proxy reboot`, and
    /// `proxy boot` where it is missing or runs other settings), handing the listening
    /// sockets over when the ports stay. Appended: the wire stores the variant's position.
    ReplaceProxy(ReplaceProxy),
}

impl JobStep {
    /// Whether `event` reports this step done ([`crate::finish::finishes`]).
    pub fn finished_by(&self, event: &flotilla_events::Event) -> bool {
        let container = match self {
            JobStep::StartContainer(s) => Some(s.container_name()),
            JobStep::StartExisting(c) | JobStep::RemoveContainer(c) => Some(c.container.clone()),
            JobStep::SwitchProxy(s) => Some(s.container.clone()),
            JobStep::AwaitHealthy(s) => Some(s.container.clone()),
            _ => None,
        };
        crate::finish::finishes(self.kind(), container.as_deref(), event)
    }

    /// The step as the event model names it (for `HostFailed`): each kind as itself.
    pub fn kind(&self) -> flotilla_events::Step {
        use flotilla_events::Step;
        match self {
            JobStep::PullImage(_) => Step::PullImage,
            JobStep::StartContainer(_) | JobStep::StartExisting(_) => Step::StartContainer,
            JobStep::ReplaceProxy(_) => Step::ReplaceProxy,
            JobStep::AwaitHealthy(_) => Step::AwaitHealthy,
            JobStep::SwitchProxy(_) => Step::SwitchProxy,
            JobStep::StopOldContainers(_) => Step::StopOldContainer,
            JobStep::StopContainer(_) => Step::StopContainer,
            JobStep::RemoveContainer(_) => Step::RemoveContainer,
            JobStep::Prune(_) | JobStep::PruneImages(_) => Step::Prune,
            JobStep::BootAccessory(_) | JobStep::BootSealedAccessory(_) => Step::BootAccessory,
            JobStep::RemoveAccessory(_) => Step::RemoveAccessory,
            JobStep::SetMaintenance(_) => Step::SetMaintenance,
            JobStep::RemoveImage(_) => Step::RemoveImage,
        }
    }
}

/// See [`JobStep::ReplaceProxy`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplaceProxy {
    /// The settings the new proxy runs with (`proxy.run` of the host's roles).
    pub run: crate::proxy_run::ProxyRun,
    /// `proxy boot`: a proxy already running these settings is left alone, a stopped one
    /// with them is started; `false` (`reboot`): always a new container.
    pub boot: bool,
}

/// Credentials for a private registry; both the username (often a secret itself, e.g. a
/// cloud account id) and the password are sealed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryAuth {
    /// Registry server, e.g. `ghcr.io`.
    pub server: String,
    pub username: SealedValue,
    pub password: SealedValue,
}

/// See [`JobStep::PullImage`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullImage {
    /// Reference with tag or digest, e.g. `registry:5000/app:v2`.
    pub image: String,
    pub auth: Option<RegistryAuth>,
}

/// How any Flotilla-made container runs: image, env, mounts, command, logging.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerConfig {
    pub image: String,
    /// Clear env (`env.clear`), after the `KAMAL_*` variables.
    pub env: Vec<(String, String)>,
    /// Secret env (`env.secret`), sealed to this host; opened only in memory.
    pub secret_env: Vec<(String, SealedValue)>,
    /// Extra labels (`labels:`); `service`, `role`, `destination` are added by the executor.
    pub labels: Vec<(String, String)>,
    /// `HOST:CONTAINER[:ro]` bind mounts or named volumes (`volumes:`).
    pub volumes: Vec<String>,
    /// Replaces the image's command (`cmd:`), already split into argv.
    pub cmd: Option<Vec<String>>,
    /// `HOST_PORT:CONTAINER_PORT` (accessories' `port:`); apps are reached through the proxy.
    pub publish: Vec<String>,
    /// Docker log driver and its options (`logging:`).
    pub log_driver: Option<String>,
    pub log_options: Vec<(String, String)>,
    /// `--memory` in bytes (`options: memory`).
    pub memory_bytes: Option<i64>,
    /// `--add-host NAME:IP` entries (`options: add-host`).
    pub extra_hosts: Vec<String>,
}

/// See [`JobStep::StartContainer`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartContainer {
    pub service: String,
    pub role: String,
    pub destination: Option<String>,
    pub version: String,
    pub config: ContainerConfig,
}

impl StartContainer {
    /// Kamal's container name: `service-role[-destination]-version`.
    pub fn container_name(&self) -> String {
        container_name(
            &self.service,
            &self.role,
            self.destination.as_deref(),
            &self.version,
        )
    }
}

pub use crate::names::container_name;

/// See [`JobStep::AwaitHealthy`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AwaitHealthy {
    pub container: String,
    /// The container must stay running this long (`readiness_delay`).
    pub readiness_delay_ms: u64,
    /// Give up after this long (`deploy_timeout`).
    pub timeout_ms: u64,
    /// Pause between two looks at Docker's state.
    pub interval_ms: u64,
}

/// See [`JobStep::SwitchProxy`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchProxy {
    /// The proxy's service name (Kamal: `service-role[-destination]`).
    pub proxy_service: String,
    /// The container to switch to; its address on the `kamal` network is the target.
    pub container: String,
    pub version: String,
    /// The port the app listens on inside the container (`proxy.app_port`).
    pub app_port: u16,
    /// `proxy.host(s)`; empty answers every host not claimed by another service.
    pub hosts: Vec<String>,
    pub path_prefix: Option<String>,
    /// `proxy.healthcheck.path`.
    pub health_path: String,
    pub health_interval_ms: u64,
    pub health_timeout_ms: u64,
    /// The new container must be healthy within this (`deploy_timeout`).
    pub deploy_timeout_ms: u64,
    /// The old container's requests may run this long (`drain_timeout`).
    pub drain_timeout_ms: u64,
}

/// See [`JobStep::StopOldContainers`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopOldContainers {
    pub service: String,
    pub role: String,
    pub destination: Option<String>,
    /// The container that stays (the new version).
    pub keep: String,
    /// Seconds Docker waits after SIGTERM before SIGKILL (`stop_wait_time`).
    pub stop_timeout_s: u32,
}

/// See [`JobStep::Prune`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prune {
    pub service: String,
    /// Stopped containers to keep, newest first (`retain_containers`).
    pub retain: u32,
    /// Containers never removed: rollback targets the scheduler protects.
    pub protected: Vec<String>,
}

/// See [`JobStep::PruneImages`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneImages {
    /// Images labelled with this service (`service=...`, as builds label them) are pruned.
    pub service: String,
    /// Image references never removed (`repo@sha256:...` or `repo:tag`): the rollback
    /// target's, whose container may be gone while a rollback still needs its image.
    pub protected: Vec<String>,
}

/// See [`JobStep::BootAccessory`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootAccessory {
    pub service: String,
    /// Accessory name; the container is `service-name`.
    pub name: String,
    pub config: ContainerConfig,
    /// Directories made on the host before boot (`directories:`, host side).
    pub directories: Vec<String>,
    /// Files written on the host before boot (`files:`): path, contents, mode.
    pub files: Vec<AccessoryFile>,
}

/// A file an accessory needs on the host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessoryFile {
    pub path: String,
    pub contents: Vec<u8>,
    pub mode: u32,
}

/// See [`JobStep::BootSealedAccessory`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootSealedAccessory {
    /// The accessory's name in deploy.yml; its events name it.
    pub name: String,
    /// The container's name and `service` label (Kamal's: the accessory's `service:`, else
    /// `SERVICE-NAME`).
    pub container: String,
    pub config: ContainerConfig,
    /// The accessory's own `registry:`, sealed as a deploy's is.
    pub auth: Option<RegistryAuth>,
    /// Directories made on the host before boot (`directories:`, absolute host paths).
    pub directories: Vec<String>,
    /// Files written on the host before boot (`files:`), their contents sealed to the host.
    pub files: Vec<SealedFile>,
    /// What becomes of a container of that name already on the host.
    pub existing: ExistingAccessory,
    /// `--shm-size` in bytes (`options: shm-size`, a database's shared memory).
    pub shm_size_bytes: Option<i64>,
    /// `--restart` (`options: restart`); `None`: Kamal's `unless-stopped`.
    pub restart: Option<RestartPolicy>,
    /// `--network` (`options: network`, or the accessory's `network:`); `None`: `kamal`.
    pub network: Option<String>,
    /// `--cpus` as Docker's `NanoCpus` (`options: cpus`).
    pub nano_cpus: Option<i64>,
    /// `--user` (`options: user`).
    pub user: Option<String>,
    /// `--hostname` (`options: hostname`).
    pub hostname: Option<String>,
}

/// Docker's restart policy (`docker run --restart`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestartPolicy {
    No,
    Always,
    UnlessStopped,
    /// Restarted after a non-zero exit, at most `max_retries` times when given.
    OnFailure {
        max_retries: Option<u32>,
    },
}

/// A file an accessory needs on the host, its contents sealed to the host: an `.erb` file is
/// rendered with the accessory's env, secrets included.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedFile {
    /// Absolute host path.
    pub path: String,
    pub contents: SealedValue,
    pub mode: u32,
}

/// What a boot does with an accessory container that is already on the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExistingAccessory {
    /// Kamal's `accessory boot`: left as it is, running or stopped (nothing is pulled).
    Keep,
    /// Kamal's `accessory reboot` (and `upgrade`): stopped (SIGKILL after `stop_timeout_s`)
    /// and removed, then booted again; its volumes stay.
    Replace { stop_timeout_s: u32 },
}

/// See [`JobStep::RemoveAccessory`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveAccessory {
    pub service: String,
    pub name: String,
    /// Directories and files removed with it.
    pub paths: Vec<String>,
}

/// An image by reference (`repo:tag`, `repo@sha256:...` or id).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRef {
    pub image: String,
}

/// A container by name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRef {
    pub container: String,
}

/// See [`JobStep::SetMaintenance`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetMaintenance {
    /// The proxy's service: `service-role[-destination]`.
    pub proxy_service: String,
    /// `Some(message)`: maintenance (the proxy's default text without one); `None`: live.
    pub maintenance: Option<Option<String>>,
}

/// See [`JobStep::StopContainer`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopContainer {
    pub container: String,
    pub stop_timeout_s: u32,
}

/// A report as published: the encoded [`Report`] and the host's ed25519 signature over it
/// (see [`crate::identity`]). The scheduler records nothing that does not verify against the
/// host's enrolled key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedReport {
    /// `encode(&Report)`: the exact bytes the signature covers.
    pub report: Vec<u8>,
    /// 64-byte ed25519 signature over `REPORT_SIGNING_CONTEXT || report`.
    pub signature: Vec<u8>,
}

/// What an executor publishes on `flotilla.evt.<deploy>.<host>`, inside a [`SignedReport`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Report {
    /// A step's event, or the job's final `HostSucceeded` / `HostFailed`.
    Event(JobEvent),
    /// A job the executor would not run. Not a deploy event: its deploy id is unverified.
    Refused(Refusal),
}

/// An event of a verified job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobEvent {
    pub job_id: String,
    /// Index of the step in the job; `None` for the job's final event.
    pub step: Option<u16>,
    /// The event; its id is derived from the job id and step, so a rerun reports the same ids.
    pub event: NewEvent,
}

/// Why a job was refused, with the job's (unverified) identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub job_id: String,
    /// The deploy id the job claimed.
    pub deploy_id: String,
    /// The host that refused it.
    pub host: String,
    pub reason: RefusalReason,
    /// Details in words, e.g. `expired at 2026-11-26T08:00:00Z`.
    pub detail: String,
    pub at: Timestamp,
}

/// The kinds of refusal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefusalReason {
    Unsigned,
    BadSignature,
    Expired,
    /// Valid for longer than the executor remembers jobs: it could be replayed later.
    ExpiryTooFar,
    WrongHost,
    /// Older than the newest job this host applied (its generation is lower): a replay.
    Stale,
}

impl RefusalReason {
    /// Whether the refused bytes were a job the scheduler signed. Only then are the job's
    /// deploy and job ids its own; an unsigned or forged message says nothing about a deploy.
    pub fn job_was_signed(self) -> bool {
        !matches!(self, RefusalReason::Unsigned | RefusalReason::BadSignature)
    }
}

/// What an executor publishes on `flotilla.hb.<host>` every few seconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub host: String,
    pub executor_version: String,
    pub docker_version: String,
    /// Names of the containers Flotilla manages (label `service`), running ones.
    pub containers: Vec<String>,
    /// Liveness only: a heartbeat never carries key material (keys come from enrolment).
    pub at: Timestamp,
    /// How often this executor beats: the scheduler counts it lost after
    /// [`crate::subjects::BEATS_MISSED_BEFORE_LOST`] periods without one.
    pub period_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message in this build's format decodes to the same value; a different version byte,
    /// garbage and trailing bytes are clear errors, never a panic.
    #[test]
    fn round_trip_and_rejects() {
        let step = JobStep::PullImage(PullImage {
            image: "r:5000/app:v1".into(),
            auth: None,
        });
        let bytes = encode(&step).unwrap();
        assert_eq!(decode::<JobStep>(&bytes).unwrap(), step);
        let mut other = bytes.clone();
        other[0] = 9;
        assert!(matches!(
            decode::<JobStep>(&other),
            Err(WireError::UnknownVersion(9))
        ));
        assert!(matches!(
            decode::<JobStep>(&[]),
            Err(WireError::Malformed(CodecError::Empty))
        ));
        assert!(decode::<JobStep>(&[WIRE_VERSION, 0xff, 0xff, 0xff]).is_err());
        let mut long = bytes;
        long.push(0);
        assert!(matches!(
            decode::<JobStep>(&long),
            Err(WireError::Malformed(CodecError::TrailingBytes {
                extra: 1,
                ..
            }))
        ));
    }

    /// A sealed value's debug form shows its size, never its bytes.
    #[test]
    fn sealed_debug_hides_bytes() {
        let s = SealedValue(vec![1, 2, 3]);
        assert_eq!(format!("{s:?}"), "SealedValue(3 bytes)");
    }
}
