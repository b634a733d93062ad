//! Kamal's state-changing app commands other than a rollout (`app start|stop|remove`, `prune
//! containers`) as a procedure: planned as data (`plans::operation_plan`), run by the hosts'
//! executors as signed jobs through the same engine as a deploy, recorded by whoever runs the
//! procedure (the CLI in embedded mode, the service in service mode) as the operation it is:
//!
//! ```text
//! lock -> OperationStarted, LockAcquired -> jobs on every host at once
//!      -> each host's OperationSucceeded/OperationFailed, OperationFinished -> unlock
//! ```
//!
//! Kamal runs no hooks around these, and neither does this.

use super::{Context, Finished, ProcedureError, lock_as, record};
use crate::engine::{DeployRun, RunOutcome};
use crate::rollout::{Amount, Policy};
use crate::transport::{HeldLock, Transport};
use flotilla_deploy::plan::Plan;
use flotilla_events::event::{
    DeployKind, LockAcquired, LockReleased, Operation, OperationFinished, OperationStarted,
    ProxyAction,
};
use flotilla_events::{DeployId, Envelope};
use flotilla_protocol::text::error_chain;
use tokio_util::sync::CancellationToken;

/// One operation to run: its plan and what it is.
#[derive(Debug, Clone)]
pub struct OperationRequest {
    pub plan: Plan,
    pub operation: Operation,
    /// The id its events share (`flotilla replay ID`).
    pub deploy_id: DeployId,
}

/// Runs `req` from lock to outcome. The hosts' outcome is in [`Finished::outcome`]; an error
/// that stopped it after it was recorded is recorded too (`OperationFinished` with every
/// host failed, after a `DeployFailed` with the reason), so the log says how it ended.
pub async fn operate<T: Transport>(
    ctx: &Context<'_, T>,
    req: &OperationRequest,
    watch: &mut dyn FnMut(&Envelope),
    cancel: &CancellationToken,
) -> Result<Finished, ProcedureError> {
    let engine = ctx.engine();
    let message = req.operation.to_string();
    let version = Some(req.plan.release.version.clone()).filter(|v| !v.is_empty());
    let lock = lock_as(ctx, message, version, &req.deploy_id).await?;
    let hosts: Vec<String> = req.plan.hosts.iter().map(|h| h.host.clone()).collect();
    let started = OperationStarted {
        operation: req.operation.clone(),
        service: req.plan.service.clone(),
        destination: req.plan.destination.clone(),
        hosts: hosts.clone(),
    };
    let acquired = LockAcquired {
        holder: ctx.actor.clone(),
    };
    let recorded = record(ctx, &req.deploy_id, started.into(), watch)
        .and_then(|()| record(ctx, &req.deploy_id, acquired.into(), watch));
    if let Err(e) = recorded {
        if let Err(released) = lock.release().await {
            tracing::warn!(error = %released, "releasing the deploy lock");
        }
        return Err(e);
    }
    let began = tokio::time::Instant::now();
    let ran: Result<RunOutcome, ProcedureError> = engine
        .run_operation(run(ctx, req), &req.operation, watch, cancel)
        .await
        .map_err(ProcedureError::from);
    let released = lock.release().await;
    let event = LockReleased {
        holder: ctx.actor.clone(),
    };
    record(ctx, &req.deploy_id, event.into(), watch)?;
    if let Err(e) = released {
        tracing::warn!(error = %e, "releasing the deploy lock");
    }
    match ran {
        Ok(outcome) => Ok(Finished {
            outcome,
            took: began.elapsed(),
            rolled_back: None,
        }),
        Err(e) => {
            let failed = flotilla_events::event::DeployFailed {
                reason: error_chain(&e),
            };
            record(ctx, &req.deploy_id, failed.into(), watch)?;
            let finished = OperationFinished {
                operation: req.operation.clone(),
                failed: hosts,
            };
            record(ctx, &req.deploy_id, finished.into(), watch)?;
            Err(e)
        }
    }
}

/// The engine's view of an operation: every host at once (Kamal's), each attempted whatever
/// the others do, each step bounded by `step_timeout` as in a deploy; `proxy reboot
/// --rolling` one host at a time, stopping at the first that fails.
fn run<'a, T: Transport>(ctx: &Context<'a, T>, req: &OperationRequest) -> DeployRun<'a> {
    let deploy = super::policy(ctx.config);
    let rolling = matches!(
        req.operation,
        Operation::Proxy {
            action: ProxyAction::RebootRolling
        }
    );
    DeployRun {
        config: ctx.config,
        plan: req.plan.clone(),
        deploy_id: req.deploy_id.clone(),
        kind: DeployKind::Deploy,
        actor: ctx.actor.clone(),
        config_digest: super::config_digest(ctx.config),
        policy: Policy {
            batch: rolling.then_some(Amount::Count(1)),
            batch_wait: std::time::Duration::ZERO,
            canary: 0,
            max_parallel: deploy.max_parallel,
            // None: the first failure stops the rolling reboot.
            max_failures: (!rolling).then_some(Amount::Percent(100)),
            step_timeout: deploy.step_timeout,
        },
        heartbeat_wait: ctx.heartbeat_wait,
    }
}
