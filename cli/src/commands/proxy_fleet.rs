//! Kamal's `proxy` commands on the fleet: `boot`, `reboot [--rolling]`, `start`, `stop`,
//! `restart`, `details`, `logs [-f]` and `remove` for the `flotilla-proxy` container `flotilla
//! setup` runs on every host. `start`, `stop`, `restart` and `remove` are operations the hosts'
//! executors run, planned and recorded by the scheduler (`operate.rs`). `boot` and `reboot`,
//! which replace a running proxy by handing its listening sockets to a new container, and the
//! read-only verbs run `flotilla_setup::proxy`'s shell commands over the SSH fan-out (`boot`
//! and `reboot` under the deploy lock, recorded by `record.rs` in embedded mode only).
//! `proxy.run` (ports, bind IP, metrics port, log size, debug) is read per host from the
//! roles there.

use crate::commands::config::ConfigArgs;
use crate::commands::fanout::{self, HostRun, Targets};
use crate::commands::record::{self, Recording};
use crate::exit::{USAGE, UserError};
use clap::Args;
use flotilla_deploy::Config;
use flotilla_events::event::{Operation, ProxyAction};
use flotilla_setup::proxy::{self as commands, Logs, ProxyRun};

/// Lines `proxy logs` shows per host unless `--since` or `--grep` narrow them (Kamal's).
const DEFAULT_LINES: u32 = 100;
/// Lines `proxy logs -f` shows before following (Kamal's).
const DEFAULT_FOLLOW_LINES: u32 = 10;

/// Flags every fleet verb of `flotilla proxy` takes.
#[derive(Debug, Args)]
pub struct FleetArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    #[command(flatten)]
    pub targets: Targets,
    /// One JSON object per host on stdout: host, exit, stdout, stderr
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RebootArgs {
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// One host at a time instead of all at once
    #[arg(long)]
    pub rolling: bool,
    /// Accepted for Kamal's scripts: a reboot hands the sockets over, so there is no outage
    /// to confirm
    #[arg(short = 'y', long)]
    pub confirmed: bool,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// Lines since a timestamp (2013-01-02T13:23:37Z) or relative (42m)
    #[arg(short = 's', long)]
    pub since: Option<String>,
    /// Lines to show from each host (default 100; 10 with -f)
    #[arg(short = 'n', long)]
    pub lines: Option<u32>,
    /// Only lines matching this (grep)
    #[arg(short = 'g', long)]
    pub grep: Option<String>,
    /// Extra grep options, e.g. '-C 2'
    #[arg(long = "grep-options", alias = "grep_options")]
    pub grep_options: Option<String>,
    /// Follow the log of one host (the primary, or the one -h picks)
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Leave out Docker's timestamps
    #[arg(short = 'T', long = "skip-timestamps", alias = "skip_timestamps")]
    pub skip_timestamps: bool,
}

/// Kamal's `boot_config` actions.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum BootConfigAction {
    Get,
    Set,
    Reset,
}

#[derive(Debug, Args)]
pub struct BootConfigArgs {
    /// `get` shows it; `set` and `reset` are `proxy.run` in config/deploy.yml
    #[arg(value_enum)]
    pub action: BootConfigAction,
    #[command(flatten)]
    pub fleet: FleetArgs,
}

/// A fleet verb of `flotilla proxy`.
#[derive(Debug)]
pub enum Verb<'a> {
    Boot(&'a FleetArgs),
    Reboot(&'a RebootArgs),
    Start(&'a FleetArgs),
    Stop(&'a FleetArgs),
    Restart(&'a FleetArgs),
    Details(&'a FleetArgs),
    Logs(&'a LogsArgs),
    Remove(&'a FleetArgs),
    BootConfig(&'a BootConfigArgs),
}

pub async fn run(verb: Verb<'_>) -> anyhow::Result<()> {
    crate::lifecycle::init_tracing("warn");
    match verb {
        Verb::Boot(a) => {
            let config = a.config.load()?;
            let jobs = per_host(&config, a, commands::boot_command)?;
            changing(&config, a, ProxyAction::Boot, jobs, false).await
        }
        Verb::Reboot(r) => {
            let config = r.fleet.config.load()?;
            let jobs = per_host(&config, &r.fleet, commands::reboot_command)?;
            changing(&config, &r.fleet, ProxyAction::Reboot, jobs, r.rolling).await
        }
        Verb::Start(a) => executors(a, ProxyAction::Start).await,
        Verb::Stop(a) => executors(a, ProxyAction::Stop).await,
        Verb::Restart(a) => executors(a, ProxyAction::Restart).await,
        Verb::Remove(a) => executors(a, ProxyAction::Remove).await,
        Verb::Details(a) => {
            let config = a.config.load()?;
            let jobs = hosts(&config, &a.targets)?
                .into_iter()
                .map(|h| (h, commands::details_command()))
                .collect();
            let runs = run_jobs(&config, jobs).await;
            fanout::print_runs("Proxy", &runs, a.json)?;
            fanout::check_runs("proxy details", &runs)
        }
        Verb::BootConfig(b) => boot_config(b).await,
        Verb::Logs(l) if l.follow => follow(l).await,
        Verb::Logs(l) => logs(l).await,
    }
}

/// A verb the hosts' executors run, planned and recorded by the scheduler like `app stop`
/// (`operate.rs`), in service mode too.
async fn executors(a: &FleetArgs, action: ProxyAction) -> anyhow::Result<()> {
    let operation = Operation::Proxy { action };
    crate::commands::operate::run(&a.config, &a.targets, a.json, operation).await
}

/// A state-changing verb: under the deploy lock, recorded in the event log, each host's
/// output printed as Kamal's `Proxy Host: HOST`; `rolling` runs the hosts one at a time and
/// stops at the first failure.
async fn changing(
    config: &Config,
    a: &FleetArgs,
    action: ProxyAction,
    jobs: Vec<(String, String)>,
    rolling: bool,
) -> anyhow::Result<()> {
    let operation = Operation::Proxy { action };
    let what = operation.to_string();
    let hosts: Vec<String> = jobs.iter().map(|(h, _)| h.clone()).collect();
    let lock = format!("run `flotilla {what}`");
    fanout::with_lock(config, &lock, async {
        let log = record::open_log(config)?;
        let recording = Recording::start(log.as_ref(), config, operation, &hosts)?;
        let batches: Vec<Vec<(String, String)>> = if rolling {
            jobs.into_iter().map(|j| vec![j]).collect()
        } else {
            vec![jobs]
        };
        let mut result = Ok(());
        for batch in batches {
            let runs = run_jobs(config, batch).await;
            recording.note(&runs);
            result = fanout::print_runs("Proxy", &runs, a.json)
                .and_then(|()| fanout::check_runs(&what, &runs));
            if result.is_err() {
                break;
            }
        }
        recording.end(result)
    })
    .await
}

fn hosts(config: &Config, targets: &Targets) -> anyhow::Result<Vec<String>> {
    let hosts = targets.hosts(config);
    if hosts.is_empty() {
        return Err(fanout::no_hosts().into());
    }
    Ok(hosts)
}

/// One command per picked host, made from the host's `proxy.run`.
fn per_host(
    config: &Config,
    a: &FleetArgs,
    command: impl Fn(&ProxyRun) -> String,
) -> anyhow::Result<Vec<(String, String)>> {
    hosts(config, &a.targets)?
        .into_iter()
        .map(|h| {
            let run = proxy_run(config, &h)?;
            Ok((h, command(&run)))
        })
        .collect()
}

/// The `proxy.run` of `host`: the first of its roles that sets one (the config crate already
/// refused hosts whose roles disagree), else the root `proxy.run`. Settings that do not apply
/// to Flotilla's proxy are printed as warnings; values it cannot honour are usage errors.
pub fn proxy_run(config: &Config, host: &str) -> anyhow::Result<ProxyRun> {
    let empty = Default::default();
    let run = config
        .servers
        .iter()
        .filter(|r| r.hosts.iter().any(|h| h == host))
        .filter_map(|r| r.proxy.as_ref())
        .map(|p| &p.run)
        .find(|r| !r.is_empty())
        .or_else(|| config.proxy.as_ref().map(|p| &p.run))
        .unwrap_or(&empty);
    let (run, warnings) = ProxyRun::from_kamal(run).map_err(|e| UserError {
        message: e.to_string(),
        hint: Some("fix proxy.run in config/deploy.yml (`flotilla docs proxy`)".into()),
        code: USAGE,
    })?;
    for w in warnings {
        eprintln!("flotilla: warning: {w}");
    }
    Ok(run)
}

async fn run_jobs(config: &Config, jobs: Vec<(String, String)>) -> Vec<HostRun> {
    let pool = fanout::pool(config);
    let runs = fanout::run_all(&pool, jobs).await;
    pool.close().await;
    runs
}

fn log_options(l: &LogsArgs) -> Logs {
    let default = if l.follow {
        DEFAULT_FOLLOW_LINES
    } else {
        DEFAULT_LINES
    };
    Logs {
        since: l.since.clone(),
        lines: l.lines.or(if l.since.is_some() || l.grep.is_some() {
            None
        } else {
            Some(default)
        }),
        grep: l.grep.clone(),
        grep_options: l.grep_options.clone(),
        timestamps: !l.skip_timestamps,
        follow: l.follow,
    }
}

async fn logs(l: &LogsArgs) -> anyhow::Result<()> {
    let config = l.fleet.config.load()?;
    let command = commands::logs_command(&log_options(l));
    let jobs = hosts(&config, &l.fleet.targets)?
        .into_iter()
        .map(|h| (h, command.clone()))
        .collect();
    let mut runs = run_jobs(&config, jobs).await;
    // As Kamal: a grep that matched nothing answers "Nothing found"; only an unreachable
    // host is an error.
    for run in &mut runs {
        if let Ok(o) = &mut run.result
            && !o.success()
            && l.grep.is_some()
        {
            o.stdout = b"Nothing found".to_vec();
            o.exit = flotilla_ssh::Exit::Status(0);
        }
    }
    fanout::print_runs("Proxy", &runs, l.fleet.json)?;
    fanout::check_runs("reading the proxy's logs", &runs)
}

/// `logs -f`: one host's proxy log as it is written, until the user interrupts.
async fn follow(l: &LogsArgs) -> anyhow::Result<()> {
    let config = l.fleet.config.load()?;
    let (host, _) = l.fleet.targets.single_host(&config)?;
    let command = commands::logs_command(&log_options(l));
    eprintln!("Following the proxy's log on {host}...");
    let pool = fanout::pool(&config);
    let status = crate::commands::app_exec::stream(&pool, &host, &command, false).await;
    pool.close().await;
    crate::commands::app_exec::exit_with(&host, status?)
}

/// Kamal keeps the proxy's boot options in a file on each host; Flotilla reads them from
/// `proxy.run` in config/deploy.yml. `get` shows, per host, what the running proxy was started
/// with (its settings label) and what the config asks for.
async fn boot_config(b: &BootConfigArgs) -> anyhow::Result<()> {
    let a = &b.fleet;
    let config = a.config.load()?;
    if !matches!(b.action, BootConfigAction::Get) {
        return Err(UserError {
            message: "Flotilla's proxy boot configuration is `proxy.run` in config/deploy.yml"
                .into(),
            hint: Some(
                "edit proxy.run (http_port, https_port, metrics_port, log_max_size, debug, \
                 bind_ips), then `flotilla proxy reboot`"
                    .into(),
            ),
            code: USAGE,
        }
        .into());
    }
    let jobs = per_host(&config, a, |run| {
        format!(
            "echo \"running: $(docker inspect -f '{{{{index .Config.Labels \\\"{}\\\"}}}}' {} 2>/dev/null)\"; \
             echo 'config:  {}'",
            commands::RUN_LABEL,
            flotilla_setup::plan::PROXY,
            run.label()
        )
    })?;
    let runs = run_jobs(&config, jobs).await;
    fanout::print_runs("Proxy", &runs, a.json)?;
    fanout::check_runs("proxy boot_config get", &runs)
}
