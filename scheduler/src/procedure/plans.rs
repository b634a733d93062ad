//! The domain decisions before a rollout, as data the tests inspect: the rollout policy from
//! the config, which containers pruning must keep (rollback targets), what a deploy, a
//! rollback or a resume rolls out. Reads the log; runs nothing.

use crate::rollout::{Amount, Policy};
use flotilla_deploy::Config;
use flotilla_deploy::config::types::HostCount;
use flotilla_deploy::plan::{
    AccessoryFiles, AccessoryOperation, AccessoryPlanError, AppOperation, Plan, PlanContext,
    ProxyOperation, Release, accessory_plan, container_name, operation_plan as app_plan, plan,
    proxy_plan,
};
use flotilla_events::event::{
    AccessoryAction, DeployKind, Operation, ProxyAction, RollbackStarted,
};
use flotilla_events::projection::{Projections, ReleaseTarget};
use flotilla_events::{DeployId, Event, EventLog, LogError};
use std::collections::BTreeMap;
use std::time::Duration;

/// A rollout that cannot be planned, with what the user can do about it.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("no good release of version {0} in the event log")]
    NoSuchRelease(String),
    #[error("no earlier good release to roll back to")]
    NoEarlierRelease,
    #[error("release {0} recorded no image digest")]
    NoDigest(String),
    #[error("no deploy {0} in the event log")]
    UnknownDeploy(String),
    #[error("deploy {0} has no DeployRequested event: nothing to resume")]
    NotResumable(String),
    #[error("deploy {0} already completed: nothing to resume")]
    AlreadyCompleted(String),
    #[error(
        "deploy {id} was superseded by deploy {newer} ({version}): resuming it would roll hosts back"
    )]
    Superseded {
        id: String,
        newer: String,
        version: String,
    },
    #[error("no release of {0} in the event log to start")]
    NothingToStart(String),
    #[error("no release of {0} runs, by the event log: every running container would be stale")]
    NothingRunning(String),
    #[error("{0} is not run through the executors")]
    NotPlanned(String),
    #[error(transparent)]
    Accessory(#[from] AccessoryPlanError),
    #[error(transparent)]
    ProxyRun(#[from] flotilla_protocol::proxy_run::ProxyRunError),
    #[error("event log")]
    Log(#[from] LogError),
}

impl PlanError {
    /// What to do next, for the user.
    pub fn hint(&self) -> &'static str {
        match self {
            PlanError::NoSuchRelease(_) | PlanError::NoEarlierRelease => {
                "see the releases with `flotilla history`"
            }
            PlanError::NoDigest(_) => {
                "roll back by deploying that version: flotilla deploy -P --version VERSION"
            }
            PlanError::UnknownDeploy(_) | PlanError::NotResumable(_) => {
                "list deploys with `flotilla history`"
            }
            PlanError::AlreadyCompleted(_) => "see it with `flotilla replay ID`",
            PlanError::Superseded { .. } => {
                "deploy the version you want with `flotilla deploy`, or go back with `flotilla rollback`"
            }
            PlanError::NothingToStart(_) => "name it: flotilla app start --version VERSION",
            PlanError::NothingRunning(_) => "deploy or start a release first: flotilla app start",
            PlanError::NotPlanned(_) => "run it from the CLI in embedded mode",
            PlanError::Accessory(AccessoryPlanError::Unknown(_)) => {
                "see the accessories with `flotilla config`"
            }
            PlanError::Accessory(AccessoryPlanError::FileNotRead { .. }) => {
                "files: paths are relative to the project directory"
            }
            PlanError::ProxyRun(_) => "fix proxy.run in config/deploy.yml (`flotilla docs proxy`)",
            PlanError::Log(_) => "see `flotilla events --salvage`",
        }
    }
}

/// Kamal's `-h`, `-r`, `-p`: which hosts a command touches.
#[derive(Debug, Clone, Default)]
pub struct Narrow {
    pub hosts: Vec<String>,
    pub roles: Vec<String>,
    /// Only the first host of the primary role.
    pub primary: bool,
}

impl Narrow {
    pub fn apply(&self, plan: Plan, primary_role: &str) -> Plan {
        let mut plan = plan.filtered(&self.hosts, &self.roles);
        if self.primary {
            let first = plan
                .hosts
                .iter()
                .find(|h| h.roles.iter().any(|r| r == primary_role))
                .map(|h| h.host.clone());
            plan.hosts.retain(|h| Some(&h.host) == first.as_ref());
        }
        plan
    }
}

/// The rollout policy from `boot:` and `x-flotilla.rollout:`.
pub fn policy(config: &Config) -> Policy {
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
        max_failures: match r.max_failures {
            HostCount::Count(0) | HostCount::Percent(0) => None,
            other => Some(amount(other)),
        },
        step_timeout: Some(Duration::from_secs(r.step_timeout)),
    }
}

/// The containers pruning must keep: those of the last good release, the rollback target.
pub fn protected(config: &Config, log: &dyn EventLog) -> Result<PlanContext, LogError> {
    let projections = Projections::rebuild(log)?;
    let target = ReleaseTarget::new(&config.service, config.destination.as_deref());
    let protected = projections
        .releases
        .last_good(&target)
        .map(|r| {
            r.images
                .keys()
                .map(|role| {
                    container_name(
                        &config.service,
                        role,
                        config.destination.as_deref(),
                        &r.version,
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(PlanContext { protected })
}

/// The images `prune images` keeps whatever uses them: `rollback`'s target's, and the last
/// good release's (whose containers `protected` keeps), each by the digest it ran and by its
/// tag: a rollback pulls nothing it still has.
fn protected_images(config: &Config, log: &dyn EventLog) -> Result<Vec<String>, LogError> {
    let projections = Projections::rebuild(log)?;
    let target = ReleaseTarget::new(&config.service, config.destination.as_deref());
    let repository = config.repository();
    let releases = [
        projections.releases.rollback_target(&target, None),
        projections.releases.last_good(&target),
    ];
    let mut images = Vec::new();
    for release in releases.into_iter().flatten() {
        images.extend(
            release
                .images
                .values()
                .map(|i| format!("{repository}@{}", i.digest)),
        );
        images.push(format!("{repository}:{}", release.version));
    }
    images.sort();
    images.dedup();
    Ok(images)
}

/// What `deploy VERSION` rolls out: the tag just pushed (or already there with `-P`).
pub fn deploy_plan(
    config: &Config,
    log: &dyn EventLog,
    version: &str,
    narrow: &Narrow,
) -> Result<Plan, PlanError> {
    let release = Release {
        version: version.to_owned(),
        image: format!("{}:{version}", config.repository()),
    };
    let planned = plan(config, &release, &protected(config, log)?);
    Ok(narrow.apply(planned, &config.primary_role))
}

/// What an operation (`app start|stop|remove`, `prune containers`, `accessory reboot db`)
/// does on each host: `app start` without a version starts the newest release's containers,
/// and pruning keeps the last good release's (the rollback target) whatever `retain` says.
/// An accessory's operation runs on the accessory's hosts (Kamal's `-h`/`-r` do not narrow
/// it), with `files` its rendered `files:`.
pub fn operation_plan(
    config: &Config,
    log: &dyn EventLog,
    operation: &Operation,
    narrow: &Narrow,
    files: &AccessoryFiles,
) -> Result<Plan, PlanError> {
    let app = match operation {
        Operation::Accessory { name, action } => {
            let operation = match action {
                AccessoryAction::Boot => AccessoryOperation::Boot,
                // Upgrade moves a Kamal 1 accessory onto the `kamal` network: a reboot,
                // whose boot makes the network first.
                AccessoryAction::Reboot | AccessoryAction::Upgrade => AccessoryOperation::Reboot,
                AccessoryAction::Start => AccessoryOperation::Start,
                AccessoryAction::Stop => AccessoryOperation::Stop,
                AccessoryAction::Restart => AccessoryOperation::Restart,
                AccessoryAction::Remove => AccessoryOperation::Remove,
            };
            return Ok(accessory_plan(config, name, operation, files)?);
        }
        Operation::Proxy { action } => {
            let proxy = match action {
                ProxyAction::Start => ProxyOperation::Start,
                ProxyAction::Stop => ProxyOperation::Stop,
                ProxyAction::Restart => ProxyOperation::Restart,
                ProxyAction::Remove => ProxyOperation::Remove,
                ProxyAction::Boot => ProxyOperation::Boot,
                ProxyAction::Reboot | ProxyAction::RebootRolling => ProxyOperation::Reboot,
            };
            return Ok(narrow.apply(proxy_plan(config, proxy)?, &config.primary_role));
        }
        Operation::AppStart { version } => {
            let version = match version {
                Some(v) => v.clone(),
                None => {
                    let projections = Projections::rebuild(log)?;
                    let target = ReleaseTarget::new(&config.service, config.destination.as_deref());
                    projections
                        .releases
                        .of(&target)
                        .next_back()
                        .map(|r| r.version.clone())
                        .ok_or_else(|| PlanError::NothingToStart(config.service.clone()))?
                }
            };
            AppOperation::Start { version }
        }
        Operation::AppStop => AppOperation::Stop,
        Operation::AppMaintenance { message } => AppOperation::Maintenance {
            message: message.clone(),
        },
        Operation::AppLive => AppOperation::Live,
        Operation::AppRemove => AppOperation::Remove,
        Operation::Prune {
            containers: true,
            images: false,
            retain,
        } => AppOperation::PruneContainers {
            retain: *retain,
            protected: protected(config, log)?.protected,
        },
        Operation::Prune {
            containers: false,
            images: true,
            ..
        } => AppOperation::PruneImages {
            protected_images: protected_images(config, log)?,
        },
        Operation::Prune {
            containers: true,
            images: true,
            retain,
        } => AppOperation::PruneAll {
            retain: *retain,
            protected: protected(config, log)?.protected,
            protected_images: protected_images(config, log)?,
        },
        Operation::StaleContainersStop => {
            let projections = Projections::rebuild(log)?;
            let target = ReleaseTarget::new(&config.service, config.destination.as_deref());
            if projections.releases.running(&target).is_none() {
                return Err(PlanError::NothingRunning(config.service.clone()));
            }
            // Per host, the newest release that succeeded there: a host a later deploy failed
            // on still serves the version before it, which is not stale there.
            let mut keep = BTreeMap::new();
            for release in projections.releases.of(&target) {
                for host in &release.succeeded_hosts {
                    keep.insert(host.clone(), release.version.clone());
                }
            }
            AppOperation::StopStale { keep }
        }
        other => return Err(PlanError::NotPlanned(other.to_string())),
    };
    Ok(narrow.apply(app_plan(config, &app), &config.primary_role))
}

/// What `rollback [VERSION]` rolls out: that good release (default: the last good one before
/// the current), by the exact digest it ran (the tag may have been pushed again since), and
/// the `RollbackStarted` that records why.
pub fn rollback_plan(
    config: &Config,
    log: &dyn EventLog,
    version: Option<&str>,
    narrow: &Narrow,
) -> Result<(Plan, RollbackStarted), PlanError> {
    let projections = Projections::rebuild(log)?;
    let target = ReleaseTarget::new(&config.service, config.destination.as_deref());
    // What runs now: nothing after an `app stop` or `app remove` of every host.
    let current = projections
        .releases
        .running(&target)
        .map(|r| r.version.clone());
    let to = projections
        .releases
        .rollback_target(&target, version)
        .ok_or_else(|| match version {
            Some(v) => PlanError::NoSuchRelease(v.to_owned()),
            None => PlanError::NoEarlierRelease,
        })?;
    let image = release_image(config, to).ok_or_else(|| PlanError::NoDigest(to.version.clone()))?;
    let release = Release {
        version: to.version.clone(),
        image: format!("{}@{}", config.repository(), image.digest),
    };
    let planned = plan(config, &release, &protected(config, log)?);
    let started = RollbackStarted {
        from_version: current,
        to_version: to.version.clone(),
        reason: "requested".into(),
    };
    Ok((narrow.apply(planned, &config.primary_role), started))
}

/// The image a release ran, by digest: its primary role's, else any role's.
pub fn release_image<'r>(
    config: &Config,
    release: &'r flotilla_events::projection::Release,
) -> Option<&'r flotilla_events::projection::ImageRef> {
    release
        .images
        .get(&config.primary_role)
        .or_else(|| release.images.values().next())
}

/// What `replay ID --resume` rolls out: the deploy's own hosts and its exact image — the
/// digest a host pulled, else the digest pushed, else (nothing pulled or pushed yet) the tag.
pub fn resume_plan(
    config: &Config,
    log: &dyn EventLog,
    id: &str,
) -> Result<(Plan, DeployKind), PlanError> {
    let events = log.read_deploy(&DeployId::from(id))?;
    if events.is_empty() {
        return Err(PlanError::UnknownDeploy(id.to_owned()));
    }
    let request = events
        .iter()
        .find_map(|e| match &e.event {
            Event::DeployRequested(r) => Some(r.clone()),
            _ => None,
        })
        .ok_or_else(|| PlanError::NotResumable(id.to_owned()))?;
    if events
        .iter()
        .any(|e| matches!(e.event, Event::DeployCompleted(_)))
    {
        return Err(PlanError::AlreadyCompleted(id.to_owned()));
    }
    if let Some((newer, version)) = newer_deploy(log, &events, &request)? {
        return Err(PlanError::Superseded {
            id: id.to_owned(),
            newer,
            version,
        });
    }
    let digest = |want_pulled: bool| {
        events.iter().find_map(|e| match &e.event {
            Event::ImagePulled(p) if want_pulled => Some(p.digest.clone()),
            Event::ImagePushed(p) if !want_pulled => Some(p.digest.clone()),
            _ => None,
        })
    };
    let image = match digest(true).or_else(|| digest(false)) {
        Some(d) if d.starts_with("sha256:") => format!("{}@{d}", config.repository()),
        _ => format!("{}:{}", config.repository(), request.version),
    };
    let release = Release {
        version: request.version.clone(),
        image,
    };
    let mut planned = plan(config, &release, &protected(config, log)?);
    planned
        .hosts
        .retain(|h| request.hosts.iter().any(|p| p.host == h.host));
    Ok((planned, request.kind))
}

/// A deploy or rollback of the same service and destination requested after this one: what
/// the hosts run now is its business, not this deploy's.
fn newer_deploy(
    log: &dyn EventLog,
    events: &[flotilla_events::Envelope],
    request: &flotilla_events::event::DeployRequested,
) -> Result<Option<(String, String)>, LogError> {
    let Some(first) = events.first() else {
        return Ok(None);
    };
    for e in log.read_from(first.seq + 1)? {
        let e = e?;
        if let Event::DeployRequested(r) = &e.event
            && e.deploy_id != first.deploy_id
            && r.kind != DeployKind::Accessory
            && r.service == request.service
            && r.destination == request.destination
        {
            return Ok(Some((e.deploy_id.to_string(), r.version.clone())));
        }
    }
    Ok(None)
}
