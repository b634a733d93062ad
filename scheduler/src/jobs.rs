//! Turning a host's planned steps into the signed job its executor runs.
//!
//! The plan names secrets; here their values are looked up and sealed to the host's own key,
//! so they cross NATS only as ciphertext. A resumed deploy sends only the steps a host has not
//! finished, with the same job identity scheme, so the events it reports line up.

use flotilla_deploy::Config;
use flotilla_deploy::commands::secret_env_file;
use flotilla_deploy::config::docker_options::{Restart, parse_cpus, parse_restart, parse_size};
use flotilla_deploy::plan::{HostPlan, Plan, Step};
use flotilla_events::{DeployId, Timestamp};
use flotilla_protocol::sealing::{SealError, seal, seal_bytes};
use flotilla_protocol::wire::{
    self, AwaitHealthy, ContainerConfig, Job, JobStep, Prune, PullImage, RegistryAuth,
    StartContainer, StopOldContainers, SwitchProxy,
};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("secret {name} is not defined in the secrets files")]
    MissingSecret { name: String },
    #[error("no sealing key for host {host}: its executor has not been seen (is it running?)")]
    NoHostKey { host: String },
    #[error("sealing a secret for {host}: {source}")]
    Seal {
        host: String,
        #[source]
        source: SealError,
    },
    #[error("option {name}={value:?} on role {role} is not understood: {why}")]
    Option {
        role: String,
        name: String,
        value: String,
        why: String,
    },
}

/// What every job of one deploy shares.
#[derive(Debug, Clone)]
pub struct JobContext<'a> {
    pub config: &'a Config,
    pub deploy_id: &'a DeployId,
    /// Host -> its executor's sealing key (base64), as enrolled (never from a heartbeat).
    pub host_keys: &'a BTreeMap<String, String>,
    pub now: Timestamp,
    /// How long a job stays valid.
    pub validity: Duration,
}

/// The job for `host`, starting at step `from` (0 for a fresh deploy; a resume skips the
/// steps the log shows finished). The job id is the deploy, host, first step and a fresh ULID.
pub fn job_for(
    plan: &Plan,
    host: &HostPlan,
    from: usize,
    ctx: &JobContext,
) -> Result<Job, JobError> {
    let key = ctx
        .host_keys
        .get(&host.host)
        .ok_or_else(|| JobError::NoHostKey {
            host: host.host.clone(),
        })?;
    let steps = host
        .steps
        .iter()
        .skip(from)
        .map(|s| job_step(plan, s, &host.host, key, ctx))
        .collect::<Result<Vec<_>, _>>()?;
    let validity_ms = i64::try_from(ctx.validity.as_millis()).unwrap_or(i64::MAX);
    Ok(Job {
        // Unique per dispatch (a fresh ULID): the id is the `Nats-Msg-Id`, and JetStream
        // drops a second message with the same id inside its dedup window, so a resume that
        // sends a host the same steps again within two minutes must not reuse an old id.
        id: format!(
            "{}-{}-{from}-{}",
            ctx.deploy_id,
            flotilla_protocol::subjects::token(&host.host),
            flotilla_events::EventId::new()
        ),
        deploy_id: ctx.deploy_id.clone(),
        host: host.host.clone(),
        issued_at: ctx.now,
        expires_at: Timestamp::from_unix_ms(ctx.now.unix_ms().saturating_add(validity_ms)),
        generation: next_generation(ctx.now),
        scope: flotilla_protocol::names::lock_key(&plan.service, plan.destination.as_deref()),
        steps,
    })
}

/// The last generation this process issued: generations are issue times in milliseconds,
/// kept strictly growing even when two jobs are made in the same millisecond or the clock
/// steps back.
static LAST_GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn next_generation(now: Timestamp) -> u64 {
    use std::sync::atomic::Ordering;
    let now = u64::try_from(now.unix_ms()).unwrap_or(0);
    let mut last = LAST_GENERATION.load(Ordering::Relaxed);
    loop {
        let next = now.max(last + 1);
        match LAST_GENERATION.compare_exchange_weak(
            last,
            next,
            Ordering::Relaxed,
            Ordering::Relaxed,
        ) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

fn sealed(
    name: &str,
    host: &str,
    key: &str,
    ctx: &JobContext,
) -> Result<wire::SealedValue, JobError> {
    let value = ctx
        .config
        .secrets
        .get(name)
        .ok_or_else(|| JobError::MissingSecret {
            name: name.to_owned(),
        })?;
    seal(key, value.expose()).map_err(|source| JobError::Seal {
        host: host.to_owned(),
        source,
    })
}

fn job_step(
    plan: &Plan,
    step: &Step,
    host: &str,
    key: &str,
    ctx: &JobContext,
) -> Result<JobStep, JobError> {
    let config = ctx.config;
    let ms = |s: u64| s.saturating_mul(1000);
    Ok(match step {
        Step::PullImage { image } => JobStep::PullImage(PullImage {
            image: image.clone(),
            auth: registry_auth(config, host, key)?,
        }),
        Step::StartContainer(s) => start_container(plan, s, host, key, ctx)?,
        Step::AwaitHealthy {
            container,
            readiness_delay_s,
            timeout_s,
            ..
        } => JobStep::AwaitHealthy(AwaitHealthy {
            container: container.clone(),
            readiness_delay_ms: ms(*readiness_delay_s),
            timeout_ms: ms(*timeout_s),
            interval_ms: 500,
        }),
        Step::SwitchProxy(s) => JobStep::SwitchProxy(SwitchProxy {
            proxy_service: s.proxy_service.clone(),
            container: s.container.clone(),
            version: plan.release.version.clone(),
            app_port: s.app_port,
            hosts: s.hosts.clone(),
            path_prefix: s.path_prefix.clone(),
            health_path: s.health_path.clone(),
            health_interval_ms: ms(s.health_interval_s),
            health_timeout_ms: ms(s.health_timeout_s),
            deploy_timeout_ms: ms(s.deploy_timeout_s),
            drain_timeout_ms: ms(s.drain_timeout_s),
        }),
        Step::StopOldContainers {
            role,
            keep,
            stop_timeout_s,
        } => JobStep::StopOldContainers(StopOldContainers {
            service: plan.service.clone(),
            role: role.clone(),
            destination: plan.destination.clone(),
            keep: keep.clone(),
            stop_timeout_s: u32::try_from(*stop_timeout_s).unwrap_or(u32::MAX),
        }),
        Step::Prune { retain, protected } => JobStep::Prune(Prune {
            service: plan.service.clone(),
            retain: *retain,
            protected: protected.clone(),
        }),
        Step::PruneImages { protected } => JobStep::PruneImages(wire::PruneImages {
            service: plan.service.clone(),
            protected: protected.clone(),
        }),
        // The executor's "stop the role's running containers but one", keeping none.
        Step::StopRole {
            role,
            stop_timeout_s,
        } => JobStep::StopOldContainers(StopOldContainers {
            service: plan.service.clone(),
            role: role.clone(),
            destination: plan.destination.clone(),
            keep: String::new(),
            stop_timeout_s: u32::try_from(*stop_timeout_s).unwrap_or(u32::MAX),
        }),
        Step::StartExisting { container, .. } => JobStep::StartExisting(wire::ContainerRef {
            container: container.clone(),
        }),
        Step::Maintenance {
            proxy_service,
            message,
            ..
        } => JobStep::SetMaintenance(wire::SetMaintenance {
            proxy_service: proxy_service.clone(),
            maintenance: Some(message.clone()),
        }),
        Step::Live { proxy_service, .. } => JobStep::SetMaintenance(wire::SetMaintenance {
            proxy_service: proxy_service.clone(),
            maintenance: None,
        }),
        Step::BootAccessory(b) => boot_accessory(b, host, key, ctx)?,
        Step::StartAccessory { container, .. } | Step::StartProxy { container } => {
            JobStep::StartExisting(wire::ContainerRef {
                container: container.clone(),
            })
        }
        Step::StopAccessory {
            container,
            stop_timeout_s,
            ..
        }
        | Step::StopProxy {
            container,
            stop_timeout_s,
        } => JobStep::StopContainer(wire::StopContainer {
            container: container.clone(),
            stop_timeout_s: u32::try_from(*stop_timeout_s).unwrap_or(u32::MAX),
        }),
        Step::RemoveContainer { container } => JobStep::RemoveContainer(wire::ContainerRef {
            container: container.clone(),
        }),
        Step::RemoveImage { image } => JobStep::RemoveImage(wire::ImageRef {
            image: image.clone(),
        }),
        Step::ReplaceProxy { run, boot, .. } => JobStep::ReplaceProxy(wire::ReplaceProxy {
            run: run.clone(),
            boot: *boot,
        }),
        Step::RemoveAccessory { name, paths, .. } => {
            JobStep::RemoveAccessory(wire::RemoveAccessory {
                service: plan.service.clone(),
                name: name.clone(),
                paths: paths.clone(),
            })
        }
    })
}

/// Only the SSH user (root, here) reads an accessory's secret env file.
const SECRET_ENV_FILE_MODE: u32 = 0o600;

/// A planned accessory boot as the job step: secret env, the files' contents and the
/// accessory's own registry credentials sealed to the host.
fn boot_accessory(
    b: &flotilla_deploy::plan::BootAccessory,
    host: &str,
    key: &str,
    ctx: &JobContext,
) -> Result<JobStep, JobError> {
    let ContainerOptions {
        memory_bytes,
        extra_hosts,
        shm_size_bytes,
        restart,
        network,
        nano_cpus,
        user,
        hostname,
    } = container_options(&b.name, &b.options)?;
    let secret_env = b
        .secret_env
        .iter()
        .map(|(var, secret)| Ok((var.clone(), sealed(secret, host, key, ctx)?)))
        .collect::<Result<Vec<_>, JobError>>()?;
    let seal_error = |source| JobError::Seal {
        host: host.to_owned(),
        source,
    };
    let files = b
        .files
        .iter()
        .map(|f| {
            Ok(wire::SealedFile {
                path: f.host_path.clone(),
                contents: seal_bytes(key, f.contents.expose()).map_err(seal_error)?,
                mode: f.mode,
            })
        })
        .collect::<Result<Vec<_>, JobError>>()?;
    let accessory = ctx.config.accessories.iter().find(|a| a.name == b.name);
    let mut files = files;
    if let (Some(path), Some(acc)) = (&b.env_file, accessory) {
        let text = secret_env_file(&acc.env, &ctx.config.secrets)
            .map_err(|e| JobError::MissingSecret { name: e.secret })?;
        if let Some(text) = text {
            files.push(wire::SealedFile {
                path: path.clone(),
                contents: seal(key, text.expose()).map_err(seal_error)?,
                mode: SECRET_ENV_FILE_MODE,
            });
        }
    }
    let registry = accessory.and_then(|a| a.registry.as_ref());
    let auth = match registry {
        Some(r) => sealed_auth(r, host, key)?,
        None => None,
    };
    let pairs =
        |m: &BTreeMap<String, String>| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    Ok(JobStep::BootSealedAccessory(wire::BootSealedAccessory {
        name: b.name.clone(),
        container: b.container.clone(),
        config: ContainerConfig {
            image: b.image.clone(),
            env: pairs(&b.env),
            secret_env,
            labels: pairs(&b.labels),
            volumes: b.volumes.clone(),
            cmd: b.cmd.clone(),
            publish: b.publish.clone(),
            log_driver: b.log_driver.clone(),
            log_options: pairs(&b.log_options),
            memory_bytes,
            extra_hosts,
        },
        auth,
        directories: b.directories.clone(),
        files,
        existing: match b.replace {
            Some(s) => wire::ExistingAccessory::Replace {
                stop_timeout_s: u32::try_from(s).unwrap_or(u32::MAX),
            },
            None => wire::ExistingAccessory::Keep,
        },
        shm_size_bytes,
        restart,
        network,
        nano_cpus,
        user,
        hostname,
    }))
}

/// A planned container start as the job step: secrets sealed to the host, options read.
fn start_container(
    plan: &Plan,
    s: &flotilla_deploy::plan::StartContainer,
    host: &str,
    key: &str,
    ctx: &JobContext,
) -> Result<JobStep, JobError> {
    // `shm-size`, `restart`, `network`, `cpus`, `user` and `hostname` are applied to
    // accessories only (the config warns about them for the app).
    let ContainerOptions {
        memory_bytes,
        extra_hosts,
        ..
    } = container_options(&s.role, &s.options)?;
    let secret_env = s
        .secret_env
        .iter()
        .map(|(var, secret)| Ok((var.clone(), sealed(secret, host, key, ctx)?)))
        .collect::<Result<Vec<_>, JobError>>()?;
    let pairs =
        |m: &BTreeMap<String, String>| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    Ok(JobStep::StartContainer(StartContainer {
        service: plan.service.clone(),
        role: s.role.clone(),
        destination: plan.destination.clone(),
        version: plan.release.version.clone(),
        config: ContainerConfig {
            image: s.image.clone(),
            env: pairs(&s.env),
            secret_env,
            labels: pairs(&s.labels),
            volumes: s.volumes.clone(),
            cmd: s.cmd.clone(),
            publish: Vec::new(),
            log_driver: s.log_driver.clone(),
            log_options: pairs(&s.log_options),
            memory_bytes,
            extra_hosts,
        },
    }))
}

/// The `options:` the executor applies.
struct ContainerOptions {
    memory_bytes: Option<i64>,
    extra_hosts: Vec<String>,
    shm_size_bytes: Option<i64>,
    restart: Option<wire::RestartPolicy>,
    network: Option<String>,
    nano_cpus: Option<i64>,
    user: Option<String>,
    hostname: Option<String>,
}

/// Reads `memory`, `add-host`, `shm-size`, `restart`, `network`, `cpus`, `user` and
/// `hostname` from `options:`. Loading the config already refused a bad value, located; the
/// errors here are for a plan made some other way.
fn container_options(
    role: &str,
    options: &[(String, String)],
) -> Result<ContainerOptions, JobError> {
    let mut out = ContainerOptions {
        memory_bytes: None,
        extra_hosts: Vec::new(),
        shm_size_bytes: None,
        restart: None,
        network: None,
        nano_cpus: None,
        user: None,
        hostname: None,
    };
    let bad = |name: &String, value: &String, why: &str| JobError::Option {
        role: role.to_owned(),
        name: name.clone(),
        value: value.clone(),
        why: why.to_owned(),
    };
    let size = |name: &String, value: &String| {
        parse_size(value).ok_or_else(|| bad(name, value, "expected a size like 512m or 2g"))
    };
    for (name, value) in options {
        match name.as_str() {
            "memory" => out.memory_bytes = Some(size(name, value)?),
            "shm-size" => out.shm_size_bytes = Some(size(name, value)?),
            "add-host" => out.extra_hosts.push(value.clone()),
            "restart" => {
                let policy = parse_restart(value).ok_or_else(|| {
                    bad(
                        name,
                        value,
                        "expected no, always, unless-stopped or on-failure[:N]",
                    )
                })?;
                out.restart = Some(match policy {
                    Restart::No => wire::RestartPolicy::No,
                    Restart::Always => wire::RestartPolicy::Always,
                    Restart::UnlessStopped => wire::RestartPolicy::UnlessStopped,
                    Restart::OnFailure(max_retries) => {
                        wire::RestartPolicy::OnFailure { max_retries }
                    }
                });
            }
            "cpus" => {
                out.nano_cpus = Some(
                    parse_cpus(value)
                        .ok_or_else(|| bad(name, value, "expected a number of CPUs like 1.5"))?,
                )
            }
            "network" => out.network = Some(value.clone()),
            "user" => out.user = Some(value.clone()),
            "hostname" => out.hostname = Some(value.clone()),
            // Other `docker run` options are not applied yet: loading the config warned about
            // each, located (see `flotilla_deploy::config::docker_options`).
            _ => {}
        }
    }
    Ok(out)
}

fn registry_auth(config: &Config, host: &str, key: &str) -> Result<Option<RegistryAuth>, JobError> {
    sealed_auth(&config.registry, host, key)
}

/// A registry's credentials sealed to the host; `None` without both.
fn sealed_auth(
    registry: &flotilla_deploy::config::types::Registry,
    host: &str,
    key: &str,
) -> Result<Option<RegistryAuth>, JobError> {
    let (Some(user), Some(password)) = (&registry.username, &registry.password) else {
        return Ok(None);
    };
    Ok(Some(RegistryAuth {
        server: registry
            .server
            .clone()
            .unwrap_or_else(|| "docker.io".to_owned()),
        username: seal(key, user.expose()).map_err(|source| JobError::Seal {
            host: host.to_owned(),
            source,
        })?,
        password: seal(key, password.expose()).map_err(|source| JobError::Seal {
            host: host.to_owned(),
            source,
        })?,
    }))
}
