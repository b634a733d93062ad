//! `flotilla replay DEPLOY_ID`: a past deploy's timeline per host and step, from the log;
//! `--resume` continues an interrupted or failed deploy where each host stopped; `--otlp`
//! sends the deploy's trace, rebuilt from the log, to an OpenTelemetry collector.

use crate::exit::{FAILED, USAGE, UserError};
use crate::progress::detail;
use crate::rollout::{self, FleetArgs, Session};
use clap::Args;
use flotilla_events::{DeployId, Envelope, Event, EventLog, Timestamp};
use flotilla_scheduler::procedure::Request;
use flotilla_scheduler::procedure::plans;
use flotilla_scheduler::trace;
use std::collections::BTreeMap;

const EXAMPLES: &str = "Examples:
  flotilla replay 01JD3ZK9W6T8Q2M4N5P7R8S9TA
  flotilla replay 01JD3ZK9W6T8Q2M4N5P7R8S9TA --json
  flotilla replay 01JD3ZK9W6T8Q2M4N5P7R8S9TA --resume
  flotilla replay 01JD3ZK9W6T8Q2M4N5P7R8S9TA --follow   # scheduler service: watch it again
  flotilla replay 01JD3ZK9W6T8Q2M4N5P7R8S9TA --cancel   # scheduler service: cancel it
  flotilla replay 01JD3ZK9W6T8Q2M4N5P7R8S9TA --otlp http://127.0.0.1:4318";

/// Show a deploy's timeline from the event log, or resume it
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES, disable_help_flag = true)]
pub struct ReplayCmd {
    /// The deploy id (`flotilla history` lists them)
    pub deploy_id: String,
    /// Continue the deploy from where each host stopped
    #[arg(long)]
    pub resume: bool,
    /// Watch the deploy until it ends, from what happened so far (scheduler service mode:
    /// reattaches to a deploy after Ctrl-C or from another machine)
    #[arg(long, conflicts_with_all = ["resume", "otlp"])]
    pub follow: bool,
    /// Cancel the deploy running in the scheduler service: no host starts, running steps
    /// finish, the lock is released (`--resume` continues it)
    #[arg(long, conflicts_with_all = ["resume", "otlp", "follow"])]
    pub cancel: bool,
    /// Send the deploy's trace to an OTLP/HTTP collector (default: OTEL_EXPORTER_OTLP_ENDPOINT)
    #[arg(long, value_name = "ENDPOINT", num_args = 0..=1, default_missing_value = "", conflicts_with = "resume")]
    pub otlp: Option<String>,
    #[command(flatten)]
    pub fleet: FleetArgs,
}

pub async fn run(cmd: &ReplayCmd) -> anyhow::Result<()> {
    if cmd.resume {
        return resume(&cmd.fleet, &cmd.deploy_id).await;
    }
    // Read-only: a config that does not load here leaves the local log to read.
    let service = cmd
        .fleet
        .config
        .load()
        .ok()
        .filter(crate::client::service_mode);
    let events = match &service {
        Some(config) if cmd.cancel => {
            return crate::client::cancel(config, &cmd.deploy_id).await;
        }
        None if cmd.cancel => {
            return Err(UserError {
                message: "--cancel stops a deploy in the scheduler service".into(),
                hint: Some(
                    "an embedded deploy is cancelled with Ctrl-C in the command that runs it"
                        .into(),
                ),
                code: USAGE,
            }
            .into());
        }
        Some(config) if cmd.follow => {
            return crate::client::follow(config, &cmd.deploy_id, cmd.fleet.json).await;
        }
        Some(config) => deploy_events(&crate::client::mirror(config).await?, &cmd.deploy_id)?,
        None if cmd.follow => {
            return Err(UserError {
                message: "--follow watches a deploy in the scheduler service".into(),
                hint: Some(
                    "set x-flotilla: {scheduler: {mode: service}}; an embedded deploy is \
                     watched by the command that runs it"
                        .into(),
                ),
                code: USAGE,
            }
            .into());
        }
        None => deploy_events(
            &flotilla_events::SledLog::open(&cmd.fleet.log)?,
            &cmd.deploy_id,
        )?,
    };
    if let Some(endpoint) = &cmd.otlp {
        return send_trace(endpoint, &cmd.deploy_id, &events).await;
    }
    let mut out = String::new();
    if cmd.fleet.json {
        for e in &events {
            let mut line = Vec::new();
            flotilla_events::jsonl::write_line(e, &mut line)?;
            out.push_str(&String::from_utf8_lossy(&line));
        }
    } else {
        out = timeline(&events);
    }
    crate::commands::write_stdout(&out)
}

fn deploy_events(log: &dyn EventLog, id: &str) -> anyhow::Result<Vec<Envelope>> {
    let events = log.read_deploy(&DeployId::from(id))?;
    if events.is_empty() {
        return Err(UserError {
            message: format!("no deploy {id} in the event log"),
            hint: Some("list deploys with `flotilla history`".into()),
            code: USAGE,
        }
        .into());
    }
    Ok(events)
}

/// The timeline: deploy-wide events, then per host each event with the time since the
/// host's previous one (how long that step took).
///
/// A step never counts time no scheduler ran: each run of the deploy (the first, each
/// resume) begins with `LockAcquired`, and a host event after one is timed from the later
/// of the host's previous event and that run's start. The host's events stamped before it
/// (reported while no scheduler ran) keep their own times: the executor kept working then.
pub fn timeline(events: &[Envelope]) -> String {
    let start = events.first().map(|e| e.at).unwrap_or_default();
    let mut out = String::new();
    let mut by_host: BTreeMap<&str, Vec<&Envelope>> = BTreeMap::new();
    let mut runs: Vec<Timestamp> = events
        .iter()
        .filter(|e| e.host.is_none() && matches!(e.event, Event::LockAcquired(_)))
        .map(|e| e.at)
        .collect();
    runs.sort();
    // The newest run start at or before `at`.
    let run_start = |at: Timestamp| runs.iter().rev().find(|r| **r <= at).copied();
    for e in events {
        match e.host.as_deref() {
            Some(h) => by_host.entry(h).or_default().push(e),
            None => out.push_str(&format!(
                "{:>8.1}s  {:<20} {}\n",
                e.at.millis_since(start) as f64 / 1000.0,
                e.type_name(),
                detail(&e.event)
            )),
        }
    }
    for (host, events) in by_host {
        out.push_str(&format!("\n{host}\n"));
        let mut prev: Option<Timestamp> = None;
        for e in events {
            let since = match (prev, run_start(e.at)) {
                (Some(p), Some(r)) => Some(p.max(r)),
                (p, _) => p,
            };
            let took = since.map(|p| e.at.millis_since(p)).unwrap_or(0);
            prev = Some(e.at);
            out.push_str(&format!(
                "{:>8.1}s  {:<20} {:>7} ms  {}\n",
                e.at.millis_since(start) as f64 / 1000.0,
                e.type_name(),
                took,
                detail(&e.event)
            ));
        }
    }
    out
}

/// Sends deploy `id`'s trace, folded from `events` as the live export folds them (same
/// span ids, so a collector that has the live trace gets the same spans again).
async fn send_trace(endpoint: &str, id: &str, events: &[Envelope]) -> anyhow::Result<()> {
    let configured = Some(endpoint).filter(|e| !e.is_empty());
    let endpoint = match trace::live::endpoint(configured, |k| std::env::var(k).ok()) {
        Some(e) => e.map_err(|e| {
            anyhow::Error::new(e).context(UserError {
                message: "not an OTLP/HTTP endpoint".into(),
                hint: Some("give http://HOST:PORT (a collector's OTLP/HTTP port, 4318)".into()),
                code: USAGE,
            })
        })?,
        None => {
            return Err(UserError {
                message: "no OTLP endpoint".into(),
                hint: Some(
                    "name one: `--otlp http://HOST:4318`, or set OTEL_EXPORTER_OTLP_ENDPOINT"
                        .into(),
                ),
                code: USAGE,
            }
            .into());
        }
    };
    let spans = trace::spans(id, events);
    let exporter = flotilla_telemetry::Exporter::new(endpoint, trace::SERVICE_NAME);
    exporter.export(&spans).await.map_err(|e| {
        anyhow::Error::new(e).context(UserError {
            message: "the collector did not take the trace".into(),
            hint: Some("is the collector running, and is this its OTLP/HTTP port?".into()),
            code: FAILED,
        })
    })?;
    eprintln!(
        "sent {} span(s) of trace {} to {}",
        spans.len(),
        flotilla_telemetry::TraceId::for_deploy(id),
        exporter.endpoint()
    );
    Ok(())
}

/// Continues deploy `id`: the same release, each host from its first unfinished step.
/// Continues deploy `id` where each host stopped, with the deploy's own hosts and exact image.
pub async fn resume(fleet: &FleetArgs, id: &str) -> anyhow::Result<()> {
    let config = crate::session::load_config(fleet)?;
    if crate::client::service_mode(&config) {
        let kind = flotilla_protocol::control::RolloutKind::Resume;
        return crate::client::ask_rollout(
            &config,
            fleet,
            kind,
            DeployId::from(id),
            Vec::new(),
            "resume",
            Default::default(),
        )
        .await;
    }
    let s = Session::open_with(fleet, config)?;
    let (plan, kind) = plans::resume_plan(&s.config, &s.log, id).map_err(rollout::plan_error)?;
    let request = Request {
        plan,
        kind,
        deploy_id: DeployId::from(id),
        resume: true,
        preamble: Vec::new(),
        command: "resume",
    };
    rollout::run_rollout(&s, request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_events::event::{ContainerStarted, HealthPassed, LockAcquired};
    use flotilla_events::{EventId, SCHEMA_VERSION};

    fn at(seq: u64, ms: i64, host: Option<&str>, event: Event) -> Envelope {
        Envelope {
            id: EventId::from_u128(u128::from(seq)),
            deploy_id: DeployId::from("01DEPLOY"),
            seq,
            at: Timestamp::from_unix_ms(ms),
            host: host.map(str::to_owned),
            schema_version: SCHEMA_VERSION,
            actor: "test".into(),
            event,
        }
    }

    /// A deploy killed after a host started its container and resumed ten minutes later:
    /// the host's next step is timed from the resume (2 s), not across the outage; a step
    /// the executor reported while no scheduler ran keeps its own time.
    #[test]
    fn a_step_is_never_timed_across_a_scheduler_outage() {
        let lock = || {
            Event::LockAcquired(LockAcquired {
                holder: "me".into(),
            })
        };
        let started = Event::ContainerStarted(ContainerStarted {
            name: "app-web-v2".into(),
            container_id: "c".into(),
            version: "v2".into(),
            role: "web".into(),
        });
        let healthy = || {
            Event::HealthPassed(HealthPassed {
                attempts: 1,
                duration_ms: 1,
            })
        };
        let events = [
            at(1, 0, None, lock()),
            at(2, 1_000, Some("h1"), started.clone()),
            at(3, 1_000, Some("h2"), started),
            // h2's report sent while the scheduler was down, appended by the resume.
            at(4, 600_000, None, lock()),
            at(5, 4_000, Some("h2"), healthy()),
            at(6, 602_000, Some("h1"), healthy()),
        ];
        let out = timeline(&events);
        let took = |host: &str| -> String {
            let section = out.split(&format!("\n{host}\n")).nth(1).unwrap();
            let line = section.lines().nth(1).unwrap();
            line.split_whitespace().nth(2).unwrap().to_owned()
        };
        assert_eq!(took("h1"), "2000", "{out}");
        assert_eq!(took("h2"), "3000", "{out}");
    }
}
