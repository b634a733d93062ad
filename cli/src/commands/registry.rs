//! `flotilla registry login|logout`: Docker's registry login here and on every host, as
//! Kamal's `registry` does. The password goes to `docker login --password-stdin` on stdin,
//! locally and over SSH, so it is never on a command line, in output or in a log.

use crate::commands::config::ConfigArgs;
use crate::commands::fanout::{self, HostRun, Targets};
use crate::exit::{FAILED, USAGE, UserError};
use clap::{Args, Subcommand};
use flotilla_deploy::commands::{login, logout};
use flotilla_deploy::config::types::Registry;
use std::io::Write;

const EXAMPLES: &str = "Examples:
  flotilla registry login
  flotilla registry login --skip-local
  flotilla registry logout -h 10.0.0.5";

/// Log in to and out of the image registry, locally and on the servers
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct RegistryCmd {
    #[command(subcommand)]
    action: RegistryAction,
}

#[derive(Debug, Subcommand)]
enum RegistryAction {
    /// Log in to the registry locally and on every host (`setup`: Kamal 2.6's name)
    #[command(disable_help_flag = true, after_help = EXAMPLES, visible_alias = "setup")]
    Login(RegistryArgs),
    /// Log out of the registry locally and on every host (`remove`: Kamal 2.6's name)
    #[command(disable_help_flag = true, after_help = EXAMPLES, visible_alias = "remove")]
    Logout(RegistryArgs),
}

#[derive(Debug, Args)]
struct RegistryArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    targets: Targets,
    /// Not on this machine
    #[arg(short = 'L', long = "skip-local", alias = "skip_local")]
    skip_local: bool,
    /// Not on the hosts
    #[arg(short = 'R', long = "skip-remote", alias = "skip_remote")]
    skip_remote: bool,
    /// One JSON object per host on stdout: host, exit, stdout, stderr
    #[arg(long)]
    json: bool,
}

pub async fn run(cmd: &RegistryCmd) -> anyhow::Result<()> {
    crate::lifecycle::init_tracing("warn");
    let (args, is_login) = match &cmd.action {
        RegistryAction::Login(a) => (a, true),
        RegistryAction::Logout(a) => (a, false),
    };
    let config = args.config.load()?;
    let registry = &config.registry;
    let (command, password) = if is_login {
        match login(registry) {
            Some(c) => (c, password(registry)?),
            None => {
                println!("nothing to log in to: the registry is local or has no username");
                return Ok(());
            }
        }
    } else {
        (logout(registry), Vec::new())
    };
    if !args.skip_local {
        local(&command, &password)?;
    }
    if args.skip_remote {
        return Ok(());
    }
    let hosts = args.targets.hosts(&config);
    let pool = fanout::pool(&config);
    let runs = futures::future::join_all(hosts.iter().map(|h| {
        let pool = &pool;
        let command = &command;
        let password = &password;
        async move {
            let result = match pool.session(h).await {
                Ok(s) => s.exec_with_stdin(command, password.as_slice()).await,
                Err(e) => Err(e),
            };
            HostRun {
                host: h.clone(),
                result,
            }
        }
    }))
    .await;
    pool.close().await;
    fanout::print_runs("App", &runs, args.json)?;
    fanout::check_runs(
        if is_login {
            "registry login"
        } else {
            "registry logout"
        },
        &runs,
    )
}

pub(crate) fn password(registry: &Registry) -> anyhow::Result<Vec<u8>> {
    registry
        .password
        .as_ref()
        .map(|p| p.expose().as_bytes().to_vec())
        .ok_or_else(|| {
            UserError {
                message: "registry/password is not set".into(),
                hint: Some(
                    "add `password: [KAMAL_REGISTRY_PASSWORD]` under registry: and the secret to .kamal/secrets"
                        .into(),
                ),
                code: USAGE,
            }
            .into()
        })
}

/// Runs the command with this machine's Docker, the password on stdin (its output on stderr:
/// a deploy's stdout is for `--json` events).
pub(crate) fn local(command: &str, password: &[u8]) -> anyhow::Result<()> {
    let mut child = std::process::Command::new("sh")
        .args(["-c", command])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::from(std::io::stderr()))
        .spawn()
        .map_err(|e| UserError {
            message: format!("cannot run docker locally: {e}"),
            hint: Some("install Docker, or pass --skip-local".into()),
            code: FAILED,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(password)?;
    }
    let status = child.wait()?;
    if status.success() {
        return Ok(());
    }
    Err(UserError {
        message: format!("`{command}` failed locally ({status})"),
        hint: Some("check the registry's server and credentials, or pass --skip-local".into()),
        code: FAILED,
    }
    .into())
}
