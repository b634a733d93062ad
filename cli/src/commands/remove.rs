//! `flotilla remove`: the app's containers, images and volumes, the agents, NATS and
//! Flotilla's state directories off every host, after a confirmation (`-y` skips it).

use crate::commands::bootstrap::picked_hosts;
use crate::exit::{FAILED, UserError};
use crate::session::{FleetArgs, control_host};
use clap::Args;
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
    let mut hosts = picked_hosts(&config, &cmd.fleet);
    if cmd.fleet.hosts.is_empty()
        && cmd.fleet.roles.is_empty()
        && let Some(c) = control_host(&config)
        && !hosts.contains(&c)
    {
        hosts.push(c);
    }
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
