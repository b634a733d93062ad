//! `flotilla replay DEPLOY_ID`: a past deploy's timeline per host and step, from the log;
//! `--resume` continues an interrupted or failed deploy where each host stopped; `--otlp`
//! sends the deploy's trace, rebuilt from the log, to an OpenTelemetry collector.

use crate::exit::{FAILED, USAGE, UserError};
use crate::progress::detail;
use crate::rollout::{self, FleetArgs, Session};
use clap::Args;
use flotilla_events::{DeployId, Envelope, EventLog};
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
pub fn timeline(events: &[Envelope]) -> String {
    let start = events.first().map(|e| e.at).unwrap_or_default();
    let mut out = String::new();
    let mut by_host: BTreeMap<&str, Vec<&Envelope>> = BTreeMap::new();
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
        let mut prev = None;
        for e in events {
            let took = prev.map(|p| e.at.millis_since(p)).unwrap_or(0);
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
