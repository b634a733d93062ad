//! `flotilla accessory ...`: Kamal's accessory commands, for one accessory or `all`. The
//! state-changing ones (`boot|reboot|upgrade|start|stop|restart|remove`) are operations the
//! accessory's hosts' executors run, planned and recorded by the scheduler like `app stop`
//! (`operate.rs`; the embedded scheduler here or the service): this process only reads and
//! renders the `files:` (`.erb` ones with the accessory's env, secrets included, as Kamal
//! does), which travel sealed. `details`, `logs` and `exec` run over SSH on the accessory's
//! hosts, as Kamal's do.

use crate::commands::config::ConfigArgs;
use crate::commands::fanout::{self, Targets};
use crate::exit::{FAILED, USAGE, UserError};
use clap::{Args, Subcommand};
use flotilla_deploy::Config;
use flotilla_deploy::commands::{Accessory, Logs};
use flotilla_deploy::config::types;
use flotilla_deploy::plan::{AccessoryFiles, FileContents};
use flotilla_events::event::{AccessoryAction as Action, Operation};
use std::collections::BTreeMap;

/// Where an accessory's secret env file lives on its hosts (Kamal's directory layout).
fn env_file(config: &Config, name: &str) -> String {
    format!(".kamal/apps/{}/env/accessories/{name}.env", config.service)
}

const EXAMPLES: &str = "Examples:
  flotilla accessory boot all
  flotilla accessory reboot db
  flotilla accessory logs db -f
  flotilla accessory exec db -i 'psql -U postgres'
  flotilla accessory remove redis -y";

/// Manage accessories (databases, caches) on their hosts (Kamal's `kamal accessory`)
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct AccessoryCmd {
    #[command(subcommand)]
    action: AccessoryAction,
}

#[derive(Debug, Subcommand)]
enum AccessoryAction {
    /// Boot an accessory (or `all`): directories, files, env, registry login, container
    #[command(
        after_help = "Examples:\n  flotilla accessory boot all\n  flotilla accessory boot db"
    )]
    Boot(NameArgs),
    /// Stop, remove and boot an accessory again, with its image pulled afresh
    #[command(
        after_help = "Examples:\n  flotilla accessory reboot db\n  flotilla accessory reboot all"
    )]
    Reboot(NameArgs),
    /// Start an accessory's existing container
    #[command(after_help = "Examples:\n  flotilla accessory start db")]
    Start(NameArgs),
    /// Stop an accessory's container
    #[command(after_help = "Examples:\n  flotilla accessory stop db")]
    Stop(NameArgs),
    /// Stop then start an accessory's container
    #[command(after_help = "Examples:\n  flotilla accessory restart db")]
    Restart(NameArgs),
    /// Show an accessory's container on each of its hosts
    #[command(
        after_help = "Examples:\n  flotilla accessory details all\n  flotilla accessory details db --json"
    )]
    Details(NameArgs),
    /// Show an accessory's log lines (`-f` follows its first host)
    #[command(
        after_help = "Examples:\n  flotilla accessory logs db\n  flotilla accessory logs db -f\n  flotilla accessory logs db --grep ERROR -n 50"
    )]
    Logs(LogsArgs),
    /// Run a command in the accessory's image (or its running container with --reuse)
    #[command(
        after_help = "Examples:\n  flotilla accessory exec db 'pg_dump -U postgres app'\n  flotilla accessory exec db -i --reuse 'psql -U postgres'"
    )]
    Exec(ExecArgs),
    /// Remove an accessory's container, image and directories from its hosts
    #[command(
        after_help = "Examples:\n  flotilla accessory remove redis -y\n  flotilla accessory remove all -y"
    )]
    Remove(RemoveArgs),
    /// Move a Kamal 1 accessory onto the `kamal` network: reboot it there
    #[command(after_help = "Examples:\n  flotilla accessory upgrade all")]
    Upgrade(NameArgs),
}

#[derive(Debug, Args)]
struct NameArgs {
    /// The accessory's name in deploy.yml, or `all`
    name: String,
    #[command(flatten)]
    config: ConfigArgs,
    /// JSON lines on stdout: the operation's events (boot, reboot, start, stop, ...), or one
    /// object per host with host, exit, stdout, stderr (details, logs, exec)
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct LogsArgs {
    #[command(flatten)]
    name: NameArgs,
    /// Lines since a timestamp or relative (42m)
    #[arg(short = 's', long)]
    since: Option<String>,
    /// Lines to show from each host
    #[arg(short = 'n', long)]
    lines: Option<u32>,
    /// Only lines matching this (grep)
    #[arg(short = 'g', long)]
    grep: Option<String>,
    /// Extra grep options, e.g. '-C 2'
    #[arg(long = "grep-options", alias = "grep_options")]
    grep_options: Option<String>,
    /// Follow the log on the accessory's first host
    #[arg(short = 'f', long)]
    follow: bool,
    /// Leave out Docker's timestamps
    #[arg(short = 'T', long = "skip-timestamps", alias = "skip_timestamps")]
    skip_timestamps: bool,
}

#[derive(Debug, Args)]
struct ExecArgs {
    #[command(flatten)]
    name: NameArgs,
    /// Run interactively with a terminal on the accessory's first host
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Run in the running container instead of a new one
    #[arg(long)]
    reuse: bool,
    /// The command (quoted, or as words after --)
    #[arg(required = true, trailing_var_arg = true)]
    command: Vec<String>,
}

#[derive(Debug, Args)]
struct RemoveArgs {
    #[command(flatten)]
    name: NameArgs,
    /// Remove without asking (the accessory's data directories go too)
    #[arg(short = 'y', long)]
    confirmed: bool,
}

pub async fn run(cmd: &AccessoryCmd) -> anyhow::Result<()> {
    crate::lifecycle::init_tracing("warn");
    match &cmd.action {
        AccessoryAction::Boot(a) => operate(a, Action::Boot).await,
        AccessoryAction::Reboot(a) => operate(a, Action::Reboot).await,
        AccessoryAction::Upgrade(a) => operate(a, Action::Upgrade).await,
        AccessoryAction::Start(a) => operate(a, Action::Start).await,
        AccessoryAction::Stop(a) => operate(a, Action::Stop).await,
        AccessoryAction::Restart(a) => operate(a, Action::Restart).await,
        AccessoryAction::Details(a) => simple(a, |acc| acc.info(false, false)).await,
        AccessoryAction::Logs(a) => logs(a).await,
        AccessoryAction::Exec(a) => exec(a).await,
        AccessoryAction::Remove(a) => {
            if !a.confirmed {
                return Err(UserError {
                    message: format!(
                        "removing {} deletes its container and data directories",
                        a.name.name
                    ),
                    hint: Some(format!(
                        "run `flotilla accessory remove {} -y` to confirm",
                        a.name.name
                    )),
                    code: USAGE,
                }
                .into());
            }
            operate(&a.name, Action::Remove).await
        }
    }
}

/// The accessories `name` picks: one, or every one for `all`.
fn picked<'c>(config: &'c Config, name: &str) -> anyhow::Result<Vec<&'c types::Accessory>> {
    if name == "all" {
        return Ok(config.accessories.iter().collect());
    }
    match config.accessories.iter().find(|a| a.name == name) {
        Some(a) => Ok(vec![a]),
        None => Err(UserError {
            message: format!("no accessory named {name:?}"),
            hint: Some(format!(
                "the config's accessories are: {}",
                config
                    .accessories
                    .iter()
                    .map(|a| a.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            code: USAGE,
        }
        .into()),
    }
}

/// Kamal's `setup` step between the agents and the first deploy: every accessory booted where
/// it has no container yet (one that exists, running or not, is left as it is).
pub async fn boot_all(config_args: &ConfigArgs, json: bool) -> anyhow::Result<()> {
    if config_args.load()?.accessories.is_empty() {
        return Ok(());
    }
    operate_on(config_args, "all", json, Action::Boot).await
}

/// `action` on each accessory `a` picks, one operation (and one entry in the log) each,
/// stopping at the first that fails.
async fn operate(a: &NameArgs, action: Action) -> anyhow::Result<()> {
    operate_on(&a.config, &a.name, a.json, action).await
}

async fn operate_on(
    config_args: &ConfigArgs,
    name: &str,
    json: bool,
    action: Action,
) -> anyhow::Result<()> {
    let config = config_args.load()?;
    let accessories = picked(&config, name)?;
    let boots = matches!(action, Action::Boot | Action::Reboot | Action::Upgrade);
    for acc in accessories {
        let mut files = AccessoryFiles::new();
        if boots {
            files.insert(acc.name.clone(), render_files(&config, acc)?);
        }
        let operation = Operation::Accessory {
            name: acc.name.clone(),
            action,
        };
        crate::commands::operate::run_with_files(
            config_args,
            &Targets::default(),
            json,
            operation,
            files,
        )
        .await?;
    }
    Ok(())
}

/// Reads (and for `.erb`, renders with the accessory's env, secrets included) every file.
/// by its local path as written in deploy.yml.
fn render_files(
    config: &Config,
    acc: &types::Accessory,
) -> anyhow::Result<BTreeMap<String, FileContents>> {
    let root = std::env::current_dir()?;
    let mut out = BTreeMap::new();
    for f in Accessory::new(config, acc).files() {
        let path = root.join(&f.local);
        let text = std::fs::read(&path).map_err(|e| UserError {
            message: format!("accessory {}: cannot read {}: {e}", acc.name, f.local),
            hint: Some("files: paths are relative to the project directory".into()),
            code: USAGE,
        })?;
        let content = if f.local.ends_with(".erb") {
            let mut env: std::collections::BTreeMap<String, String> = std::env::vars().collect();
            env.extend(acc.env.clear.clone());
            for r in &acc.env.secret {
                if let Some(v) = config.secrets.get(&r.secret) {
                    env.insert(r.var.clone(), v.expose().to_owned());
                }
            }
            let src = String::from_utf8_lossy(&text).into_owned();
            let mut host = flotilla_deploy::config::erb::Host {
                env: &mut env,
                root: &root,
            };
            match flotilla_deploy::config::erb::render_file(&src, &mut host) {
                Ok(r) => r.text.into_bytes(),
                Err(errs) => {
                    let lines: Vec<String> = errs
                        .iter()
                        .map(|e| {
                            format!("{}:{}:{}: {}", f.local, e.pos.line, e.pos.column, e.message)
                        })
                        .collect();
                    return Err(UserError {
                        message: format!("accessory {}: {}", acc.name, lines.join("; ")),
                        hint: Some(format!("fix the template {}", f.local)),
                        code: USAGE,
                    }
                    .into());
                }
            }
        } else {
            text
        };
        out.insert(f.local, FileContents::new(content));
    }
    Ok(out)
}

/// One read-only command per host of each picked accessory, over SSH.
async fn simple(a: &NameArgs, command: impl Fn(&Accessory<'_>) -> String) -> anyhow::Result<()> {
    let config = a.config.load()?;
    let accessories = picked(&config, &a.name)?;
    let pool = fanout::pool(&config);
    let mut result = Ok(());
    for acc in &accessories {
        let line = command(&Accessory::new(&config, acc));
        let jobs = acc
            .hosts
            .iter()
            .map(|h| (h.clone(), line.clone()))
            .collect();
        let runs = fanout::run_all(&pool, jobs).await;
        let done = fanout::print_runs(&format!("Accessory {}", acc.name), &runs, a.json)
            .and_then(|()| fanout::check_runs(&format!("accessory {}", acc.name), &runs));
        result = result.and(done);
    }
    pool.close().await;
    result
}

fn one<'c>(config: &'c Config, name: &str) -> anyhow::Result<&'c types::Accessory> {
    let picked = picked(config, name)?;
    match picked.as_slice() {
        [one] => Ok(one),
        _ => Err(UserError {
            message: "this command takes one accessory, not `all`".into(),
            hint: Some("name the accessory, e.g. `flotilla accessory logs db`".into()),
            code: USAGE,
        }
        .into()),
    }
}

fn first_host(acc: &types::Accessory) -> anyhow::Result<&str> {
    acc.hosts.first().map(String::as_str).ok_or_else(|| {
        UserError {
            message: format!("accessory {} has no hosts", acc.name),
            hint: Some("give it host:, hosts: or roles: in deploy.yml".into()),
            code: USAGE,
        }
        .into()
    })
}

async fn logs(a: &LogsArgs) -> anyhow::Result<()> {
    let config = a.name.config.load()?;
    let options = Logs {
        container_id: None,
        timestamps: !a.skip_timestamps,
        since: a.since.clone(),
        lines: a.lines,
        grep: a.grep.clone(),
        grep_options: a.grep_options.clone(),
        follow: a.follow,
    };
    if a.follow {
        let acc = one(&config, &a.name.name)?;
        let host = first_host(acc)?;
        let command = Accessory::new(&config, acc).logs(&options);
        let pool = fanout::pool(&config);
        let exit = crate::commands::app_exec::stream(&pool, host, &command, false).await;
        pool.close().await;
        return crate::commands::app_exec::exit_with(host, exit?);
    }
    simple(&a.name, |acc| acc.logs(&options)).await
}

async fn exec(a: &ExecArgs) -> anyhow::Result<()> {
    let config = a.name.config.load()?;
    let acc = one(&config, &a.name.name)?;
    let accessory = Accessory::new(&config, acc);
    let command = a.command.join(" ");
    let line = if a.reuse {
        accessory.exec_existing(&command, a.interactive)
    } else {
        // The running container's env file is on the host already (written at boot).
        let has_secrets = !acc.env.secret.is_empty();
        let file = env_file(&config, &acc.name);
        accessory.exec_new(
            &command,
            a.interactive,
            has_secrets.then_some(file.as_str()),
        )
    };
    let pool = fanout::pool(&config);
    let result = if a.interactive {
        let host = first_host(acc)?;
        match crate::commands::app_exec::stream(&pool, host, &line, true).await {
            Ok(exit) => crate::commands::app_exec::exit_with(host, exit),
            Err(e) => Err(e),
        }
    } else {
        let jobs = acc
            .hosts
            .iter()
            .map(|h| (h.clone(), line.clone()))
            .collect();
        let runs = fanout::run_all(&pool, jobs).await;
        fanout::print_runs(&format!("Accessory {}", acc.name), &runs, a.name.json).and_then(|()| {
            fanout::check_runs(&format!("the command in accessory {}", acc.name), &runs)
        })
    };
    pool.close().await;
    result.map_err(|e| match e.downcast::<UserError>() {
        Ok(u) => u.into(),
        Err(e) => UserError {
            message: format!("accessory {}: {e}", acc.name),
            hint: None,
            code: FAILED,
        }
        .into(),
    })
}
