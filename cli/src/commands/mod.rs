//! One module per `flotilla` command.

pub mod accessory;
pub mod app;
pub mod app_exec;
pub mod audit;
pub mod bootstrap;
pub mod build;
pub mod config;
pub mod deploy;
pub mod details;
pub mod docs;
pub mod events;
pub mod executor;
pub mod fanout;
pub mod history;
pub mod init;
pub mod key;
pub mod lock;
pub mod metrics;
pub mod operate;
pub mod proxy;
pub mod proxy_fleet;
pub mod prune;
pub mod registry;
pub mod remove;
pub mod replay;
pub mod rollback;
pub mod scheduler;
pub mod secrets;
pub mod server;
pub mod setup;
pub mod upgrade;

/// Write command output to stdout; a closed pipe is reported as the io error `exit` ignores.
pub fn write_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}
