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

use clap::{Parser, Subcommand};

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
    let cli = match Cli::try_parse_from(args) {
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

/// Runs an async command on a fresh multi-threaded runtime.
fn block_on(f: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(f)
}
