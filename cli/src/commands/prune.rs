//! `flotilla prune all|images|containers`: old images and stopped containers of the service
//! on every app host, keeping the newest `retain_containers` stopped containers (Kamal's
//! `prune`). Holds the deploy lock while it runs.

use crate::commands::config::ConfigArgs;
use crate::commands::fanout::{self, Targets};
use crate::commands::record::{self, Recording};
use clap::{Args, Subcommand};
use flotilla_deploy::commands::{prune_app_containers, prune_dangling_images, prune_tagged_images};
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
    /// JSON on stdout: one object per host (host, exit, stdout, stderr); for `containers`,
    /// which the executors run, one event per line as `deploy --json`
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
    let mut parts = Vec::new();
    if containers {
        parts.push(prune_app_containers(&config, retain));
    }
    if images {
        parts.push(prune_dangling_images(&config));
        parts.push(prune_tagged_images(&config));
    }
    let command = parts.join(" && ");
    let hosts = args.targets.hosts(&config);
    if hosts.is_empty() {
        return Err(fanout::no_hosts().into());
    }
    let operation = Operation::Prune {
        containers,
        images,
        retain,
    };
    // Containers alone: planned and run by the executors, recorded like a deploy. Images are
    // still pruned over SSH (the executor has no image listing yet).
    if !images {
        return crate::commands::operate::run(&args.config, &args.targets, args.json, operation)
            .await;
    }
    fanout::with_lock(&config, "prune", async {
        let log = record::open_log(&config)?;
        let recording = Recording::start(log.as_ref(), &config, operation, &hosts)?;
        let pool = fanout::pool(&config);
        let jobs = hosts.iter().map(|h| (h.clone(), command.clone())).collect();
        let runs = fanout::run_all(&pool, jobs).await;
        pool.close().await;
        recording.note(&runs);
        let result = fanout::print_runs("App", &runs, args.json)
            .and_then(|()| fanout::check_runs("prune", &runs));
        recording.end(result)
    })
    .await
}
