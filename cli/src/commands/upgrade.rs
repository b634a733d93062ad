//! `flotilla upgrade`: what a Kamal user expects of `kamal upgrade`, the host side brought to
//! this version. Kamal's command moves a Kamal 1 host to Kamal 2 (Traefik to kamal-proxy, the
//! `kamal` network); Flotilla reads Kamal 1 configs as they are, and its host side is its
//! agents (executor, proxy, NATS, scheduler service), which `server bootstrap` replaces
//! wherever their version differs from this binary's and leaves alone where it is current.
//! So `upgrade` is `server bootstrap`: the app is not redeployed, and the proxy hands its
//! listening sockets over, so no request is refused while it is replaced.

use crate::commands::bootstrap::BootstrapArgs;
use clap::Args;

pub const EXAMPLES: &str = "Examples:
  flotilla upgrade              # every host's agents to this flotilla's version
  flotilla upgrade -h 10.0.0.7  # one host

It is `flotilla server bootstrap`: agents whose version differs are replaced, current ones
are left alone, the app keeps running. Kamal 1 configs need no migration.";

/// Upgrade the hosts' agents (executor, proxy, NATS, scheduler) to this flotilla's version
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES, disable_help_flag = true)]
pub struct UpgradeCmd {
    #[command(flatten)]
    pub bootstrap: BootstrapArgs,
    /// Accepted for Kamal's scripts: nothing is removed, so nothing is asked
    #[arg(short = 'y', long = "confirmed")]
    pub confirmed: bool,
}

pub async fn run(cmd: &UpgradeCmd) -> anyhow::Result<()> {
    crate::commands::bootstrap::run(&cmd.bootstrap).await
}
