//! `flotilla remove`: the app's containers, images and volumes, the agents, NATS and
//! Flotilla's state directories off every host, after a confirmation (`-y` skips it).

use crate::commands::bootstrap::picked_hosts;
use crate::exit::{FAILED, UserError};
use crate::session::{FleetArgs, control_hosts};
use clap::Args;
use flotilla_deploy::Config;
use flotilla_setup::RemoveSpec;

const EXAMPLES: &str = "Examples:
  flotilla remove           # asks first
  flotilla remove -y        # no question (scripts, CI)
  flotilla remove -h 10.0.0.7 -y

Removes from each host: the app's containers, images and volumes, the flotilla-proxy,
flotilla-executor and flotilla-nats containers and their images, /etc/flotilla and
/var/lib/flotilla. Docker itself stays. The local event log (.flotilla/) is kept.";

/// Remove the app, the agents, NATS and Flotilla's state from every host
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES, disable_help_flag = true)]
pub struct RemoveCmd {
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// Don't ask for confirmation
    #[arg(short = 'y', long = "confirmed")]
    pub yes: bool,
}

pub async fn run(cmd: &RemoveCmd) -> anyhow::Result<()> {
    crate::lifecycle::init_tracing("warn");
    let config = cmd.fleet.config.load()?;
    let hosts = hosts_to_remove(&config, &cmd.fleet);
    if !cmd.yes && !confirm(&hosts)? {
        return Err(UserError {
            message: "not confirmed: nothing removed".into(),
            hint: Some("answer y, or pass -y".into()),
            code: FAILED,
        }
        .into());
    }
    let nats_image = config
        .flotilla
        .nats
        .as_ref()
        .and_then(|n| n.image.clone())
        .unwrap_or_else(|| flotilla_setup::plan::DEFAULT_NATS_IMAGE.to_owned());
    let mut images = vec![config.repository()];
    // Only the NATS setup booted: a NATS of the user's own is not on these hosts' images.
    if config
        .flotilla
        .nats
        .as_ref()
        .is_none_or(|n| n.url.is_none())
    {
        images.push(flotilla_setup::plan::repository_of(&nats_image).to_owned());
    }
    let spec = RemoveSpec {
        service: config.service.clone(),
        images,
    };
    let pool = crate::commands::fanout::pool(&config);
    let results = flotilla_setup::remove(&pool, &hosts, &spec).await;
    pool.close().await;
    let mut failed = Vec::new();
    for (host, r) in hosts.iter().zip(results) {
        match r {
            Ok(()) => {
                if !cmd.fleet.quiet {
                    eprintln!("{host}: removed");
                }
            }
            Err(e) => {
                eprintln!("flotilla: {e}\n  next: {}", e.hint());
                failed.push(host.clone());
            }
        }
    }
    if failed.is_empty() {
        return Ok(());
    }
    Err(UserError {
        message: format!("remove failed on {}", failed.join(", ")),
        hint: Some("see each host's message above; remove is safe to run again".into()),
        code: FAILED,
    }
    .into())
}

/// The hosts `remove` clears: those picked, and (unless `-h`/`-r` narrowed it) every control
/// host too, where setup booted NATS and a scheduler instance (three for HA), even one that
/// runs no role of the app.
fn hosts_to_remove(config: &Config, fleet: &FleetArgs) -> Vec<String> {
    let mut hosts = picked_hosts(config, fleet);
    if fleet.hosts.is_empty() && fleet.roles.is_empty() {
        for c in control_hosts(config) {
            if !hosts.contains(&c) {
                hosts.push(c);
            }
        }
    }
    hosts
}

/// Asks on the terminal; anything but y/yes is a no.
fn confirm(hosts: &[String]) -> anyhow::Result<bool> {
    use std::io::Write as _;
    eprint!(
        "This removes the app, its images and volumes, the agents, NATS and /etc/flotilla, \
         /var/lib/flotilla from {}. Continue? [y/N] ",
        hosts.join(", ")
    );
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim().to_lowercase().as_str(), "y" | "yes"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use clap::Parser as _;

    /// `x-flotilla.control` naming three hosts, two of them in no role of the app.
    fn config() -> (tempfile::TempDir, Config) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("config")).unwrap();
        std::fs::write(
            dir.path().join("config/deploy.yml"),
            "service: app\nimage: app\nservers:\n  web: [10.0.0.1, 10.0.0.2]\n\
             registry:\n  server: localhost:5555\n\
             x-flotilla:\n  control: [10.0.0.2, 10.0.0.8, 10.0.0.9]\n",
        )
        .unwrap();
        let opts = flotilla_deploy::LoadOptions {
            env: Default::default(),
            ..flotilla_deploy::LoadOptions::new(dir.path())
        };
        let config = flotilla_deploy::load(&opts).unwrap();
        (dir, config)
    }

    #[derive(clap::Parser)]
    #[command(disable_help_flag = true)]
    struct Args {
        #[command(flatten)]
        fleet: FleetArgs,
    }

    fn fleet(args: &[&str]) -> FleetArgs {
        Args::try_parse_from(std::iter::once("remove").chain(args.iter().copied()))
            .unwrap()
            .fleet
    }

    /// With three control hosts, `remove` clears every one of them (their NATS node and
    /// scheduler instance), not only the first; `-h` still removes only what it names.
    #[test]
    fn remove_clears_every_control_host() {
        let (_dir, config) = config();
        assert_eq!(
            hosts_to_remove(&config, &fleet(&[])),
            ["10.0.0.1", "10.0.0.2", "10.0.0.8", "10.0.0.9"]
        );
        assert_eq!(
            hosts_to_remove(&config, &fleet(&["-h", "10.0.0.1"])),
            ["10.0.0.1"]
        );
    }
}
