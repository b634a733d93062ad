//! The deploy procedures as a library: `deploy`, `redeploy`, `rollback` and `resume` are one
//! procedure over a [`Request`] that says what to roll out (`plans` builds it), and
//! `auto_rollback` runs after a failed deploy, still under its lock. It reads like Kamal's
//! `cli/main.rb#deploy`:
//!
//! ```text
//! lock -> record -> pre-deploy -> pre-app-boot -> roll out -> post-app-boot
//!      -> auto_rollback (if asked) -> unlock -> settle (how it ended) -> post-deploy
//! ```
//!
//! Each stage is a small function with its failure handled where it happens. Every stage
//! takes the cancel signal: once it fires, no host starts, running steps finish or time out,
//! `DeployCancelled` is recorded, the lock is released and every host serves a version; a
//! cancelled deploy continues with `resume`.
//!
//! The procedure runs over the [`Transport`] and [`EventLog`] seams, so it runs the same in
//! the CLI, in tests (memory log, in-memory transport, simulated executors) and later in the
//! scheduler service. It renders nothing: it tells `watch` about every event it records.

mod auto_rollback;
mod operation;
pub mod plans;

pub use auto_rollback::RolledBack;
pub use operation::{OperationRequest, operate};
pub use plans::{PlanError, policy};

use crate::engine::{DeployRun, Engine, EngineError, RunOutcome};
use crate::hooks::{self, HookContext, HookError};
use crate::rollout::Outcome;
use crate::stored::Stored;
use crate::transport::lock::{LockError, LockInfo, lock_key};
use crate::transport::{HeldLock, Transport};
use flotilla_deploy::Config;
use flotilla_deploy::plan::Plan;
use flotilla_events::event::{DeployFailed, DeployKind, HookRan, LockAcquired, LockReleased};
use flotilla_events::{DeployId, Envelope, Event, EventLog, LogError, NewEvent, Timestamp};
use flotilla_protocol::signing::JobSigner;
use flotilla_protocol::text::error_chain;
use std::path::Path;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long a deploy waits for every host's heartbeat before naming the silent ones.
pub const HEARTBEAT_WAIT: Duration = Duration::from_secs(20);

/// What a procedure runs with: the config, the seams, who asks.
pub struct Context<'a, T: Transport> {
    pub config: &'a Config,
    /// The project directory (hooks run there).
    pub root: &'a Path,
    pub log: &'a dyn EventLog,
    pub transport: &'a T,
    pub signer: &'a JobSigner,
    /// Who asks (Kamal's performer).
    pub actor: String,
    /// The machine it runs on, for `flotilla lock status`.
    pub machine: String,
    /// `-H`: hooks are not run.
    pub skip_hooks: bool,
    /// `--lock-wait`: wait this long for a held lock instead of failing.
    pub lock_wait: Option<Duration>,
    pub heartbeat_wait: Duration,
    /// Told what the procedure is waiting for, for the user (the CLI prints it).
    pub notices: &'a (dyn Fn(Notice) + Send + Sync),
    /// Service mode: how far `FLOTILLA_LOG` holds the log, waited on before acting.
    pub stored: Option<&'a Stored>,
}

impl<'a, T: Transport> Context<'a, T> {
    /// The engine procedures run their hosts with.
    fn engine(&self) -> Engine<'a, T> {
        Engine {
            transport: self.transport,
            log: self.log,
            signer: self.signer,
            stored: self.stored,
        }
    }
}

/// Something the user should hear about while a procedure waits; not an event (nothing has
/// happened yet).
#[derive(Debug, Clone)]
pub enum Notice {
    /// The deploy lock is held: waiting up to `wait` for its release (`--lock-wait`).
    WaitingForLock {
        holder: Box<LockInfo>,
        wait: Duration,
    },
}

impl std::fmt::Display for Notice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Notice::WaitingForLock { holder, wait } => write!(
                f,
                "waiting up to {}s for the deploy lock held by {} ({})",
                wait.as_secs(),
                holder.holder,
                holder.message
            ),
        }
    }
}

impl<T: Transport> std::fmt::Debug for Context<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("root", &self.root).finish()
    }
}

/// One deploy to run: what to roll out and how it is recorded.
#[derive(Debug, Clone)]
pub struct Request {
    pub plan: Plan,
    pub kind: DeployKind,
    pub deploy_id: DeployId,
    /// Continue a deploy already in the log (it already has its `DeployRequested`).
    pub resume: bool,
    /// Events recorded right after the request (image built and pushed, rollback started).
    pub preamble: Vec<Event>,
    /// Kamal's command name, for hooks and messages: `deploy`, `rollback`, ...
    pub command: &'static str,
}

/// How a procedure ended when it ran to the end (the hosts' outcome may still be a failure).
#[derive(Debug)]
pub struct Finished {
    pub outcome: RunOutcome,
    pub took: Duration,
    pub rolled_back: Option<RolledBack>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProcedureError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Hook(#[from] HookError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("event log")]
    Log(#[from] LogError),
    #[error(transparent)]
    Plan(#[from] PlanError),
}

/// Runs `req` from lock to summary: the procedure behind `deploy`, `redeploy`, `rollback`
/// and `resume`.
pub async fn run<T: Transport>(
    ctx: &Context<'_, T>,
    req: &Request,
    watch: &mut dyn FnMut(&Envelope),
    cancel: &CancellationToken,
) -> Result<Finished, ProcedureError> {
    let engine = ctx.engine();
    // Taken before anything is recorded, so a refused deploy leaves no trace in the log.
    let lock = lock(ctx, req).await?;
    if let Err(e) = record_request(ctx, &engine, req, watch) {
        // Nothing ran: free the lock now rather than when it expires.
        if let Err(released) = lock.release().await {
            tracing::warn!(error = %released, "releasing the deploy lock");
        }
        return Err(e);
    }
    let started = tokio::time::Instant::now();
    let rolled = roll_out(ctx, &engine, req, watch, cancel).await;
    unlock(ctx, lock, req, watch).await?;
    let (outcome, rolled_back) = settle(ctx, req, rolled, watch)?;
    let took = started.elapsed();
    if outcome.outcome == Outcome::Succeeded {
        let mut hook_ctx = hook_context(ctx, &req.plan, req.command);
        hook_ctx.runtime = Some(took.as_secs());
        hook(ctx, "post-deploy", &hook_ctx, Some(&req.deploy_id), watch).await?;
    }
    Ok(Finished {
        outcome,
        took,
        rolled_back,
    })
}

/// The deploy lock: one deploy of a service and destination at a time, across machines.
async fn lock<T: Transport>(ctx: &Context<'_, T>, req: &Request) -> Result<T::Lock, LockError> {
    let message = format!("{} {}", req.command, req.plan.release.version);
    let version = Some(req.plan.release.version.clone());
    lock_as(ctx, message, version, &req.deploy_id).await
}

/// The deploy lock for whatever changes the hosts, held by `id` and saying `message`.
async fn lock_as<T: Transport>(
    ctx: &Context<'_, T>,
    message: String,
    version: Option<String>,
    id: &DeployId,
) -> Result<T::Lock, LockError> {
    let info = LockInfo {
        holder: ctx.actor.clone(),
        message,
        acquired_at: Timestamp::now().to_string(),
        machine: ctx.machine.clone(),
        version,
        deploy_id: Some(id.to_string()),
        expires_at_ms: None,
    };
    let key = lock_key(&ctx.config.service, ctx.config.destination.as_deref());
    match (
        ctx.transport.acquire_lock(&key, &info, None).await,
        ctx.lock_wait,
    ) {
        (Err(LockError::Held { info: holder, .. }), Some(wait)) => {
            (ctx.notices)(Notice::WaitingForLock { holder, wait });
            ctx.transport.acquire_lock(&key, &info, Some(wait)).await
        }
        (result, _) => result,
    }
}

/// `DeployRequested` (unless resuming), the preamble, `LockAcquired`.
fn record_request<T: Transport>(
    ctx: &Context<'_, T>,
    engine: &Engine<'_, T>,
    req: &Request,
    watch: &mut dyn FnMut(&Envelope),
) -> Result<(), ProcedureError> {
    if !req.resume {
        engine.request(&deploy_run(ctx, req), watch)?;
    }
    for event in req.preamble.iter().cloned() {
        record(ctx, &req.deploy_id, event, watch)?;
    }
    let acquired = LockAcquired {
        holder: ctx.actor.clone(),
    };
    record(ctx, &req.deploy_id, acquired.into(), watch)
}

/// Hooks around the boot, the engine, and the automatic rollback when it is asked for.
async fn roll_out<T: Transport>(
    ctx: &Context<'_, T>,
    engine: &Engine<'_, T>,
    req: &Request,
    watch: &mut dyn FnMut(&Envelope),
    cancel: &CancellationToken,
) -> Result<(RunOutcome, Option<RolledBack>), ProcedureError> {
    let hook_ctx = hook_context(ctx, &req.plan, req.command);
    let id = Some(&req.deploy_id);
    hook(ctx, "pre-deploy", &hook_ctx, id, watch).await?;
    // Kamal runs these around each boot group; the engine boots its batches itself, so
    // here they run once around the whole boot.
    hook(ctx, "pre-app-boot", &hook_ctx, id, watch).await?;
    let outcome = engine.run(deploy_run(ctx, req), watch, cancel).await?;
    hook(ctx, "post-app-boot", &hook_ctx, id, watch).await?;
    // Still under the lock: put switched hosts back before anyone else deploys. A cancel is
    // not a failure to undo: the operator asked for the hosts to stay where they are.
    let wanted = outcome.outcome != Outcome::Succeeded
        && outcome.cancelled.is_none()
        && ctx.config.flotilla.rollout.auto_rollback
        && req.kind == DeployKind::Deploy;
    let rolled_back = if wanted {
        auto_rollback::run(ctx, engine, req, watch, cancel).await?
    } else {
        None
    };
    Ok((outcome, rolled_back))
}

/// Releases the lock and records it; a release that fails is a warning (the lock expires).
async fn unlock<T: Transport>(
    ctx: &Context<'_, T>,
    lock: T::Lock,
    req: &Request,
    watch: &mut dyn FnMut(&Envelope),
) -> Result<(), ProcedureError> {
    let released = lock.release().await;
    let event = LockReleased {
        holder: ctx.actor.clone(),
    };
    record(ctx, &req.deploy_id, event.into(), watch)?;
    if let Err(e) = released {
        tracing::warn!(error = %e, "releasing the deploy lock");
    }
    Ok(())
}

/// How it ended: a hook or the infrastructure stopping the deploy is recorded as
/// `DeployFailed` (the log must say how every deploy ended), then returned.
fn settle<T: Transport>(
    ctx: &Context<'_, T>,
    req: &Request,
    rolled: Result<(RunOutcome, Option<RolledBack>), ProcedureError>,
    watch: &mut dyn FnMut(&Envelope),
) -> Result<(RunOutcome, Option<RolledBack>), ProcedureError> {
    match rolled {
        Ok(done) => Ok(done),
        Err(e) => {
            let failed = DeployFailed {
                reason: error_chain(&e),
            };
            record(ctx, &req.deploy_id, failed.into(), watch)?;
            Err(e)
        }
    }
}

/// The engine's view of a request.
fn deploy_run<'a, T: Transport>(ctx: &Context<'a, T>, req: &Request) -> DeployRun<'a> {
    DeployRun {
        config: ctx.config,
        plan: req.plan.clone(),
        deploy_id: req.deploy_id.clone(),
        kind: req.kind,
        actor: ctx.actor.clone(),
        config_digest: config_digest(ctx.config),
        policy: policy(ctx.config),
        heartbeat_wait: ctx.heartbeat_wait,
    }
}

/// Appends one event of deploy `id` and tells the watcher.
pub fn record<T: Transport>(
    ctx: &Context<'_, T>,
    id: &DeployId,
    event: Event,
    watch: &mut dyn FnMut(&Envelope),
) -> Result<(), ProcedureError> {
    let event = NewEvent::new(id.clone(), &ctx.actor, event);
    let seq = ctx.log.append(event.clone())?.seq();
    watch(&event.into_envelope(seq));
    Ok(())
}

/// Runs the hook `name` unless hooks are skipped, recording it (exit code and duration, never
/// its output) when it belongs to a deploy; a failure stops everything.
pub async fn hook<T: Transport>(
    ctx: &Context<'_, T>,
    name: &str,
    hook_ctx: &HookContext,
    deploy: Option<&DeployId>,
    watch: &mut dyn FnMut(&Envelope),
) -> Result<(), ProcedureError> {
    let hooks = Hooks {
        config: ctx.config,
        root: ctx.root,
        skip: ctx.skip_hooks,
    };
    let (ran, result) = hooks.run(name, hook_ctx).await;
    if let (Some(id), Some(ran)) = (deploy, ran) {
        record(ctx, id, ran.into(), watch)?;
    }
    result.map_err(ProcedureError::from)
}

/// Kamal's hooks of a project, for the stages that run before anything is connected
/// (`pre-connect`, `pre-build`) as well as the procedure's own.
#[derive(Debug, Clone, Copy)]
pub struct Hooks<'a> {
    pub config: &'a Config,
    /// The project directory: hooks run there, from `hooks_path` under it.
    pub root: &'a Path,
    /// `-H`: hooks are not run.
    pub skip: bool,
}

impl Hooks<'_> {
    /// Runs hook `name` if it exists and hooks are not skipped: the `HookRan` to record (none
    /// when nothing ran), and whether it succeeded.
    pub async fn run(
        &self,
        name: &str,
        hook_ctx: &HookContext,
    ) -> (Option<HookRan>, Result<(), HookError>) {
        if self.skip {
            return (None, Ok(()));
        }
        let dir = self.root.join(&self.config.hooks_path);
        let result = hooks::run(&dir, self.root, name, hook_ctx).await;
        let (exit_code, duration_ms) = match &result {
            Ok(None) => return (None, Ok(())),
            Ok(Some(run)) => (0, Some(run.duration.as_millis() as u64)),
            Err(e) => (e.exit_code().unwrap_or(-1), None),
        };
        let ran = HookRan {
            name: name.to_owned(),
            exit_code,
            duration_ms,
        };
        (Some(ran), result.map(|_| ()))
    }
}

/// Kamal's `KAMAL_*` variables for a hook of this plan.
pub fn hook_context<T: Transport>(ctx: &Context<'_, T>, plan: &Plan, command: &str) -> HookContext {
    hook_context_for(ctx.config, &ctx.actor, plan, command)
}

/// [`hook_context`] before anything is connected.
pub fn hook_context_for(config: &Config, actor: &str, plan: &Plan, command: &str) -> HookContext {
    HookContext {
        service: config.service.clone(),
        version: plan.release.version.clone(),
        destination: config.destination.clone(),
        hosts: plan.hosts.iter().map(|h| h.host.clone()).collect(),
        roles: config.servers.iter().map(|r| r.name.clone()).collect(),
        command: command.to_owned(),
        subcommand: None,
        performer: actor.to_owned(),
        recorded_at: Timestamp::now().to_string(),
        runtime: None,
    }
}

/// sha256 of the resolved config as `flotilla config --json` prints it (secrets redacted).
pub fn config_digest(config: &Config) -> String {
    use sha2::{Digest, Sha256};
    let json = flotilla_deploy::config::output::to_json(config).unwrap_or_default();
    format!("sha256:{}", hex::encode(Sha256::digest(json.as_bytes())))
}
