//! `flotilla rollback [VERSION]`: deploy an earlier release again, by its exact image digest.

use crate::commands::deploy::{narrowed, protected};
use crate::exit::{USAGE, UserError};
use crate::rollout::{self, FleetArgs, RolloutRequest, Session};
use clap::Args;
use flotilla_deploy::plan::{Release, plan};
use flotilla_events::DeployId;
use flotilla_events::event::{DeployKind, RollbackStarted};
use flotilla_events::projection::{Projections, ReleaseTarget};

const EXAMPLES: &str = "Examples:
  flotilla rollback            # the last good release before the current one
  flotilla rollback v41        # that release, by the digest it ran
  flotilla rollback -d staging";

/// Roll back to an earlier release (default: the last good one), by exact image digest
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES, disable_help_flag = true)]
pub struct RollbackCmd {
    /// The version to go back to
    pub version: Option<String>,
    #[command(flatten)]
    pub fleet: FleetArgs,
}

pub async fn run(cmd: &RollbackCmd) -> anyhow::Result<()> {
    let s = Session::open(&cmd.fleet)?;
    let projections = Projections::rebuild(&s.log)?;
    let target = ReleaseTarget::new(&s.config.service, s.config.destination.as_deref());
    let current = projections
        .releases
        .of(&target)
        .next_back()
        .map(|r| r.version.clone());
    let Some(to) = projections
        .releases
        .rollback_target(&target, cmd.version.as_deref())
    else {
        return Err(UserError {
            message: match &cmd.version {
                Some(v) => format!("no good release of version {v} in the event log"),
                None => "no earlier good release to roll back to".into(),
            },
            hint: Some("see the releases with `flotilla history`".into()),
            code: USAGE,
        }
        .into());
    };
    let Some(image) = to
        .images
        .get(&s.config.primary_role)
        .or_else(|| to.images.values().next())
    else {
        return Err(UserError {
            message: format!("release {} recorded no image digest", to.version),
            hint: Some(
                "roll back by deploying that version: flotilla deploy -P --version VERSION".into(),
            ),
            code: USAGE,
        }
        .into());
    };
    // By digest: the tag may have been pushed again since.
    let release = Release {
        version: to.version.clone(),
        image: format!("{}@{}", s.config.repository(), image.digest),
    };
    let plan = narrowed(
        plan(&s.config, &release, &protected(&s)?),
        &cmd.fleet,
        &s.config.primary_role,
    );
    let started = RollbackStarted {
        from_version: current,
        to_version: to.version.clone(),
        reason: "requested".into(),
    };
    rollout::run_rollout(
        &s,
        RolloutRequest {
            plan,
            kind: DeployKind::Rollback,
            deploy_id: DeployId::new(),
            resume: false,
            preamble: vec![started.into()],
            command: "rollback",
        },
    )
    .await
}
