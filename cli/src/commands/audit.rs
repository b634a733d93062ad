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
    /// In service mode (`x-flotilla.scheduler.mode: service`) the service's log is read
    #[command(flatten)]
    config: crate::commands::config::ConfigArgs,
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

/// Adds `host` to `hosts` unless it is there already.
fn add_host(hosts: &mut Vec<String>, host: Option<&str>) {
    if let Some(host) = host
        && !hosts.iter().any(|h| h == host)
    {
        hosts.push(host.to_owned());
    }
}

pub fn run(cmd: &AuditCmd) -> anyhow::Result<()> {
    // Service mode: the service's one log, the same from every machine. Without a config
    // here (audit run beside a copied log), the local log.
    let config_there = cmd.config.config_file.exists();
    if config_there {
        let config = cmd.config.load()?;
        if crate::client::service_mode(&config) {
            let log = crate::client::mirror_blocking(&config)?;
            return print(cmd, &log);
        }
    }
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
    print(cmd, &log)
}

/// Folds `log` into one entry per operation and prints them.
fn print(cmd: &AuditCmd, log: &dyn EventLog) -> anyhow::Result<()> {
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
            // An operation the executors ran has both its host's report and the scheduler's
            // verdict on it: each host is listed once.
            Event::HostSucceeded(_) | Event::OperationSucceeded(_) => {
                add_host(&mut entry.succeeded, e.host.as_deref())
            }
            Event::HostFailed(_) => add_host(&mut entry.failed, e.host.as_deref()),
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
            Event::OperationFailed(f) => {
                add_host(&mut entry.failed, e.host.as_deref());
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
