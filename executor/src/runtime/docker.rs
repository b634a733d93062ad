//! [`Runtime`] over the Docker Engine API (bollard, API version negotiated: the hosts'
//! engines may be as old as 20.10 / API 1.41), and [`Proxy`] over the proxy's admin socket.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::models::{
    ContainerCreateBody, ContainerUpdateBody, HostConfig, HostConfigLogConfig,
    NetworkCreateRequest, PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, InspectContainerOptions, InspectNetworkOptions,
    ListContainersOptions, ListImagesOptions, RemoveContainerOptions, RemoveImageOptions,
    RenameContainerOptions, StopContainerOptions,
};
use flotilla_protocol::wire::RestartPolicy as WireRestart;
use flotilla_proxy::admin::{
    AdminError, Client, DeployRequest, Deployed, ErrorKind, ServiceStatus,
};
use futures::StreamExt as _;

use super::{
    ContainerInfo, CreateSpec, Credentials, ImageInfo, Proxy, ProxyError, Pulled, Runtime,
    RuntimeError,
};

/// The host's Docker engine.
#[derive(Debug, Clone)]
pub struct DockerRuntime {
    docker: Docker,
}

fn err(e: bollard::errors::Error) -> RuntimeError {
    let not_found = matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    );
    let conflict = is_status(&e, 409);
    let message = match e {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message,
        other => other.to_string(),
    };
    RuntimeError {
        message,
        not_found,
        conflict,
    }
}

/// The wire's restart policy as Docker's.
fn restart_policy(policy: WireRestart) -> RestartPolicy {
    let (name, maximum_retry_count) = match policy {
        WireRestart::No => (RestartPolicyNameEnum::NO, None),
        WireRestart::Always => (RestartPolicyNameEnum::ALWAYS, None),
        WireRestart::UnlessStopped => (RestartPolicyNameEnum::UNLESS_STOPPED, None),
        WireRestart::OnFailure { max_retries } => (
            RestartPolicyNameEnum::ON_FAILURE,
            max_retries.map(i64::from),
        ),
    };
    RestartPolicy {
        name: Some(name),
        maximum_retry_count,
    }
}

fn is_status(e: &bollard::errors::Error, code: u16) -> bool {
    matches!(e, bollard::errors::Error::DockerResponseServerError { status_code, .. } if *status_code == code)
}

/// Splits `repo[:tag][@digest]` into what the pull API wants: `fromImage` and `tag`.
fn split_reference(image: &str) -> (&str, &str) {
    if let Some((repo, digest)) = image.split_once('@') {
        return (repo, digest);
    }
    let slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[slash..].rfind(':') {
        Some(i) => (&image[..slash + i], &image[slash + i + 1..]),
        None => (image, "latest"),
    }
}

impl DockerRuntime {
    /// Connects to the engine at `socket` and negotiates the API version.
    pub async fn connect(socket: &Path) -> Result<Self, RuntimeError> {
        let path = socket.to_string_lossy();
        let docker = Docker::connect_with_unix(&path, 120, bollard::API_DEFAULT_VERSION)
            .map_err(err)?
            .negotiate_version()
            .await
            .map_err(|e| RuntimeError::new(format!("docker at {path}: {e}")))?;
        Ok(Self { docker })
    }

    /// The underlying client (benchmarks compare a raw call with a step).
    pub fn client(&self) -> &Docker {
        &self.docker
    }
}

impl Runtime for DockerRuntime {
    async fn version(&self) -> Result<String, RuntimeError> {
        let v = self.docker.version().await.map_err(err)?;
        Ok(v.version.unwrap_or_default())
    }

    async fn pull(&self, image: &str, auth: Option<&Credentials>) -> Result<Pulled, RuntimeError> {
        let (repo, tag) = split_reference(image);
        let options = CreateImageOptions {
            from_image: Some(repo.to_owned()),
            tag: Some(tag.to_owned()),
            ..Default::default()
        };
        let credentials = auth.map(|a| DockerCredentials {
            username: Some(a.username.clone()),
            password: Some(a.password.expose().to_owned()),
            serveraddress: Some(a.server.clone()),
            ..Default::default()
        });
        let mut progress = self.docker.create_image(Some(options), None, credentials);
        while let Some(item) = progress.next().await {
            item.map_err(err)?;
        }
        let inspect = self.docker.inspect_image(image).await.map_err(err)?;
        let digest = inspect
            .repo_digests
            .unwrap_or_default()
            .into_iter()
            .find_map(|d| {
                d.split_once('@')
                    .filter(|(r, _)| *r == repo)
                    .map(|(_, digest)| digest.to_owned())
            })
            .or(inspect.id)
            .unwrap_or_default();
        Ok(Pulled {
            digest,
            bytes: inspect.size.unwrap_or(0).max(0) as u64,
        })
    }

    async fn ensure_network(&self, name: &str) -> Result<(), RuntimeError> {
        match self
            .docker
            .inspect_network(name, None::<InspectNetworkOptions>)
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(err(e)),
        }
        let request = NetworkCreateRequest {
            name: name.to_owned(),
            driver: Some("bridge".to_owned()),
            ..Default::default()
        };
        match self.docker.create_network(request).await {
            Ok(_) => Ok(()),
            // Made meanwhile by someone else: what we wanted.
            Err(e) if is_status(&e, 409) => Ok(()),
            Err(e) => Err(err(e)),
        }
    }

    async fn inspect(&self, name: &str) -> Result<Option<ContainerInfo>, RuntimeError> {
        let c = match self
            .docker
            .inspect_container(name, None::<InspectContainerOptions>)
            .await
        {
            Ok(c) => c,
            Err(e) if is_status(&e, 404) => return Ok(None),
            Err(e) => return Err(err(e)),
        };
        let state = c.state.unwrap_or_default();
        let ip = c
            .network_settings
            .and_then(|n| n.networks)
            .and_then(|n| {
                n.get(crate::steps::NETWORK)
                    .and_then(|e| e.ip_address.clone())
            })
            .filter(|ip| !ip.is_empty());
        Ok(Some(ContainerInfo {
            id: c.id.unwrap_or_default(),
            name: c
                .name
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_owned(),
            // A container in its restart policy's back-off is not running for our purposes:
            // it exited and Docker will try again.
            running: state.running.unwrap_or(false) && !state.restarting.unwrap_or(false),
            health: state
                .health
                .and_then(|h| h.status)
                .map(|s| s.to_string())
                .filter(|s| !s.is_empty() && s != "none"),
            exit_code: state.exit_code,
            started_at: state.started_at,
            ip,
            created: None,
            image: c.image.unwrap_or_default(),
            labels: c
                .config
                .and_then(|c| c.labels)
                .unwrap_or_default()
                .into_iter()
                .collect(),
        }))
    }

    async fn create(&self, spec: &CreateSpec) -> Result<String, RuntimeError> {
        let env: Vec<String> = spec
            .env
            .iter()
            .map(|(k, v)| format!("{k}={}", v.expose()))
            .collect();
        let mut port_bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
        let mut exposed = Vec::new();
        for p in &spec.publish {
            let (host, container) = p.rsplit_once(':').unwrap_or((p.as_str(), p.as_str()));
            let (host_ip, host_port) = match host.rsplit_once(':') {
                Some((ip, port)) => (Some(ip.to_owned()), port),
                None => (None, host),
            };
            let key = if container.contains('/') {
                container.to_owned()
            } else {
                format!("{container}/tcp")
            };
            exposed.push(key.clone());
            port_bindings.insert(
                key,
                Some(vec![PortBinding {
                    host_ip,
                    host_port: Some(host_port.to_owned()),
                }]),
            );
        }
        let host_config = HostConfig {
            binds: (!spec.volumes.is_empty()).then(|| spec.volumes.clone()),
            network_mode: Some(spec.network.clone()),
            log_config: log_config(spec.log_driver.as_deref(), &spec.log_options),
            memory: spec.memory_bytes,
            shm_size: spec.shm_size_bytes,
            extra_hosts: (!spec.extra_hosts.is_empty()).then(|| spec.extra_hosts.clone()),
            port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
            restart_policy: spec.restart.map(restart_policy),
            nano_cpus: spec.nano_cpus,
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            user: spec.user.clone(),
            hostname: spec.hostname.clone(),
            env: Some(env),
            labels: Some(spec.labels.clone().into_iter().collect()),
            cmd: spec.cmd.clone(),
            exposed_ports: (!exposed.is_empty()).then_some(exposed),
            host_config: Some(host_config),
            stop_timeout: spec.stop_timeout_s.map(i64::from),
            ..Default::default()
        };
        let options = CreateContainerOptions {
            name: Some(spec.name.clone()),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(Some(options), body)
            .await
            .map_err(err)?;
        Ok(created.id)
    }

    async fn rename(&self, name: &str, to: &str) -> Result<(), RuntimeError> {
        let options = RenameContainerOptions {
            name: to.to_owned(),
        };
        self.docker
            .rename_container(name, options)
            .await
            .map_err(err)
    }

    async fn start(&self, name: &str) -> Result<(), RuntimeError> {
        match self.docker.start_container(name, None).await {
            // 304: already running.
            Err(e) if !is_status(&e, 304) => Err(err(e)),
            _ => Ok(()),
        }
    }

    async fn stop(&self, name: &str, timeout_s: u32) -> Result<(), RuntimeError> {
        let options = StopContainerOptions {
            t: Some(i32::try_from(timeout_s).unwrap_or(i32::MAX)),
            ..Default::default()
        };
        match self.docker.stop_container(name, Some(options)).await {
            // 304: already stopped.
            Err(e) if !is_status(&e, 304) => Err(err(e)),
            _ => Ok(()),
        }
    }

    async fn keep_restarting(&self, name: &str) -> Result<(), RuntimeError> {
        let body = ContainerUpdateBody {
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                maximum_retry_count: None,
            }),
            ..Default::default()
        };
        self.docker.update_container(name, body).await.map_err(err)
    }

    async fn remove(&self, name: &str) -> Result<(), RuntimeError> {
        let options = RemoveContainerOptions {
            force: true,
            ..Default::default()
        };
        match self.docker.remove_container(name, Some(options)).await {
            Err(e) if !is_status(&e, 404) => Err(err(e)),
            _ => Ok(()),
        }
    }

    async fn list(
        &self,
        labels: &[(String, String)],
        all: bool,
    ) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let filters = HashMap::from([(
            "label".to_owned(),
            labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        )]);
        let options = ListContainersOptions {
            all,
            filters: Some(filters),
            ..Default::default()
        };
        let list = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(err)?;
        Ok(list
            .into_iter()
            .map(|c| ContainerInfo {
                id: c.id.unwrap_or_default(),
                name: c
                    .names
                    .unwrap_or_default()
                    .first()
                    .map(|n| n.trim_start_matches('/').to_owned())
                    .unwrap_or_default(),
                running: c.state.map(|s| s.to_string()) == Some("running".to_owned()),
                health: None,
                exit_code: None,
                started_at: None,
                ip: c
                    .network_settings
                    .and_then(|n| n.networks)
                    .and_then(|n| {
                        n.get(crate::steps::NETWORK)
                            .and_then(|e| e.ip_address.clone())
                    })
                    .filter(|ip| !ip.is_empty()),
                created: c.created,
                image: c.image_id.unwrap_or_default(),
                labels: c
                    .labels
                    .unwrap_or_default()
                    .into_iter()
                    .collect::<BTreeMap<_, _>>(),
            })
            .collect())
    }

    async fn list_images(
        &self,
        labels: &[(String, String)],
    ) -> Result<Vec<ImageInfo>, RuntimeError> {
        let filters = HashMap::from([(
            "label".to_owned(),
            labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        )]);
        let options = ListImagesOptions {
            filters: Some(filters),
            ..Default::default()
        };
        let list = self.docker.list_images(Some(options)).await.map_err(err)?;
        // Older engines name a dangling image `<none>:<none>` / `<none>@<none>`.
        let named = |names: Vec<String>| -> Vec<String> {
            names
                .into_iter()
                .filter(|n| !n.starts_with("<none>"))
                .collect()
        };
        Ok(list
            .into_iter()
            .map(|i| ImageInfo {
                id: i.id,
                tags: named(i.repo_tags),
                digests: named(i.repo_digests),
            })
            .collect())
    }

    async fn remove_image(&self, image: &str) -> Result<(), RuntimeError> {
        self.docker
            .remove_image(image, None::<RemoveImageOptions>, None)
            .await
            .map(drop)
            .map_err(err)
    }
}

/// The host proxy, through its admin socket.
#[derive(Debug, Clone)]
pub struct SocketProxy {
    client: Client,
}

impl SocketProxy {
    pub fn new(socket: &Path) -> Self {
        Self {
            client: Client::new(socket),
        }
    }
}

fn proxy_err(e: AdminError) -> ProxyError {
    match e {
        AdminError::Refused {
            kind: ErrorKind::Unhealthy,
            message,
        } => ProxyError::Unhealthy(message),
        other => ProxyError::Other(crate::steps::error_chain(&other)),
    }
}

impl Proxy for SocketProxy {
    async fn deploy(&self, request: DeployRequest) -> Result<Deployed, ProxyError> {
        self.client.deploy(request).await.map_err(proxy_err)
    }

    async fn target(&self, service: &str) -> Result<Option<String>, ProxyError> {
        let services = self.client.list().await.map_err(proxy_err)?;
        Ok(services
            .into_iter()
            .find(|s| s.spec.name == service)
            .map(|s| s.spec.target))
    }

    async fn services(&self) -> Result<Vec<ServiceStatus>, ProxyError> {
        self.client.list().await.map_err(proxy_err)
    }

    async fn set_maintenance(
        &self,
        service: &str,
        maintenance: Option<Option<String>>,
    ) -> Result<(), ProxyError> {
        match maintenance {
            Some(message) => self.client.maintenance(service, message).await,
            None => self.client.live(service).await,
        }
        .map_err(proxy_err)
    }
}

/// Docker's log settings for a container. Options without a driver still apply: an empty type
/// is the daemon's default driver, which is how Kamal's default `--log-opt max-size=10m` (no
/// `--log-driver`) caps an app container's json-file log.
fn log_config(driver: Option<&str>, options: &[(String, String)]) -> Option<HostConfigLogConfig> {
    if driver.is_none() && options.is_empty() {
        return None;
    }
    Some(HostConfigLogConfig {
        typ: driver.map(str::to_owned),
        config: Some(options.iter().cloned().collect()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Log options reach Docker without a driver (Kamal's default `max-size=10m` caps the
    /// daemon's default driver); with neither, Docker's own defaults stand.
    #[test]
    fn log_options_apply_without_a_driver() {
        let opts = vec![("max-size".to_owned(), "10m".to_owned())];
        let c = log_config(None, &opts).unwrap();
        assert_eq!(c.typ, None);
        assert_eq!(
            c.config.unwrap().get("max-size").map(String::as_str),
            Some("10m")
        );
        let c = log_config(Some("journald"), &[]).unwrap();
        assert_eq!(c.typ.as_deref(), Some("journald"));
        assert!(log_config(None, &[]).is_none());
    }

    /// Image references split into what the pull API takes, registry ports included.
    #[test]
    fn references_split_for_pull() {
        assert_eq!(
            split_reference("10.0.0.1:5000/app:v1"),
            ("10.0.0.1:5000/app", "v1")
        );
        assert_eq!(
            split_reference("10.0.0.1:5000/app"),
            ("10.0.0.1:5000/app", "latest")
        );
        assert_eq!(split_reference("app@sha256:ab"), ("app", "sha256:ab"));
        assert_eq!(split_reference("busybox"), ("busybox", "latest"));
    }
}
