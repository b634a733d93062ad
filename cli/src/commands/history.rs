//! `flotilla history`: every release of the service (and destination), from the event log.

use crate::commands::config::ConfigArgs;
use clap::Args;
use flotilla_events::SledLog;
use flotilla_events::projection::{Outcome, Projections, ReleaseTarget};
use std::path::PathBuf;

/// List releases: version, exact digests, outcome, when, who, how long
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  flotilla history\n  flotilla history -d staging --json")]
pub struct HistoryCmd {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// One JSON object per release
    #[arg(long)]
    pub json: bool,
    /// Event log directory
    #[arg(
        long,
        value_name = "PATH",
        env = "FLOTILLA_EVENT_LOG",
        default_value = ".flotilla/events"
    )]
    pub log: PathBuf,
}

pub fn run(cmd: &HistoryCmd) -> anyhow::Result<()> {
    let config = cmd.config.load()?;
    // Service mode: the service's one history, the same from every machine.
    let projections = if crate::client::service_mode(&config) {
        Projections::rebuild(&crate::client::mirror_blocking(&config)?)?
    } else {
        Projections::rebuild(&SledLog::open(&cmd.log)?)?
    };
    let target = ReleaseTarget::new(&config.service, config.destination.as_deref());
    let mut out = String::new();
    if !cmd.json {
        out.push_str(&format!(
            "{:<28} {:<9} {:<20} {:<10} {:<25} {:<12} {:>8}  {}\n",
            "DEPLOY", "KIND", "VERSION", "OUTCOME", "WHEN", "WHO", "TOOK", "IMAGES"
        ));
    }
    for r in projections.releases.of(&target) {
        let outcome = match &r.outcome {
            // This process holds the log (`SledLog::open` takes its writer lock, which one
            // process holds at a time), so no process that could finish this deploy is
            // running: it was killed or its machine stopped. It never shows as running.
            Outcome::InProgress => "interrupted".to_owned(),
            Outcome::Completed => "completed".to_owned(),
            Outcome::Partial { .. } => "partial".to_owned(),
            Outcome::Failed { .. } => "failed".to_owned(),
            Outcome::Cancelled { .. } => "cancelled".to_owned(),
        };
        let took = r
            .finished_at
            .map(|f| f.millis_since(r.requested_at) as f64 / 1000.0);
        let images: Vec<String> = r
            .images
            .iter()
            .map(|(role, i)| format!("{role}={}", i.digest))
            .collect();
        if cmd.json {
            let v = serde_json::json!({
                "deploy_id": r.deploy_id.to_string(),
                "kind": format!("{:?}", r.kind).to_lowercase(),
                "version": r.version,
                "outcome": outcome,
                "good": r.is_good(),
                "requested_at": r.requested_at.to_string(),
                "duration_s": took,
                "performer": r.performer,
                "images": r.images.iter().map(|(role, i)| (role.clone(), serde_json::json!({"image": i.image, "digest": i.digest}))).collect::<serde_json::Map<_, _>>(),
                "config_digest": r.config_digest,
                "resume": (r.outcome == Outcome::InProgress)
                    .then(|| format!("flotilla replay {} --resume", r.deploy_id)),
            });
            out.push_str(&v.to_string());
            out.push('\n');
        } else {
            out.push_str(&format!(
                "{:<28} {:<9} {:<20} {:<10} {:<25} {:<12} {:>7}s  {}\n",
                r.deploy_id.to_string(),
                format!("{:?}", r.kind).to_lowercase(),
                r.version,
                outcome,
                r.requested_at.to_string(),
                r.performer,
                took.map_or("-".to_owned(), |t| format!("{t:.1}")),
                images.join(" ")
            ));
        }
    }
    crate::commands::write_stdout(&out)?;
    if !cmd.json {
        let interrupted = projections
            .releases
            .of(&target)
            .filter(|r| r.outcome == Outcome::InProgress);
        for r in interrupted {
            eprintln!(
                "deploy {} was interrupted; `flotilla replay {} --resume` continues it",
                r.deploy_id, r.deploy_id
            );
        }
    }
    Ok(())
}
