//! What can go wrong while bringing a fleet up or down.

use std::path::PathBuf;
use std::time::Duration;

/// A fleet operation failed. Each message says what is missing or broken and, where there is
/// one, the command that fixes it.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error(
        "the local fleet needs root (namespaces, bridges and mounts): run it as root, e.g. `sudo scripts/demo`"
    )]
    NotRoot,
    #[error("`{binary}` is missing: install it with `apt-get install -y {package}`")]
    MissingBinary {
        binary: &'static str,
        package: &'static str,
    },
    #[error(
        "network namespaces are not available here ({detail}): the fleet needs a Linux kernel with netns support and CAP_SYS_ADMIN"
    )]
    NoNamespaces { detail: String },
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("{what} was not ready after {after:?}; its log is at {log}")]
    NotReady {
        what: String,
        after: Duration,
        log: PathBuf,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no free fleet slot: {max} fleets exist; take some down with `flotilla-fleet down --all`"
    )]
    NoFreeSlot { max: u8 },
    #[error("fleet state {path} is unreadable: {detail}")]
    State { path: PathBuf, detail: String },
    #[error("no fleet named {0:?} is up: start one with `flotilla-fleet up 3 --name {0}`")]
    NotFound(String),
    #[error("take-down left things behind: {}", .0.join("; "))]
    Leftovers(Vec<String>),
}

impl FleetError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> FleetError {
        let path = path.into();
        move |source| FleetError::Io { path, source }
    }
}
