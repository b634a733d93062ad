//! `flotilla scheduler ...`: the scheduler as a service on the control host. `run` owns the
//! event log, answers the CLI's requests over NATS and runs deploys there (see
//! `flotilla_scheduler::service`); `key` prints the key CLIs seal secrets to.

use crate::exit::{FAILED, UserError};
use anyhow::Context as _;
use clap::{Args, Subcommand};
use flotilla_events::SledLog;
use flotilla_protocol::sealing::HostKey;
use flotilla_protocol::signing::JobSigner;
use flotilla_scheduler::service::Service;
use flotilla_scheduler::transport::nats::NatsTransport;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

const EXAMPLES: &str = "Examples:
  flotilla scheduler run --nats nats://127.0.0.1:4222 --state /var/lib/flotilla/scheduler
  flotilla scheduler run --metrics 0.0.0.0:9394
  flotilla scheduler run --nats-ca /etc/flotilla/nats-ca.pem --nkey /etc/flotilla/operator.nk
  flotilla scheduler key            # the key CLIs seal secrets to";

/// The scheduler service: deploys run here, not in the CLI
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct SchedulerArgs {
    #[command(subcommand)]
    command: SchedulerCommand,
}

#[derive(Debug, Subcommand)]
enum SchedulerCommand {
    /// Run the service in the foreground (SIGTERM cancels running deploys cleanly, then exits)
    #[command(after_help = EXAMPLES)]
    Run(RunArgs),
    /// Print the service's sealing key (x25519, base64; made on first use)
    Key {
        #[command(flatten)]
        state: StateArg,
    },
}

#[derive(Debug, Args)]
struct StateArg {
    /// Where the service keeps its event log (`events/`), the job signing key
    /// (`scheduler.key`, the one executors were enrolled with) and its sealing key
    /// (`service.key`)
    #[arg(
        long = "state",
        env = "FLOTILLA_SCHEDULER_STATE",
        default_value = "/var/lib/flotilla/scheduler"
    )]
    dir: PathBuf,
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    state: StateArg,
    /// NATS server URL
    #[arg(
        long = "nats",
        env = "FLOTILLA_NATS_URL",
        value_name = "URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    nats_url: String,
    /// NATS credentials file (.creds): an operator's
    #[arg(long = "creds", env = "FLOTILLA_NATS_CREDS", value_name = "FILE")]
    nats_creds: Option<PathBuf>,
    /// The operators' NATS nkey seed file (the project's `.flotilla/nats-operator.nk`), for
    /// the NATS `flotilla setup` boots (setup writes it next to the service's state)
    #[arg(long = "nkey", env = "FLOTILLA_NATS_NKEY", value_name = "FILE")]
    nats_nkey: Option<PathBuf>,
    /// The CA (PEM) NATS's certificate must chain to: trusted alone, TLS required (the
    /// project's `.flotilla/nats-ca.pem` for the NATS `flotilla setup` boots)
    #[arg(long = "nats-ca", env = "FLOTILLA_NATS_CA", value_name = "FILE")]
    nats_ca: Option<PathBuf>,
    /// One of several instances (one per control host): stand by, following FLOTILLA_LOG
    /// into this state's log, until this instance holds the leader lease (a NATS key-value
    /// entry); the leader resumes the rollouts a lost leader was running
    #[arg(long, env = "FLOTILLA_SCHEDULER_HA")]
    ha: bool,
    /// Serve Prometheus metrics of every deploy on this address, all the time
    #[arg(
        long = "metrics",
        env = "FLOTILLA_METRICS_LISTEN",
        value_name = "HOST:PORT"
    )]
    metrics: Option<String>,
}

pub fn run(args: SchedulerArgs) -> anyhow::Result<()> {
    match args.command {
        SchedulerCommand::Key { state } => {
            let key = service_key(&state.dir)?;
            crate::commands::write_stdout(&format!("{}\n", key.public_key_base64()))
        }
        SchedulerCommand::Run(run) => {
            crate::lifecycle::init_tracing("info");
            // The service's rollouts run on one thread (see `flotilla_scheduler::service`);
            // NATS and the metrics endpoint have the runtime's workers.
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(serve(run))
        }
    }
}

async fn serve(args: RunArgs) -> anyhow::Result<()> {
    let dir = &args.state.dir;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let signer = signing_key(dir)?;
    let key = service_key(dir)?;
    let log_dir = dir.join("events");
    let log = SledLog::open(&log_dir).map_err(|e| {
        let hint = e.next_step(&log_dir).map(|s| s.to_string());
        anyhow::Error::new(e).context(UserError {
            message: format!("cannot open the event log {}", log_dir.display()),
            hint,
            code: FAILED,
        })
    })?;
    let nkey_seed = match &args.nats_nkey {
        Some(path) => Some(zeroize::Zeroizing::new(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading the NATS nkey {}", path.display()))?
                .trim()
                .to_owned(),
        )),
        None => None,
    };
    let auth = flotilla_scheduler::transport::bus::NatsAuth {
        creds: args.nats_creds.clone(),
        nkey_seed,
        ca: args.nats_ca.clone(),
    };
    let transport = NatsTransport::connect_with(&args.nats_url, &auth)
        .await
        .map_err(|e| {
            anyhow::Error::new(e).context(UserError {
                message: format!("cannot reach NATS at {}", args.nats_url),
                hint: Some("is the NATS server running, and --nats right?".into()),
                code: FAILED,
            })
        })?;
    let client = transport.bus.jetstream().client();
    let metrics = Arc::new(flotilla_scheduler::metrics::Metrics::new());
    let _server = match &args.metrics {
        Some(listen) => {
            let server = flotilla_scheduler::metrics::serve(listen, metrics.clone()).await?;
            eprintln!(
                "flotilla: serving metrics on http://{}/metrics",
                server.addr()
            );
            Some(server)
        }
        None => None,
    };
    let observe = metrics.clone();
    let service = Service {
        transport,
        log: Arc::new(log),
        signer: Arc::new(signer),
        key: Arc::new(key),
        client,
        root: dir.clone(),
        machine: crate::rollout::hostname(),
        observe: Arc::new(move |e| observe.observe(e)),
    };
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    tokio::spawn(async move {
        crate::lifecycle::shutdown_signal().await;
        eprintln!(
            "flotilla: stopping: running deploys are cancelled (no host starts, running steps finish); `flotilla replay ID --resume` continues them"
        );
        token.cancel();
    });
    if args.ha {
        use flotilla_scheduler::service::{ha, lease};
        let js = async_nats::jetstream::new(service.client.clone());
        let contender =
            lease::Contender::open(&js, &service.machine, lease::LeaseTimes::default()).await?;
        eprintln!(
            "flotilla: scheduler instance on {} standing by for the leader lease, log {}",
            args.nats_url,
            log_dir.display()
        );
        let stopped = ha::run(service, contender, shutdown).await?;
        if stopped == ha::Stopped::LostLease {
            // Docker's restart policy brings it back as a standby.
            anyhow::bail!("lost the leader lease: another instance leads now");
        }
        return Ok(());
    }
    let bound = service.bind().await?;
    eprintln!(
        "flotilla: scheduler service on {}, log {}",
        args.nats_url,
        log_dir.display()
    );
    bound.serve(shutdown).await?;
    Ok(())
}

/// The job signing key: the one the executors were enrolled with (setup copies the project's
/// `.flotilla/scheduler.key` here); never made up, since executors would refuse its jobs.
fn signing_key(dir: &Path) -> anyhow::Result<JobSigner> {
    let path = dir.join("scheduler.key");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        anyhow::Error::new(e).context(UserError {
            message: format!("no job signing key at {}", path.display()),
            hint: Some(
                "copy the project's .flotilla/scheduler.key there (mode 0600): executors trust \
                 its public half"
                    .into(),
            ),
            code: FAILED,
        })
    })?;
    JobSigner::from_base64(text.trim())
        .with_context(|| format!("{} is not a valid scheduler key", path.display()))
}

/// The service's own sealing key, made on first use (mode 0600). Its public half is also
/// written beside it (`service.pub`), where `flotilla setup` reads it over SSH to pin it in
/// the project: a key learnt through the host's pinned SSH connection, not from NATS.
fn service_key(dir: &Path) -> anyhow::Result<HostKey> {
    let key = load_or_make_service_key(dir)?;
    let public = dir.join(SERVICE_PUB);
    let line = format!("{}\n", key.public_key_base64());
    if std::fs::read_to_string(&public).ok().as_deref() != Some(line.as_str()) {
        std::fs::write(&public, line).with_context(|| format!("writing {}", public.display()))?;
    }
    Ok(key)
}

/// The public half of the service's sealing key, in its state directory.
pub const SERVICE_PUB: &str = "service.pub";

fn load_or_make_service_key(dir: &Path) -> anyhow::Result<HostKey> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("service.key");
    if let Ok(text) = std::fs::read_to_string(&path) {
        return HostKey::from_secret_base64(&text)
            .with_context(|| format!("{} is not a valid sealing key", path.display()));
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let key = HostKey::generate();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    std::io::Write::write_all(&mut file, key.secret_base64().as_bytes())?;
    Ok(key)
}
