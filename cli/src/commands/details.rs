//! `flotilla details`: the app's containers and every accessory's on their hosts (Kamal's
//! `details`, without its proxy section: Flotilla's proxy runs beside the executor, see
//! `flotilla proxy`).

use crate::commands::config::ConfigArgs;
use crate::commands::fanout::{self, Targets};
use clap::Args;
use flotilla_deploy::commands::{Accessory, App};

/// Show details about the app and accessory containers on every host
#[derive(Debug, Args)]
#[command(
    disable_help_flag = true,
    after_help = "Examples:\n  flotilla details\n  flotilla details -r web --json"
)]
pub struct DetailsCmd {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    targets: Targets,
    /// One JSON object per host and container kind on stdout: host, exit, stdout, stderr
    #[arg(long)]
    json: bool,
}

pub async fn run(cmd: &DetailsCmd) -> anyhow::Result<()> {
    crate::lifecycle::init_tracing("warn");
    let config = cmd.config.load()?;
    let app_jobs: Vec<(String, String)> = cmd
        .targets
        .host_roles(&config)
        .into_iter()
        .map(|(host, role)| (host, App::new(&config, Some(role)).info()))
        .collect();
    let pool = fanout::pool(&config);
    let app_runs = fanout::run_all(&pool, app_jobs).await;
    fanout::print_runs("App", &app_runs, cmd.json)?;
    let mut all = vec![fanout::check_runs("app details", &app_runs)];
    for accessory in &config.accessories {
        let a = Accessory::new(&config, accessory);
        let jobs = accessory
            .hosts
            .iter()
            .map(|h| (h.clone(), a.info(false, false)))
            .collect();
        let runs = fanout::run_all(&pool, jobs).await;
        fanout::print_runs(&format!("Accessory {}", accessory.name), &runs, cmd.json)?;
        all.push(fanout::check_runs(
            &format!("accessory {} details", accessory.name),
            &runs,
        ));
    }
    pool.close().await;
    all.into_iter().collect()
}
