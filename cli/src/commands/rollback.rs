//! `flotilla rollback [VERSION]`: deploy an earlier release again, by its exact image digest.

use crate::commands::deploy::narrow;
use crate::rollout::{self, FleetArgs, Session};
use clap::Args;
use flotilla_events::DeployId;
use flotilla_events::event::DeployKind;
use flotilla_scheduler::procedure::Request;
use flotilla_scheduler::procedure::plans;

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
    let config = crate::session::load_config(&cmd.fleet)?;
    if crate::client::service_mode(&config) {
        // The service plans it from the one history: the same target from every machine.
        let kind = flotilla_protocol::control::RolloutKind::Rollback {
            version: cmd.version.clone(),
        };
        return crate::client::ask_rollout(
            &config,
            &cmd.fleet,
            kind,
            DeployId::new(),
            Vec::new(),
            "rollback",
            Default::default(),
        )
        .await;
    }
    let s = Session::open_with(&cmd.fleet, config)?;
    let (plan, started) = plans::rollback_plan(
        &s.config,
        &s.log,
        cmd.version.as_deref(),
        &narrow(&cmd.fleet),
    )
    .map_err(rollout::plan_error)?;
    let request = Request {
        plan,
        kind: DeployKind::Rollback,
        deploy_id: DeployId::new(),
        resume: false,
        preamble: vec![started.into()],
        command: "rollback",
    };
    rollout::run_rollout(&s, request).await
}
