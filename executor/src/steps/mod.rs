//! Step logic: each [`JobStep`] becomes calls on the [`Runtime`] and [`Proxy`] and the events
//! that report it. Every step first observes Docker's state, so running it again (a redelivered
//! job, a restart after a crash) finds the work done and reports the same outcome instead of
//! making a second container.
//!
//! Event ids are derived from the job id and the step's position, so a rerun reports the same
//! ids and the scheduler's log, idempotent by event id, keeps one copy.

mod accessory;
mod app;
mod health;
mod proxy;

pub use proxy::HANDOVER_WAIT;

use std::time::Duration;

use flotilla_events::event::FailureCause;
use flotilla_events::{Event, EventId, NewEvent, SCHEMA_VERSION, Timestamp};
use sha2::Digest as _;

use crate::runtime::{EnvValue, Proxy, Runtime};
use flotilla_protocol::sealing::HostKey;
use flotilla_protocol::wire::{Job, JobStep, SealedValue};

pub use flotilla_protocol::names::NETWORK;
/// A step that did not succeed: the events it did produce (e.g. `HealthFailed`) and why.
#[derive(Debug)]
pub struct StepFailed {
    pub events: Vec<Event>,
    pub error: String,
    /// `StepFailed`, or `EngineUnreachable` when Docker did not answer (see
    /// [`Executor::run_step`]).
    pub cause: FailureCause,
}

impl StepFailed {
    fn new(error: impl Into<String>) -> Self {
        Self {
            events: Vec::new(),
            error: shorten(&error.into()),
            cause: FailureCause::StepFailed,
        }
    }
}

/// How long a failed step waits for the engine to answer its version before calling it
/// unreachable: a stopped dockerd refuses at once, but one shutting down or hung keeps the
/// socket open, and an engine that cannot answer a version within this cannot run the step.
const ENGINE_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

impl From<crate::runtime::RuntimeError> for StepFailed {
    fn from(e: crate::runtime::RuntimeError) -> Self {
        Self::new(e.message)
    }
}

/// Carries out steps on one host.
pub struct Executor<R, P> {
    pub runtime: R,
    pub proxy: P,
    host_key: HostKey,
    host: String,
    /// Held while the proxy is switched, by a step or by [`crate::repoint`], so a repoint
    /// that read the proxy's routes before a deploy's switch cannot send the service back
    /// to the old container after it.
    pub(crate) switching: tokio::sync::Mutex<()>,
    /// Where the host's own filesystem is seen from this process: `/` for an executor run on
    /// the host, the bind of the host's `/` for one run in a container (`flotilla setup`'s).
    /// Paths in jobs (accessory directories and files) are the host's.
    host_root: std::path::PathBuf,
    /// The host proxy's admin socket as this process sees it: a proxy reboot watches it to
    /// know when the new proxy serves.
    proxy_socket: std::path::PathBuf,
}

impl<R: Runtime, P: Proxy> Executor<R, P> {
    pub fn new(runtime: R, proxy: P, host_key: HostKey, host: impl Into<String>) -> Self {
        Self {
            runtime,
            proxy,
            host_key,
            host: host.into(),
            switching: tokio::sync::Mutex::new(()),
            host_root: std::path::PathBuf::from("/"),
            proxy_socket: std::path::PathBuf::from(flotilla_protocol::proxy_run::PROXY_SOCKET),
        }
    }

    /// Watches `path` as the proxy's admin socket (see [`Executor::proxy_socket`]).
    pub fn with_proxy_socket(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.proxy_socket = path.into();
        self
    }

    /// Sees the host's filesystem at `root` (see [`Executor::on_host`]).
    pub fn with_host_root(mut self, root: impl Into<std::path::PathBuf>) -> Self {
        self.host_root = root.into();
        self
    }

    /// The host path `path` (absolute, as a job names it) as this process reaches it.
    pub fn on_host(&self, path: &str) -> std::path::PathBuf {
        match self.host_root == std::path::Path::new("/") {
            true => std::path::PathBuf::from(path),
            false => self.host_root.join(path.trim_start_matches('/')),
        }
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn host_key(&self) -> &HostKey {
        &self.host_key
    }

    /// Runs one step; returns its events, or what failed.
    ///
    /// A failed step asks the engine for its version: when that fails too, Docker is not
    /// answering (dockerd stopped mid-rollout), and the failure says so instead of what the
    /// step concluded from the engine's silence. A stopping dockerd kills the containers, so
    /// the proxy's health check fails first: that is not a verdict on the new version, and
    /// its `HealthFailed` is dropped.
    pub async fn run_step(&self, step: &JobStep) -> Result<Vec<Event>, StepFailed> {
        match self.run_step_inner(step).await {
            Ok(events) => Ok(events),
            Err(failed) => Err(self.unless_engine_gone(failed).await),
        }
    }

    /// `failed`, or an `EngineUnreachable` failure when the engine does not answer now.
    async fn unless_engine_gone(&self, failed: StepFailed) -> StepFailed {
        let why = match tokio::time::timeout(ENGINE_PROBE_TIMEOUT, self.runtime.version()).await {
            Ok(Ok(_)) => return failed,
            Ok(Err(e)) => e.message,
            Err(_) => format!("no answer within {}s", ENGINE_PROBE_TIMEOUT.as_secs()),
        };
        StepFailed {
            events: Vec::new(),
            error: shorten(&format!(
                "docker engine unreachable ({why}); the step's outcome is unknown: {}",
                failed.error
            )),
            cause: FailureCause::EngineUnreachable,
        }
    }

    async fn run_step_inner(&self, step: &JobStep) -> Result<Vec<Event>, StepFailed> {
        match step {
            JobStep::PullImage(s) => app::pull(self, s).await,
            JobStep::StartContainer(s) => app::start(self, s).await,
            JobStep::AwaitHealthy(s) => health::await_healthy(self, s).await,
            JobStep::SwitchProxy(s) => health::switch_proxy(self, s).await,
            JobStep::StopOldContainers(s) => app::stop_old(self, s).await,
            JobStep::Prune(s) => app::prune(self, s).await,
            JobStep::PruneImages(s) => app::prune_images(self, s).await,
            JobStep::BootAccessory(s) => accessory::boot(self, s).await,
            JobStep::BootSealedAccessory(s) => accessory::boot_sealed(self, s).await,
            JobStep::RemoveAccessory(s) => accessory::remove(self, s).await,
            JobStep::RemoveImage(s) => accessory::remove_image(self, s).await,
            JobStep::StartExisting(s) => app::start_existing(self, &s.container).await,
            JobStep::StopContainer(s) => app::stop_one(self, &s.container, s.stop_timeout_s).await,
            JobStep::ReplaceProxy(s) => proxy::replace(self, s).await,
            JobStep::RemoveContainer(s) => {
                self.runtime.remove(&s.container).await?;
                Ok(Vec::new())
            }
            // Reports nothing but the host's success: the proxy's state is the outcome, and
            // a second request sets the same state (idempotent).
            JobStep::SetMaintenance(s) => self
                .proxy
                .set_maintenance(&s.proxy_service, s.maintenance.clone())
                .await
                .map(|()| Vec::new())
                .map_err(|e| {
                    let what = if s.maintenance.is_some() {
                        "maintenance"
                    } else {
                        "live"
                    };
                    StepFailed::new(format!("{what} {}: {e}", s.proxy_service))
                }),
        }
    }

    /// Opens secret env values sealed to this host.
    fn open_env(
        &self,
        secret_env: &[(String, SealedValue)],
    ) -> Result<Vec<(String, EnvValue)>, StepFailed> {
        secret_env
            .iter()
            .map(|(name, sealed)| {
                self.host_key
                    .open(sealed)
                    .map(|s| (name.clone(), EnvValue::Secret(s)))
                    .map_err(|e| StepFailed::new(format!("secret {name}: {e}")))
            })
            .collect()
    }

    /// How a container stands, as text to append to an error: its state and exit code, and
    /// where its log is. The log itself never leaves the host (an app may print secrets);
    /// `flotilla app logs` reads it over SSH.
    async fn container_status(&self, container: &str) -> String {
        let state = match self.runtime.inspect(container).await {
            Ok(Some(c)) if c.running => "still running".to_owned(),
            Ok(Some(c)) => match c.exit_code {
                Some(code) => format!("exited with code {code}"),
                None => "not running".to_owned(),
            },
            Ok(None) => "gone".to_owned(),
            Err(e) => format!("state unknown: {}", e.message),
        };
        format!(
            " ({container} {state}; its log stays on the host: flotilla app logs -h {} --container-id {container})",
            self.host
        )
    }

    /// Every secret value sealed to this host in `job`, opened, with its name: what must
    /// never leave the host in a report.
    pub fn job_secrets(&self, job: &Job) -> Vec<(String, flotilla_protocol::sealing::Secret)> {
        let mut sealed: Vec<(String, &SealedValue)> = Vec::new();
        for step in &job.steps {
            match step {
                JobStep::PullImage(p) => {
                    // The username is sealed in transit but is no secret to scrub: it is often
                    // the service's or the organisation's name, which events must keep.
                    if let Some(auth) = &p.auth {
                        sealed.push(("registry password".into(), &auth.password));
                    }
                }
                JobStep::StartContainer(s) => {
                    sealed.extend(s.config.secret_env.iter().map(|(n, v)| (n.clone(), v)));
                }
                JobStep::BootAccessory(a) => {
                    sealed.extend(a.config.secret_env.iter().map(|(n, v)| (n.clone(), v)));
                }
                JobStep::BootSealedAccessory(a) => {
                    sealed.extend(a.config.secret_env.iter().map(|(n, v)| (n.clone(), v)));
                    if let Some(auth) = &a.auth {
                        sealed.push(("registry password".into(), &auth.password));
                    }
                }
                _ => {}
            }
        }
        sealed
            .into_iter()
            .filter_map(|(name, v)| self.host_key.open(v).ok().map(|s| (name, s)))
            .collect()
    }

    /// Wraps `event` of `job` (step `step`, `k`-th event of it) for publishing.
    pub fn envelope(&self, job: &Job, step: Option<usize>, k: usize, event: Event) -> NewEvent {
        NewEvent {
            id: event_id(job, step, k),
            deploy_id: job.deploy_id.clone(),
            at: Timestamp::now(),
            host: Some(self.host.clone()),
            schema_version: SCHEMA_VERSION,
            actor: format!("executor@{}", self.host),
            event,
        }
    }
}

/// A stable event id: the job's issue time (so ids still sort by time, as ULIDs do), then 64
/// bits of the job id's hash, then the step (12 bits, `0xfff` for the final event) and the
/// event's index within it (4 bits).
pub fn event_id(job: &Job, step: Option<usize>, k: usize) -> EventId {
    let hash = sha2::Sha256::digest(job.id.as_bytes());
    let mut h = [0u8; 8];
    h.copy_from_slice(&hash[..8]);
    let time = (job.issued_at.unix_ms().max(0) as u128) & ((1 << 48) - 1);
    let step = step.map_or(0xfff, |s| (s as u128).min(0xffe));
    let k = (k as u128).min(0xf);
    EventId::from_u128((time << 80) | ((u64::from_be_bytes(h) as u128) << 16) | (step << 4) | k)
}

pub use flotilla_protocol::text::{MAX_ERROR_CHARS, error_chain, shorten};

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
