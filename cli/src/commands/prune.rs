//! `flotilla prune all|images|containers`: old images and stopped containers of the service
//! on every app host, keeping the newest `retain_containers` stopped containers and the
//! rollback target's container and image (Kamal's `prune`). The hosts' executors run it under
//! the deploy lock and it is recorded like a deploy (`operate.rs`).

use crate::commands::config::ConfigArgs;
use crate::commands::fanout::Targets;
use clap::{Args, Subcommand};
use flotilla_events::event::Operation;

const EXAMPLES: &str = "Examples:
  flotilla prune all
  flotilla prune containers --retain 2
  flotilla prune images -h 10.0.0.5";

/// Prune old images and containers from the servers
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct PruneCmd {
    #[command(subcommand)]
    action: PruneAction,
}

#[derive(Debug, Subcommand)]
enum PruneAction {
    /// Prune unused images and stopped containers
    #[command(disable_help_flag = true, after_help = EXAMPLES)]
    All(PruneArgs),
    /// Prune the service's unused images (dangling, and tagged ones no container uses)
    #[command(
        disable_help_flag = true,
        after_help = "Examples:\n  flotilla prune images"
    )]
    Images(PruneArgs),
    /// Prune stopped containers beyond the newest `retain_containers` (default 5)
    #[command(
        disable_help_flag = true,
        after_help = "Examples:\n  flotilla prune containers\n  flotilla prune containers --retain 1"
    )]
    Containers(PruneArgs),
}

#[derive(Debug, Args)]
struct PruneArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    targets: Targets,
    /// Stopped containers to keep (default: `retain_containers` from the config)
    #[arg(long)]
    retain: Option<u32>,
    /// JSON on stdout: the operation's events, one per line, as `deploy --json`
    #[arg(long)]
    json: bool,
}

pub async fn run(cmd: &PruneCmd) -> anyhow::Result<()> {
    crate::lifecycle::init_tracing("warn");
    let (args, images, containers) = match &cmd.action {
        PruneAction::All(a) => (a, true, true),
        PruneAction::Images(a) => (a, true, false),
        PruneAction::Containers(a) => (a, false, true),
    };
    let config = args.config.load()?;
    let retain = args.retain.unwrap_or(config.retain_containers);
    let operation = Operation::Prune {
        containers,
        images,
        retain,
    };
    // Planned and run by the executors, recorded like a deploy (here or by the service).
    crate::commands::operate::run(&args.config, &args.targets, args.json, operation).await
}
