//! What every command that touches the fleet opens first: Kamal's global flags, the loaded
//! config, the event log, who is deploying, the scheduler's key and the NATS address.

use crate::commands::config::ConfigArgs;
use crate::exit::{FAILED, USAGE, UserError};
use anyhow::Context;
use clap::Args;
use flotilla_deploy::Config;
use flotilla_events::SledLog;
use flotilla_protocol::signing::JobSigner;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Kamal's global flags for commands that touch the fleet.
#[derive(Debug, Clone, Args)]
pub struct FleetArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Only these hosts (comma list, `*` wildcards)
    #[arg(short = 'h', long = "hosts", value_delimiter = ',')]
    pub hosts: Vec<String>,
    /// Only these roles (comma list, `*` wildcards)
    #[arg(short = 'r', long = "roles", value_delimiter = ',')]
    pub roles: Vec<String>,
    /// Only the primary host
    #[arg(short = 'p', long)]
    pub primary: bool,
    /// Don't run hooks
    #[arg(short = 'H', long = "skip-hooks")]
    pub skip_hooks: bool,
    /// Wait this many seconds for a held deploy lock instead of failing
    #[arg(long = "lock-wait", value_name = "SECONDS")]
    pub lock_wait: Option<u64>,
    /// One JSON event per line on stdout
    #[arg(long)]
    pub json: bool,
    /// Only the summary
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// More detail on stderr
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// Event log directory
    #[arg(
        long,
        value_name = "PATH",
        env = "FLOTILLA_EVENT_LOG",
        default_value = ".flotilla/events"
    )]
    pub log: PathBuf,
    /// Print help
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
}

/// Everything a rollout needs, opened once.
pub struct Session {
    pub root: PathBuf,
    pub config: Config,
    pub log: SledLog,
    pub actor: String,
    pub args: FleetArgs,
    /// The NATS endpoint once connected; held so an SSH tunnel lives as long as the session.
    pub nats: std::sync::Mutex<Option<NatsEndpoint>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("root", &self.root).finish()
    }
}

impl Session {
    /// [`Session::open`] with the config already loaded (by [`load_config`]).
    pub fn open_with(args: &FleetArgs, config: Config) -> anyhow::Result<Session> {
        let root = std::env::current_dir().context("reading the current directory")?;
        if let Some(parent) = args.log.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let wait = args
            .lock_wait
            .map_or(LOG_BUSY_WAIT, Duration::from_secs)
            .max(LOG_BUSY_WAIT);
        let log = open_log(&args.log, wait).map_err(|e| {
            let mut hint = e.next_step(&args.log).map(|s| s.to_string());
            // A deploy from the same directory holds the log for its whole rollout: say how
            // to queue behind it, as the deploy lock's refusal does.
            if matches!(e, flotilla_events::LogError::Locked { .. }) && args.lock_wait.is_none() {
                hint = hint.map(|h| format!("{h}, or wait for it with --lock-wait SECONDS"));
            }
            anyhow::Error::new(e).context(UserError {
                message: format!("cannot open the event log {}", args.log.display()),
                hint,
                code: FAILED,
            })
        })?;
        Ok(Session {
            root,
            config,
            log,
            actor: performer(),
            args: args.clone(),
            nats: std::sync::Mutex::new(None),
        })
    }
}

/// How long a command waits for the event log another process holds briefly (the
/// `flotilla metrics serve` standby folds new events with the log open for milliseconds);
/// `--lock-wait` waits longer, for a deploy from the same directory to finish.
const LOG_BUSY_WAIT: Duration = Duration::from_secs(2);
/// How often the log's file lock is tried again while waiting: a `flock` cannot be awaited.
const LOG_BUSY_RETRY: Duration = Duration::from_millis(50);

/// Opens the log, waiting up to `wait` while another process holds it.
fn open_log(path: &Path, wait: Duration) -> Result<SledLog, flotilla_events::LogError> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        match SledLog::open(path) {
            Err(flotilla_events::LogError::Locked { .. })
                if std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(LOG_BUSY_RETRY);
            }
            other => return other,
        }
    }
}

/// The config, with tracing set up as `-v` asks: what a command reads first, before it
/// knows whether deploys run here (embedded) or in the scheduler service.
pub fn load_config(args: &FleetArgs) -> anyhow::Result<Config> {
    // -v: the scheduler's own log lines (NATS, lock renewal, dropped reports) on stderr.
    crate::lifecycle::init_tracing(if args.verbose { "debug" } else { "warn" });
    args.config.load()
}

/// Kamal's performer: `git config user.name`, else the login name.
pub fn performer() -> String {
    std::process::Command::new("git")
        .args(["config", "user.name"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "unknown".into())
}

/// The scheduler's signing key, made on first use in `.flotilla/scheduler.key` (mode 0600);
/// executors trust its public half (`.flotilla/scheduler.pub`, `flotilla key`).
pub fn scheduler_key(root: &Path) -> anyhow::Result<JobSigner> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = root.join(".flotilla");
    let path = dir.join("scheduler.key");
    if let Ok(text) = std::fs::read_to_string(&path) {
        return JobSigner::from_base64(text.trim())
            .with_context(|| format!("{} is not a valid scheduler key", path.display()));
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let signer = JobSigner::generate();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    std::io::Write::write_all(&mut file, signer.secret_base64().as_bytes())?;
    std::fs::write(dir.join("scheduler.pub"), signer.public_key_base64() + "\n")?;
    Ok(signer)
}

/// The operators' NATS key, made on first use in `.flotilla/nats-operator.nk` (mode 0600):
/// the NATS `flotilla setup` boots admits it with every permission, and hosts with their own.
pub fn operator_nkey(root: &Path) -> anyhow::Result<nkeys::KeyPair> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = root.join(".flotilla");
    let path = dir.join("nats-operator.nk");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let text = zeroize::Zeroizing::new(text);
        return nkeys::KeyPair::from_seed(text.trim())
            .with_context(|| format!("{} is not a NATS user seed", path.display()));
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let key = nkeys::KeyPair::new_user();
    let seed = zeroize::Zeroizing::new(key.seed().context("a new NATS key has a seed")?);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    std::io::Write::write_all(&mut file, seed.as_bytes())?;
    file.sync_all()?;
    Ok(key)
}

/// Where the CLI reaches NATS. With a tunnel, the pool and the forward live as long as this
/// value: keep it until the NATS client is dropped.
pub struct NatsEndpoint {
    pub url: String,
    pub creds: Option<PathBuf>,
    /// The one CA NATS's certificate must chain to (TLS required): `.flotilla/nats-ca.pem`
    /// for the NATS setup booted, `x-flotilla.nats.ca` or `FLOTILLA_NATS_CA` for another.
    pub ca: Option<PathBuf>,
    /// The operators' key, for the NATS `flotilla setup` booted (it admits no one else).
    nkey_seed: Option<zeroize::Zeroizing<String>>,
    /// Set when NATS is the one `flotilla setup` boots: `127.0.0.1:PORT` forwarded over SSH to
    /// the control host's NATS port, so no NATS port needs to be open to the operator; one
    /// forward per control host that answered (the URL lists them all: the client fails
    /// over between them).
    tunnel: Option<(flotilla_ssh::Pool, Vec<flotilla_ssh::Forward>)>,
}

impl std::fmt::Debug for NatsEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsEndpoint")
            .field("url", &self.url)
            .field("ca", &self.ca)
            .field("tunnelled", &self.tunnel.is_some())
            .finish()
    }
}

impl NatsEndpoint {
    /// The control host the tunnel goes to, when there is one.
    pub fn tunnelled(&self) -> bool {
        self.tunnel.is_some()
    }

    /// How to authenticate at this endpoint.
    pub fn auth(&self) -> flotilla_scheduler::transport::bus::NatsAuth {
        flotilla_scheduler::transport::bus::NatsAuth {
            creds: self.creds.clone(),
            nkey_seed: self.nkey_seed.clone(),
            ca: self.ca.clone(),
        }
    }

    /// The scheduler's transport over this endpoint.
    pub async fn transport(
        &self,
    ) -> Result<
        flotilla_scheduler::transport::nats::NatsTransport,
        flotilla_scheduler::transport::nats::ConnectError,
    > {
        flotilla_scheduler::transport::nats::NatsTransport::connect_with(&self.url, &self.auth())
            .await
    }
}

/// Every control host: `x-flotilla.control` (three for HA: a NATS cluster and a scheduler
/// instance on each), else the first host of the primary role alone.
pub fn control_hosts(config: &Config) -> Vec<String> {
    if !config.flotilla.control.is_empty() {
        let mut hosts: Vec<String> = Vec::new();
        for h in &config.flotilla.control {
            if !hosts.contains(h) {
                hosts.push(h.clone());
            }
        }
        return hosts;
    }
    config
        .servers
        .iter()
        .find(|r| r.name == config.primary_role)
        .or_else(|| config.servers.first())
        .and_then(|r| r.hosts.first().cloned())
        .into_iter()
        .collect()
}

/// How long the CLI waits for its SSH tunnel to one control host of several: a lost control
/// host must not hold up a command the other two can serve.
const TUNNEL_WAIT: Duration = Duration::from_secs(5);

/// NATS: `x-flotilla.nats.url`, else `FLOTILLA_NATS_URL`, else an SSH tunnel to the NATS
/// `flotilla setup` booted on the control host.
pub async fn nats_endpoint(config: &Config) -> anyhow::Result<NatsEndpoint> {
    let configured = config.flotilla.nats.as_ref();
    if let Some(url) = configured.and_then(|n| n.url.clone()) {
        return Ok(NatsEndpoint {
            url,
            creds: configured.and_then(|n| n.creds.as_ref().map(PathBuf::from)),
            ca: configured.and_then(|n| n.ca.as_ref().map(PathBuf::from)),
            nkey_seed: None,
            tunnel: None,
        });
    }
    if let Ok(url) = std::env::var("FLOTILLA_NATS_URL") {
        return Ok(NatsEndpoint {
            url,
            creds: None,
            ca: std::env::var_os("FLOTILLA_NATS_CA").map(PathBuf::from),
            nkey_seed: None,
            tunnel: None,
        });
    }
    let controls = control_hosts(config);
    let Some(control) = controls.first().cloned() else {
        return Err(UserError {
            message: "no NATS server configured and no host to reach one on".into(),
            hint: Some("add hosts under servers:, or set x-flotilla: {nats: {url: ...}}".into()),
            code: USAGE,
        }
        .into());
    };
    let root = std::env::current_dir().context("reading the current directory")?;
    let ca = nats_ca_file(&root)?;
    let pool = crate::commands::fanout::pool(config);
    let tunnel_err = |e: flotilla_ssh::Error| {
        anyhow::Error::new(e).context(UserError {
            message: format!("cannot open an SSH tunnel to NATS on the control host {control}"),
            hint: Some(
                "run `flotilla setup` (it boots NATS there), or set x-flotilla.nats.url".into(),
            ),
            code: FAILED,
        })
    };
    let forward = |host: String| {
        let pool = &pool;
        async move {
            let session = pool.session(&host).await?;
            session
                .forward_tcp("127.0.0.1", flotilla_setup::plan::NATS_PORT)
                .await
        }
    };
    let forwards = if controls.len() == 1 {
        vec![forward(control.clone()).await.map_err(tunnel_err)?]
    } else {
        // Every control host's NATS node that answers within TUNNEL_WAIT; one is enough.
        let tries = futures::future::join_all(controls.iter().map(|h| async move {
            match tokio::time::timeout(TUNNEL_WAIT, forward(h.clone())).await {
                Ok(r) => r.map_err(Some),
                Err(_) => Err(None),
            }
        }))
        .await;
        let mut forwards = Vec::new();
        let mut first_err = None;
        for t in tries {
            match t {
                Ok(f) => forwards.push(f),
                Err(e) => first_err = first_err.or(e),
            }
        }
        match (forwards.is_empty(), first_err) {
            (false, _) => forwards,
            (true, Some(e)) => return Err(tunnel_err(e)),
            (true, None) => {
                return Err(UserError {
                    message: format!(
                        "no control host ({}) opened an SSH tunnel to NATS within {TUNNEL_WAIT:?}",
                        controls.join(", ")
                    ),
                    hint: Some("check that the control hosts are up".into()),
                    code: FAILED,
                }
                .into());
            }
        }
    };
    let operator = operator_nkey(&root)?;
    Ok(NatsEndpoint {
        url: forwards
            .iter()
            .map(|f| format!("nats://{}", f.local_addr()))
            .collect::<Vec<_>>()
            .join(","),
        creds: configured.and_then(|n| n.creds.as_ref().map(PathBuf::from)),
        ca: Some(ca),
        nkey_seed: operator.seed().ok().map(zeroize::Zeroizing::new),
        tunnel: Some((pool, forwards)),
    })
}

/// The project's NATS CA (`.flotilla/nats-ca.pem`, made by `flotilla setup`): the only CA the
/// CLI trusts for the NATS setup booted. Never made here: a CA NATS does not use would only
/// turn every connection into a certificate error.
fn nats_ca_file(root: &Path) -> anyhow::Result<PathBuf> {
    let path = root
        .join(".flotilla")
        .join(flotilla_setup::tls::CA_CERT_FILE);
    if path.exists() {
        return Ok(path);
    }
    Err(UserError {
        message: format!(
            "no NATS CA at {}: the NATS on the control host speaks TLS with a certificate from \
             this project's CA",
            path.display()
        ),
        hint: Some(
            "run `flotilla server bootstrap` (it makes the CA once and gives NATS its \
             certificate), or copy .flotilla/ from the machine that set the hosts up"
                .into(),
        ),
        code: FAILED,
    }
    .into())
}
