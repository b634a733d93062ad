//! `flotilla server exec CMD`: a command on every host (or those `-h`/`-r`/`-p` pick) over
//! SSH, in parallel through one pooled connection per host, Kamal's output per host.

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
    /// The command, run by the login shell of the SSH user
    #[arg(required = true, trailing_var_arg = true)]
    command: Vec<String>,
}

pub async fn run(cmd: &ServerCmd) -> anyhow::Result<()> {
    let ServerAction::Exec(args) = &cmd.action;
    crate::lifecycle::init_tracing("warn");
    let config = args.config.load()?;
    let hosts = args.targets.hosts(&config);
    let pool = crate::commands::fanout::pool(&config);
    let command = args.command.join(" ");
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
