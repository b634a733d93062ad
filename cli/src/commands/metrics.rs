//! `flotilla metrics serve`: Prometheus metrics of the project's rollouts between deploys.
//!
//! A deploy serves `/metrics` on `x-flotilla.metrics.listen` only while it runs; this command
//! keeps that address answered all the time, so Grafana's panels do not go blank between
//! deploys. It does not hold the event log (deploys need it); while a deploy runs it forwards
//! scrapes to the deploy's live metrics (see `flotilla_scheduler::metrics::standby`).

use crate::commands::config::ConfigArgs;
use crate::exit::{USAGE, UserError};
use clap::{Args, Subcommand};
use std::path::PathBuf;

/// Prometheus metrics of deploys, served between deploys
#[derive(Debug, Args)]
pub struct MetricsCmd {
    #[command(subcommand)]
    pub action: MetricsAction,
}

#[derive(Debug, Subcommand)]
pub enum MetricsAction {
    /// Serve /metrics from the event log until stopped (SIGINT or SIGTERM)
    #[command(after_help = "Examples:\n  flotilla metrics serve\n  \
                            flotilla metrics serve --listen 127.0.0.1:9394")]
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Address to listen on (default: x-flotilla.metrics.listen)
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// Event log directory
    #[arg(
        long,
        value_name = "PATH",
        env = "FLOTILLA_EVENT_LOG",
        default_value = ".flotilla/events"
    )]
    pub log: PathBuf,
}

pub async fn run(cmd: &MetricsCmd) -> anyhow::Result<()> {
    let MetricsAction::Serve(args) = &cmd.action;
    let listen = match &args.listen {
        Some(l) => l.clone(),
        None => match args.config.load()?.flotilla.metrics {
            Some(m) => m.listen,
            None => {
                return Err(UserError {
                    message: "no metrics address: x-flotilla.metrics.listen is not set".into(),
                    hint: Some(
                        "set x-flotilla: {metrics: {listen: 127.0.0.1:9394}} in config/deploy.yml, or pass --listen".into(),
                    ),
                    code: USAGE,
                }
                .into());
            }
        },
    };
    let server = flotilla_scheduler::metrics::serve_standby(&listen, &args.log).await?;
    eprintln!(
        "flotilla: serving metrics of {} on http://{}/metrics",
        args.log.display(),
        server.addr()
    );
    crate::lifecycle::shutdown_signal().await;
    Ok(())
}
