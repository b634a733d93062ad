//! `flotilla executor ...`: the host agent. `run` takes the host's signed jobs from NATS and
//! carries them out against the local Docker engine and proxy; `key` prints the host's
//! sealing key (what the scheduler seals secrets to).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use flotilla_executor::journal::Journal;
use flotilla_executor::runtime::docker::{DockerRuntime, SocketProxy};
use flotilla_executor::steps::Executor;
use flotilla_executor::transport::{self, NatsSettings};
use flotilla_protocol::signing::JobVerifier;

use crate::exit::{USAGE, UserError};

const EXAMPLES: &str = "Examples:
  flotilla executor run --host-id 10.0.0.5 --nats nats://10.0.0.1:4222 --scheduler-key @/etc/flotilla/scheduler.pub
  flotilla executor run            # settings from /etc/flotilla/executor.conf and FLOTILLA_* env
  flotilla executor key            # the host's sealing key, for the scheduler";

/// The default settings file: `key = value` lines (host_id, nats_url, nats_creds, nats_ca,
/// scheduler_key, state_dir, docker_socket, proxy_socket).
pub const DEFAULT_CONFIG: &str = "/etc/flotilla/executor.conf";

/// The host agent: jobs from NATS to Docker actions and events
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct ExecutorArgs {
    #[command(subcommand)]
    command: ExecutorCommand,
}

#[derive(Debug, Subcommand)]
enum ExecutorCommand {
    /// Run the executor in the foreground (SIGTERM finishes the current step, then exits)
    #[command(after_help = EXAMPLES)]
    Run(Box<RunArgs>),
    /// Print this host's public keys (sealing and signing; made on first use)
    #[command(
        after_help = "Examples:\n  flotilla executor key            # the sealing key\n  flotilla executor key --json     # both keys, as identity.pub holds them\n  flotilla executor key --state-dir /var/lib/flotilla/executor"
    )]
    Key {
        /// Print both public keys as JSON (what enrolment records)
        #[arg(long)]
        json: bool,
        /// Where the executor keeps its key and job journal
        #[arg(
            long,
            env = "FLOTILLA_EXECUTOR_STATE",
            default_value = "/var/lib/flotilla/executor"
        )]
        state_dir: PathBuf,
    },
}

#[derive(Debug, Args)]
struct RunArgs {
    /// This host's id, as the scheduler addresses it (its name or address in deploy.yml)
    #[arg(long, env = "FLOTILLA_HOST_ID")]
    host_id: Option<String>,
    /// NATS server URL
    #[arg(long = "nats", env = "FLOTILLA_NATS_URL", value_name = "URL")]
    nats_url: Option<String>,
    /// NATS credentials file (.creds); without one, the host's own NATS key (enrolled) is used
    #[arg(long = "creds", env = "FLOTILLA_NATS_CREDS", value_name = "FILE")]
    nats_creds: Option<PathBuf>,
    /// CA certificate to trust for a `tls://` NATS URL (setup pins its own CA here)
    #[arg(long = "nats-ca", env = "FLOTILLA_NATS_CA", value_name = "FILE")]
    nats_ca: Option<PathBuf>,
    /// The scheduler's ed25519 public key (base64), or @FILE holding it
    #[arg(long, env = "FLOTILLA_SCHEDULER_KEY", value_name = "KEY|@FILE")]
    scheduler_key: Option<String>,
    /// Where the executor keeps its key and job journal [default: /var/lib/flotilla/executor]
    #[arg(long, env = "FLOTILLA_EXECUTOR_STATE")]
    state_dir: Option<PathBuf>,
    /// The Docker engine's socket [default: /var/run/docker.sock]
    #[arg(long, env = "DOCKER_SOCKET")]
    docker_socket: Option<PathBuf>,
    /// The host proxy's admin socket [default: /run/flotilla/proxy.sock]
    #[arg(long, env = "FLOTILLA_PROXY_SOCKET")]
    proxy_socket: Option<PathBuf>,
    /// Seconds between heartbeats
    #[arg(long, default_value_t = 5)]
    heartbeat_secs: u64,
    /// Settings file read for anything not given as a flag or env
    #[arg(long, env = "FLOTILLA_EXECUTOR_CONFIG", default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// Send each job's spans to this OTLP/HTTP collector (http://HOST:PORT) [default: OTEL_EXPORTER_OTLP_ENDPOINT; none]
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// Where the host's `/` is mounted, for an executor run in a container (accessory
    /// directories and files are written there) [default: /]
    #[arg(long, env = "FLOTILLA_HOST_ROOT", value_name = "DIR")]
    host_root: Option<PathBuf>,
    /// Serve this host's step counts and durations on http://ADDR/metrics [default: off]
    #[arg(long, env = "FLOTILLA_EXECUTOR_METRICS", value_name = "ADDR")]
    metrics_listen: Option<String>,
}

pub fn run(args: ExecutorArgs) -> anyhow::Result<()> {
    match args.command {
        ExecutorCommand::Key { state_dir, json } => {
            let identity = flotilla_executor::keys::Identity::load(&state_dir)
                .context("read or make the host's keys")?;
            let text = if json {
                identity.public().to_json()
            } else {
                identity.sealing.public_key_base64()
            };
            crate::commands::write_stdout(&(text + "\n"))
        }
        ExecutorCommand::Run(args) => {
            init_logging();
            // One thread: the executor waits on NATS and Docker; it does not compute.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("start the async runtime")?;
            runtime.block_on(run_executor(*args))
        }
    }
}

/// Spans and `/metrics` of finished jobs, each off unless configured.
async fn start_telemetry(otlp: Option<&str>, metrics: Option<&str>) -> anyhow::Result<()> {
    use flotilla_executor::telemetry::{self, StepMetrics, Telemetry};
    let endpoint = match otlp {
        Some(url) => Some(flotilla_telemetry::Endpoint::from_base(url)),
        None => flotilla_telemetry::Endpoint::from_env(|k| std::env::var(k).ok()),
    };
    let exporter = match endpoint {
        Some(e) => Some(flotilla_telemetry::Exporter::new(
            e.map_err(|e| usage(e.to_string(), "give --otlp-endpoint http://HOST:PORT"))?,
            telemetry::SERVICE_NAME,
        )),
        None => None,
    };
    let step_metrics = match metrics {
        Some(listen) => {
            let m = Arc::new(StepMetrics::new().context("step metrics")?);
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("metrics: listen on {listen}"))?;
            tracing::info!(addr = %listener.local_addr()?, "serving metrics");
            let body = m.clone();
            tokio::spawn(flotilla_telemetry::metrics_http::serve(
                listener,
                move || {
                    let m = body.clone();
                    async move { m.render() }
                },
                None,
                std::future::pending(),
            ));
            Some(m)
        }
        None => None,
    };
    if let Some(e) = &exporter {
        tracing::info!(endpoint = %e.endpoint(), "exporting spans");
    }
    telemetry::install(Telemetry::new(exporter, step_metrics));
    Ok(())
}

fn init_logging() {
    crate::lifecycle::init_tracing("info,async_nats=warn");
}

fn usage(message: String, hint: &str) -> anyhow::Error {
    UserError {
        message,
        hint: Some(hint.to_owned()),
        code: USAGE,
    }
    .into()
}

/// `key = value` lines; `#` starts a comment.
fn read_config(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(usage(
                format!("{}:{}: expected `key = value`", path.display(), n + 1),
                "fix the line or remove it",
            ));
        };
        let key = k.trim();
        if ![
            "host_id",
            "nats_url",
            "nats_creds",
            "nats_ca",
            "scheduler_key",
            "state_dir",
            "docker_socket",
            "proxy_socket",
            "metrics_listen",
            "otlp_endpoint",
        ]
        .contains(&key)
        {
            return Err(usage(
                format!("{}:{}: unknown key {key:?}", path.display(), n + 1),
                "known keys: host_id, nats_url, nats_creds, nats_ca, scheduler_key, state_dir, docker_socket, proxy_socket, metrics_listen, otlp_endpoint",
            ));
        }
        out.push((key.to_owned(), v.trim().trim_matches('"').to_owned()));
    }
    Ok(out)
}

/// Flags win over the settings file (`--config`), which wins over the defaults.
fn merge_config(args: &mut RunArgs) -> anyhow::Result<()> {
    for (key, value) in read_config(&args.config)? {
        let path = || Some(PathBuf::from(&value));
        match key.as_str() {
            "host_id" if args.host_id.is_none() => args.host_id = Some(value.clone()),
            "nats_url" if args.nats_url.is_none() => args.nats_url = Some(value.clone()),
            "nats_creds" if args.nats_creds.is_none() => args.nats_creds = path(),
            "nats_ca" if args.nats_ca.is_none() => args.nats_ca = path(),
            "scheduler_key" if args.scheduler_key.is_none() => {
                args.scheduler_key = Some(value.clone())
            }
            "state_dir" if args.state_dir.is_none() => args.state_dir = path(),
            "docker_socket" if args.docker_socket.is_none() => args.docker_socket = path(),
            "proxy_socket" if args.proxy_socket.is_none() => args.proxy_socket = path(),
            "metrics_listen" if args.metrics_listen.is_none() => {
                args.metrics_listen = Some(value.clone())
            }
            "otlp_endpoint" if args.otlp_endpoint.is_none() => {
                args.otlp_endpoint = Some(value.clone())
            }
            _ => {}
        }
    }
    Ok(())
}

async fn run_executor(mut args: RunArgs) -> anyhow::Result<()> {
    merge_config(&mut args)?;
    let missing = |what: &str, flag: &str| {
        usage(
            format!("no {what} given"),
            &format!(
                "pass {flag}, set it in {} or the FLOTILLA_* env",
                args.config.display()
            ),
        )
    };
    let host = args
        .host_id
        .clone()
        .ok_or_else(|| missing("host id", "--host-id"))?;
    let nats_url = args
        .nats_url
        .clone()
        .ok_or_else(|| missing("NATS URL", "--nats"))?;
    let key_arg = args
        .scheduler_key
        .clone()
        .ok_or_else(|| missing("scheduler key", "--scheduler-key"))?;
    let key_text = match key_arg.strip_prefix('@') {
        Some(file) => {
            std::fs::read_to_string(file).with_context(|| format!("read scheduler key {file}"))?
        }
        None => key_arg,
    };
    let verifier = JobVerifier::new(&key_text, &host).map_err(|e| {
        usage(
            format!("scheduler key: {e}"),
            "give the base64 public key the scheduler printed",
        )
    })?;
    let state_dir = args
        .state_dir
        .unwrap_or_else(|| PathBuf::from("/var/lib/flotilla/executor"));
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("create {}", state_dir.display()))?;
    let identity = flotilla_executor::keys::Identity::load(&state_dir)
        .context("read or make the host's keys")?;
    println!(
        "flotilla executor {}: host {host}, signing key {}{}",
        env!("CARGO_PKG_VERSION"),
        identity.signing.public_key_base64(),
        if identity.made {
            " (made now: enrol it with `flotilla server enroll HOST --replace` if this host was enrolled before)"
        } else {
            ""
        }
    );
    let nkey_seed = identity.nats_seed();
    let flotilla_executor::keys::Identity {
        sealing: host_key,
        signing: signer,
        ..
    } = identity;
    let journal = Journal::load(&state_dir.join("jobs.json")).context("read the job journal")?;
    let docker_socket = args
        .docker_socket
        .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"));
    let docker = DockerRuntime::connect(&docker_socket)
        .await
        .with_context(|| format!("connect to Docker at {}", docker_socket.display()))?;
    let proxy_socket = args
        .proxy_socket
        .unwrap_or_else(|| PathBuf::from(flotilla_proxy::DEFAULT_ADMIN_SOCKET));
    let proxy = SocketProxy::new(&proxy_socket);
    let mut executor = Executor::new(docker, proxy, host_key, host).with_proxy_socket(proxy_socket);
    if let Some(root) = &args.host_root {
        executor = executor.with_host_root(root);
    }
    let executor = Arc::new(executor);
    // Apart from NATS: a host whose engine restarts is served again even while NATS is down.
    tokio::spawn(flotilla_executor::repoint::run(executor.clone()));
    start_telemetry(
        args.otlp_endpoint.as_deref(),
        args.metrics_listen.as_deref(),
    )
    .await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        crate::lifecycle::shutdown_signal().await;
        tracing::info!("signal received: finishing the current step, then exiting");
        let _ = stop_tx.send(true);
    });
    let settings = NatsSettings {
        url: nats_url,
        creds: args.nats_creds,
        nkey_seed,
        ca: args.nats_ca,
        heartbeat_every: Duration::from_secs(args.heartbeat_secs.max(1)),
    };
    transport::run(executor, verifier, signer, journal, settings, stop_rx)
        .await
        .context("executor")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_file(name: &str, text: &str) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("flotilla-exec-conf-{}-{name}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        path
    }

    /// The settings file gives `key = value` pairs, skipping comments and blank lines; a
    /// missing file is no settings at all.
    #[test]
    fn config_file_is_read() {
        let f = config_file(
            "a",
            "# executor\nhost_id = 10.0.0.5\n\nnats_url = \"nats://10.0.0.1:4222\"\n",
        );
        let pairs = read_config(&f).unwrap();
        assert_eq!(
            pairs,
            [
                ("host_id".to_owned(), "10.0.0.5".to_owned()),
                ("nats_url".to_owned(), "nats://10.0.0.1:4222".to_owned())
            ]
        );
        assert!(
            read_config(Path::new("/nonexistent/executor.conf"))
                .unwrap()
                .is_empty()
        );
    }

    /// A typo in the settings file is a usage error naming the file, line and key.
    #[test]
    fn unknown_key_names_file_and_line() {
        let f = config_file("b", "host_id = a\nnats_ulr = b\n");
        let e = read_config(&f).unwrap_err();
        let u = e.downcast_ref::<UserError>().unwrap();
        assert_eq!(u.code, USAGE);
        assert!(
            u.message.ends_with(":2: unknown key \"nats_ulr\""),
            "{}",
            u.message
        );
        let f = config_file("c", "just words\n");
        assert!(
            read_config(&f)
                .unwrap_err()
                .to_string()
                .contains(":1: expected `key = value`")
        );
    }
}
