//! `x-flotilla.rollout.auto_rollback`: after a failed deploy, and still under its lock, the
//! hosts that started the failed version go back to the last good release.

use crate::rollout::{RolloutRequest, Session, config_digest, policy, record};
use flotilla_events::event::DeployKind;
use flotilla_events::{DeployId, Envelope, Event, EventLog};
use flotilla_scheduler::engine::{DeployRun, Engine, RunOutcome};
use flotilla_scheduler::rollout::{Amount, Policy};
use std::time::Duration;

/// What an automatic rollback did.
#[derive(Debug)]
pub struct RolledBack {
    pub deploy_id: DeployId,
    pub version: String,
    pub outcome: RunOutcome,
}

/// `x-flotilla.rollout.auto_rollback`: every host that started the new version goes back to
/// the last good release, by digest, as a rollback deploy of its own in the log.
pub async fn auto_rollback(
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
