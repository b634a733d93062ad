//! Pure deploy planning: what each host must do to run a release, as plain data.
//!
//! `plan(config, release, context)` returns a [`Plan`]: per host, the ordered [`Step`]s for
//! every role the host runs, primary role first. No I/O, no clock, no randomness: the same
//! inputs give the same plan, and tests assert it exactly. Secrets appear only by name; the
//! scheduler seals their values for each host when it turns steps into jobs.

mod accessory;
mod argv;
pub(crate) mod build;
mod builder;
mod engine_build;
mod filter;
mod operation;
mod proxy;

pub use accessory::{
    ACCESSORY_STOP_TIMEOUT_S, AccessoryFiles, AccessoryOperation, AccessoryPlanError,
    AccessoryUpload, BootAccessory, FileContents, accessory_plan, ssh_home,
};
pub use argv::split_command;
pub use build::plan;
pub use builder::{BuildInputs, BuildPlan, BuilderKind, build_plan};
pub use engine_build::{EngineBuild, EngineCaps, EngineStep, NeedsBuilder, engine_build};
pub use filter::matches;
pub use operation::{AppOperation, operation_plan};
pub use proxy::{ProxyOperation, proxy_plan, proxy_run, proxy_run_with_warnings};

use serde::Serialize;
use std::collections::BTreeMap;

/// What is being deployed: a version and the exact image reference to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Release {
    /// Kamal's version (`KAMAL_VERSION`, the container name suffix), e.g. a git SHA.
    pub version: String,
    /// `repo:tag` or, for a rollback, `repo@sha256:...` so a moved tag cannot change it.
    pub image: String,
}

/// What the planner needs to know about the fleet now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PlanContext {
    /// Containers that pruning must never remove (the rollback targets).
    pub protected: Vec<String>,
}

/// The whole deploy, host by host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub service: String,
    pub destination: Option<String>,
    pub release: Release,
    pub primary_role: String,
    pub hosts: Vec<HostPlan>,
}

impl Plan {
    pub fn host(&self, host: &str) -> Option<&HostPlan> {
        self.hosts.iter().find(|h| h.host == host)
    }
}

/// One host's part of the deploy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostPlan {
    pub host: String,
    /// Roles on this host, primary role first.
    pub roles: Vec<String>,
    /// Whether the host runs the primary role (those hosts boot first).
    pub primary: bool,
    pub steps: Vec<Step>,
}

/// A step, asked of one host. Imperative: the executor reports past-tense events for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "step")]
pub enum Step {
    PullImage {
        image: String,
    },
    StartContainer(StartContainer),
    /// For roles without a proxy: running, and still running after `readiness_delay`.
    AwaitHealthy {
        role: String,
        container: String,
        readiness_delay_s: u64,
        timeout_s: u64,
    },
    /// For proxied roles: the proxy health-checks the new container, then switches to it and
    /// drains the old one.
    SwitchProxy(SwitchProxy),
    StopOldContainers {
        role: String,
        keep: String,
        stop_timeout_s: u64,
    },
    Prune {
        retain: u32,
        protected: Vec<String>,
    },
    /// `prune images`: the service's images no container uses removed, never one of
    /// `protected` (image references: the rollback target's).
    PruneImages {
        protected: Vec<String>,
    },
    /// `app stop`: every running container of the role stopped (none kept).
    StopRole {
        role: String,
        stop_timeout_s: u64,
    },
    /// `app start`: the role's existing container of a version started again.
    StartExisting {
        role: String,
        container: String,
    },
    /// `app maintenance`: the role's proxied service answers 503 with `message` (the
    /// proxy's default text without one).
    Maintenance {
        role: String,
        proxy_service: String,
        message: Option<String>,
    },
    /// `app live`: the role's proxied service forwards to the app again.
    Live {
        role: String,
        proxy_service: String,
    },
    /// `accessory boot|reboot|upgrade`: the accessory booted on the host (boxed: it is far
    /// larger than the other steps).
    BootAccessory(Box<BootAccessory>),
    /// `accessory start`: its existing container started.
    StartAccessory {
        name: String,
        container: String,
    },
    /// `accessory stop`: its container stopped.
    StopAccessory {
        name: String,
        container: String,
        stop_timeout_s: u64,
    },
    /// A container removed by name: `accessory remove` of an accessory with its own
    /// `service:` name (the executor's `RemoveAccessory` knows only `SERVICE-NAME`), `proxy
    /// remove`.
    RemoveContainer {
        container: String,
    },
    /// `proxy start`: the host proxy's existing container started.
    StartProxy {
        container: String,
    },
    /// `proxy stop`: the host proxy's container stopped (it drains first).
    StopProxy {
        container: String,
        stop_timeout_s: u64,
    },
    /// `accessory remove`: its `SERVICE-NAME` container stopped and removed, then `paths`
    /// (its directory under the SSH user's home).
    RemoveAccessory {
        name: String,
        container: String,
        paths: Vec<String>,
    },
    /// `accessory remove`: the accessory's image removed (Kamal's `docker image rm`); one
    /// that another container still uses is kept, with a warning, not a failure.
    RemoveImage {
        image: String,
    },
    /// `proxy boot|reboot`: the host proxy's container replaced by one running `run`, the
    /// listening sockets handed over when the ports stay; with `boot`, a proxy already
    /// running `run` is left alone and a stopped one started.
    ReplaceProxy {
        container: String,
        run: flotilla_protocol::proxy_run::ProxyRun,
        boot: bool,
    },
}

impl Step {
    /// A short name for progress lines and errors (`start web`, `switch proxy web`).
    pub fn label(&self) -> String {
        match self {
            Step::PullImage { .. } => "pull image".into(),
            Step::StartContainer(s) => format!("start {}", s.role),
            Step::AwaitHealthy { role, .. } => format!("await healthy {role}"),
            Step::SwitchProxy(s) => format!("switch proxy {}", s.role),
            Step::StopOldContainers { role, .. } => format!("stop old {role}"),
            Step::Prune { .. } => "prune".into(),
            Step::PruneImages { .. } => "prune images".into(),
            Step::StopRole { role, .. } => format!("stop {role}"),
            Step::StartExisting { container, .. } => format!("start {container}"),
            Step::Maintenance { role, .. } => format!("maintenance {role}"),
            Step::Live { role, .. } => format!("live {role}"),
            Step::BootAccessory(b) => format!("boot {}", b.name),
            Step::StartAccessory { name, .. } => format!("start {name}"),
            Step::StopAccessory { name, .. } => format!("stop {name}"),
            Step::RemoveAccessory { name, .. } => format!("remove {name}"),
            Step::RemoveContainer { container } => format!("remove {container}"),
            Step::RemoveImage { image } => format!("remove image {image}"),
            Step::StartProxy { .. } => "start proxy".into(),
            Step::StopProxy { .. } => "stop proxy".into(),
            Step::ReplaceProxy { boot: true, .. } => "boot proxy".into(),
            Step::ReplaceProxy { boot: false, .. } => "reboot proxy".into(),
        }
    }
}

/// Start the role's container for the release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StartContainer {
    pub role: String,
    /// Kamal's name: `service-role[-destination]-version`.
    pub container: String,
    pub image: String,
    /// Clear env: root env, role env, then the env of the host's tags, later winning.
    pub env: BTreeMap<String, String>,
    /// Secret env by name: `var` takes the value of the secret `secret`.
    pub secret_env: Vec<(String, String)>,
    /// Root labels with the role's over them (`service`, `role`, `destination` are added by
    /// the executor).
    pub labels: BTreeMap<String, String>,
    pub volumes: Vec<String>,
    /// The role's `cmd`, split like a shell would.
    pub cmd: Option<Vec<String>>,
    /// `docker run` options as `(name, value)`, a flag with an empty value.
    pub options: Vec<(String, String)>,
    pub log_driver: Option<String>,
    pub log_options: BTreeMap<String, String>,
}

/// Health-gated proxy switch for a proxied role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SwitchProxy {
    pub role: String,
    /// Service name in the proxy: `service-role[-destination]`.
    pub proxy_service: String,
    pub container: String,
    pub app_port: u16,
    pub hosts: Vec<String>,
    pub path_prefix: Option<String>,
    pub tls: bool,
    pub health_path: String,
    pub health_interval_s: u64,
    pub health_timeout_s: u64,
    pub deploy_timeout_s: u64,
    pub drain_timeout_s: u64,
}

// Kamal's names on hosts: one definition, shared with the executor.
pub use flotilla_protocol::names::{container_name, proxy_service};
