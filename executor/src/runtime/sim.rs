//! A simulated host: containers in memory, with configurable latencies and failure rates,
//! for benchmarks that run thousands of executors in one process. Never the only test of a
//! feature: the real tests use Docker.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_proxy::admin::{DeployRequest, Deployed, ServiceStatus};
use rand::Rng as _;
use sha2::Digest as _;

use super::{
    ContainerInfo, CreateSpec, Credentials, ImageInfo, Proxy, ProxyError, Pulled, Runtime,
    RuntimeError,
};

/// How the simulated host behaves.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Time each Docker call takes.
    pub latency: Duration,
    /// Extra time a pull takes.
    pub pull_latency: Duration,
    /// Probability (0..=1) that any one call fails.
    pub failure_rate: f64,
    /// A failure that always happens, for tests of what the scheduler does with it.
    pub fail: Option<SimFailure>,
}

/// A step that always fails on a simulated host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimFailure {
    /// Every pull fails (the registry is unreachable).
    Pull,
    /// The new container never passes the proxy's health check.
    Unhealthy,
    /// Containers of this version never pass the proxy's health check (a bad release).
    UnhealthyVersion(String),
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            latency: Duration::from_millis(1),
            pull_latency: Duration::from_millis(20),
            failure_rate: 0.0,
            fail: None,
        }
    }
}

/// A simulated Docker engine and proxy.
#[derive(Debug, Default)]
pub struct SimRuntime {
    config: SimConfig,
    containers: Mutex<HashMap<String, ContainerInfo>>,
    /// The simulated proxy's routes.
    routes: Mutex<HashMap<String, ServiceStatus>>,
    next_id: AtomicU64,
    /// Containers with the `unless-stopped` restart policy.
    keep_restarting: Mutex<HashSet<String>>,
    /// Set while the simulated engine is stopped: every call fails as a stopped dockerd's do.
    engine_down: Arc<AtomicBool>,
}

impl SimRuntime {
    pub fn new(config: SimConfig) -> Self {
        Self {
            config,
            ..Default::default()
        }
    }

    /// The flag that stops the engine, for a test's proxy that stops it mid-step.
    pub fn engine_down_flag(&self) -> Arc<AtomicBool> {
        self.engine_down.clone()
    }

    /// Stops the simulated engine: calls fail until [`Self::start_engine`].
    pub fn stop_engine(&self) {
        self.engine_down.store(true, Ordering::SeqCst);
    }

    /// Starts the simulated engine again, as dockerd does: the containers it killed when it
    /// stopped run again only if their restart policy is `unless-stopped`, each at a new
    /// address on the network.
    pub fn start_engine(&self) {
        let keep = self.restart_policies().clone();
        for c in self.containers().values_mut() {
            if c.running && !keep.contains(&c.name) {
                c.running = false;
                // SIGTERM, as dockerd stops its containers on shutdown.
                c.exit_code = Some(143);
            } else if c.running {
                let n = self.next_id.fetch_add(1, Ordering::Relaxed);
                c.ip = Some(sim_ip(n));
            }
        }
        self.engine_down.store(false, Ordering::SeqCst);
    }

    fn restart_policies(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.keep_restarting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    async fn call(&self, extra: Duration) -> Result<(), RuntimeError> {
        tokio::time::sleep(self.config.latency + extra).await;
        if self.engine_down.load(Ordering::SeqCst) {
            return Err(RuntimeError::new(
                "error trying to connect: No such file or directory (simulated engine stopped)",
            ));
        }
        if self.config.failure_rate > 0.0
            && rand::thread_rng().gen_bool(self.config.failure_rate.min(1.0))
        {
            return Err(RuntimeError::new("simulated failure"));
        }
        Ok(())
    }

    fn containers(&self) -> std::sync::MutexGuard<'_, HashMap<String, ContainerInfo>> {
        self.containers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The `n`th address the simulated network hands out.
fn sim_ip(n: u64) -> String {
    format!("172.18.{}.{}", (n / 250) % 250, n % 250 + 2)
}

impl Runtime for SimRuntime {
    async fn version(&self) -> Result<String, RuntimeError> {
        self.call(Duration::ZERO).await?;
        Ok("simulated".to_owned())
    }

    async fn pull(&self, image: &str, _auth: Option<&Credentials>) -> Result<Pulled, RuntimeError> {
        self.call(self.config.pull_latency).await?;
        if self.config.fail == Some(SimFailure::Pull) {
            return Err(RuntimeError::new(format!("simulated: cannot pull {image}")));
        }
        let digest = format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(image.as_bytes()))
        );
        Ok(Pulled {
            digest,
            bytes: 1 << 20,
        })
    }

    async fn ensure_network(&self, _name: &str) -> Result<(), RuntimeError> {
        self.call(Duration::ZERO).await
    }

    async fn inspect(&self, name: &str) -> Result<Option<ContainerInfo>, RuntimeError> {
        self.call(Duration::ZERO).await?;
        Ok(self.containers().get(name).cloned())
    }

    async fn create(&self, spec: &CreateSpec) -> Result<String, RuntimeError> {
        self.call(Duration::ZERO).await?;
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut all = self.containers();
        if all.contains_key(&spec.name) {
            return Err(RuntimeError::new(format!(
                "Conflict. The container name \"/{}\" is already in use",
                spec.name
            )));
        }
        let info = ContainerInfo {
            id: format!("{n:064x}"),
            name: spec.name.clone(),
            running: false,
            ip: Some(sim_ip(n)),
            created: Some(n as i64),
            image: spec.image.clone(),
            labels: spec.labels.clone(),
            ..Default::default()
        };
        let id = info.id.clone();
        all.insert(spec.name.clone(), info);
        if spec
            .restart
            .is_some_and(|r| r != flotilla_protocol::wire::RestartPolicy::No)
        {
            self.restart_policies().insert(spec.name.clone());
        }
        Ok(id)
    }

    async fn start(&self, name: &str) -> Result<(), RuntimeError> {
        self.call(Duration::ZERO).await?;
        match self.containers().get_mut(name) {
            Some(c) => {
                c.running = true;
                Ok(())
            }
            None => Err(RuntimeError {
                message: format!("No such container: {name}"),
                not_found: true,
                conflict: false,
            }),
        }
    }

    async fn stop(&self, name: &str, _timeout_s: u32) -> Result<(), RuntimeError> {
        self.call(Duration::ZERO).await?;
        if let Some(c) = self.containers().get_mut(name) {
            c.running = false;
        }
        Ok(())
    }

    async fn remove(&self, name: &str) -> Result<(), RuntimeError> {
        self.call(Duration::ZERO).await?;
        self.containers().remove(name);
        self.restart_policies().remove(name);
        Ok(())
    }

    async fn rename(&self, name: &str, to: &str) -> Result<(), RuntimeError> {
        self.call(Duration::ZERO).await?;
        let mut all = self.containers();
        if all.contains_key(to) {
            return Err(RuntimeError::new(format!(
                "Conflict. The container name \"/{to}\" is already in use"
            )));
        }
        let Some(mut c) = all.remove(name) else {
            return Err(RuntimeError {
                message: format!("No such container: {name}"),
                not_found: true,
                conflict: false,
            });
        };
        c.name = to.to_owned();
        all.insert(to.to_owned(), c);
        drop(all);
        if self.restart_policies().remove(name) {
            self.restart_policies().insert(to.to_owned());
        }
        Ok(())
    }

    async fn keep_restarting(&self, name: &str) -> Result<(), RuntimeError> {
        self.call(Duration::ZERO).await?;
        if !self.containers().contains_key(name) {
            return Err(RuntimeError {
                message: format!("No such container: {name}"),
                not_found: true,
                conflict: false,
            });
        }
        self.restart_policies().insert(name.to_owned());
        Ok(())
    }

    async fn list(
        &self,
        labels: &[(String, String)],
        all: bool,
    ) -> Result<Vec<ContainerInfo>, RuntimeError> {
        self.call(Duration::ZERO).await?;
        Ok(self
            .containers()
            .values()
            .filter(|c| all || c.running)
            .filter(|c| labels.iter().all(|(k, v)| c.labels.get(k) == Some(v)))
            .cloned()
            .collect())
    }

    /// The simulation keeps containers, not images: there is never an image to prune.
    async fn list_images(
        &self,
        _labels: &[(String, String)],
    ) -> Result<Vec<ImageInfo>, RuntimeError> {
        self.call(Duration::ZERO).await?;
        Ok(Vec::new())
    }

    /// Refused, as Docker refuses, while a container (running or not) was made from `image`.
    async fn remove_image(&self, image: &str) -> Result<(), RuntimeError> {
        self.call(Duration::ZERO).await?;
        match self.containers().values().find(|c| c.image == image) {
            Some(c) => Err(RuntimeError {
                message: format!(
                    "conflict: unable to remove repository reference \"{image}\" (must force) - container {} is using its referenced image",
                    &c.id[..12.min(c.id.len())]
                ),
                not_found: false,
                conflict: true,
            }),
            None => Ok(()),
        }
    }
}

impl Proxy for SimRuntime {
    async fn deploy(&self, request: DeployRequest) -> Result<Deployed, ProxyError> {
        self.call(Duration::ZERO)
            .await
            .map_err(|e| ProxyError::Other(e.message))?;
        let unhealthy = match &self.config.fail {
            Some(SimFailure::Unhealthy) => true,
            Some(SimFailure::UnhealthyVersion(v)) => request.service.version.as_ref() == Some(v),
            _ => false,
        };
        if unhealthy {
            return Err(ProxyError::Unhealthy(format!(
                "simulated: {} never became healthy",
                request.service.target
            )));
        }
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        let from = routes
            .insert(
                request.service.name.clone(),
                ServiceStatus {
                    spec: request.service.clone(),
                    maintenance: None,
                    paused: false,
                    in_flight: 0,
                    health: Some(request.health),
                },
            )
            .map(|s| s.spec.target);
        Ok(Deployed {
            service: request.service.name,
            from,
            to: request.service.target,
            version: request.service.version.unwrap_or_default(),
            drain_cancelled: 0,
        })
    }

    async fn target(&self, service: &str) -> Result<Option<String>, ProxyError> {
        Ok(self
            .routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(service)
            .map(|s| s.spec.target.clone()))
    }

    async fn services(&self) -> Result<Vec<ServiceStatus>, ProxyError> {
        Ok(self
            .routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect())
    }

    async fn set_maintenance(
        &self,
        service: &str,
        maintenance: Option<Option<String>>,
    ) -> Result<(), ProxyError> {
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        let Some(route) = routes.get_mut(service) else {
            return Err(ProxyError::Other(format!("no service {service}")));
        };
        // The proxy's own default text when no message is given.
        route.maintenance =
            maintenance.map(|m| m.unwrap_or_else(|| "Service Unavailable".to_owned()));
        Ok(())
    }
}
