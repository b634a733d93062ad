//! `flotilla deploy` and `flotilla redeploy`: build and push the image (deploy only), then
//! roll it out across the hosts in parallel batches with zero downtime.

use crate::build;
use crate::exit::{USAGE, UserError};
use crate::rollout::{self, FleetArgs, Session};
use anyhow::Context;
use clap::Args;
use flotilla_events::event::{DeployKind, ImageBuilt, ImagePushed};
use flotilla_events::{DeployId, Event};
use flotilla_protocol::control::RolloutKind;
use flotilla_scheduler::procedure::plans::{self, Narrow};
use flotilla_scheduler::procedure::{self, Request};
use std::path::Path;

const EXAMPLES: &str = "Examples:
  flotilla deploy                         # build, push, roll out the git HEAD
  flotilla deploy -d staging --version v42
  flotilla deploy -P --version v42        # the image v42 is already pushed
  flotilla deploy --resume 01JD3ZK9W6T8Q2M4N5P7R8S9TA
  flotilla deploy --json | jq -c 'select(.event.HostFailed)'";

/// Build, push and roll out a new version across the hosts
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES, disable_help_flag = true)]
pub struct DeployCmd {
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// Skip the image build and push: deploy an image already in the registry
    #[arg(short = 'P', long = "skip-push")]
    pub skip_push: bool,
    /// The app version to deploy (default: the git commit)
    #[arg(long = "version", value_name = "VERSION")]
    pub version: Option<String>,
    /// Continue an interrupted or failed deploy (same as `flotilla replay ID --resume`)
    #[arg(long, value_name = "DEPLOY_ID")]
    pub resume: Option<String>,
}

pub async fn run(cmd: &DeployCmd, redeploy: bool) -> anyhow::Result<()> {
    if let Some(id) = &cmd.resume {
        return crate::commands::replay::resume(&cmd.fleet, id).await;
    }
    let config = crate::session::load_config(&cmd.fleet)?;
    if crate::client::service_mode(&config) {
        return through_service(cmd, redeploy, config).await;
    }
    let s = Session::open_with(&cmd.fleet, config)?;
    let version = match &cmd.version {
        Some(v) => v.clone(),
        None => git_version(&s.root)?,
    };
    let plan = plans::deploy_plan(&s.config, &s.log, &version, &narrow(&cmd.fleet))
        .map_err(rollout::plan_error)?;
    let command = if redeploy { "redeploy" } else { "deploy" };
    let ctx = procedure::hook_context_for(&s.config, &s.actor, &plan, command);
    rollout::early_hook(&s, "pre-connect", &ctx).await?;

    let mut preamble: Vec<Event> = Vec::new();
    if !cmd.skip_push && !redeploy {
        rollout::early_hook(&s, "pre-build", &ctx).await?;
        let pushed = build::build_and_push(
            &s.config,
            &s.root,
            &version,
            cmd.fleet.quiet || cmd.fleet.json,
        )?;
        preamble.push(
            ImageBuilt {
                image: pushed.image.clone(),
                digest: pushed.digest.clone(),
            }
            .into(),
        );
        preamble.push(
            ImagePushed {
                image: pushed.image,
                digest: pushed.digest,
            }
            .into(),
        );
    }
    let request = Request {
        plan,
        kind: DeployKind::Deploy,
        deploy_id: DeployId::new(),
        resume: false,
        preamble,
        command,
    };
    rollout::run_rollout(&s, request).await
}

/// `x-flotilla.scheduler.mode: service`: build and push here, roll out in the service.
async fn through_service(
    cmd: &DeployCmd,
    redeploy: bool,
    config: flotilla_deploy::Config,
) -> anyhow::Result<()> {
    let root = std::env::current_dir().context("reading the current directory")?;
    let version = match &cmd.version {
        Some(v) => v.clone(),
        None => git_version(&root)?,
    };
    // The hooks' view of the plan (hosts, roles); the service plans again from its log.
    let plan = plans::deploy_plan(
        &config,
        &flotilla_events::MemoryLog::new(),
        &version,
        &narrow(&cmd.fleet),
    )
    .map_err(rollout::plan_error)?;
    let command = if redeploy { "redeploy" } else { "deploy" };
    let early = |name| crate::client::early_hook(&config, &root, &cmd.fleet, &plan, command, name);
    early("pre-connect").await?;
    let mut preamble: Vec<Event> = Vec::new();
    if !cmd.skip_push && !redeploy {
        early("pre-build").await?;
        let pushed =
            build::build_and_push(&config, &root, &version, cmd.fleet.quiet || cmd.fleet.json)?;
        preamble.push(
            ImageBuilt {
                image: pushed.image.clone(),
                digest: pushed.digest.clone(),
            }
            .into(),
        );
        preamble.push(
            ImagePushed {
                image: pushed.image,
                digest: pushed.digest,
            }
            .into(),
        );
    }
    let kind = if redeploy {
        RolloutKind::Redeploy { version }
    } else {
        RolloutKind::Deploy { version }
    };
    crate::client::ask_rollout(
        &config,
        &cmd.fleet,
        kind,
        DeployId::new(),
        preamble,
        command,
        Default::default(),
    )
    .await
}

/// Kamal's `-h`, `-r`, `-p` as the procedure's host filter.
pub fn narrow(fleet: &FleetArgs) -> Narrow {
    Narrow {
        hosts: fleet.hosts.clone(),
        roles: fleet.roles.clone(),
        primary: fleet.primary,
    }
}

pub(crate) fn git_version(root: &Path) -> anyhow::Result<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(root)
        .output()
        .context("running git")?;
    if !out.status.success() {
        return Err(UserError {
            message: "no version given and this is not a git repository with a commit".into(),
            hint: Some("pass --version VERSION".into()),
            code: USAGE,
        }
        .into());
    }
    let sha = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let dirty = std::process::Command::new("git")
        .args(["status", "--porcelain"])
        .current_dir(root)
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    Ok(if dirty {
        format!(
            "{sha}_uncommitted_{:x}",
            flotilla_events::Timestamp::now().unix_ms()
        )
    } else {
        sha
    })
}
