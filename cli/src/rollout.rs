//! The deploy procedure shared by `deploy`, `redeploy`, `rollback` and `replay --resume`:
//! connect, hooks, lock, record, roll out, unlock, report. Each stage is a small step with its
//! failure handled where it happens; the rollout itself is the scheduler's engine.

use crate::auto_rollback::auto_rollback;
use crate::exit::{FAILED, UserError};
use crate::progress::{Mode, Progress};
pub use crate::session::{FleetArgs, Session, nats_url, performer, policy, scheduler_key};
use flotilla_deploy::Config;
use flotilla_deploy::plan::Plan;
use flotilla_events::event::{DeployFailed, DeployKind, HookRan, LockAcquired, LockReleased};
use flotilla_events::{DeployId, Envelope, Event, EventLog, NewEvent};
use flotilla_scheduler::engine::{DeployRun, Engine, RunOutcome};
use flotilla_scheduler::hooks::{self, HookContext, HookError};
use flotilla_scheduler::rollout::Outcome;
use flotilla_scheduler::transport::bus::Bus;
use flotilla_scheduler::transport::lock::{LockError, LockInfo, Locks};
use std::time::Duration;

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

pub(crate) fn record(
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
