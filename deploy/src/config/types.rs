//! The typed configuration the planner, scheduler and executor work from.
//!
//! Everything is resolved: defaults applied, destinations merged, Kamal 1 keys translated,
//! secrets looked up. `Serialize` exists only for `flotilla config --json`, which prints this in
//! deploy.yml's shape with every secret value as `[REDACTED]`.

use std::collections::BTreeMap;

use serde::{Serialize, Serializer};

use super::diag::Diagnostic;
use super::secrets::{Secret, Secrets};

/// A loaded, validated configuration.
#[derive(Clone, Debug, Serialize)]
pub struct Config {
    pub service: String,
    /// The image name as written (`user/app`), without the registry server.
    pub image: String,
    /// The `-d` destination the config was loaded for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// Roles in file order; serialized as deploy.yml's `servers` map.
    #[serde(serialize_with = "roles_as_map")]
    pub servers: Vec<Role>,
    pub primary_role: String,
    pub allow_empty_roles: bool,
    pub require_destination: bool,
    pub registry: Registry,
    pub env: Env,
    pub labels: BTreeMap<String, String>,
    pub volumes: Vec<String>,
    pub asset_path: Option<String>,
    pub hooks_path: String,
    pub secrets_path: String,
    pub error_pages_path: Option<String>,
    pub retain_containers: u32,
    pub minimum_version: Option<String>,
    /// Seconds; see the `root` docs section for these timeouts.
    pub readiness_delay: u64,
    pub deploy_timeout: u64,
    pub drain_timeout: u64,
    pub stop_timeout: Option<u64>,
    pub ssh: Ssh,
    pub sshkit: Sshkit,
    pub builder: Builder,
    /// The root proxy settings; each role carries its effective proxy in [`Role::proxy`].
    pub proxy: Option<Proxy>,
    pub boot: Boot,
    pub logging: Logging,
    #[serde(serialize_with = "accessories_as_map")]
    pub accessories: Vec<Accessory>,
    pub aliases: BTreeMap<String, String>,
    /// Kamal 1's health check, kept for its `max_attempts`; path, port and interval are
    /// already translated into the proxy settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthCheck>,
    #[serde(rename = "x-flotilla")]
    pub flotilla: Flotilla,
    /// Every secret the secrets files define; serialized as names with redacted values.
    #[serde(serialize_with = "secrets_redacted")]
    pub secrets: Secrets,
    /// Kamal 1 keys that were ignored, one line each, for the CLI to print.
    #[serde(skip)]
    pub warnings: Vec<Diagnostic>,
}

impl Config {
    /// The role named `name`.
    pub fn role(&self, name: &str) -> Option<&Role> {
        self.servers.iter().find(|r| r.name == name)
    }

    /// Every host of every role, each once, in file order.
    pub fn all_hosts(&self) -> Vec<&str> {
        let mut seen = Vec::new();
        for h in self.servers.iter().flat_map(|r| &r.hosts) {
            if !seen.contains(&h.as_str()) {
                seen.push(h.as_str());
            }
        }
        seen
    }

    /// Kamal's logging for a container: a role's settings merged over the root ones (the root
    /// alone for accessories), and with neither a driver nor options Docker's default driver
    /// capped at `max-size=10m` so logs cannot fill the host's disk.
    pub fn logging_for(&self, role: Option<&Role>) -> (Option<String>, BTreeMap<String, String>) {
        let mut driver = self.logging.driver.clone();
        let mut options = self.logging.options.clone();
        if let Some(r) = role.and_then(|r| r.logging.as_ref()) {
            if r.driver.is_some() {
                driver.clone_from(&r.driver);
            }
            options.extend(r.options.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        if driver.is_none() && options.is_empty() {
            options.insert("max-size".into(), DEFAULT_LOG_MAX_SIZE.into());
        }
        (driver, options)
    }

    /// The full image reference without tag: `server/image` when a registry server is set.
    pub fn repository(&self) -> String {
        match &self.registry.server {
            Some(s) if !self.image.starts_with(&format!("{s}/")) => format!("{s}/{}", self.image),
            _ => self.image.clone(),
        }
    }
}

/// Kamal's cap on a container's json-file log when the config sets no logging.
pub const DEFAULT_LOG_MAX_SIZE: &str = "10m";

/// A role: hosts running the same container command.
#[derive(Clone, Debug, Serialize)]
pub struct Role {
    #[serde(skip)]
    pub name: String,
    pub hosts: Vec<String>,
    /// Host -> its tags, only for tagged hosts.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, Vec<String>>,
    pub cmd: Option<String>,
    pub options: DockerOptions,
    pub labels: BTreeMap<String, String>,
    /// The root env with this role's env merged over it.
    pub env: Env,
    pub logging: Option<Logging>,
    /// The effective proxy of this role, `None` when it is not proxied.
    pub proxy: Option<Proxy>,
    pub stop_timeout: Option<u64>,
    pub asset_path: Option<String>,
}

/// `docker run` options: `--name value`, repeated for lists; `true` is a bare flag.
pub type DockerOptions = BTreeMap<String, OptionValue>;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum OptionValue {
    Flag(bool),
    One(String),
    Many(Vec<String>),
}

/// Environment variables, clear and secret.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Env {
    pub clear: BTreeMap<String, String>,
    pub secret: Vec<SecretRef>,
    /// Tag -> env for hosts carrying that tag.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, Env>,
}

impl Env {
    /// `over` merged over `self`: clear keys replaced, secret names added once.
    pub fn merged(&self, over: &Env) -> Env {
        let mut out = self.clone();
        out.clear
            .extend(over.clear.iter().map(|(k, v)| (k.clone(), v.clone())));
        for s in &over.secret {
            out.secret.retain(|x| x.var != s.var);
            out.secret.push(s.clone());
        }
        for (t, e) in &over.tags {
            out.tags.insert(t.clone(), e.clone());
        }
        out
    }
}

/// A secret environment variable: `var` in the container takes the secret named `secret`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretRef {
    pub var: String,
    pub secret: String,
}

impl Serialize for SecretRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.var == self.secret {
            s.serialize_str(&self.var)
        } else {
            s.serialize_str(&format!("{}:{}", self.var, self.secret))
        }
    }
}

/// A value that is either written in the config or taken from a secret.
///
/// `Debug` redacts both kinds: a registry password written in clear is still a password.
#[derive(Clone)]
pub enum Credential {
    Clear(String),
    Secret { name: String, value: Secret },
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Clear(_) => write!(f, "Clear({})", super::secrets::REDACTED),
            Credential::Secret { name, .. } => {
                write!(f, "Secret({name}: {})", super::secrets::REDACTED)
            }
        }
    }
}

impl Credential {
    /// The value to use, secret or not.
    pub fn expose(&self) -> &str {
        match self {
            Credential::Clear(s) => s,
            Credential::Secret { value, .. } => value.expose(),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Registry {
    pub server: Option<String>,
    #[serde(serialize_with = "credential_username")]
    pub username: Option<Credential>,
    /// Always printed as `[REDACTED]`, even when written in clear in the config.
    #[serde(serialize_with = "credential_redacted")]
    pub password: Option<Credential>,
}

impl Registry {
    /// A registry on `localhost:PORT`, which Kamal runs itself and which needs no login.
    pub fn is_local(&self) -> bool {
        self.server
            .as_deref()
            .is_some_and(|s| s.starts_with("localhost:"))
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Proxy {
    pub hosts: Vec<String>,
    pub app_port: u16,
    pub ssl: Ssl,
    pub ssl_redirect: bool,
    pub forward_headers: Option<bool>,
    pub response_timeout: u64,
    pub path_prefix: Option<String>,
    pub strip_path_prefix: bool,
    pub healthcheck: ProxyHealthcheck,
    /// ACME account email (from Kamal 1's Traefik args; kamal-proxy has no such key).
    pub acme_email: Option<String>,
    pub buffering: BTreeMap<String, String>,
    pub logging: BTreeMap<String, String>,
    pub run: BTreeMap<String, String>,
}

impl Default for Proxy {
    fn default() -> Self {
        Proxy {
            hosts: Vec::new(),
            app_port: 80,
            ssl: Ssl::Off,
            ssl_redirect: true,
            forward_headers: None,
            response_timeout: 30,
            path_prefix: None,
            strip_path_prefix: true,
            healthcheck: ProxyHealthcheck::default(),
            acme_email: None,
            buffering: BTreeMap::new(),
            logging: BTreeMap::new(),
            run: BTreeMap::new(),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ssl {
    Off,
    /// Certificates from ACME (HTTP-01).
    Auto,
    /// A certificate from secrets, by secret name.
    Custom {
        certificate_pem: String,
        private_key_pem: String,
    },
}

#[derive(Clone, Debug, Serialize)]
pub struct ProxyHealthcheck {
    pub interval: u64,
    pub path: String,
    pub timeout: u64,
}

impl Default for ProxyHealthcheck {
    fn default() -> Self {
        ProxyHealthcheck {
            interval: 1,
            path: "/up".into(),
            timeout: 5,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Builder {
    /// Target architectures, e.g. `["amd64"]`; empty means the local one.
    pub arch: Vec<String>,
    pub remote: Option<String>,
    pub local: Option<bool>,
    pub cache: BTreeMap<String, String>,
    pub context: Option<String>,
    pub dockerfile: Option<String>,
    pub target: Option<String>,
    pub args: BTreeMap<String, String>,
    pub secrets: Vec<String>,
    pub ssh: Option<String>,
    pub driver: Option<String>,
    /// `docker buildx build --provenance` (e.g. `false`, `mode=max`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provenance: Option<String>,
    /// `docker buildx build --sbom`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sbom: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Ssh {
    pub user: String,
    pub port: u16,
    pub proxy: Option<String>,
    pub proxy_command: Option<String>,
    pub keys: Vec<String>,
    /// Private keys given inline (usually through ERB from the environment): key material, so
    /// held as secrets and redacted in output.
    pub key_data: Vec<Secret>,
    pub keys_only: Option<bool>,
    /// Whether to read OpenSSH config files, or which ones.
    pub config: Option<SshConfig>,
    pub log_level: Option<String>,
}

impl Default for Ssh {
    fn default() -> Self {
        Ssh {
            user: "root".into(),
            port: 22,
            proxy: None,
            proxy_command: None,
            keys: Vec::new(),
            key_data: Vec::new(),
            keys_only: None,
            config: None,
            log_level: None,
        }
    }
}

/// `ssh.config`: `true`/`false` (read `~/.ssh/config` or not), or the files to read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum SshConfig {
    Use(bool),
    Files(Vec<String>),
}

#[derive(Clone, Debug, Serialize)]
pub struct Sshkit {
    pub max_concurrent_starts: u32,
    pub pool_idle_timeout: u64,
}

impl Default for Sshkit {
    fn default() -> Self {
        Sshkit {
            max_concurrent_starts: 30,
            pool_idle_timeout: 900,
        }
    }
}

/// A number of hosts, absolute or as a percentage of the hosts in play.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostCount {
    Count(u32),
    Percent(u32),
}

impl HostCount {
    /// How many of `total` hosts this means, at least one when `total > 0`.
    pub fn of(self, total: usize) -> usize {
        let n = match self {
            HostCount::Count(n) => n as usize,
            HostCount::Percent(p) => (total * p as usize).div_ceil(100),
        };
        n.clamp(usize::from(total > 0), total.max(1))
    }
}

impl Serialize for HostCount {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            HostCount::Count(n) => s.serialize_u32(*n),
            HostCount::Percent(p) => s.serialize_str(&format!("{p}%")),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Boot {
    pub limit: Option<HostCount>,
    pub wait: Option<u64>,
    pub parallel_roles: bool,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Logging {
    pub driver: Option<String>,
    pub options: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Accessory {
    #[serde(skip)]
    pub name: String,
    pub image: String,
    /// Every host it runs on: its own hosts plus the hosts of its roles.
    pub hosts: Vec<String>,
    pub roles: Vec<String>,
    pub service: Option<String>,
    pub cmd: Option<String>,
    pub port: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub options: DockerOptions,
    pub env: Env,
    pub files: Vec<String>,
    pub directories: Vec<String>,
    pub volumes: Vec<String>,
    pub network: Option<String>,
    pub proxy: Option<Proxy>,
    /// The accessory's own registry (Kamal pulls from and logs in there); `image` already
    /// carries its server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry: Option<Registry>,
}

/// Kamal 1's health check.
#[derive(Clone, Debug, Default, Serialize)]
pub struct HealthCheck {
    pub path: Option<String>,
    pub port: Option<u16>,
    pub interval: Option<u64>,
    pub max_attempts: Option<u32>,
}

/// Flotilla's own settings, under `x-flotilla:`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Flotilla {
    pub rollout: Rollout,
    pub nats: Option<Nats>,
    pub metrics: Option<Metrics>,
    /// Left out of `flotilla config` output when unset, as Kamal-era fixtures predate it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otel: Option<Otel>,
    /// Where deploys run; `None` is embedded (today's default), so older fixtures print alike.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<SchedulerSettings>,
    /// The control host(s): where `flotilla setup` boots NATS. Empty: the first host of the
    /// primary role.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub control: Vec<String>,
    /// How `flotilla setup` runs each host's executor; `None`: the defaults.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executor: Option<ExecutorSettings>,
}

/// `x-flotilla.executor`: settings of the executor `flotilla setup` runs on every host.
#[derive(Clone, Debug, Serialize)]
pub struct ExecutorSettings {
    /// Where each executor serves its step metrics (`0.0.0.0:PORT`, as Kamal's
    /// `proxy.run.metrics_port` does for the proxy); `None`: not served.
    pub metrics_port: Option<u16>,
}

/// `x-flotilla.scheduler`: where deploys run.
#[derive(Clone, Debug, Serialize)]
pub struct SchedulerSettings {
    pub mode: SchedulerMode,
}

/// `embedded`: the CLI runs the procedure in process against a local log; `service`: the CLI
/// asks `flotilla scheduler run` over NATS and follows its log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SchedulerMode {
    #[default]
    Embedded,
    Service,
}

impl Flotilla {
    /// The scheduler mode asked for (embedded unless `x-flotilla.scheduler.mode: service`).
    pub fn scheduler_mode(&self) -> SchedulerMode {
        self.scheduler.as_ref().map(|s| s.mode).unwrap_or_default()
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Rollout {
    pub canary: Option<HostCount>,
    pub max_parallel: Option<HostCount>,
    /// Failed hosts tolerated (a count, or a percentage of the hosts); `Count(0)`: none.
    pub max_failures: HostCount,
    pub auto_rollback: bool,
    /// Seconds.
    pub step_timeout: u64,
}

impl Default for Rollout {
    fn default() -> Self {
        Rollout {
            canary: None,
            max_parallel: None,
            max_failures: HostCount::Count(0),
            auto_rollback: false,
            step_timeout: 300,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Nats {
    /// A NATS of the user's own; absent, `flotilla setup` boots one on the control host and
    /// the CLI reaches it through an SSH tunnel.
    pub url: Option<String>,
    pub creds: Option<String>,
    /// The CA (a PEM file) a NATS of the user's own is signed by: every client pins it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    /// The image of the NATS server setup boots (default: the official `nats` image).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Metrics {
    pub listen: String,
}

/// `x-flotilla.otel`: where deploy traces go (OTLP/HTTP).
#[derive(Clone, Debug, Serialize)]
pub struct Otel {
    /// A collector's base URL, `http://HOST:PORT`; `/v1/traces` is appended.
    pub endpoint: String,
}

fn roles_as_map<S: Serializer>(roles: &[Role], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(roles.iter().map(|r| (&r.name, r)))
}

fn accessories_as_map<S: Serializer>(acc: &[Accessory], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(acc.iter().map(|a| (&a.name, a)))
}

fn secrets_redacted<S: Serializer>(secrets: &Secrets, s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(secrets.iter())
}

fn credential_redacted<S: Serializer>(c: &Option<Credential>, s: S) -> Result<S::Ok, S::Error> {
    match c {
        Some(_) => s.serialize_str(super::secrets::REDACTED),
        None => s.serialize_none(),
    }
}

fn credential_username<S: Serializer>(c: &Option<Credential>, s: S) -> Result<S::Ok, S::Error> {
    match c {
        Some(Credential::Clear(v)) => s.serialize_str(v),
        Some(Credential::Secret { .. }) => s.serialize_str(super::secrets::REDACTED),
        None => s.serialize_none(),
    }
}
