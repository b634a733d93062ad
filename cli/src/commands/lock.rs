//! `flotilla lock status|acquire|release`: the deploy lock, held in NATS.

use crate::commands::config::ConfigArgs;
use crate::session::{nats_endpoint, performer};
use clap::{Args, Subcommand};
use flotilla_scheduler::transport::lock::{LockInfo, Locks, lock_key};
use flotilla_scheduler::transport::nats::NatsTransport;
use std::time::Duration;

/// Show, take or release the deploy lock
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  flotilla lock status\n  flotilla lock acquire -m \"db migration\"\n  flotilla lock release"
)]
pub struct LockCmd {
    #[command(subcommand)]
    pub action: LockAction,
    #[command(flatten)]
    pub config: ConfigArgs,
}

#[derive(Debug, Subcommand)]
pub enum LockAction {
    /// Who holds the lock, if anyone
    Status,
    /// Take the lock and keep it until `flotilla lock release` (it does not expire)
    Acquire {
        #[arg(short = 'm', long)]
        message: String,
    },
    /// Release the lock, whoever holds it
    Release,
}

pub async fn run(cmd: &LockCmd) -> anyhow::Result<()> {
    let config = cmd.config.load()?;
    // Held to the end of the command: it may be an SSH tunnel.
    let endpoint = nats_endpoint(&config).await?;
    let NatsTransport { bus, locks } = endpoint.transport().await?;
    let key = lock_key(&config.service, config.destination.as_deref());
    match &cmd.action {
        LockAction::Status => match locks.status(&key).await? {
            Some(info) => println!(
                "locked by {} on {} since {}: {}",
                info.holder, info.machine, info.acquired_at, info.message
            ),
            None => println!("no lock on {key}"),
        },
        LockAction::Acquire { message } => {
            let info = LockInfo {
                holder: performer(),
                message: message.clone(),
                acquired_at: flotilla_events::Timestamp::now().to_string(),
                machine: std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|s| s.trim().to_owned())
                    .unwrap_or_default(),
                version: None,
                deploy_id: None,
                expires_at_ms: None,
            };
            // A zero TTL: no expiry, held until `flotilla lock release`.
            let manual = Locks::open(bus.jetstream(), Duration::ZERO).await?;
            // Dropping the handle leaves the lock in place: it has nothing to renew.
            drop(manual.acquire(&key, &info).await?);
            println!("acquired the deploy lock on {key}");
        }
        LockAction::Release => {
            if locks.force_release(&key).await? {
                println!("released the deploy lock on {key}");
            } else {
                println!("no lock on {key}");
            }
        }
    }
    Ok(())
}
