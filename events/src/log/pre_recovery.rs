//! sled's data as it was before sled opened it, kept when the open loses
//! acknowledged events.
//!
//! sled recovers a damaged data file by stopping at the first bad record
//! and zeroing everything after it (the rest of that segment and every later
//! one, in `advance_snapshot`), and deletes the blob files written after that
//! point (`gc_blobs`): 64 bytes damaged at 90% of a 3,400-event log cost 408
//! intact events once any command had opened it. So before sled opens, the
//! data file is read into memory and the newest blob files are held open;
//! when the open turns out to have lost acknowledged events (or sled calls
//! the log damaged), they are written beside the log, where salvage reads
//! them. Otherwise they are dropped.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::LogError;
use super::sled_dir::{PRIVATE_FILE_MODE, create_private_dir};

/// Name, in the log directory, of the data file as it was before a sled
/// recovery that lost acknowledged events.
pub(crate) const DB_BEFORE_RECOVERY: &str = "db.before-recovery";
/// Name, in the log directory, of the blob files such a recovery deleted.
pub(crate) const BLOBS_BEFORE_RECOVERY: &str = "blobs.before-recovery";

/// The largest data file kept in memory while sled opens it: 64 MiB is a
/// log of about 400,000 events appended a few at a time (157 bytes each,
/// BENCHMARKS.md; large batches go to blob files instead), and reading it
/// from the page cache takes milliseconds; beyond that the copy would cost
/// more memory and time than an open should.
const DB_LIMIT: u64 = 64 << 20;

/// How many of the newest blob files are held open: sled deletes only blobs
/// newer than where its recovery stopped, so the newest ones are those at
/// risk, and a bound keeps the open files far below the usual limit of
/// 1,024 descriptors.
const BLOBS_HELD: usize = 64;

pub(crate) struct PreRecovery {
    db: Option<Vec<u8>>,
    /// The newest blob files, by name: an open file outlives its deletion.
    blobs: Vec<(String, File)>,
}

impl PreRecovery {
    /// Read the data file of `store` (unless missing or too large) and hold
    /// its newest blob files.
    pub(crate) fn read(store: &Path) -> Result<Self, LogError> {
        let db_path = store.join("db");
        let db = match fs::metadata(&db_path) {
            Ok(meta) if meta.len() <= DB_LIMIT => {
                Some(fs::read(&db_path).map_err(|e| LogError::io("read", &db_path, e))?)
            }
            Ok(_) => None,
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(LogError::io("read", &db_path, e)),
        };
        let blob_dir = store.join("blobs");
        let mut names: Vec<(u64, String)> = match fs::read_dir(&blob_dir) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    // sled names a blob by the log position of its record.
                    name.parse().ok().map(|lsn| (lsn, name))
                })
                .collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(LogError::io("list", &blob_dir, e)),
        };
        names.sort_unstable_by(|a, b| b.cmp(a));
        let mut blobs = Vec::new();
        for (_, name) in names.into_iter().take(BLOBS_HELD) {
            let path = blob_dir.join(&name);
            match File::open(&path) {
                Ok(file) => blobs.push((name, file)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(LogError::io("read", &path, e)),
            }
        }
        Ok(Self { db, blobs })
    }

    /// Write what sled's recovery destroyed beside the log in `dir`: the
    /// data file as `db.before-recovery` (unless one is there already: the
    /// earlier one is the less damaged) and the blob files `store` no longer
    /// has into `blobs.before-recovery/`.
    pub(crate) fn keep(self, dir: &Path, store: &Path) -> Result<(), LogError> {
        if let Some(db) = self.db {
            let path = dir.join(DB_BEFORE_RECOVERY);
            if !path.exists() {
                write_new(&path, &db)?;
            }
        }
        let kept = dir.join(BLOBS_BEFORE_RECOVERY);
        for (name, mut file) in self.blobs {
            if store.join("blobs").join(&name).exists() {
                continue;
            }
            create_private_dir(&kept)?;
            let path = kept.join(&name);
            if path.exists() {
                continue;
            }
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes)
                .map_err(|e| LogError::io("read a deleted blob for", &path, e))?;
            write_new(&path, &bytes)?;
        }
        Ok(())
    }
}

/// Write `bytes` to `path` whole or not at all (a temporary name, fsync,
/// rename), mode 0600.
fn write_new(path: &Path, bytes: &[u8]) -> Result<(), LogError> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = std::path::PathBuf::from(partial);
    let write = || -> io::Result<()> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(PRIVATE_FILE_MODE)
            .open(&partial)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&partial, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&partial);
        LogError::io("keep a copy of damaged data as", path, e)
    })
}
