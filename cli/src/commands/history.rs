//! `flotilla history`: every release of the service (and destination), from the event log.

use crate::commands::config::ConfigArgs;
use clap::Args;
use flotilla_events::event::Event;
use flotilla_events::projection::{Outcome, Projections, ReleaseTarget};
use flotilla_events::{DeployId, EventLog, SledLog, Timestamp};
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
    let target = ReleaseTarget::new(&config.service, config.destination.as_deref());
    let (projections, operations) = if crate::client::service_mode(&config) {
        let log = crate::client::mirror_blocking(&config)?;
        (Projections::rebuild(&log)?, operations(&log, &target)?)
    } else {
        let log = SledLog::open(&cmd.log)?;
        (Projections::rebuild(&log)?, operations(&log, &target)?)
    };
    // Releases and operations in the order they were asked for.
    let mut rows: Vec<(Timestamp, String)> = Vec::new();
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
            rows.push((r.requested_at, format!("{v}\n")));
        } else {
            rows.push((
                r.requested_at,
                format!(
                    "{:<28} {:<9} {:<20} {:<10} {:<25} {:<12} {:>7}s  {}\n",
                    r.deploy_id.to_string(),
                    format!("{:?}", r.kind).to_lowercase(),
                    r.version,
                    outcome,
                    r.requested_at.to_string(),
                    r.performer,
                    took.map_or("-".to_owned(), |t| format!("{t:.1}")),
                    images.join(" ")
                ),
            ));
        }
    }
    for o in &operations {
        rows.push((o.requested_at, o.row(cmd.json)));
    }
    rows.sort_by_key(|(at, _)| *at);
    for (_, row) in rows {
        out.push_str(&row);
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

/// An operation other than a rollout (`app stop`, `prune containers --retain 1`, `accessory
/// reboot db`) of the service, as history lists it beside the releases.
struct OperationRow {
    deploy_id: DeployId,
    kind: String,
    requested_at: Timestamp,
    finished_at: Option<Timestamp>,
    performer: String,
    hosts: Vec<String>,
    /// `None` until it finished.
    failed: Option<Vec<String>>,
}

impl OperationRow {
    fn row(&self, json: bool) -> String {
        let outcome = match &self.failed {
            None => "interrupted",
            Some(f) if f.is_empty() => "completed",
            Some(_) => "failed",
        };
        let took = self
            .finished_at
            .map(|f| f.millis_since(self.requested_at) as f64 / 1000.0);
        if json {
            let v = serde_json::json!({
                "deploy_id": self.deploy_id.to_string(),
                "kind": self.kind,
                "operation": true,
                "outcome": outcome,
                "requested_at": self.requested_at.to_string(),
                "duration_s": took,
                "performer": self.performer,
                "hosts": self.hosts,
                "failed": self.failed.clone().unwrap_or_default(),
            });
            return format!("{v}\n");
        }
        format!(
            "{:<28} {:<9} {:<20} {:<10} {:<25} {:<12} {:>7}s  hosts: {}\n",
            self.deploy_id.to_string(),
            self.kind,
            "-",
            outcome,
            self.requested_at.to_string(),
            self.performer,
            took.map_or("-".to_owned(), |t| format!("{t:.1}")),
            self.hosts.join(",")
        )
    }
}

/// The operations of `target` in `log`, in the order they were asked for.
fn operations(log: &dyn EventLog, target: &ReleaseTarget) -> anyhow::Result<Vec<OperationRow>> {
    let mut rows: Vec<OperationRow> = Vec::new();
    for e in log.read_all()? {
        let e = e?;
        match &e.event {
            Event::OperationStarted(o)
                if o.service == target.service && o.destination == target.destination =>
            {
                rows.push(OperationRow {
                    deploy_id: e.deploy_id.clone(),
                    kind: o.operation.to_string(),
                    requested_at: e.at,
                    finished_at: None,
                    performer: e.actor.clone(),
                    hosts: o.hosts.clone(),
                    failed: None,
                });
            }
            Event::OperationFinished(f) => {
                if let Some(row) = rows.iter_mut().rev().find(|r| r.deploy_id == e.deploy_id) {
                    row.finished_at = Some(e.at);
                    row.failed = Some(f.failed.clone());
                }
            }
            _ => {}
        }
    }
    Ok(rows)
}
