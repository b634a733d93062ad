//! The `flotilla` binary: clap commands mirroring Kamal's, terminal output, `--json`.
//!
//! No business logic lives here: commands parse arguments, call into the library
//! crates and report results. Errors are reported once, at the edge, as
//! `flotilla: error: ...` followed by the cause chain and what to do next.
#![forbid(unsafe_code)]

mod build;
mod client;
mod commands;
mod enrol;
mod exit;
mod git_clone;
mod lifecycle;
mod progress;
mod rollout;
mod session;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// Deploy Docker apps to your own servers: Kamal-compatible, event-sourced.
#[derive(Debug, Parser)]
#[command(name = "flotilla", version, about, long_about = None)]
#[command(
    after_help = "Examples:\n  flotilla init\n  flotilla config\n  flotilla deploy -d staging"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print Flotilla's version
    Version,
    /// Bare hosts to serving hosts over SSH: Docker, agents, NATS, enrolment, then deploy
    Setup(commands::setup::SetupCmd),
    /// Remove the app, the agents, NATS and Flotilla's state from every host
    Remove(commands::remove::RemoveCmd),
    /// Build, push and roll out a new version across the hosts
    Deploy(commands::deploy::DeployCmd),
    /// Roll out a version again without building (Kamal's redeploy)
    Redeploy(commands::deploy::DeployCmd),
    /// Roll back to an earlier release (default: the last good one), by exact image digest
    Rollback(commands::rollback::RollbackCmd),
    /// List releases: version, digests, outcome, when, who, how long
    History(commands::history::HistoryCmd),
    /// Show a deploy's timeline per host and step; --resume continues it
    Replay(commands::replay::ReplayCmd),
    /// Show, take or release the deploy lock
    Lock(commands::lock::LockCmd),
    /// Manage the app's containers: details, logs, exec, version, start, stop, remove
    App(commands::app::AppCmd),
    /// Manage accessories: boot, reboot, start, stop, details, logs, exec, remove
    Accessory(commands::accessory::AccessoryCmd),
    /// Build and push the image, pull it on the hosts, manage the builder
    Build(commands::build::BuildCmd),
    /// Show the app's and accessories' containers on every host
    Details(commands::details::DetailsCmd),
    /// Prune old images and stopped containers (keeps `retain_containers`)
    Prune(commands::prune::PruneCmd),
    /// Log in to or out of the image registry, locally and on the servers
    Registry(commands::registry::RegistryCmd),
    /// Who deployed what, when, to which hosts (from the event log)
    Audit(commands::audit::AuditCmd),
    /// Run commands on the servers over SSH (`server exec`)
    Server(commands::server::ServerCmd),
    /// Upgrade the hosts' agents to this flotilla's version (`server bootstrap`)
    Upgrade(commands::upgrade::UpgradeCmd),
    /// Print the scheduler's public key (what executors trust), creating it on first use
    Key(commands::key::KeyCmd),
    /// The host proxy: run it, or deploy, list and pause services through its admin socket
    Proxy(commands::proxy::ProxyArgs),
    /// The host agent: run it (jobs from NATS to Docker), or print its sealing key
    Executor(commands::executor::ExecutorArgs),
    /// Print the resolved configuration, secrets redacted (`--json` for JSON)
    Config(commands::config::ConfigCmd),
    /// Write Kamal's layout: config/deploy.yml, .kamal/secrets and sample hooks
    Init(commands::init::InitCmd),
    /// Show the documentation of config/deploy.yml, section by section
    Docs(commands::docs::DocsCmd),
    /// Fetch secrets from a vault, print the resolved ones, or extract one from JSON
    Secrets(commands::secrets::SecretsCmd),
    /// Print the event log (`--json` for JSON lines), or import one
    Events(commands::events::EventsCmd),
    /// The scheduler service: deploys run there, history from any machine (`scheduler run`)
    Scheduler(commands::scheduler::SchedulerArgs),
    /// Serve Prometheus metrics of deploys between deploys (`metrics serve`)
    Metrics(commands::metrics::MetricsCmd),
}

fn main() {
    // `flotilla ALIAS ARGS...` runs the alias's command, as `kamal ALIAS` does.
    let args = commands::config::expand_alias(std::env::args_os().collect(), |name| {
        <Cli as clap::CommandFactory>::command()
            .find_subcommand(name)
            .is_some()
    });
    let cli = match parse(args) {
        Ok(cli) => cli,
        // --help and --version are not errors; a usage error exits 64 like a config error.
        Err(e) => {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            std::process::exit(code)
        }
    };
    let result = match cli.command {
        Command::Version => {
            println!("{}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Setup(cmd) => block_on(commands::setup::run(&cmd)),
        Command::Remove(cmd) => block_on(commands::remove::run(&cmd)),
        Command::Deploy(cmd) => block_on(commands::deploy::run(&cmd, false)),
        Command::Redeploy(cmd) => block_on(commands::deploy::run(&cmd, true)),
        Command::Rollback(cmd) => block_on(commands::rollback::run(&cmd)),
        Command::History(cmd) => commands::history::run(&cmd),
        Command::Replay(cmd) => block_on(commands::replay::run(&cmd)),
        Command::Lock(cmd) => block_on(commands::lock::run(&cmd)),
        Command::Server(cmd) => block_on(commands::server::run(&cmd)),
        Command::Upgrade(cmd) => block_on(commands::upgrade::run(&cmd)),
        Command::App(cmd) => block_on(commands::app::run(&cmd)),
        Command::Accessory(cmd) => block_on(commands::accessory::run(&cmd)),
        Command::Build(cmd) => block_on(commands::build::run(&cmd)),
        Command::Details(cmd) => block_on(commands::details::run(&cmd)),
        Command::Prune(cmd) => block_on(commands::prune::run(&cmd)),
        Command::Registry(cmd) => block_on(commands::registry::run(&cmd)),
        Command::Audit(cmd) => commands::audit::run(&cmd),
        Command::Key(cmd) => commands::key::run(&cmd),
        Command::Proxy(args) => commands::proxy::run(args),
        Command::Executor(args) => commands::executor::run(args),
        Command::Scheduler(args) => commands::scheduler::run(args),
        Command::Config(cmd) => commands::config::run(&cmd),
        Command::Init(cmd) => commands::init::run(&cmd),
        Command::Docs(cmd) => commands::docs::run(&cmd),
        Command::Secrets(cmd) => commands::secrets::run(&cmd),
        Command::Events(cmd) => commands::events::run(&cmd),
        Command::Metrics(cmd) => block_on(commands::metrics::run(&cmd)),
    };
    exit::finish(result);
}

/// Kamal's top-level commands that Flotilla has, in `kamal help`'s order: the config crate's
/// list (which also keeps aliases from shadowing them). `flotilla --help` lists them first,
/// then Flotilla's own. (`upgrade` is `server bootstrap`: see `commands/upgrade.rs`.)
fn kamal_commands(command: &clap::Command) -> Vec<&'static str> {
    flotilla_deploy::config::aliases::KAMAL_COMMANDS
        .iter()
        .copied()
        .filter(|n| *n == "help" || command.find_subcommand(n).is_some())
        .collect()
}

/// Parses the arguments with `flotilla --help` grouped as `kamal help` lists its commands.
fn parse(args: Vec<std::ffi::OsString>) -> Result<Cli, clap::Error> {
    let command = Cli::command();
    let template = grouped_help(&command);
    let matches = command.help_template(template).try_get_matches_from(args)?;
    Cli::from_arg_matches(&matches)
}

/// The top-level help: Kamal's commands (as `kamal help` lists them), then Flotilla's own
/// (event log, scheduler, agents), each with its one-line description.
fn grouped_help(command: &clap::Command) -> String {
    let about = |name: &str| {
        command
            .find_subcommand(name)
            .and_then(|c| c.get_about())
            .map(|a| a.to_string())
            .unwrap_or_else(|| "Print this message or the help of the given command".into())
    };
    let line = |name: &str| format!("  {name:<11} {}\n", about(name));
    let kamal_names = kamal_commands(command);
    let kamal: String = kamal_names.iter().map(|n| line(n)).collect();
    let own: String = command
        .get_subcommands()
        .map(|c| c.get_name())
        .filter(|n| !kamal_names.contains(n))
        .map(line)
        .collect();
    format!(
        "{{about-with-newline}}\n{{usage-heading}} {{usage}}\n\n\
         Kamal's commands:\n{kamal}\nFlotilla's own:\n{own}\n\
         Options:\n{{options}}{{after-help}}"
    )
}

/// Runs an async command on a fresh multi-threaded runtime.
fn block_on(f: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `flotilla --help` lists Kamal's commands in `kamal help`'s order, then every other
    /// command, each once.
    #[test]
    fn help_groups_kamals_commands_first() {
        let help = grouped_help(&Cli::command());
        let (kamal, own) = help.split_once("Flotilla's own:").unwrap();
        let listed = |text: &str| -> Vec<String> {
            text.lines()
                .filter(|l| l.starts_with("  "))
                .map(|l| l.split_whitespace().next().unwrap().to_owned())
                .collect()
        };
        assert_eq!(listed(kamal), kamal_commands(&Cli::command()));
        let mut all: Vec<String> = listed(kamal).into_iter().chain(listed(own)).collect();
        let mut names: Vec<String> = Cli::command()
            .get_subcommands()
            .map(|c| c.get_name().to_owned())
            .chain(["help".to_owned()])
            .collect();
        all.sort();
        names.sort();
        assert_eq!(all, names);
        assert!(listed(own).contains(&"replay".to_owned()), "{help}");
    }

    /// Every command of Kamal's (`kamal help` and each group's own help, as the reference
    /// lists them) and of the seed's guide parses as a Flotilla command.
    #[test]
    fn every_kamal_command_has_an_equivalent() {
        let commands: &[&[&str]] = &[
            &["setup", "--skip-push"],
            &[
                "deploy",
                "--skip-push",
                "--version",
                "abc123",
                "-d",
                "staging",
            ],
            &["redeploy"],
            &["rollback", "v1"],
            &["details"],
            &["audit"],
            &["config"],
            &["docs", "proxy"],
            &["init"],
            &["remove", "-y"],
            &["version"],
            &["app", "boot"],
            &["app", "start"],
            &["app", "stop"],
            &["app", "details"],
            &[
                "app",
                "exec",
                "-i",
                "--reuse",
                "-e",
                "A:b",
                "bin/rails console",
            ],
            &["app", "containers"],
            &["app", "stale_containers", "--stop"],
            &["app", "images"],
            &["app", "logs", "-f", "-n", "10", "-s", "5m", "-g", "ERROR"],
            &["app", "remove"],
            &["app", "live"],
            &["app", "maintenance", "--message", "soon"],
            &["app", "version"],
            &["accessory", "boot", "all"],
            &["accessory", "reboot", "db"],
            &["accessory", "start", "db"],
            &["accessory", "stop", "db"],
            &["accessory", "restart", "db"],
            &["accessory", "details", "db"],
            &["accessory", "exec", "db", "-i", "psql -U postgres"],
            &["accessory", "logs", "db"],
            &["accessory", "remove", "db", "-y"],
            &["accessory", "upgrade", "all"],
            &["proxy", "boot"],
            &["proxy", "reboot", "--rolling"],
            &["proxy", "start"],
            &["proxy", "stop"],
            &["proxy", "restart"],
            &["proxy", "details"],
            &["proxy", "logs", "-f"],
            &["proxy", "remove"],
            &["proxy", "boot_config", "get"],
            &["proxy", "boot_config", "set"],
            &["proxy", "boot_config", "reset"],
            &["build", "push"],
            &["build", "deliver"],
            &["build", "pull"],
            &["build", "create"],
            &["build", "remove"],
            &["build", "details"],
            &["lock", "status"],
            &["lock", "acquire", "-m", "migrating"],
            &["lock", "release"],
            &["prune", "all"],
            &["upgrade", "-y"],
            &["prune", "images"],
            &["prune", "containers", "--retain", "2"],
            &["registry", "login"],
            &["registry", "logout"],
            &["registry", "setup"],
            &["registry", "remove"],
            &["server", "bootstrap"],
            &["server", "exec", "date"],
            &["server", "exec", "-i", "bash"],
            &[
                "secrets",
                "fetch",
                "-a",
                "1password",
                "--account",
                "a",
                "--from",
                "v/i",
                "DB",
            ],
            &["secrets", "extract", "DB", "{}"],
            &["secrets", "print"],
        ];
        for args in commands {
            let argv = std::iter::once("flotilla").chain(args.iter().copied());
            let parsed = parse(argv.map(std::ffi::OsString::from).collect());
            assert!(
                parsed.is_ok(),
                "flotilla {}: {:?}",
                args.join(" "),
                parsed.err()
            );
        }
    }
}
