//! `x-flotilla.rollout.auto_rollback`: after a failed deploy, and still under its lock, every
//! host that started the failed version goes back to the last good release, by digest, as a
//! rollback deploy of its own in the log.

use super::{Context, ProcedureError, Request, deploy_run, record};
use crate::engine::{Engine, RunOutcome};
use crate::rollout::{Amount, Policy};
use crate::transport::Transport;
use flotilla_deploy::plan::{PlanContext, Release, plan};
use flotilla_events::event::{DeployKind, RollbackStarted};
use flotilla_events::projection::{Projections, ReleaseTarget};
use flotilla_events::{DeployId, Envelope, Event};
use tokio_util::sync::CancellationToken;

/// What an automatic rollback did.
#[derive(Debug)]
pub struct RolledBack {
    pub deploy_id: DeployId,
    pub version: String,
    pub outcome: RunOutcome,
}

/// Rolls the hosts the failed deploy touched back to the last good release; `None` when there
/// is none to go back to, or no host started the failed version.
pub(super) async fn run<T: Transport>(
    ctx: &Context<'_, T>,
    engine: &Engine<'_, T>,
    failed: &Request,
    watch: &mut dyn FnMut(&Envelope),
    cancel: &CancellationToken,
) -> Result<Option<RolledBack>, ProcedureError> {
    let Some(req) = rollback_request(ctx, failed)? else {
        return Ok(None);
    };
    let mut run = deploy_run(ctx, &req);
    // Roll back everywhere at once, whatever failed: every host should return.
    run.policy = Policy {
        max_failures: Some(Amount::Percent(100)),
        canary: 0,
        ..run.policy
    };
    engine.request(&run, watch)?;
    for event in req.preamble.iter().cloned() {
        record(ctx, &req.deploy_id, event, watch)?;
    }
    let outcome = engine.run(run, watch, cancel).await?;
    Ok(Some(RolledBack {
        deploy_id: req.deploy_id,
        version: req.plan.release.version,
        outcome,
    }))
}

/// The rollback deploy: the last good release by digest, on the hosts that started a
/// container of the failed version (they may be serving it).
fn rollback_request<T: Transport>(
    ctx: &Context<'_, T>,
    failed: &Request,
) -> Result<Option<Request>, ProcedureError> {
    let config = ctx.config;
    let projections = Projections::rebuild(ctx.log)?;
    let target = ReleaseTarget::new(&config.service, config.destination.as_deref());
    let Some(previous) = projections.releases.last_good(&target) else {
        tracing::warn!("auto_rollback: no earlier good release to go back to");
        return Ok(None);
    };
    let Some(image) = super::plans::release_image(config, previous) else {
        tracing::warn!(version = %previous.version, "auto_rollback: release recorded no digest");
        return Ok(None);
    };
    let touched: Vec<String> = ctx
        .log
        .read_deploy(&failed.deploy_id)?
        .iter()
        .filter(|e| matches!(e.event, Event::ContainerStarted(_)))
        .filter_map(|e| e.host.clone())
        .collect();
    let release = Release {
        version: previous.version.clone(),
        image: format!("{}@{}", config.repository(), image.digest),
    };
    let mut plan = plan(config, &release, &PlanContext::default());
    plan.hosts.retain(|h| touched.contains(&h.host));
    if plan.hosts.is_empty() {
        return Ok(None);
    }
    let started = RollbackStarted {
        from_version: Some(failed.plan.release.version.clone()),
        to_version: previous.version.clone(),
        reason: format!("auto_rollback: deploy {} failed", failed.deploy_id),
    };
    Ok(Some(Request {
        plan,
        kind: DeployKind::Rollback,
        deploy_id: DeployId::new(),
        resume: false,
        preamble: vec![started.into()],
        command: "rollback",
    }))
}
