//! Running a deploy procedure from the command line: connect, render each event as it lands,
//! cancel on Ctrl-C or SIGTERM, print the summary and choose the exit code. The procedure
//! itself (lock, record, hooks, roll out, auto-rollback, unlock) is the scheduler's
//! `procedure` library; nothing here decides anything about a deploy.

use crate::exit::{FAILED, USAGE, UserError};
use crate::progress::{Mode, Progress};
pub use crate::session::{FleetArgs, Session, nats_endpoint, scheduler_key};
use flotilla_events::projection::{DeployState, HostStatus};
use flotilla_protocol::signing::JobSigner;
use flotilla_scheduler::procedure::{
    self, Context, Finished, HEARTBEAT_WAIT, Hooks, OperationRequest, PlanError, ProcedureError,
    Request,
};
use flotilla_scheduler::rollout::Outcome;
use flotilla_scheduler::transport::lock::LockError;
use flotilla_scheduler::transport::nats::{ConnectError, NatsTransport};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Connects to the fleet's NATS (through an SSH tunnel to the control host when setup
/// booted it), or says what to check. The session keeps the tunnel open.
pub async fn connect(s: &Session) -> anyhow::Result<NatsTransport> {
    let endpoint = nats_endpoint(&s.config).await?;
    let transport = endpoint.transport().await.map_err(|e: ConnectError| {
        let (message, hint) = if endpoint.tunnelled() {
            (
                "cannot reach NATS on the control host through the SSH tunnel".to_owned(),
                "is NATS running there? `flotilla setup` boots it",
            )
        } else {
            (
                format!("cannot reach NATS at {}", endpoint.url),
                "is the NATS server running and x-flotilla.nats.url right?",
            )
        };
        anyhow::Error::new(e).context(UserError {
            message,
            hint: Some(hint.into()),
            code: FAILED,
        })
    })?;
    if let Ok(mut held) = s.nats.lock() {
        *held = Some(endpoint);
    }
    Ok(transport)
}

/// The procedure's context for this session.
pub fn context<'a>(
    s: &'a Session,
    transport: &'a NatsTransport,
    signer: &'a JobSigner,
) -> Context<'a, NatsTransport> {
    Context {
        config: &s.config,
        root: &s.root,
        log: &s.log,
        transport,
        signer,
        actor: s.actor.clone(),
        machine: hostname(),
        skip_hooks: s.args.skip_hooks,
        lock_wait: s.args.lock_wait.map(Duration::from_secs),
        heartbeat_wait: HEARTBEAT_WAIT,
        notices: &|notice| eprintln!("flotilla: {notice}"),
        // Embedded: the local log is the only copy.
        stored: None,
    }
}

/// The project's hooks, for those that run before anything is connected.
pub fn hooks(s: &Session) -> Hooks<'_> {
    Hooks {
        config: &s.config,
        root: &s.root,
        skip: s.args.skip_hooks,
    }
}

/// Runs a hook before anything is connected (`pre-connect`, `pre-build`); a failure stops.
pub async fn early_hook(
    s: &Session,
    name: &str,
    hook_ctx: &flotilla_scheduler::hooks::HookContext,
) -> anyhow::Result<()> {
    let (_, result) = hooks(s).run(name, hook_ctx).await;
    result.map_err(|e| user_error(ProcedureError::Hook(e)))
}

/// Runs `req` through the procedure and reports it: the exit result for the CLI.
pub async fn run_rollout(s: &Session, req: Request) -> anyhow::Result<()> {
    let transport = connect(s).await?;
    let signer = scheduler_key(&s.root)?;
    let mut progress = Progress::new(
        Mode::choose(s.args.json, s.args.quiet),
        req.deploy_id.clone(),
    );
    // `x-flotilla.metrics.listen`: the log's metrics so far, then each event, while this runs.
    let listen = s
        .config
        .flotilla
        .metrics
        .as_ref()
        .map(|m| m.listen.as_str());
    let metrics = flotilla_scheduler::metrics::Live::start(listen, &s.log, Some(&s.args.log))
        .await
        .unwrap_or_else(|e| {
            eprintln!("flotilla: warning: {e}; this run serves no metrics");
            flotilla_scheduler::metrics::Live::default()
        });
    let traces = start_traces(s);
    let cancel = cancel_on_signal();
    let ctx = context(s, &transport, &signer);
    let mut watch = |e: &flotilla_events::Envelope| {
        progress.on_event(e);
        metrics.observe(e);
        traces.observe(e);
    };
    let finished = procedure::run(&ctx, &req, &mut watch, &cancel).await;
    if let Some(e) = traces.finish().await {
        eprintln!(
            "flotilla: warning: {e}; `flotilla replay {} --otlp` sends the trace again",
            req.deploy_id
        );
    }
    let finished = finished.map_err(|e| rollout_error(e, &s.log))?;
    if let Some(r) = &finished.rolled_back {
        eprintln!(
            "auto_rollback: {} host(s) back on {} (deploy {}), {} failed",
            r.outcome.succeeded.len(),
            r.version,
            r.deploy_id,
            r.outcome.failed.len()
        );
    }
    summarize(&req, &finished, progress.state())
}

/// Runs an app operation (`app stop`, `prune containers`) through the procedure and reports
/// it: each host's outcome as it lands, a summary, the exit result.
pub async fn run_operation(s: &Session, req: OperationRequest) -> anyhow::Result<()> {
    let transport = connect(s).await?;
    let signer = scheduler_key(&s.root)?;
    let mut progress = Progress::new(
        Mode::choose(s.args.json, s.args.quiet),
        req.deploy_id.clone(),
    );
    let cancel = cancel_on_signal();
    let ctx = context(s, &transport, &signer);
    let mut watch = |e: &flotilla_events::Envelope| progress.on_event(e);
    let finished = procedure::operate(&ctx, &req, &mut watch, &cancel)
        .await
        .map_err(|e| rollout_error(e, &s.log))?;
    let id = &req.deploy_id;
    let outcome = &finished.outcome;
    eprintln!(
        "{} of {}: {} host(s) succeeded, {} failed, in {:.1}s (operation {id})",
        req.operation,
        req.plan.service,
        outcome.succeeded.len(),
        outcome.failed.len(),
        finished.took.as_secs_f64()
    );
    if outcome.failed.is_empty() {
        return Ok(());
    }
    for host in &outcome.failed {
        if let Some(h) = progress.state().hosts.get(host)
            && let HostStatus::Failed { step, error } = &h.status
        {
            eprintln!("  {host}: failed at {step:?}: {error}");
        }
    }
    Err(UserError {
        message: format!("{} failed on {}", req.operation, outcome.failed.join(", ")),
        hint: Some(format!("see `flotilla replay {id}`")),
        code: FAILED,
    }
    .into())
}

/// The live trace export: to `x-flotilla.otel.endpoint`, else the standard OTLP variables;
/// nothing when neither is set (a bad endpoint is a warning, not a failed deploy).
fn start_traces(s: &Session) -> flotilla_scheduler::trace::live::Live {
    use flotilla_scheduler::trace::live::{Live, endpoint};
    let configured = s.config.flotilla.otel.as_ref().map(|o| o.endpoint.as_str());
    match endpoint(configured, |k| std::env::var(k).ok()) {
        Some(Ok(e)) => Live::start(Some(e)),
        Some(Err(e)) => {
            eprintln!("flotilla: warning: {e}; this run sends no traces");
            Live::default()
        }
        None => Live::default(),
    }
}

/// A token cancelled by the first SIGINT or SIGTERM: the procedure stops dispatching, lets
/// running steps finish, records `DeployCancelled` and releases the lock. A second signal
/// ends the process at once.
fn cancel_on_signal() -> CancellationToken {
    let cancel = CancellationToken::new();
    let token = cancel.clone();
    tokio::spawn(async move {
        crate::lifecycle::shutdown_signal().await;
        eprintln!(
            "flotilla: cancelling: no host starts now; running steps finish (signal again to stop at once)"
        );
        token.cancel();
        crate::lifecycle::shutdown_signal().await;
        std::process::exit(130);
    });
    cancel
}

/// A procedure error as the user should see it, with what to do next.
pub fn user_error(e: ProcedureError) -> anyhow::Error {
    let (message, hint, code) = match &e {
        ProcedureError::Lock(
            LockError::Held { info, .. } | LockError::WaitTimedOut { info, .. },
        ) => (
            "the deploy lock is taken".to_owned(),
            lock_hint(info),
            FAILED,
        ),
        ProcedureError::Hook(h) => {
            if let Some(output) = h.output() {
                eprintln!("{}", output.trim_end());
            }
            let name = match h {
                flotilla_scheduler::hooks::HookError::Failed { name, .. } => name.as_str(),
                flotilla_scheduler::hooks::HookError::Spawn { .. } => "the hook",
            };
            (
                "stopped by a hook".to_owned(),
                format!("fix what {name} reports, or skip hooks with -H"),
                FAILED,
            )
        }
        ProcedureError::Plan(p) => ("nothing to roll out".to_owned(), p.hint().to_owned(), USAGE),
        _ => return anyhow::Error::new(e),
    };
    anyhow::Error::new(e).context(UserError {
        message,
        hint: Some(hint),
        code,
    })
}

/// [`user_error`], told by the event log this process holds which deploys are dead: a lock
/// refused to us but held by a deploy of this log that has no outcome belongs to a process
/// that is gone, since a live one would hold this log open (the log admits one process at a
/// time) and we could not have opened it. That deploy is named, with the command that
/// resumes it now (a resume takes its own deploy's lock over) instead of a minute's wait.
fn rollout_error(e: ProcedureError, log: &flotilla_events::SledLog) -> anyhow::Error {
    let dead = match &e {
        ProcedureError::Lock(
            LockError::Held { info, .. } | LockError::WaitTimedOut { info, .. },
        ) => info
            .deploy_id
            .as_deref()
            .filter(|id| interrupted_in(log, id))
            .map(|id| (id.to_owned(), (**info).clone())),
        _ => None,
    };
    let Some((id, info)) = dead else {
        return user_error(e);
    };
    anyhow::Error::new(e).context(UserError {
        message: dead_holder_message(&id, &info),
        hint: Some(format!(
            "resume it with `flotilla replay {id} --resume`; or wait: its lock frees itself \
             within {}s",
            lock_left_s(&info)
        )),
        code: FAILED,
    })
}

/// Whether deploy `id` is in `log` with no outcome. A log that cannot be read says no: the
/// refusal then gives the general hint.
fn interrupted_in(log: &flotilla_events::SledLog, id: &str) -> bool {
    flotilla_events::projection::Projections::rebuild(log).is_ok_and(|p| {
        p.releases
            .by_deploy(&flotilla_events::DeployId::from(id))
            .is_some_and(|r| r.outcome == flotilla_events::projection::Outcome::InProgress)
    })
}

fn dead_holder_message(id: &str, info: &flotilla_scheduler::transport::lock::LockInfo) -> String {
    format!(
        "the deploy lock is held by deploy {id} ({} on {}, since {}), which was interrupted: \
         its process is gone",
        info.holder, info.machine, info.acquired_at
    )
}

/// Seconds until a renewed lock expires by itself (0 once it has).
fn lock_left_s(info: &flotilla_scheduler::transport::lock::LockInfo) -> u64 {
    info.expires_at_ms.map_or(0, |at| {
        (at.saturating_sub(flotilla_events::Timestamp::now().unix_ms())
            .max(0) as u64)
            .div_ceil(1000)
    })
}

/// What to do about a held lock: a deploy's lock expires by itself when its process died
/// (it is renewed while the deploy runs), and that deploy can be resumed; a lock taken by
/// hand stays until released.
fn lock_hint(info: &flotilla_scheduler::transport::lock::LockInfo) -> String {
    match (&info.deploy_id, info.expires_at_ms) {
        (Some(id), Some(at)) => {
            let left_ms = at
                .saturating_sub(flotilla_events::Timestamp::now().unix_ms())
                .max(0) as u64;
            format!(
                "deploy {id} holds it; if its process is gone the lock frees itself within {}s, \
                 then `flotilla replay {id} --resume` continues that deploy; or wait with \
                 --lock-wait SECONDS",
                left_ms.div_ceil(1000)
            )
        }
        _ => "wait for it with --lock-wait SECONDS, or see `flotilla lock status` \
              (`flotilla lock release` frees a lock taken by hand)"
            .to_owned(),
    }
}

/// A planning error as the user should see it.
pub fn plan_error(e: PlanError) -> anyhow::Error {
    user_error(ProcedureError::Plan(e))
}

fn summarize(req: &Request, finished: &Finished, state: &DeployState) -> anyhow::Result<()> {
    let id = &req.deploy_id;
    let outcome = &finished.outcome;
    let done = outcome.succeeded.len() + outcome.already_done.len();
    eprintln!(
        "{} {} of {}: {done} host(s) succeeded, {} failed, in {:.1}s (deploy {id})",
        req.command,
        req.plan.service,
        req.plan.release.version,
        outcome.failed.len(),
        finished.took.as_secs_f64()
    );
    if outcome.outcome == Outcome::Succeeded {
        return Ok(());
    }
    for host in &outcome.failed {
        if let Some(h) = state.hosts.get(host)
            && let HostStatus::Failed { step, error } = &h.status
        {
            eprintln!("  {host}: failed at {step:?}: {error}");
        }
    }
    let why = match (&outcome.cancelled, &outcome.outcome) {
        (Some(reason), _) => reason.clone(),
        (None, Outcome::Failed { reason, .. }) => reason.clone(),
        (None, Outcome::Degraded { .. }) => "some hosts failed within max_failures".into(),
        (None, Outcome::Succeeded) => String::new(),
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

/// This machine's name, for the lock holder and the service's log lines.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}
