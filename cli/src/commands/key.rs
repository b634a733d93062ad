//! `flotilla key`: the scheduler's public key, which every executor must trust.

use clap::Args;

/// Print the scheduler's public key (made on first use in .flotilla/scheduler.key)
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  flotilla key\n  flotilla executor run --scheduler-key \"$(flotilla key)\" ..."
)]
pub struct KeyCmd {}

pub fn run(_: &KeyCmd) -> anyhow::Result<()> {
    let root = std::env::current_dir()?;
    let signer = crate::rollout::scheduler_key(&root)?;
    crate::commands::write_stdout(&(signer.public_key_base64() + "\n"))
}
