//! One module per `flotilla` command.

pub mod bootstrap;
pub mod config;
pub mod deploy;
pub mod docs;
pub mod events;
pub mod executor;
pub mod history;
pub mod init;
pub mod key;
pub mod lock;
pub mod metrics;
pub mod proxy;
pub mod remove;
pub mod replay;
pub mod rollback;
pub mod secrets;
pub mod server;
pub mod setup;

/// Write command output to stdout; a closed pipe is reported as the io error `exit` ignores.
pub fn write_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}
