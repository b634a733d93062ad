//! `flotilla accessory ...`: Kamal's accessory commands, for one accessory or `all`, over SSH
//! on the accessory's hosts. `boot` makes the `directories:`, uploads the `files:` (`.erb`
//! ones rendered with the accessory's env, as Kamal does), writes the secret env to a 0600 env
//! file, logs in to the accessory's own `registry:` and runs the container. The commands that
//! change containers hold the deploy lock. [`boot_all`] is what `flotilla setup` calls.

use crate::commands::config::ConfigArgs;
use crate::commands::fanout::{self, HostRun};
use crate::commands::record::{self, Recording};
use crate::exit::{FAILED, USAGE, UserError};
use clap::{Args, Subcommand};
use flotilla_deploy::Config;
use flotilla_deploy::commands::{Accessory, Logs, login, secret_env_file};
use flotilla_deploy::config::types;
use flotilla_events::event::{AccessoryAction as Action, Operation};
use flotilla_ssh::Pool;

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
    /// One JSON object per host on stdout: host, exit, stdout, stderr
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
        AccessoryAction::Boot(a) => locked(a, "boot accessories", Op::Boot).await,
        AccessoryAction::Reboot(a) => locked(a, "reboot accessories", Op::Reboot).await,
        AccessoryAction::Upgrade(a) => locked(a, "upgrade accessories", Op::Upgrade).await,
        AccessoryAction::Start(a) => simple(a, Some(Action::Start), |acc| acc.start()).await,
        AccessoryAction::Stop(a) => simple(a, Some(Action::Stop), |acc| acc.stop()).await,
        AccessoryAction::Restart(a) => {
            simple(a, Some(Action::Restart), |acc| {
                format!("{} && {}", acc.stop(), acc.start())
            })
            .await
        }
        AccessoryAction::Details(a) => simple(a, None, |acc| acc.info(false, false)).await,
        AccessoryAction::Logs(a) => logs(a).await,
        AccessoryAction::Exec(a) => exec(a).await,
        AccessoryAction::Remove(a) => {
            if !a.confirmed {
                return Err(UserError {
                    message: format!(
                        "removing {} deletes its container, image and data directories",
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
            locked(&a.name, "remove accessories", Op::Remove).await
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Boot,
    Reboot,
    Upgrade,
    Remove,
}

async fn locked(a: &NameArgs, what: &str, op: Op) -> anyhow::Result<()> {
    let config = a.config.load()?;
    let accessories = picked(&config, &a.name)?;
    fanout::with_lock(&config, what, async {
        let log = record::open_log(&config)?;
        let pool = fanout::pool(&config);
        let mut result = Ok(());
        for acc in accessories {
            let action = match op {
                Op::Boot => Action::Boot,
                Op::Reboot => Action::Reboot,
                Op::Upgrade => Action::Upgrade,
                Op::Remove => Action::Remove,
            };
            let operation = Operation::Accessory {
                name: acc.name.clone(),
                action,
            };
            let recording = Recording::start(log.as_ref(), &config, operation, &acc.hosts)?;
            let r = Some(&recording);
            let done = match op {
                Op::Boot => boot(&config, &pool, acc, a.json, r).await,
                Op::Reboot | Op::Upgrade => reboot(&config, &pool, acc, a.json, op, r).await,
                Op::Remove => remove(&config, &pool, acc, a.json, r).await,
            };
            result = recording.end(done);
            if result.is_err() {
                break;
            }
        }
        pool.close().await;
        result
    })
    .await
}

/// Boots every accessory of the config that has no container yet, on every host it names.
/// The caller holds the deploy lock (`flotilla setup` does, as Kamal's `setup` does).
// Called by `flotilla setup` (the setup lane's command), not by anything in this module.
#[allow(dead_code)]
pub async fn boot_all(config: &Config, pool: &Pool) -> anyhow::Result<()> {
    for acc in &config.accessories {
        boot(config, pool, acc, false, None).await?;
    }
    Ok(())
}

/// Kamal's `accessory boot`: skips hosts where a container (running or not) exists.
async fn boot(
    config: &Config,
    pool: &Pool,
    acc: &types::Accessory,
    json: bool,
    recording: Option<&Recording<'_>>,
) -> anyhow::Result<()> {
    let a = Accessory::new(config, acc);
    let probe = acc
        .hosts
        .iter()
        .map(|h| (h.clone(), a.info(true, true)))
        .collect();
    let probes = fanout::run_all(pool, probe).await;
    fanout::check_runs(&format!("checking accessory {}", acc.name), &probes)?;
    let existing: Vec<String> = probes
        .iter()
        .filter(|r| !r.stdout().trim().is_empty())
        .map(|r| r.host.clone())
        .collect();
    if !existing.is_empty() {
        eprintln!(
            "Skipping booting `{}` on {}, a container already exists",
            acc.name,
            existing.join(", ")
        );
    }
    let hosts: Vec<&String> = acc.hosts.iter().filter(|h| !existing.contains(h)).collect();
    if hosts.is_empty() {
        return Ok(());
    }
    let files = render_files(config, acc, &a)?;
    let secret = secret_env_file(&acc.env, &config.secrets).map_err(|e| UserError {
        message: format!("accessory {}: {e}", acc.name),
        hint: Some("define it in .kamal/secrets".into()),
        code: USAGE,
    })?;
    let registry = acc.registry.as_ref();
    let env_path = env_file(config, &acc.name);
    let results = futures::future::join_all(hosts.iter().map(|host| {
        boot_on(
            pool,
            host,
            &a,
            &files,
            secret.as_ref().map(|s| s.expose()),
            registry,
            &env_path,
        )
    }))
    .await;
    let runs: Vec<HostRun> = hosts
        .iter()
        .zip(results)
        .map(|(h, result)| HostRun {
            host: (*h).clone(),
            result,
        })
        .collect();
    if let Some(r) = recording {
        r.note(&runs);
    }
    fanout::print_runs(&format!("Accessory {}", acc.name), &runs, json)?;
    fanout::check_runs(&format!("booting accessory {}", acc.name), &runs)
}

/// A `files:` entry ready to upload: its content (rendered when `.erb`) and where it goes.
struct Upload {
    content: Vec<u8>,
    host_path: String,
    mode: u32,
}

/// Reads (and for `.erb`, renders with the accessory's env, secrets included) every file.
fn render_files(
    config: &Config,
    acc: &types::Accessory,
    a: &Accessory<'_>,
) -> anyhow::Result<Vec<Upload>> {
    let root = std::env::current_dir()?;
    let mut out = Vec::new();
    for f in a.files() {
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
        out.push(Upload {
            content,
            host_path: f.host_path,
            mode: u32::from_str_radix(f.mode, 8).unwrap_or(0o755),
        })
    }
    Ok(out)
}

/// One host's boot: directories, files, env file, registry login, `docker run`.
async fn boot_on(
    pool: &Pool,
    host: &str,
    a: &Accessory<'_>,
    files: &[Upload],
    secret: Option<&str>,
    registry: Option<&types::Registry>,
    env_path: &str,
) -> Result<flotilla_ssh::Output, flotilla_ssh::Error> {
    let session = pool.session(host).await?;
    let mut prep: Vec<String> = a
        .directories()
        .iter()
        .map(|d| Accessory::make_directory(&d.host_path))
        .collect();
    for f in files {
        if let Some((dir, _)) = f.host_path.rsplit_once('/') {
            prep.push(format!(
                "mkdir -p {}",
                flotilla_deploy::commands::quote(dir)
            ));
        }
    }
    if secret.is_some()
        && let Some((dir, _)) = env_path.rsplit_once('/')
    {
        prep.push(format!("mkdir -p {dir}"));
    }
    if !prep.is_empty() {
        let out = session.exec(&prep.join(" && ")).await?;
        if !out.success() {
            return Ok(out);
        }
    }
    for f in files {
        session
            .upload(f.content.as_slice(), &f.host_path, f.mode)
            .await?;
    }
    if let Some(s) = secret {
        session.upload(s.as_bytes(), env_path, 0o600).await?;
    }
    if let Some(r) = registry
        && let (Some(command), Some(password)) = (login(r), r.password.as_ref())
    {
        let out = session
            .exec_with_stdin(&command, password.expose().as_bytes())
            .await?;
        if !out.success() {
            return Ok(out);
        }
    }
    session.exec(&a.run(host, secret.map(|_| env_path))).await
}

/// Kamal's `reboot`: pull, stop, remove the container, boot; `upgrade` makes sure the `kamal`
/// network exists first (a Kamal 1 host has none).
async fn reboot(
    config: &Config,
    pool: &Pool,
    acc: &types::Accessory,
    json: bool,
    op: Op,
    recording: Option<&Recording<'_>>,
) -> anyhow::Result<()> {
    let a = Accessory::new(config, acc);
    let mut steps = Vec::new();
    if op == Op::Upgrade {
        steps.push(format!(
            "{{ docker network inspect {n} >/dev/null 2>&1 || docker network create {n}; }}",
            n = flotilla_protocol::names::NETWORK
        ));
    }
    steps.push(a.pull_image());
    steps.push(format!("{{ {} || true; }}", a.stop()));
    steps.push(a.remove_container());
    let command = steps.join(" && ");
    let jobs = acc
        .hosts
        .iter()
        .map(|h| (h.clone(), command.clone()))
        .collect();
    let runs = fanout::run_all(pool, jobs).await;
    if let Some(r) = recording {
        r.note(&runs);
    }
    fanout::check_runs(&format!("stopping accessory {}", acc.name), &runs)?;
    boot(config, pool, acc, json, recording).await
}

/// Kamal's `remove`: stop, remove the container, the image and the service directory.
async fn remove(
    config: &Config,
    pool: &Pool,
    acc: &types::Accessory,
    json: bool,
    recording: Option<&Recording<'_>>,
) -> anyhow::Result<()> {
    let a = Accessory::new(config, acc);
    let command = format!(
        "{{ {} || true; }} && {} && {{ {} || true; }} && {}",
        a.stop(),
        a.remove_container(),
        a.remove_image(),
        a.remove_service_directory()
    );
    let jobs = acc
        .hosts
        .iter()
        .map(|h| (h.clone(), command.clone()))
        .collect();
    let runs = fanout::run_all(pool, jobs).await;
    if let Some(r) = recording {
        r.note(&runs);
    }
    fanout::print_runs(&format!("Accessory {}", acc.name), &runs, json)?;
    fanout::check_runs(&format!("removing accessory {}", acc.name), &runs)
}

/// One command per host of each picked accessory; those that change containers (`action`)
/// hold the lock and are recorded in the event log.
async fn simple(
    a: &NameArgs,
    action: Option<Action>,
    command: impl Fn(&Accessory<'_>) -> String,
) -> anyhow::Result<()> {
    let config = a.config.load()?;
    let accessories = picked(&config, &a.name)?;
    let body = async {
        let log = match action {
            Some(_) => record::open_log(&config)?,
            None => None,
        };
        let pool = fanout::pool(&config);
        let mut result = Ok(());
        for acc in &accessories {
            let acc_cmd = Accessory::new(&config, acc);
            let line = command(&acc_cmd);
            let jobs = acc
                .hosts
                .iter()
                .map(|h| (h.clone(), line.clone()))
                .collect();
            let recording = match action {
                Some(action) => Some(Recording::start(
                    log.as_ref(),
                    &config,
                    Operation::Accessory {
                        name: acc.name.clone(),
                        action,
                    },
                    &acc.hosts,
                )?),
                None => None,
            };
            let runs = fanout::run_all(&pool, jobs).await;
            let done = fanout::print_runs(&format!("Accessory {}", acc.name), &runs, a.json)
                .and_then(|()| fanout::check_runs(&format!("accessory {}", acc.name), &runs));
            let done = match recording {
                Some(r) => {
                    r.note(&runs);
                    r.end(done)
                }
                None => done,
            };
            result = result.and(done);
        }
        pool.close().await;
        result
    };
    if action.is_some() {
        fanout::with_lock(&config, "change accessories", body).await
    } else {
        body.await
    }
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
    simple(&a.name, None, |acc| acc.logs(&options)).await
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
