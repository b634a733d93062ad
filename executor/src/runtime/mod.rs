//! The seam between step logic and the host: [`Runtime`] is what the steps need from Docker,
//! [`Proxy`] what they need from the host proxy. [`docker`] implements them over the Docker
//! Engine API and the proxy's admin socket; [`sim`] simulates them (latencies, failure rates)
//! for fleet-scale benchmarks.

pub mod docker;
pub mod sim;

use std::collections::BTreeMap;
use std::future::Future;

use flotilla_proxy::admin::{DeployRequest, Deployed, ServiceStatus};

use flotilla_protocol::sealing::Secret;
use flotilla_protocol::wire::RestartPolicy;

/// A Docker operation failed; `message` is Docker's own text.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct RuntimeError {
    pub message: String,
    /// Docker answered 404: the object does not exist.
    pub not_found: bool,
    /// Docker answered 409: the object is in use or in the way (an image a container uses).
    pub conflict: bool,
}

impl RuntimeError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            not_found: false,
            conflict: false,
        }
    }
}

/// Registry credentials, opened from the job.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub server: String,
    pub username: String,
    pub password: Secret,
}

/// What a pull produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    /// Registry manifest digest (`sha256:...`), or the image id if the image has none.
    pub digest: String,
    /// Size of the image.
    pub bytes: u64,
}

/// A container as the steps see it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    pub running: bool,
    /// Docker health status (`starting`, `healthy`, `unhealthy`) if the image has a check.
    pub health: Option<String>,
    pub exit_code: Option<i64>,
    /// When the container last started (Docker's text; changes on every restart). Filled by
    /// `inspect`.
    pub started_at: Option<String>,
    /// Address on the `kamal` network.
    pub ip: Option<String>,
    /// Creation time, seconds since the epoch (filled by `list`).
    pub created: Option<i64>,
    /// Image id the container runs.
    pub image: String,
    pub labels: BTreeMap<String, String>,
}

/// An image as `prune images` sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageInfo {
    pub id: String,
    /// `repo:tag` names (none for a dangling image).
    pub tags: Vec<String>,
    /// `repo@sha256:...` names the image was pulled by.
    pub digests: Vec<String>,
}

/// A container to create. Its `env` holds opened secrets: its `Debug` shows names only.
#[derive(Clone, Default)]
pub struct CreateSpec {
    pub name: String,
    pub image: String,
    pub env: Vec<(String, EnvValue)>,
    pub labels: BTreeMap<String, String>,
    pub volumes: Vec<String>,
    pub cmd: Option<Vec<String>>,
    pub publish: Vec<String>,
    pub network: String,
    pub log_driver: Option<String>,
    pub log_options: Vec<(String, String)>,
    pub memory_bytes: Option<i64>,
    /// `--shm-size` in bytes.
    pub shm_size_bytes: Option<i64>,
    pub extra_hosts: Vec<String>,
    /// Docker's restart policy: Kamal's `unless-stopped` for apps (once healthy) and
    /// accessories, an accessory's `options: restart` instead; `None`: Docker's `no`.
    pub restart: Option<RestartPolicy>,
    /// `--cpus` as `NanoCpus`.
    pub nano_cpus: Option<i64>,
    /// `--user`.
    pub user: Option<String>,
    /// `--hostname`.
    pub hostname: Option<String>,
    /// Seconds Docker waits after SIGTERM on a stop it was given no timeout for (`docker
    /// stop` on a host, an engine shutting down); None: Docker's 10 s.
    pub stop_timeout_s: Option<u32>,
}

/// An env value: clear, or a secret opened in memory.
#[derive(Debug, Clone)]
pub enum EnvValue {
    Clear(String),
    Secret(Secret),
}

impl EnvValue {
    pub fn expose(&self) -> &str {
        match self {
            EnvValue::Clear(v) => v,
            EnvValue::Secret(s) => s.expose(),
        }
    }
}

impl std::fmt::Debug for CreateSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let env: Vec<&str> = self.env.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("CreateSpec")
            .field("name", &self.name)
            .field("image", &self.image)
            .field("env_names", &env)
            .field("labels", &self.labels)
            .finish_non_exhaustive()
    }
}

type Res<T> = Result<T, RuntimeError>;

/// What the steps need from a container engine. Every method is safe to repeat.
pub trait Runtime: Send + Sync + 'static {
    /// The engine's version, for heartbeats.
    fn version(&self) -> impl Future<Output = Res<String>> + Send;
    /// Pulls `image` (a no-op for the registry when the layers are present) and reports its digest.
    fn pull(
        &self,
        image: &str,
        auth: Option<&Credentials>,
    ) -> impl Future<Output = Res<Pulled>> + Send;
    /// Creates the bridge network `name` unless it exists.
    fn ensure_network(&self, name: &str) -> impl Future<Output = Res<()>> + Send;
    /// The container called `name`, if there is one.
    fn inspect(&self, name: &str) -> impl Future<Output = Res<Option<ContainerInfo>>> + Send;
    /// Creates a container; returns its id.
    fn create(&self, spec: &CreateSpec) -> impl Future<Output = Res<String>> + Send;
    fn start(&self, name: &str) -> impl Future<Output = Res<()>> + Send;
    /// Stops a container (SIGTERM, then SIGKILL after `timeout_s`); stopping a stopped one is fine.
    fn stop(&self, name: &str, timeout_s: u32) -> impl Future<Output = Res<()>> + Send;
    /// Removes a container, stopping it first; removing a missing one is fine.
    fn remove(&self, name: &str) -> impl Future<Output = Res<()>> + Send;
    /// Gives the container `name` the name `to`.
    fn rename(&self, name: &str, to: &str) -> impl Future<Output = Res<()>> + Send;
    /// Containers carrying every `key=value` label given; stopped ones too when `all`.
    fn list(
        &self,
        labels: &[(String, String)],
        all: bool,
    ) -> impl Future<Output = Res<Vec<ContainerInfo>>> + Send;
    /// The images carrying all `labels`, dangling ones included.
    fn list_images(
        &self,
        labels: &[(String, String)],
    ) -> impl Future<Output = Res<Vec<ImageInfo>>> + Send;
    /// Removes an image by id or name; an image still in use is an error with `conflict`.
    fn remove_image(&self, image: &str) -> impl Future<Output = Res<()>> + Send;
    /// Gives `name` Kamal's restart policy, `unless-stopped`: Docker starts it again after
    /// a crash and when the engine restarts. Setting it twice is fine.
    fn keep_restarting(&self, name: &str) -> impl Future<Output = Res<()>> + Send;
}

/// A proxy operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProxyError {
    /// The new target never became healthy; routing is unchanged.
    #[error("{0}")]
    Unhealthy(String),
    #[error("{0}")]
    Other(String),
}

/// What the steps need from the host proxy.
pub trait Proxy: Send + Sync + 'static {
    /// Health-checks the new target, switches the service to it, drains the old one.
    fn deploy(
        &self,
        request: DeployRequest,
    ) -> impl Future<Output = Result<Deployed, ProxyError>> + Send;
    /// The service's current target (`ADDR:PORT`), if the proxy has the service.
    fn target(
        &self,
        service: &str,
    ) -> impl Future<Output = Result<Option<String>, ProxyError>> + Send;
    /// Every service the proxy routes, with its target, version and health check.
    fn services(&self) -> impl Future<Output = Result<Vec<ServiceStatus>, ProxyError>> + Send;
    /// Puts `service` in maintenance (`Some(message)`: 503 with it) or live again (`None`).
    /// A proxy that cannot says so.
    fn set_maintenance(
        &self,
        service: &str,
        maintenance: Option<Option<String>>,
    ) -> impl Future<Output = Result<(), ProxyError>> + Send {
        let _ = (service, maintenance);
        async {
            Err(ProxyError::Other(
                "this proxy has no maintenance mode".into(),
            ))
        }
    }
}
