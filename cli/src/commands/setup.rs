//! `flotilla setup`: Kamal's setup for bare hosts. Bootstrap every host over SSH (Docker,
//! the agents, NATS on the control host), enrol each executor, boot the accessories that
//! have no container yet (`accessory boot all`), then deploy as `flotilla deploy` does.

use crate::commands::bootstrap::{Project, bootstrap_fleet};
use crate::commands::deploy::DeployCmd;
use clap::Args;

const EXAMPLES: &str = "Examples:
  flotilla setup                      # bare hosts to serving hosts: bootstrap, enrol, accessories, deploy
  flotilla setup --version v42 -P     # deploy an image already in the registry
  flotilla setup --json               # progress as JSON lines

Needs only SSH to the hosts (your ssh: settings and known_hosts) and a static flotilla
binary (the agents' image is built from it). Running it again changes nothing that is
current; a host added to config/deploy.yml is bootstrapped by the next run.";

/// Bootstrap every host over SSH, enrol the executors, boot the accessories, then deploy
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES, disable_help_flag = true)]
pub struct SetupCmd {
    #[command(flatten)]
    pub deploy: DeployCmd,
}

pub async fn run(cmd: &SetupCmd) -> anyhow::Result<()> {
    {
        // The project holds the event log (embedded mode); the deploy below opens its own.
        let p = Project::open(&cmd.deploy.fleet)?;
        bootstrap_fleet(&p).await?;
    }
    crate::commands::accessory::boot_all(&cmd.deploy.fleet.config, cmd.deploy.fleet.json).await?;
    crate::commands::deploy::run(&cmd.deploy, false).await
}
