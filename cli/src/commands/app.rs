//! `flotilla app ...`: Kamal's everyday app commands. Read-only and interactive ones run over
//! SSH on the picked hosts (`details`, `containers`, `images`, `version`, `logs [-f]`,
//! `exec [-i]`, `stale_containers`). `start`, `stop`, `remove`, `maintenance`, `live` and
//! `stale_containers --stop` are planned steps the hosts' executors run and the scheduler
//! records (`operate.rs`), as a deploy is. The Docker command lines are
//! `flotilla_deploy::commands::App`'s.

use crate::commands::config::ConfigArgs;
use crate::commands::fanout::{self, Targets};
use crate::exit::{USAGE, UserError};
use clap::{Args, Subcommand};
use flotilla_deploy::Config;
use flotilla_deploy::commands::{App, Logs, NewContainer};
use flotilla_deploy::config::types::Role;
use flotilla_events::event::Operation;

/// Lines `app logs` shows per host unless `--since` or `--grep` narrow them (Kamal's).
const DEFAULT_LINES: u32 = 100;
/// Lines `app logs -f` shows before following (Kamal's).
const DEFAULT_FOLLOW_LINES: u32 = 10;

const EXAMPLES: &str = "Examples:
  flotilla app details
  flotilla app logs -r web --since 10m --grep 'Completed 500'
  flotilla app logs -f
  flotilla app exec 'bin/rails db:migrate'
  flotilla app exec -i --reuse 'bin/rails console'
  flotilla app version";

/// Manage the app's containers on the servers (Kamal's `kamal app`)
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct AppCmd {
    #[command(subcommand)]
    action: AppAction,
}

#[derive(Debug, Subcommand)]
enum AppAction {
    /// Show the running app containers on each host (`docker ps`)
    #[command(
        disable_help_flag = true,
        after_help = "Examples:\n  flotilla app details\n  flotilla app details -r web --json"
    )]
    Details(Common),
    /// Show every app container on each host, stopped ones too
    #[command(
        disable_help_flag = true,
        after_help = "Examples:\n  flotilla app containers\n  flotilla app containers -h 10.0.0.5"
    )]
    Containers(Common),
    /// Show the app's images on each host
    #[command(
        disable_help_flag = true,
        after_help = "Examples:\n  flotilla app images"
    )]
    Images(Common),
    /// Show the app version running on each host
    #[command(
        disable_help_flag = true,
        after_help = "Examples:\n  flotilla app version\n  flotilla app version --json"
    )]
    Version(Common),
    /// Show log lines from the app on each host (`-f` follows one host)
    #[command(
        disable_help_flag = true,
        after_help = "Examples:\n  flotilla app logs\n  flotilla app logs -n 20 --grep ERROR\n  flotilla app logs -f -h 10.0.0.5\n  flotilla app logs --container-id 3f2a1b"
    )]
    Logs(LogsArgs),
    /// Run a command in the app's image on each host (or in the running container with --reuse)
    #[command(
        disable_help_flag = true,
        after_help = "Examples:\n  flotilla app exec 'bin/rails db:migrate'\n  flotilla app exec -p --env FOO=bar 'env'\n  flotilla app exec -i 'bin/rails console'\n  flotilla app exec -i --reuse sh"
    )]
    Exec(ExecArgs),
    /// List (or with --stop, stop) containers of older versions still running
    #[command(
        name = "stale_containers",
        alias = "stale-containers",
        disable_help_flag = true,
        after_help = "Examples:\n  flotilla app stale_containers\n  flotilla app stale_containers --stop"
    )]
    StaleContainers(StaleArgs),
    /// Boot the current version (or --version) on every host through the scheduler, as a
    /// redeploy: stopped or missing containers are started, running ones kept
    #[command(
        disable_help_flag = true,
        after_help = "Examples:\n  flotilla app boot\n  flotilla app boot --version 3f2a1b -r web"
    )]
    Boot(BootArgs),
    /// Start the app's existing container of the current version on each host
    #[command(
        disable_help_flag = true,
        after_help = "Examples:\n  flotilla app start\n  flotilla app start --version 3f2a1b -r web"
    )]
    Start(VersionArgs),
    /// Stop the app's running container on each host
    #[command(
        disable_help_flag = true,
        after_help = "Examples:\n  flotilla app stop\n  flotilla app stop -h 10.0.0.5"
    )]
    Stop(Common),
    /// Answer the app's requests with 503 and a message on every host's proxy
    #[command(
        disable_help_flag = true,
        after_help = "Examples:\n  flotilla app maintenance\n  flotilla app maintenance --message 'Back at 10:00 UTC'"
    )]
    Maintenance(MaintenanceArgs),
    /// End maintenance: the proxies forward to the app again
    #[command(
        disable_help_flag = true,
        after_help = "Examples:\n  flotilla app live"
    )]
    Live(LiveArgs),
    /// Stop the app, then remove its containers and images from each host
    #[command(
        disable_help_flag = true,
        after_help = "Examples:\n  flotilla app remove\n  flotilla app remove -r jobs"
    )]
    Remove(Common),
}

#[derive(Debug, Args)]
struct Common {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    targets: Targets,
    /// JSON on stdout: one object per host (host, exit, stdout, stderr); for start, stop,
    /// remove, maintenance, live and stale_containers --stop, which the executors run, one
    /// event per line as `deploy --json`
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct VersionArgs {
    #[command(flatten)]
    common: Common,
    /// The version to start (default: the newest app container on each host)
    #[arg(long)]
    version: Option<String>,
}

#[derive(Debug, Args)]
struct BootArgs {
    #[command(flatten)]
    fleet: crate::rollout::FleetArgs,
    /// The version to boot (default: that of the primary host's newest app container)
    #[arg(long)]
    version: Option<String>,
}

#[derive(Debug, Args)]
struct LiveArgs {
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Args)]
struct MaintenanceArgs {
    #[command(flatten)]
    live: LiveArgs,
    /// What clients are told while the app is in maintenance
    #[arg(long)]
    message: Option<String>,
}

#[derive(Debug, Args)]
struct StaleArgs {
    #[command(flatten)]
    common: Common,
    /// Stop the stale containers found
    #[arg(short = 's', long)]
    stop: bool,
}

#[derive(Debug, Args)]
struct LogsArgs {
    #[command(flatten)]
    common: Common,
    /// Lines since a timestamp (2013-01-02T13:23:37Z) or relative (42m)
    #[arg(short = 's', long)]
    since: Option<String>,
    /// Lines to show from each host (default 100; 10 with -f)
    #[arg(short = 'n', long)]
    lines: Option<u32>,
    /// Only lines matching this (grep)
    #[arg(short = 'g', long)]
    grep: Option<String>,
    /// Extra grep options, e.g. '-C 2'
    #[arg(long = "grep-options", alias = "grep_options")]
    grep_options: Option<String>,
    /// Follow the log of one host (the primary, or the one -h picks)
    #[arg(short = 'f', long)]
    follow: bool,
    /// Leave out Docker's timestamps
    #[arg(short = 'T', long = "skip-timestamps", alias = "skip_timestamps")]
    skip_timestamps: bool,
    /// Read this container instead of the role's current one
    #[arg(long = "container-id", alias = "container_id")]
    container_id: Option<String>,
}

#[derive(Debug, Args)]
struct ExecArgs {
    #[command(flatten)]
    common: Common,
    /// Run interactively with a terminal, on one host (the primary, or the one -h picks)
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Run in the running container instead of a new one
    #[arg(long)]
    reuse: bool,
    /// Set an environment variable for the command (KEY=VALUE, repeatable)
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Run this version's image (default: the version running on each host)
    #[arg(long)]
    version: Option<String>,
    /// The command (quoted, or as words after --)
    #[arg(required = true, trailing_var_arg = true)]
    command: Vec<String>,
}

pub async fn run(cmd: &AppCmd) -> anyhow::Result<()> {
    crate::lifecycle::init_tracing("warn");
    match &cmd.action {
        AppAction::Details(c) => per_host_role(c, "App", |app| app.info()).await,
        AppAction::Containers(c) => {
            per_host(c, "App", |config, _| {
                App::new(config, None).list_containers()
            })
            .await
        }
        AppAction::Images(c) => {
            per_host(c, "App", |config, _| App::new(config, None).list_images()).await
        }
        AppAction::Version(c) => {
            per_host(c, "App", |config, role| {
                App::new(config, Some(role)).current_running_version()
            })
            .await
        }
        AppAction::Logs(a) if a.follow => follow_logs(a).await,
        AppAction::Logs(a) => logs(a).await,
        AppAction::Exec(a) => {
            let config = a.config().load()?;
            crate::commands::app_exec::exec(a.parts(&config)?).await
        }
        AppAction::StaleContainers(a) => stale_containers(a).await,
        AppAction::Start(a) => start(a).await,
        AppAction::Stop(c) => {
            crate::commands::operate::run(&c.config, &c.targets, c.json, Operation::AppStop).await
        }
        AppAction::Remove(c) => {
            crate::commands::operate::run(&c.config, &c.targets, c.json, Operation::AppRemove).await
        }
        AppAction::Boot(a) => boot(a).await,
        AppAction::Maintenance(a) => {
            let c = &a.live.common;
            let operation = Operation::AppMaintenance {
                message: a.message.clone(),
            };
            crate::commands::operate::run(&c.config, &c.targets, c.json, operation).await
        }
        AppAction::Live(l) => {
            let c = &l.common;
            crate::commands::operate::run(&c.config, &c.targets, c.json, Operation::AppLive).await
        }
    }
}

/// One command per host (with the host's first picked role), printed per host.
async fn per_host(
    c: &Common,
    kind: &str,
    command: impl Fn(&Config, &Role) -> String,
) -> anyhow::Result<()> {
    let config = c.config.load()?;
    let mut jobs: Vec<(String, String)> = Vec::new();
    for (host, role) in c.targets.host_roles(&config) {
        if !jobs.iter().any(|(h, _)| *h == host) {
            jobs.push((host, command(&config, role)));
        }
    }
    finish(&config, jobs, kind, c.json, "the command").await
}

/// One command per picked host and role (Kamal's `on_roles`), printed per host.
async fn per_host_role(
    c: &Common,
    kind: &str,
    command: impl Fn(App<'_>) -> String,
) -> anyhow::Result<()> {
    let config = c.config.load()?;
    let jobs = c
        .targets
        .host_roles(&config)
        .into_iter()
        .map(|(host, role)| (host, command(App::new(&config, Some(role)))))
        .collect();
    finish(&config, jobs, kind, c.json, "the command").await
}

async fn finish(
    config: &Config,
    jobs: Vec<(String, String)>,
    kind: &str,
    json: bool,
    what: &str,
) -> anyhow::Result<()> {
    if jobs.is_empty() {
        return Err(fanout::no_hosts().into());
    }
    let pool = fanout::pool(config);
    let runs = fanout::run_all(&pool, jobs).await;
    pool.close().await;
    fanout::print_runs(kind, &runs, json)?;
    fanout::check_runs(what, &runs)
}

fn log_options(a: &LogsArgs) -> Logs {
    let default = if a.follow {
        DEFAULT_FOLLOW_LINES
    } else {
        DEFAULT_LINES
    };
    Logs {
        container_id: a.container_id.clone(),
        timestamps: !a.skip_timestamps,
        since: a.since.clone(),
        lines: a.lines.or(if a.since.is_some() || a.grep.is_some() {
            None
        } else {
            Some(default)
        }),
        grep: a.grep.clone(),
        grep_options: a.grep_options.clone(),
        follow: a.follow,
    }
}

/// Kamal prints "Nothing found" for a host whose log read or grep found nothing.
async fn logs(a: &LogsArgs) -> anyhow::Result<()> {
    let config = a.common.config.load()?;
    let options = log_options(a);
    let jobs: Vec<(String, String)> = a
        .common
        .targets
        .host_roles(&config)
        .into_iter()
        .map(|(host, role)| (host, App::new(&config, Some(role)).logs(&options)))
        .collect();
    if jobs.is_empty() {
        return Err(fanout::no_hosts().into());
    }
    let pool = fanout::pool(&config);
    let mut runs = fanout::run_all(&pool, jobs).await;
    pool.close().await;
    // As Kamal: a host whose read failed (no running container, grep matched nothing) answers
    // "Nothing found"; only an unreachable host is an error.
    for run in &mut runs {
        if let Ok(o) = &mut run.result
            && !o.success()
        {
            o.stdout = b"Nothing found".to_vec();
            o.exit = flotilla_ssh::Exit::Status(0);
        }
    }
    fanout::print_runs("App", &runs, a.common.json)?;
    fanout::check_runs("reading the logs", &runs)
}

/// `logs -f`: the log of one host streamed as it is written, until the container stops or
/// the user interrupts.
async fn follow_logs(a: &LogsArgs) -> anyhow::Result<()> {
    let config = a.common.config.load()?;
    let (host, role) = a.common.targets.single_host(&config)?;
    let command = App::new(&config, Some(role)).logs(&log_options(a));
    eprintln!("Following logs on {host}...");
    let pool = fanout::pool(&config);
    let status = crate::commands::app_exec::stream(&pool, &host, &command, false).await;
    pool.close().await;
    crate::commands::app_exec::exit_with(&host, status?)
}

async fn stale_containers(a: &StaleArgs) -> anyhow::Result<()> {
    if a.stop {
        // Planned from the log (each host's current version) and run by the executors.
        let c = &a.common;
        return crate::commands::operate::run(
            &c.config,
            &c.targets,
            c.json,
            Operation::StaleContainersStop,
        )
        .await;
    }
    let config = a.common.config.load()?;
    stale(&config, a).await
}

/// Running versions other than the current one, per host and role; stopped with `--stop`.
async fn stale(config: &Config, a: &StaleArgs) -> anyhow::Result<()> {
    let pairs = a.common.targets.host_roles(config);
    if pairs.is_empty() {
        return Err(fanout::no_hosts().into());
    }
    let pool = fanout::pool(config);
    let jobs = pairs
        .iter()
        .map(|(host, role)| {
            let app = App::new(config, Some(role));
            (
                host.clone(),
                format!(
                    "{}; echo ---; {}",
                    app.list_versions(&["running"]),
                    app.current_running_version()
                ),
            )
        })
        .collect();
    let runs = fanout::run_all(&pool, jobs).await;
    let mut out = String::new();
    for (run, (host, role)) in runs.iter().zip(&pairs) {
        if !run.ok() {
            continue;
        }
        let text = run.stdout();
        let (versions, current) = text.split_once("---").unwrap_or((&text, ""));
        let current = current.trim();
        for version in versions.lines().map(str::trim).filter(|v| !v.is_empty()) {
            if version == current {
                continue;
            }
            out.push_str(&format!(
                "App Host: {host}\nDetected stale container for role {} with version {version} (use `flotilla app stale_containers --stop` to stop)\n\n",
                role.name
            ));
        }
    }
    crate::commands::write_stdout(&out)?;
    pool.close().await;
    fanout::check_runs("listing containers", &runs)
}

/// Starts each role's container of `--version`, or of the newest release, through the
/// executors.
async fn start(a: &VersionArgs) -> anyhow::Result<()> {
    let operation = Operation::AppStart {
        version: a.version.clone(),
    };
    let c = &a.common;
    crate::commands::operate::run(&c.config, &c.targets, c.json, operation).await
}

/// Kamal's `app boot`: the version rolled out again by the scheduler (lock, hooks, events),
/// without a build.
async fn boot(a: &BootArgs) -> anyhow::Result<()> {
    let version = match &a.version {
        Some(v) => v.clone(),
        None => {
            let config = a.fleet.config.load()?;
            let (host, role) = Targets::default().single_host(&config)?;
            let pool = fanout::pool(&config);
            let runs = fanout::run_all(
                &pool,
                vec![(host.clone(), App::new(&config, Some(role)).latest_version())],
            )
            .await;
            pool.close().await;
            fanout::check_runs("finding the running version", &runs)?;
            let version = runs
                .first()
                .map(|r| r.stdout().trim().to_owned())
                .unwrap_or_default();
            if version.is_empty() {
                return Err(UserError {
                    message: format!("no app container on {host} to take the version from"),
                    hint: Some("name it: flotilla app boot --version VERSION".into()),
                    code: USAGE,
                }
                .into());
            }
            version
        }
    };
    let cmd = crate::commands::deploy::DeployCmd {
        fleet: a.fleet.clone(),
        skip_push: true,
        version: Some(version),
        resume: None,
    };
    crate::commands::deploy::run(&cmd, true).await
}

/// Used by `app_exec`: `KEY=VALUE` pairs (Kamal's `KEY:VALUE` accepted too).
pub(crate) fn parse_env(pairs: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    pairs
        .iter()
        .map(|p| {
            p.split_once('=')
                .or_else(|| p.split_once(':'))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| {
                    UserError {
                        message: format!("--env {p}: expected KEY=VALUE"),
                        hint: Some(
                            "e.g. flotilla app exec --env RAILS_ENV=test 'bin/rails test'".into(),
                        ),
                        code: USAGE,
                    }
                    .into()
                })
        })
        .collect()
}

/// The pieces of `app exec` that live in `app_exec.rs`.
pub(crate) struct ExecParts<'a> {
    pub config: &'a Config,
    pub targets: &'a Targets,
    pub json: bool,
    pub interactive: bool,
    pub reuse: bool,
    pub env: Vec<(String, String)>,
    pub version: Option<&'a str>,
    pub command: String,
}

impl ExecArgs {
    pub(crate) fn parts<'a>(&'a self, config: &'a Config) -> anyhow::Result<ExecParts<'a>> {
        Ok(ExecParts {
            config,
            targets: &self.common.targets,
            json: self.common.json,
            interactive: self.interactive,
            reuse: self.reuse,
            env: parse_env(&self.env)?,
            version: self.version.as_deref(),
            command: self.command.join(" "),
        })
    }

    pub(crate) fn config(&self) -> &ConfigArgs {
        &self.common.config
    }
}

/// For `app_exec`: a `NewContainer` for the role on `host` (kept here beside its flags).
pub(crate) fn new_container<'c>(
    host: &'c str,
    version: &'c str,
    image: &'c str,
    suffix: &'c str,
    parts: &'c ExecParts<'_>,
    env_file: Option<&'c str>,
) -> NewContainer<'c> {
    NewContainer {
        host,
        version,
        image,
        suffix,
        command: &parts.command,
        interactive: parts.interactive,
        env: &parts.env,
        env_file,
    }
}
