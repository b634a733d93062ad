//! What can go wrong with an event log, and what the user should do next.
//!
//! The variants keep causes apart that call for different actions: another
//! process holds the log ([`LogError::Locked`]: wait for it), the disk is full
//! ([`LogError::NoSpace`]: free space), the files cannot be written
//! ([`LogError::ReadOnly`]: fix permissions or the mount), the data is damaged
//! (`is_damage`: salvage). [`LogError::next_step`] says it in words, so every
//! command gives the same advice.

use std::fmt;
use std::path::{Path, PathBuf};

use super::lock::Holder;
use crate::codec::CodecError;
use crate::ids::{EventId, Seq};

/// Why the log could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Another process has the log open for writing.
    #[error("event log {path} is in use by {holder}")]
    Locked {
        /// The log directory.
        path: PathBuf,
        /// Who holds it: pid, host and command as the holder wrote them.
        holder: Holder,
    },
    /// A file operation failed for a reason other than those below.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done, e.g. `create directory`.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The file system holding the log is full (`ENOSPC`, or `EDQUOT`: the
    /// user's quota). Nothing acknowledged is lost: once space is free the
    /// log opens with every acknowledged event.
    #[error("cannot {action} {path}: no space left on the device")]
    NoSpace {
        /// What was being done, e.g. `store events in`.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The log's files or directory cannot be written: a read-only file
    /// system (`EROFS`) or missing permission (`EACCES`, `EPERM`). The log
    /// needs write access even to be read, since its storage engine writes
    /// on open.
    #[error("cannot {action} {path}: it is read-only or not writable by this user")]
    ReadOnly {
        /// What was being done, e.g. `open lock file`.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The storage engine reported an error not covered by another variant.
    #[error("event log {path}: {source}")]
    Store {
        /// The log directory.
        path: PathBuf,
        /// sled's error.
        source: sled::Error,
    },
    /// The storage itself is damaged (sled could not recover it, or failed).
    #[error("event log {path} is corrupted: {detail}")]
    Corrupt {
        /// The log directory.
        path: PathBuf,
        /// What was found.
        detail: String,
    },
    /// The log ends before events that were acknowledged as stored: the
    /// storage engine dropped damaged data while recovering.
    #[error(
        "event log {path} is damaged: it ends at event {stored}, but events up to \
         {acknowledged} were stored"
    )]
    Truncated {
        /// The log directory.
        path: PathBuf,
        /// The last event the log still has.
        stored: Seq,
        /// The last event an append had returned for.
        acknowledged: Seq,
    },
    /// One record cannot be decoded; the records around it may be fine.
    #[error("event {seq} cannot be read: {source}")]
    Record {
        /// Position of the record.
        seq: Seq,
        /// Why it cannot be decoded.
        source: CodecError,
    },
    /// Positions are not contiguous: records are missing.
    #[error("{}", gap_message(*expected, *found))]
    Gap {
        /// The position that should have come next.
        expected: Seq,
        /// The position that came instead.
        found: Seq,
    },
    /// An event could not be encoded.
    #[error("cannot store event {id}: {source}")]
    Encode {
        /// The event.
        id: EventId,
        /// Why.
        source: CodecError,
    },
    /// Import or migration into a log that already has events.
    #[error("event log already holds {events} events; import needs an empty log")]
    NotEmpty {
        /// How many it holds.
        events: Seq,
    },
    /// A bug in Flotilla, not in the input.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

fn gap_message(expected: Seq, found: Seq) -> String {
    let last_missing = found.saturating_sub(1);
    if last_missing <= expected {
        format!("event {expected} is missing (next stored event is {found})")
    } else {
        format!("events {expected} to {last_missing} are missing (next stored event is {found})")
    }
}

impl LogError {
    /// A failed file operation, sorted by what the user must do about it:
    /// [`LogError::NoSpace`], [`LogError::ReadOnly`] or else
    /// [`LogError::Io`].
    pub(crate) fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        use std::io::ErrorKind;
        let path = path.to_path_buf();
        // By kind, not errno: sled keeps an asynchronous write's error as a
        // new error of the same kind, without the errno.
        match source.kind() {
            // ENOSPC, EDQUOT.
            ErrorKind::StorageFull | ErrorKind::QuotaExceeded => Self::NoSpace {
                action,
                path,
                source,
            },
            // EROFS, EACCES, EPERM.
            ErrorKind::ReadOnlyFilesystem | ErrorKind::PermissionDenied => Self::ReadOnly {
                action,
                path,
                source,
            },
            _ => Self::Io {
                action,
                path,
                source,
            },
        }
    }

    /// Whether [`crate::SledLog::salvage`] may still recover the other events.
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            Self::Corrupt { .. } | Self::Record { .. } | Self::Gap { .. } | Self::Truncated { .. }
        )
    }

    /// What the user should do about this error, when there is something
    /// better to say than "run again". `dir` is the log directory, named in
    /// commands the advice gives (salvage).
    pub fn next_step(&self, dir: &Path) -> Option<NextStep> {
        match self {
            Self::Locked { holder, .. } => Some(NextStep::WaitForHolder {
                holder: holder.clone(),
            }),
            Self::NoSpace { path, .. } => Some(NextStep::FreeSpace { path: path.clone() }),
            Self::ReadOnly { path, .. } => Some(NextStep::MakeWritable { path: path.clone() }),
            e if e.is_damage() => Some(NextStep::Salvage {
                dir: dir.to_path_buf(),
            }),
            _ => None,
        }
    }
}

/// What to do about a [`LogError`]; its `Display` is one sentence to show
/// after the error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NextStep {
    /// Another process is using the log: wait for it or stop it. The kernel
    /// frees the lock when its holder exits, even by a crash, so the holder
    /// named here is alive.
    WaitForHolder {
        /// Who holds the log.
        holder: Holder,
    },
    /// Free space on the file system holding `path`; the acknowledged events
    /// are kept and the log opens again once there is room.
    FreeSpace {
        /// The file or directory that could not be written.
        path: PathBuf,
    },
    /// Make `path` writable (permissions, owner, or remount read-write).
    MakeWritable {
        /// The file or directory that could not be written.
        path: PathBuf,
    },
    /// The log is damaged: export what is intact, then import it into a new
    /// log.
    Salvage {
        /// The damaged log's directory.
        dir: PathBuf,
    },
}

impl fmt::Display for NextStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WaitForHolder { holder } => write!(
                f,
                "the log has one user at a time: wait for {holder} to finish (or stop it), \
                 then run again"
            ),
            Self::FreeSpace { path } => write!(
                f,
                "free space on the file system holding {}, then run again: the acknowledged \
                 events are kept",
                path.display()
            ),
            Self::MakeWritable { path } => write!(
                f,
                "make {} writable by this user (check its owner and mode, or remount its file \
                 system read-write), then run again",
                path.display()
            ),
            Self::Salvage { dir } => write!(
                f,
                "export what is intact with `flotilla events --salvage --json --log {0} > \
                 rescued.jsonl`, then load it into a fresh log with `flotilla events import \
                 rescued.jsonl --log NEW_PATH`",
                dir.display()
            ),
        }
    }
}
