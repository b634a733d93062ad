//! `flotilla server exec CMD`: a command on every host (or those `-h`/`-r`/`-p` pick) over
//! SSH, in parallel through one pooled connection per host, Kamal's output per host.
//! `flotilla server enroll [HOST...] [--replace]`: records each executor's keys, read over SSH.

use crate::commands::config::ConfigArgs;
use crate::commands::fanout::{HostRun, Targets, run_all};
use crate::exit::{FAILED, UserError};
use clap::{Args, Subcommand};

const EXAMPLES: &str = "Examples:
  flotilla server exec 'docker ps'
  flotilla server exec -r web 'df -h /'
  flotilla server exec -h 10.0.0.5 --json uptime";

/// Run commands on the servers over SSH
#[derive(Debug, Args)]
pub struct ServerCmd {
    #[command(subcommand)]
    action: ServerAction,
}

#[derive(Debug, Subcommand)]
enum ServerAction {
    /// Run a command on every host over SSH, in parallel
    #[command(after_help = EXAMPLES, disable_help_flag = true)]
    Exec(ExecArgs),
    /// Install Docker where missing, the agents and NATS, over SSH
    Bootstrap(crate::commands::bootstrap::BootstrapArgs),
    /// Record each host's executor keys (read over SSH) as its trusted identity
    #[command(after_help = ENROLL_EXAMPLES, disable_help_flag = true)]
    Enroll(EnrollArgs),
}

const ENROLL_EXAMPLES: &str = "Examples:
  flotilla server enroll                     # every host; already-enrolled hosts are checked
  flotilla server enroll 10.0.0.5 --replace  # accept the new keys of a reinstalled host";

#[derive(Debug, Args)]
struct EnrollArgs {
    #[command(flatten)]
    fleet: crate::session::FleetArgs,
    /// Accept keys that differ from the enrolled ones (name the hosts explicitly)
    #[arg(long, requires = "targets")]
    replace: bool,
    /// The hosts to enrol [default: every host in the config]
    #[arg(value_name = "HOST")]
    targets: Vec<String>,
}

#[derive(Debug, Args)]
struct ExecArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    targets: Targets,
    /// One JSON object per host on stdout: host, exit status, stdout, stderr
    #[arg(long)]
    json: bool,
    /// Run interactively with a terminal, on one host (the primary, or the one -h picks)
    #[arg(short = 'i', long)]
    interactive: bool,
    /// The command, run by the login shell of the SSH user
    #[arg(required = true, trailing_var_arg = true)]
    command: Vec<String>,
}

pub async fn run(cmd: &ServerCmd) -> anyhow::Result<()> {
    match &cmd.action {
        ServerAction::Exec(args) => exec(args).await,
        ServerAction::Bootstrap(args) => crate::commands::bootstrap::run(args).await,
        ServerAction::Enroll(args) => enroll(args).await,
    }
}

async fn enroll(args: &EnrollArgs) -> anyhow::Result<()> {
    let session = crate::commands::bootstrap::Project::open(&args.fleet)?;
    let all: Vec<String> = session
        .config
        .all_hosts()
        .into_iter()
        .map(str::to_owned)
        .collect();
    let targets = if args.targets.is_empty() {
        all.clone()
    } else {
        args.targets.clone()
    };
    if let Some(unknown) = targets.iter().find(|t| !all.contains(t)) {
        return Err(UserError {
            message: format!("{unknown} is not a host of this config"),
            hint: Some(format!("hosts: {}", all.join(", "))),
            code: crate::exit::USAGE,
        }
        .into());
    }
    let pool = crate::commands::fanout::pool(&session.config);
    // In service mode the service records enrolments in its log.
    let service = match &session.log {
        Some(_) => None,
        None => Some(crate::client::connect(&session.config).await?),
    };
    let records = match (&session.log, &service) {
        (Some(log), _) => crate::enrol::Records::Local(log),
        (None, Some((client, _))) => crate::enrol::Records::Service(client),
        (None, None) => anyhow::bail!("no event log and no scheduler service"),
    };
    let mut failed = Vec::new();
    let mut enrolled_now = false;
    let results =
        crate::enrol::enroll_hosts(&pool, records, &session.actor, &targets, args.replace).await;
    for (host, result) in &results {
        let line = match result {
            Ok(crate::enrol::Outcome::Enrolled { signing_key }) => {
                enrolled_now = true;
                format!("{host}: enrolled (signing key {signing_key})")
            }
            Ok(crate::enrol::Outcome::Unchanged) => format!("{host}: already enrolled"),
            Err(e) => {
                failed.push(host.clone());
                format!("{host}: {}", crate::exit::render(e))
            }
        };
        if args.fleet.json {
            let v = serde_json::json!({"host": host, "ok": result.is_ok(), "message": line});
            crate::commands::write_stdout(&format!("{v}\n"))?;
        } else {
            crate::commands::write_stdout(&format!("{line}\n"))?;
        }
    }
    // A NATS that setup booted admits hosts by their enrolled keys: tell it about these.
    let own_nats = session
        .config
        .flotilla
        .nats
        .as_ref()
        .and_then(|n| n.url.as_ref());
    if enrolled_now && own_nats.is_none() {
        let image = crate::commands::bootstrap::agent_image()?;
        let signer = crate::session::scheduler_key(&session.root)?;
        let (json, quiet) = (args.fleet.json, args.fleet.quiet);
        let report = move |p: flotilla_setup::Progress| {
            crate::commands::bootstrap::print_progress(json, quiet, &p)
        };
        failed.extend(
            crate::commands::bootstrap::admit_enrolled(
                &session, records, &pool, &image, &signer, &report,
            )
            .await?,
        );
    }
    pool.close().await;
    if failed.is_empty() {
        return Ok(());
    }
    Err(UserError {
        message: format!("enrolment failed on {}", failed.join(", ")),
        hint: Some("see each host's line above".into()),
        code: FAILED,
    }
    .into())
}

async fn exec(args: &ExecArgs) -> anyhow::Result<()> {
    crate::lifecycle::init_tracing("warn");
    let config = args.config.load()?;
    let command = args.command.join(" ");
    if args.interactive {
        // Kamal's `server exec -i`: one host, through a pseudo-terminal.
        let (host, _) = args.targets.single_host(&config)?;
        let pool = crate::commands::fanout::pool(&config);
        let status = crate::commands::app_exec::stream(&pool, &host, &command, true).await;
        pool.close().await;
        return crate::commands::app_exec::exit_with(&host, status?);
    }
    let hosts = args.targets.hosts(&config);
    let pool = crate::commands::fanout::pool(&config);
    let jobs = hosts.iter().map(|h| (h.clone(), command.clone())).collect();
    let runs = run_all(&pool, jobs).await;
    pool.close().await;
    let mut failed = Vec::new();
    for HostRun { host, result } in runs {
        let host = &host;
        let (status, stdout, stderr) = match result {
            Ok(out) => {
                if !out.success() {
                    failed.push(host.clone());
                }
                (
                    out.exit.to_string(),
                    String::from_utf8_lossy(&out.stdout).into_owned(),
                    String::from_utf8_lossy(&out.stderr).into_owned(),
                )
            }
            Err(e) => {
                failed.push(host.clone());
                let next = match &e {
                    flotilla_ssh::Error::HostKey(k) => k
                        .accept_command()
                        .map(|c| format!("\n  next: {c}"))
                        .unwrap_or_default(),
                    _ => String::new(),
                };
                (
                    "unreachable".to_owned(),
                    String::new(),
                    format!("{e}{next}\n"),
                )
            }
        };
        print_host(args.json, host, &status, &stdout, &stderr)?;
    }
    if failed.is_empty() {
        return Ok(());
    }
    Err(UserError {
        message: format!("the command failed on {}", failed.join(", ")),
        hint: Some("see each host's output above".into()),
        code: FAILED,
    }
    .into())
}

/// Kamal's `App Host: HOST` then the output, or one JSON line.
fn print_host(
    json: bool,
    host: &str,
    status: &str,
    stdout: &str,
    stderr: &str,
) -> anyhow::Result<()> {
    let text = if json {
        let line = serde_json::json!({
            "host": host,
            "exit": status,
            "stdout": stdout,
            "stderr": stderr,
        });
        format!("{line}\n")
    } else {
        eprint!("{stderr}");
        format!("App Host: {host}\n{stdout}")
    };
    crate::commands::write_stdout(&text)
}
