//! The deploy procedure shared by `deploy`, `redeploy`, `rollback` and `replay --resume`:
//! connect, hooks, lock, record, roll out, unlock, report. Each stage is a small step with its
//! failure handled where it happens; the rollout itself is the scheduler's engine.

use crate::commands::config::ConfigArgs;
use crate::exit::{FAILED, USAGE, UserError};
use crate::progress::{Mode, Progress};
use anyhow::Context;
use clap::Args;
use flotilla_deploy::Config;
use flotilla_deploy::plan::Plan;
use flotilla_events::event::{DeployFailed, DeployKind, HookRan, LockAcquired, LockReleased};
use flotilla_events::{DeployId, Envelope, Event, EventLog, NewEvent, SledLog};
use flotilla_executor::signing::JobSigner;
use flotilla_scheduler::engine::{DeployRun, Engine, RunOutcome};
use flotilla_scheduler::hooks::{self, HookContext, HookError};
use flotilla_scheduler::rollout::{Amount, Outcome, Policy};
use flotilla_scheduler::transport::bus::Bus;
use flotilla_scheduler::transport::lock::{LockError, LockInfo, Locks, lock_key};
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
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("root", &self.root).finish()
    }
}

impl Session {
    pub fn open(args: &FleetArgs) -> anyhow::Result<Session> {
        // -v: the scheduler's own log lines (NATS, lock renewal, dropped reports) on stderr.
        let level = if args.verbose { "debug" } else { "warn" };
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| level.into()),
            )
            .with_ansi(crate::progress::color_enabled())
            .with_writer(std::io::stderr)
            .try_init();
        let config = args.config.load()?;
        let root = std::env::current_dir().context("reading the current directory")?;
        if let Some(parent) = args.log.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let log = open_log(&args.log).map_err(|e| UserError {
            message: format!("cannot open the event log {}: {e}", args.log.display()),
            hint: Some(
                "another flotilla command may be running on this project; wait for it".into(),
            ),
            code: FAILED,
        })?;
        Ok(Session {
            root,
            config,
            log,
            actor: performer(),
            args: args.clone(),
        })
    }

    pub fn target_name(&self) -> String {
        lock_key(&self.config.service, self.config.destination.as_deref())
    }
}

/// Opens the log, waiting up to two seconds while another process holds it briefly (the
/// `flotilla metrics serve` standby folds new events with the log open for milliseconds).
fn open_log(path: &Path) -> Result<SledLog, flotilla_events::LogError> {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        match SledLog::open(path) {
            Err(flotilla_events::LogError::Locked { .. })
                if std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            other => return other,
        }
    }
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

/// The rollout policy from `boot:` and `x-flotilla.rollout:`.
pub fn policy(config: &Config) -> Policy {
    use flotilla_deploy::config::types::HostCount;
    let amount = |c: HostCount| match c {
        HostCount::Count(n) => Amount::Count(n as usize),
        HostCount::Percent(p) => Amount::Percent(u8::try_from(p.min(100)).unwrap_or(100)),
    };
    let hosts = config.all_hosts().len();
    let r = &config.flotilla.rollout;
    // Zero means "off" for these two (HostCount::of rounds any count up to one host).
    let hosts_of = |c: HostCount| match c {
        HostCount::Count(0) | HostCount::Percent(0) => None,
        c => Some(c.of(hosts)),
    };
    Policy {
        batch: config.boot.limit.map(amount),
        batch_wait: Duration::from_secs(config.boot.wait.unwrap_or(0)),
        canary: r.canary.and_then(hosts_of).unwrap_or(0),
        max_parallel: r.max_parallel.and_then(hosts_of),
        max_failures: (r.max_failures > 0).then_some(Amount::Count(r.max_failures as usize)),
        step_timeout: Some(Duration::from_secs(r.step_timeout)),
    }
}

/// NATS URL: `x-flotilla.nats.url`, or `FLOTILLA_NATS_URL`.
pub fn nats_url(config: &Config) -> anyhow::Result<(String, Option<PathBuf>)> {
    if let Some(n) = &config.flotilla.nats {
        return Ok((n.url.clone(), n.creds.as_ref().map(PathBuf::from)));
    }
    if let Ok(url) = std::env::var("FLOTILLA_NATS_URL") {
        return Ok((url, None));
    }
    Err(UserError {
        message: "no NATS server configured".into(),
        hint: Some("set x-flotilla: {nats: {url: nats://HOST:4222}} in config/deploy.yml".into()),
        code: USAGE,
    }
    .into())
}

/// What `run_rollout` is asked to do.
#[derive(Debug)]
pub struct RolloutRequest {
    pub plan: Plan,
    pub kind: DeployKind,
    pub deploy_id: DeployId,
    /// Continue a deploy already in the log.
    pub resume: bool,
    /// Events to record right after the request (image built and pushed, rollback started).
    pub preamble: Vec<Event>,
    pub command: &'static str,
}

/// Runs the hook `name` unless hooks are skipped, recording it; a failure stops everything.
pub async fn hook(
    s: &Session,
    name: &str,
    ctx: &HookContext,
    deploy: Option<&DeployId>,
    watch: &mut dyn FnMut(&Envelope),
) -> anyhow::Result<()> {
    if s.args.skip_hooks {
        return Ok(());
    }
    let dir = s.root.join(&s.config.hooks_path);
    let result = hooks::run(&dir, &s.root, name, ctx).await;
    let (code, duration) = match &result {
        Ok(None) => return Ok(()),
        Ok(Some(run)) => (0, Some(run.duration.as_millis() as u64)),
        Err(e) => (e.exit_code().unwrap_or(-1), None),
    };
    if let Some(id) = deploy {
        let event = NewEvent::new(
            id.clone(),
            &s.actor,
            HookRan {
                name: name.to_owned(),
                exit_code: code,
                duration_ms: duration,
            },
        );
        let seq = s.log.append(event.clone())?.seq();
        watch(&event.into_envelope(seq));
    }
    match result {
        Ok(_) => Ok(()),
        Err(HookError::Failed { name, code, output }) => Err(UserError {
            message: format!(
                "hook {name} failed with exit code {code}:\n{}",
                output.trim_end()
            ),
            hint: Some(format!("fix what {name} reports, or skip hooks with -H")),
            code: FAILED,
        }
        .into()),
        Err(e) => Err(e.into()),
    }
}

pub fn hook_context(s: &Session, plan: &Plan, command: &str) -> HookContext {
    HookContext {
        service: s.config.service.clone(),
        version: plan.release.version.clone(),
        destination: s.config.destination.clone(),
        hosts: plan.hosts.iter().map(|h| h.host.clone()).collect(),
        roles: s.config.servers.iter().map(|r| r.name.clone()).collect(),
        command: command.to_owned(),
        subcommand: None,
        performer: s.actor.clone(),
        recorded_at: flotilla_events::Timestamp::now().to_string(),
        runtime: None,
    }
}

/// Lock, record, roll out, unlock, report. Returns the exit result for the CLI.
pub async fn run_rollout(s: &Session, req: RolloutRequest) -> anyhow::Result<()> {
    let (url, creds) = nats_url(&s.config)?;
    let bus = Bus::connect(&url, creds.as_deref())
        .await
        .map_err(|e| UserError {
            message: e.to_string(),
            hint: Some("is the NATS server running and x-flotilla.nats.url right?".into()),
            code: FAILED,
        })?;
    let signer = scheduler_key(&s.root)?;
    let mode = Mode::choose(s.args.json, s.args.quiet);
    let mut progress = Progress::new(mode, req.deploy_id.clone());
    // `x-flotilla.metrics.listen`: the log's metrics so far, then each event, while this runs.
    let listen = s.config.flotilla.metrics.as_ref();
    let listen = listen.map(|m| m.listen.as_str());
    let metrics = flotilla_scheduler::metrics::Live::start(listen, &s.log, Some(&s.args.log))
        .await
        .unwrap_or_else(|e| {
            eprintln!("flotilla: warning: {e}; this run serves no metrics");
            flotilla_scheduler::metrics::Live::default()
        });
    let mut watch = |e: &Envelope| {
        progress.on_event(e);
        metrics.observe(e);
    };
    let hook_ctx = hook_context(s, &req.plan, req.command);
    let engine = Engine {
        bus: &bus,
        log: &s.log,
        signer: &signer,
    };
    let run = DeployRun {
        config: &s.config,
        plan: req.plan.clone(),
        deploy_id: req.deploy_id.clone(),
        kind: req.kind,
        actor: s.actor.clone(),
        config_digest: config_digest(&s.config),
        policy: policy(&s.config),
        heartbeat_wait: Duration::from_secs(20),
    };
    // The lock: one deploy of a service and destination at a time, across machines.
    let locks = Locks::open(bus.jetstream(), Duration::from_secs(60)).await?;
    let info = LockInfo {
        holder: s.actor.clone(),
        message: format!("{} {}", req.command, req.plan.release.version),
        acquired_at: flotilla_events::Timestamp::now().to_string(),
        machine: hostname(),
        version: Some(req.plan.release.version.clone()),
        deploy_id: Some(req.deploy_id.to_string()),
        expires_at_ms: None,
    };
    let key = s.target_name();
    // Taken before anything is recorded, so a refused deploy leaves no trace in the log.
    let held = match locks.acquire(&key, &info).await {
        Err(LockError::Held { info: holder, .. }) if s.args.lock_wait.is_some() => {
            let secs = s.args.lock_wait.unwrap_or_default();
            eprintln!(
                "flotilla: waiting up to {secs}s for the deploy lock held by {} ({})",
                holder.holder, holder.message
            );
            locks
                .acquire_waiting(
                    &key,
                    &info,
                    Duration::from_secs(secs),
                    Duration::from_secs(1),
                )
                .await
        }
        other => other,
    }
    .map_err(|e| UserError {
        message: e.to_string(),
        hint: Some("wait for it with --lock-wait SECONDS, or see `flotilla lock status`".into()),
        code: FAILED,
    })?;
    if !req.resume {
        engine.request(&run, &mut watch)?;
    }
    for event in req.preamble.iter().cloned() {
        record(s, &req.deploy_id, event, &mut watch)?;
    }
    record(
        s,
        &req.deploy_id,
        LockAcquired {
            holder: s.actor.clone(),
        }
        .into(),
        &mut watch,
    )?;

    let result = async {
        hook(s, "pre-deploy", &hook_ctx, Some(&req.deploy_id), &mut watch).await?;
        let started = std::time::Instant::now();
        // Kamal runs these around each boot group; the engine boots its batches itself, so
        // here they run once around the whole boot.
        hook(
            s,
            "pre-app-boot",
            &hook_ctx,
            Some(&req.deploy_id),
            &mut watch,
        )
        .await?;
        let outcome = engine.run(run, &mut watch).await?;
        hook(
            s,
            "post-app-boot",
            &hook_ctx,
            Some(&req.deploy_id),
            &mut watch,
        )
        .await?;
        // Still under the lock: put switched hosts back before anyone else deploys.
        let rolled_back = if outcome.outcome != Outcome::Succeeded
            && s.config.flotilla.rollout.auto_rollback
            && req.kind == DeployKind::Deploy
        {
            auto_rollback(s, &engine, &req, &mut watch).await?
        } else {
            None
        };
        anyhow::Ok((outcome, started.elapsed(), rolled_back))
    }
    .await;

    let released = held.release().await;
    record(
        s,
        &req.deploy_id,
        LockReleased {
            holder: s.actor.clone(),
        }
        .into(),
        &mut watch,
    )?;
    if let Err(e) = released {
        eprintln!("flotilla: warning: releasing the deploy lock: {e}");
    }
    let (outcome, took, rolled_back) = match result {
        Ok(r) => r,
        Err(e) => {
            // A hook or the infrastructure stopped it: the log must still say how it ended.
            let failed = DeployFailed {
                reason: format!("{e:#}"),
            };
            record(s, &req.deploy_id, failed.into(), &mut watch)?;
            return Err(e);
        }
    };
    if outcome.outcome == Outcome::Succeeded {
        let mut ctx = hook_ctx.clone();
        ctx.runtime = Some(took.as_secs());
        hook(s, "post-deploy", &ctx, Some(&req.deploy_id), &mut watch).await?;
    }
    if let Some(r) = &rolled_back {
        eprintln!(
            "auto_rollback: {} host(s) back on {} (deploy {}), {} failed",
            r.outcome.succeeded.len(),
            r.version,
            r.deploy_id,
            r.outcome.failed.len()
        );
    }
    summarize(&req, &outcome, progress.state(), took)
}

/// What an automatic rollback did.
#[derive(Debug)]
struct RolledBack {
    deploy_id: DeployId,
    version: String,
    outcome: RunOutcome,
}

/// `x-flotilla.rollout.auto_rollback`: every host that started the new version goes back to
/// the last good release, by digest, as a rollback deploy of its own in the log.
async fn auto_rollback(
    s: &Session,
    engine: &Engine<'_>,
    failed: &RolloutRequest,
    watch: &mut dyn FnMut(&Envelope),
) -> anyhow::Result<Option<RolledBack>> {
    use flotilla_deploy::plan::{PlanContext, Release};
    use flotilla_events::event::RollbackStarted;
    use flotilla_events::projection::{Projections, ReleaseTarget};
    let projections = Projections::rebuild(&s.log)?;
    let target = ReleaseTarget::new(&s.config.service, s.config.destination.as_deref());
    let Some(previous) = projections.releases.last_good(&target) else {
        eprintln!("flotilla: warning: auto_rollback: no earlier good release to go back to");
        return Ok(None);
    };
    let Some(image) = previous
        .images
        .get(&s.config.primary_role)
        .or_else(|| previous.images.values().next())
    else {
        eprintln!(
            "flotilla: warning: auto_rollback: release {} recorded no digest",
            previous.version
        );
        return Ok(None);
    };
    // Hosts that started a container of the failed version: they may be serving it.
    let touched: Vec<String> = s
        .log
        .read_deploy(&failed.deploy_id)?
        .iter()
        .filter(|e| matches!(e.event, Event::ContainerStarted(_)))
        .filter_map(|e| e.host.clone())
        .collect();
    let mut plan = flotilla_deploy::plan::plan(
        &s.config,
        &Release {
            version: previous.version.clone(),
            image: format!("{}@{}", s.config.repository(), image.digest),
        },
        &PlanContext::default(),
    );
    plan.hosts.retain(|h| touched.contains(&h.host));
    if plan.hosts.is_empty() {
        return Ok(None);
    }
    let deploy_id = DeployId::new();
    let run = DeployRun {
        config: &s.config,
        plan,
        deploy_id: deploy_id.clone(),
        kind: DeployKind::Rollback,
        actor: s.actor.clone(),
        config_digest: config_digest(&s.config),
        // Roll back everywhere at once, whatever failed: every host should return.
        policy: Policy {
            max_failures: Some(Amount::Percent(100)),
            canary: 0,
            ..policy(&s.config)
        },
        heartbeat_wait: Duration::from_secs(20),
    };
    engine.request(&run, watch)?;
    let started = RollbackStarted {
        from_version: Some(failed.plan.release.version.clone()),
        to_version: previous.version.clone(),
        reason: format!("auto_rollback: deploy {} failed", failed.deploy_id),
    };
    record(s, &deploy_id, started.into(), watch)?;
    let outcome = engine.run(run, watch).await?;
    Ok(Some(RolledBack {
        deploy_id,
        version: previous.version.clone(),
        outcome,
    }))
}

fn record(
    s: &Session,
    id: &DeployId,
    event: Event,
    watch: &mut dyn FnMut(&Envelope),
) -> anyhow::Result<()> {
    let event = NewEvent::new(id.clone(), &s.actor, event);
    let seq = s.log.append(event.clone())?.seq();
    watch(&event.into_envelope(seq));
    Ok(())
}

fn summarize(
    req: &RolloutRequest,
    outcome: &RunOutcome,
    state: &flotilla_events::projection::DeployState,
    took: Duration,
) -> anyhow::Result<()> {
    let id = &req.deploy_id;
    let done = outcome.succeeded.len() + outcome.already_done.len();
    eprintln!(
        "{} {} of {}: {done} host(s) succeeded, {} failed, in {:.1}s (deploy {id})",
        req.command,
        req.plan.service,
        req.plan.release.version,
        outcome.failed.len(),
        took.as_secs_f64()
    );
    if outcome.outcome == Outcome::Succeeded {
        return Ok(());
    }
    for host in &outcome.failed {
        if let Some(h) = state.hosts.get(host)
            && let flotilla_events::projection::HostStatus::Failed { step, error } = &h.status
        {
            eprintln!("  {host}: failed at {step:?}: {error}");
        }
    }
    let why = match &outcome.outcome {
        Outcome::Failed { reason, .. } => reason.clone(),
        Outcome::Degraded { .. } => "some hosts failed within max_failures".into(),
        Outcome::Succeeded => String::new(),
    };
    Err(UserError {
        message: format!("{} failed: {why}", req.command),
        hint: Some(format!(
            "see `flotilla replay {id}`; continue it with `flotilla replay {id} --resume`, or go back with `flotilla rollback`"
        )),
        code: FAILED,
    }
    .into())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// sha256 of the resolved config as `flotilla config --json` prints it (secrets redacted).
pub fn config_digest(config: &Config) -> String {
    use sha2::{Digest, Sha256};
    let json = flotilla_deploy::config::output::to_json(config).unwrap_or_default();
    format!("sha256:{}", hex::encode(Sha256::digest(json.as_bytes())))
}
