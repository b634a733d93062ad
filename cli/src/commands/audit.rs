//! `flotilla audit`: who did what, when, to which hosts, read from the event log (Kamal keeps
//! an audit file on each host; Flotilla's log already records every deploy, rollback and
//! accessory change with its actor, time, hosts and outcome).

use anyhow::Context as _;
use clap::Args;
use flotilla_events::{DeployId, Event, EventLog, SledLog};
use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::exit::{USAGE, UserError};

/// Show who deployed what, when, to which hosts, and how it ended
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  flotilla audit\n  flotilla audit --json | jq .actor")]
pub struct AuditCmd {
    /// One JSON object per operation on stdout
    #[arg(long)]
    json: bool,
    /// Event log directory
    #[arg(
        long,
        value_name = "PATH",
        env = "FLOTILLA_EVENT_LOG",
        default_value = ".flotilla/events"
    )]
    log: PathBuf,
}

/// One operation as the log tells it.
#[derive(Debug, Default, serde::Serialize)]
struct Entry {
    deploy_id: String,
    /// `deploy`, `rollback`, `enroll`, or the command of another operation (`app stop`,
    /// `accessory reboot db`, `prune all`, `proxy reboot`).
    kind: String,
    actor: String,
    /// When it was asked for (RFC 3339).
    at: String,
    service: String,
    destination: Option<String>,
    version: String,
    hosts: Vec<String>,
    succeeded: Vec<String>,
    failed: Vec<String>,
    /// `completed`, `failed`, `cancelled`, or `running` while it has no outcome.
    outcome: String,
    /// Why it failed or was cancelled.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

pub fn run(cmd: &AuditCmd) -> anyhow::Result<()> {
    if !cmd.log.join("sled").exists() {
        return Err(UserError {
            message: format!("no event log at {}", cmd.log.display()),
            hint: Some("run it where `flotilla deploy` ran, or pass --log PATH".into()),
            code: USAGE,
        }
        .into());
    }
    let log = SledLog::open(&cmd.log)
        .with_context(|| format!("opening the event log {}", cmd.log.display()))?;
    let mut entries: BTreeMap<DeployId, Entry> = BTreeMap::new();
    let mut order: Vec<DeployId> = Vec::new();
    for envelope in log.read_all().context("reading the event log")? {
        let e = envelope.context("reading the event log")?;
        let entry = entries.entry(e.deploy_id.clone()).or_insert_with(|| {
            order.push(e.deploy_id.clone());
            Entry {
                deploy_id: e.deploy_id.to_string(),
                outcome: "running".into(),
                ..Entry::default()
            }
        });
        match &e.event {
            Event::DeployRequested(r) => {
                entry.kind = format!("{:?}", r.kind).to_lowercase();
                entry.actor.clone_from(&e.actor);
                entry.at = e.at.to_string();
                entry.service.clone_from(&r.service);
                entry.destination.clone_from(&r.destination);
                entry.version.clone_from(&r.version);
                entry.hosts = r.hosts.iter().map(|h| h.host.clone()).collect();
            }
            Event::RollbackStarted(_) => entry.kind = "rollback".into(),
            Event::DeployCompleted(_) => entry.outcome = "completed".into(),
            Event::DeployFailed(f) => {
                entry.outcome = "failed".into();
                entry.reason = Some(f.reason.clone());
            }
            Event::DeployCancelled(c) => {
                entry.outcome = "cancelled".into();
                entry.reason = Some(c.reason.clone());
            }
            Event::HostSucceeded(_) => entry.succeeded.extend(e.host.clone()),
            Event::HostFailed(_) => entry.failed.extend(e.host.clone()),
            // An enrolment is an operation of its own: who trusted which host's keys, when.
            Event::HostEnrolled(h) => {
                entry.kind = "enroll".into();
                entry.actor.clone_from(&e.actor);
                entry.at = e.at.to_string();
                entry.hosts = e.host.clone().into_iter().collect();
                entry.succeeded = entry.hosts.clone();
                entry.outcome = if h.replaces.is_some() {
                    "replaced keys".into()
                } else {
                    "enrolled".into()
                };
            }
            // A state-changing command other than a rollout: its kind is the command.
            Event::OperationStarted(o) => {
                entry.kind = o.operation.to_string();
                entry.actor.clone_from(&e.actor);
                entry.at = e.at.to_string();
                entry.service.clone_from(&o.service);
                entry.destination.clone_from(&o.destination);
                entry.hosts.clone_from(&o.hosts);
            }
            Event::OperationSucceeded(_) => entry.succeeded.extend(e.host.clone()),
            Event::OperationFailed(f) => {
                entry.failed.extend(e.host.clone());
                entry.reason = Some(f.reason.clone());
            }
            Event::OperationFinished(f) => {
                entry.outcome = if f.failed.is_empty() {
                    "completed".into()
                } else {
                    "failed".into()
                };
            }
            _ => {}
        }
    }
    let mut text = String::new();
    for id in &order {
        let Some(entry) = entries.get(id) else {
            continue;
        };
        if cmd.json {
            text.push_str(&serde_json::to_string(entry)?);
            text.push('\n');
        } else {
            text.push_str(&format!(
                "{}  {}  {} {} {}  hosts: {}  {}{}\n",
                entry.at,
                entry.actor,
                entry.kind,
                entry.service,
                entry.version,
                entry.hosts.join(","),
                entry.outcome,
                entry
                    .reason
                    .as_ref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ));
        }
    }
    crate::commands::write_stdout(&text)
}
