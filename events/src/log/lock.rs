//! The single-writer lock: an exclusive `flock` on `writer.lock` in the log
//! directory, holding the owner's pid, host and command so that a second
//! writer can say who is in the way.
//!
//! The kernel drops the lock when the holder exits, even by SIGKILL, so a
//! crashed writer never leaves a stale lock behind.

use std::fmt;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::LogError;
use super::sled_dir::{PRIVATE_FILE_MODE, restrict};

/// Who holds a log open for writing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    /// Process id.
    pub pid: Option<u32>,
    /// Host name.
    pub host: Option<String>,
    /// Command line of the holder.
    pub command: Option<String>,
}

impl Holder {
    fn current() -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty());
        let command = std::env::args().collect::<Vec<_>>().join(" ");
        Self {
            pid: Some(std::process::id()),
            host,
            command: Some(command),
        }
    }

    fn to_file_text(&self) -> String {
        format!(
            "pid={}\nhost={}\ncommand={}\n",
            self.pid.map(|p| p.to_string()).unwrap_or_default(),
            self.host.as_deref().unwrap_or(""),
            self.command.as_deref().unwrap_or("").replace('\n', " "),
        )
    }

    fn parse(text: &str) -> Self {
        let mut holder = Self {
            pid: None,
            host: None,
            command: None,
        };
        for line in text.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let value = value.trim();
            if value.is_empty() {
                continue;
            }
            match key {
                "pid" => holder.pid = value.parse().ok(),
                "host" => holder.host = Some(value.to_owned()),
                "command" => holder.command = Some(value.to_owned()),
                _ => {}
            }
        }
        holder
    }
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pid {
            Some(pid) => write!(f, "pid {pid}")?,
            None => f.write_str("another process")?,
        }
        if let Some(host) = &self.host {
            write!(f, " on {host}")?;
        }
        if let Some(command) = &self.command {
            write!(f, " ({command})")?;
        }
        Ok(())
    }
}

/// The held lock; dropping it releases the log.
#[derive(Debug)]
pub(crate) struct WriterLock {
    _file: File,
}

impl WriterLock {
    /// Take the writer lock of the log in `dir`, or say who holds it.
    pub(crate) fn acquire(dir: &Path) -> Result<Self, LogError> {
        let path = lock_path(dir);
        let io = |action, source| LogError::io(action, &path, source);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(PRIVATE_FILE_MODE)
            .open(&path)
            .map_err(|e| io("open lock file", e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                // The holder may be writing its details right now; an empty
                // or partial read still gives a useful (if vaguer) message.
                let _ = file.read_to_string(&mut text);
                return Err(LogError::Locked {
                    path: dir.to_path_buf(),
                    holder: Holder::parse(&text),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io("lock", e)),
        }
        // A file made before files were private keeps its old mode: tighten it.
        restrict(&file, PRIVATE_FILE_MODE).map_err(|e| io("restrict lock file", e))?;
        let text = Holder::current().to_file_text();
        file.set_len(0).map_err(|e| io("truncate lock file", e))?;
        file.seek(SeekFrom::Start(0))
            .map_err(|e| io("write lock file", e))?;
        file.write_all(text.as_bytes())
            .map_err(|e| io("write lock file", e))?;
        Ok(Self { _file: file })
    }
}

/// Path of the lock file of the log in `dir`.
pub(crate) fn lock_path(dir: &Path) -> PathBuf {
    dir.join("writer.lock")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A second writer is refused with a message naming the first one's pid
    /// and host, and gets in once the first lets go.
    #[test]
    fn second_writer_is_told_who_holds_the_log() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = WriterLock::acquire(dir.path()).expect("first writer");
        let err = WriterLock::acquire(dir.path()).expect_err("second writer refused");
        let message = err.to_string();
        assert!(
            message.contains(&format!("pid {}", std::process::id())),
            "{message}"
        );
        assert!(lock_path(dir.path()).exists());
        drop(first);
        WriterLock::acquire(dir.path()).expect("lock free again");
    }
}
