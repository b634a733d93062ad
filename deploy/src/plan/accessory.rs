//! Kamal's state-changing accessory commands (`accessory boot|reboot|upgrade|start|stop|
//! restart|remove`), planned like a deploy: per host of the accessory, the steps its executor
//! runs, as plain data. The scheduler turns them into signed jobs (secret env and file
//! contents sealed to each host) and records them; nothing here runs anything.
//!
//! Host paths are absolute here: the executor writes them (through its `--host-root`) and
//! Docker binds them, where Kamal's shell reads relative ones from the SSH user's home. That
//! home is `/root` for `root` and `/home/USER` for any other `ssh.user`.

use super::build::options;
use super::{HostPlan, Plan, Release, Step, split_command};
use crate::commands::Accessory as Commands;
use crate::config::Config;
use crate::config::types;
use serde::Serialize;
use std::collections::BTreeMap;

/// How long a stopping accessory may take before Docker kills it: Docker's own default,
/// which Kamal's `docker container stop` gets.
pub const ACCESSORY_STOP_TIMEOUT_S: u64 = 10;

/// What an accessory operation does on each of the accessory's hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum AccessoryOperation {
    /// `accessory boot`: a host where the container exists (running or stopped) is left as
    /// it is.
    Boot,
    /// `accessory reboot` (and `upgrade`, whose `kamal` network the executor makes before
    /// any container): the container stopped, removed and booted again, its image pulled
    /// afresh; its volumes and directories stay.
    Reboot,
    /// `accessory start`: the existing container started.
    Start,
    /// `accessory stop`: the container stopped.
    Stop,
    /// `accessory restart`: stopped, then started.
    Restart,
    /// `accessory remove`: the container stopped and removed, the accessory's directory under
    /// the SSH user's home removed, then its image removed unless another container uses it
    /// (its named volumes stay, as Kamal's do).
    Remove,
}

/// An accessory's `files:` entry as the operator's machine read it (an `.erb` one rendered
/// with the accessory's env, secrets included): its bytes never print or serialize.
#[derive(Clone, PartialEq, Eq)]
pub struct FileContents(Vec<u8>);

impl FileContents {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        FileContents(bytes.into())
    }

    /// The bytes, for sealing to a host.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for FileContents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FileContents({} bytes)", self.0.len())
    }
}

impl Serialize for FileContents {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("[{} bytes]", self.0.len()))
    }
}

/// The rendered `files:` of the accessories, by accessory name and the entry's local path
/// (as written in deploy.yml).
pub type AccessoryFiles = BTreeMap<String, BTreeMap<String, FileContents>>;

/// A file the executor writes on the host before boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccessoryUpload {
    /// Absolute host path.
    pub host_path: String,
    pub mode: u32,
    pub contents: FileContents,
}

/// Boot the accessory's container, its directories and files first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BootAccessory {
    /// The accessory's name in deploy.yml.
    pub name: String,
    /// Container name and `service` label: `service:`, else `SERVICE-NAME`.
    pub container: String,
    pub image: String,
    /// `KAMAL_HOST`, then the accessory's clear env.
    pub env: BTreeMap<String, String>,
    /// Secret env by name: `var` takes the value of the secret `secret`.
    pub secret_env: Vec<(String, String)>,
    pub labels: BTreeMap<String, String>,
    /// `volumes:`, then the files' and directories' binds (absolute host paths).
    pub volumes: Vec<String>,
    /// `port:` as `HOST:CONTAINER`.
    pub publish: Vec<String>,
    pub cmd: Option<Vec<String>>,
    pub options: Vec<(String, String)>,
    pub log_driver: Option<String>,
    pub log_options: BTreeMap<String, String>,
    /// Absolute host directories made before boot.
    pub directories: Vec<String>,
    pub files: Vec<AccessoryUpload>,
    /// Where the secret env is written too, mode 0600, for `accessory exec` (Kamal's
    /// `.kamal/apps/SERVICE/env/accessories/NAME.env` under the SSH user's home); `None`
    /// without secret env. The scheduler writes the values, sealed to the host.
    pub env_file: Option<String>,
    /// `Some(stop timeout)`: an existing container is replaced (reboot); `None`: kept (boot).
    pub replace: Option<u64>,
}

/// Why an accessory operation cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessoryPlanError {
    #[error("no accessory named {0:?}")]
    Unknown(String),
    #[error("accessory {accessory}: file {local} was not read")]
    FileNotRead { accessory: String, local: String },
}

/// The SSH user's home on the hosts, where Kamal puts an accessory's relative paths.
pub fn ssh_home(config: &Config) -> String {
    match config.ssh.user.as_str() {
        "root" => "/root".to_owned(),
        user => format!("/home/{user}"),
    }
}

/// The plan of `operation` on accessory `name`'s hosts, in its config order. `files` holds
/// the rendered `files:` (needed to boot; other operations read none).
pub fn accessory_plan(
    config: &Config,
    name: &str,
    operation: AccessoryOperation,
    files: &AccessoryFiles,
) -> Result<Plan, AccessoryPlanError> {
    let acc = config
        .accessories
        .iter()
        .find(|a| a.name == name)
        .ok_or_else(|| AccessoryPlanError::Unknown(name.to_owned()))?;
    let container = Commands::new(config, acc).service_name();
    let stop = Step::StopAccessory {
        name: acc.name.clone(),
        container: container.clone(),
        stop_timeout_s: ACCESSORY_STOP_TIMEOUT_S,
    };
    let start = Step::StartAccessory {
        name: acc.name.clone(),
        container: container.clone(),
    };
    let mut hosts: Vec<HostPlan> = Vec::new();
    for host in &acc.hosts {
        if hosts.iter().any(|h| &h.host == host) {
            continue;
        }
        let steps = match operation {
            AccessoryOperation::Boot => vec![boot(config, acc, host, files, None)?],
            AccessoryOperation::Reboot => vec![boot(
                config,
                acc,
                host,
                files,
                Some(ACCESSORY_STOP_TIMEOUT_S),
            )?],
            AccessoryOperation::Start => vec![start.clone()],
            AccessoryOperation::Stop => vec![stop.clone()],
            AccessoryOperation::Restart => vec![stop.clone(), start.clone()],
            AccessoryOperation::Remove => {
                let mut steps = Vec::new();
                if container != format!("{}-{}", config.service, acc.name) {
                    steps.push(Step::RemoveContainer {
                        container: container.clone(),
                    });
                }
                steps.push(Step::RemoveAccessory {
                    name: acc.name.clone(),
                    container: container.clone(),
                    paths: vec![format!("{}/{container}", ssh_home(config))],
                });
                // Kamal removes the image before the directory; neither needs the other, and
                // the container (the image's user) is gone by then either way.
                steps.push(Step::RemoveImage {
                    image: acc.image.clone(),
                });
                steps
            }
        };
        hosts.push(HostPlan {
            host: host.clone(),
            roles: Vec::new(),
            // Kamal runs these on every host at once.
            primary: false,
            steps,
        });
    }
    Ok(Plan {
        service: config.service.clone(),
        destination: config.destination.clone(),
        release: Release {
            version: String::new(),
            image: String::new(),
        },
        primary_role: config.primary_role.clone(),
        hosts,
    })
}

/// `local:container[:options]` as (host, container, options).
fn split_mount(entry: &str) -> Option<(&str, &str, Option<&str>)> {
    let mut parts = entry.splitn(3, ':');
    Some((parts.next()?, parts.next()?, parts.next()))
}

fn bind(host: &str, container: &str, options: Option<&str>) -> String {
    match options {
        Some(o) => format!("{host}:{container}:{o}"),
        None => format!("{host}:{container}"),
    }
}

fn boot(
    config: &Config,
    acc: &types::Accessory,
    host: &str,
    files: &AccessoryFiles,
    replace: Option<u64>,
) -> Result<Step, AccessoryPlanError> {
    let commands = Commands::new(config, acc);
    let container = commands.service_name();
    let home = ssh_home(config);
    let mut volumes = acc.volumes.clone();
    let mut uploads = Vec::new();
    for f in commands.files() {
        let host_path = format!("{home}/{}", f.host_path);
        let contents = files
            .get(&acc.name)
            .and_then(|by_path| by_path.get(&f.local))
            .ok_or_else(|| AccessoryPlanError::FileNotRead {
                accessory: acc.name.clone(),
                local: f.local.clone(),
            })?;
        volumes.push(bind(&host_path, &f.container_path, f.options.as_deref()));
        uploads.push(AccessoryUpload {
            host_path,
            mode: u32::from_str_radix(f.mode, 8).unwrap_or(0o755),
            contents: contents.clone(),
        });
    }
    let mut directories = Vec::new();
    for (local, inside, opts) in acc.directories.iter().filter_map(|d| split_mount(d)) {
        let host_path = if local.starts_with('/') {
            local.to_owned()
        } else {
            format!("{home}/{container}/{local}")
        };
        volumes.push(bind(&host_path, inside, opts));
        directories.push(host_path);
    }
    let mut env = BTreeMap::from([("KAMAL_HOST".to_owned(), host.to_owned())]);
    env.extend(acc.env.clear.clone());
    let publish = acc
        .port
        .iter()
        .map(|p| match p.contains(':') {
            true => p.clone(),
            false => format!("{p}:{p}"),
        })
        .collect();
    let (log_driver, log_options) = config.logging_for(None);
    let mut opts = acc.options.clone();
    // Kamal 2's `network:` key; an `options: network` wins, as the later `--network` flag
    // of Kamal's command line does.
    if let Some(network) = &acc.network {
        opts.entry("network".to_owned())
            .or_insert_with(|| types::OptionValue::One(network.clone()));
    }
    Ok(Step::BootAccessory(Box::new(BootAccessory {
        name: acc.name.clone(),
        container,
        image: acc.image.clone(),
        env,
        secret_env: acc
            .env
            .secret
            .iter()
            .map(|s| (s.var.clone(), s.secret.clone()))
            .collect(),
        labels: acc.labels.clone(),
        volumes,
        publish,
        // The loader rejects a `cmd` with an open quote, so `None` here means no `cmd`.
        cmd: acc.cmd.as_deref().and_then(split_command),
        options: options(&opts),
        log_driver,
        log_options,
        directories,
        files: uploads,
        env_file: (!acc.env.secret.is_empty()).then(|| {
            format!(
                "{home}/.kamal/apps/{}/env/accessories/{}.env",
                config.service, acc.name
            )
        }),
        replace,
    })))
}
