//! Kamal's `proxy` commands on the fleet: `boot`, `reboot [--rolling]`, `start`, `stop`,
//! `restart`, `details`, `logs [-f]` and `remove` for the `flotilla-proxy` container `flotilla
//! setup` runs on every host. The state-changing ones are operations the hosts' executors
//! run, planned and recorded by the scheduler (`operate.rs`), in service mode too: `boot` and
//! `reboot` replace the proxy's container by one with the host's `proxy.run`, handing the
//! listening sockets over (the executor's `ReplaceProxy` step). The read-only verbs run
//! `flotilla_setup::proxy`'s shell commands over the SSH fan-out. `proxy.run` (ports, bind
//! IP, metrics port, log size, debug) is read per host from the roles there.

use crate::commands::config::ConfigArgs;
use crate::commands::fanout::{self, HostRun, Targets};
use crate::exit::{USAGE, UserError};
use clap::Args;
use flotilla_deploy::Config;
use flotilla_deploy::plan::proxy_run_with_warnings;
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
            check_runs(a)?;
            executors(a, ProxyAction::Boot).await
        }
        Verb::Reboot(r) => {
            check_runs(&r.fleet)?;
            let action = match r.rolling {
                true => ProxyAction::RebootRolling,
                false => ProxyAction::Reboot,
            };
            executors(&r.fleet, action).await
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

/// Reads `proxy.run` for each picked host before anything is asked, so settings Flotilla's
/// proxy cannot honour are a usage error here and ignored keys are warned about once.
fn check_runs(a: &FleetArgs) -> anyhow::Result<()> {
    let config = a.config.load()?;
    for host in hosts(&config, &a.targets)? {
        proxy_run(&config, &host)?;
    }
    Ok(())
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
    let (run, warnings) = proxy_run_with_warnings(config, host).map_err(|e| UserError {
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
