//! What the log knows of sled 0.34's files, read from its source rather than
//! guessed, so that an accident outside sled's control (a full disk, a crash
//! while sled writes a snapshot) cannot make the log unreadable.
//!
//! sled's directory holds:
//! - `db`: the log-structured data file, in segments; everything is in it,
//!   and sled can rebuild its state from it alone;
//! - `conf`: its storage parameters, with a crc32 at the end;
//! - `snap.<LSN in 16 hex digits>`: a snapshot of the page table up to that
//!   log position, written on open (`advance_snapshot`) so the next open
//!   scans less of `db`. It is written to `snap.<LSN>.generating`, fsynced,
//!   then renamed. On open sled reads the name that sorts last among all
//!   files starting with `snap.` (the `.generating` ones included) and
//!   fails with "corrupted" if its crc32 does not match or it has 12 bytes
//!   or fewer: a zero-byte `.generating` file left by a full disk, or a
//!   snapshot cut by a crash, made every later open fail.
//! - `blobs/`: values too large for a segment, one file each.
//!
//! A snapshot is only a cache of what `db` holds (sled's own tests check
//! that recovering from scratch gives the same state), so setting aside an
//! unfinished or damaged one loses nothing: sled then scans `db` from the
//! start.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::LogError;

/// Mode of every file of the log: events name hosts, images and people, and
/// are nobody else's to read.
pub(crate) const PRIVATE_FILE_MODE: u32 = 0o600;
/// Mode of the log's directories: even a file sled creates with the default
/// mode is out of other users' reach inside it.
pub(crate) const PRIVATE_DIR_MODE: u32 = 0o700;

/// The suffix sled gives a snapshot while writing it.
const GENERATING: &str = ".generating";
/// The suffix sled ignores when listing snapshots.
const IN_MOTION: &str = ".in___motion";
/// sled's snapshot and conf trailers: a snapshot ends with the length before
/// compression (8 bytes) then a crc32 (4 bytes), little-endian.
const SNAPSHOT_TRAILER: usize = 12;
const CRC_LEN: usize = 4;

/// Narrow an open file's mode to `mode` if it is wider (a file made before
/// the log's files were private).
pub(crate) fn restrict(file: &File, mode: u32) -> io::Result<()> {
    let permissions = file.metadata()?.permissions();
    if permissions.mode() & 0o777 & !mode != 0 {
        file.set_permissions(fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

fn restrict_path(path: &Path, mode: u32) -> io::Result<()> {
    let permissions = fs::symlink_metadata(path)?.permissions();
    if permissions.mode() & 0o777 & !mode != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Create `dir` (and missing parents) with mode 0700, or narrow an existing
/// one to it.
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), LogError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(dir)
        .map_err(|e| LogError::io("create directory", dir, e))?;
    restrict_path(dir, PRIVATE_DIR_MODE).map_err(|e| LogError::io("restrict directory", dir, e))
}

/// Make sled's directory `store` safe to open: private, and without a
/// snapshot or conf file that sled would refuse. Called with the writer lock
/// held, so no sled instance is writing here.
pub(crate) fn prepare(store: &Path) -> Result<(), LogError> {
    create_private_dir(store)?;
    set_aside_unusable_snapshots(store)?;
    let conf = store.join("conf");
    if conf.exists() && !conf_is_whole(&conf)? {
        // sled writes `conf` once, on first open; a cut one (full disk) makes
        // it fail to parse. sled writes it again, from the same defaults the
        // log always uses, when it is missing.
        remove(&conf)?;
    }
    restrict_files(store)
}

/// Remove unfinished (`.generating`) and damaged snapshots from `store`.
fn set_aside_unusable_snapshots(store: &Path) -> Result<(), LogError> {
    for path in snapshot_files(store)? {
        let name = file_name(&path);
        if name.ends_with(GENERATING) || !snapshot_is_whole(&path)? {
            remove(&path)?;
        }
    }
    Ok(())
}

/// Narrow the modes of sled's files in `store` to 0600 (0700 for `blobs/`).
/// sled creates them with the process umask; run after it opened, too.
pub(crate) fn restrict_files(store: &Path) -> Result<(), LogError> {
    restrict_tree(store).map_err(|e| LogError::io("restrict the files of", store, e))
}

fn restrict_tree(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let path = entry.path();
        if kind.is_dir() {
            restrict_path(&path, PRIVATE_DIR_MODE)?;
            restrict_tree(&path)?;
        } else if kind.is_file() {
            restrict_path(&path, PRIVATE_FILE_MODE)?;
        }
    }
    Ok(())
}

/// Files sled would read as snapshots: names starting with `snap.`, except
/// those ending in `.in___motion` (its `Config::get_snapshot_files`).
pub(crate) fn snapshot_files(store: &Path) -> Result<Vec<PathBuf>, LogError> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(store) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(LogError::io("list", store, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| LogError::io("list", store, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && !name.ends_with(IN_MOTION) {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Whether a snapshot file is complete: longer than its trailer, with a
/// crc32 matching its body (sled's `read_snapshot`).
fn snapshot_is_whole(path: &Path) -> Result<bool, LogError> {
    let bytes = fs::read(path).map_err(|e| LogError::io("read", path, e))?;
    if bytes.len() <= SNAPSHOT_TRAILER {
        return Ok(false);
    }
    let (body, trailer) = bytes.split_at(bytes.len() - SNAPSHOT_TRAILER);
    Ok(crc_matches(body, &trailer[SNAPSHOT_TRAILER - CRC_LEN..]))
}

/// Whether `conf` is complete: its body followed by its crc32 (sled's
/// `read_config`). sled treats 8 bytes or fewer as no file at all.
fn conf_is_whole(path: &Path) -> Result<bool, LogError> {
    let bytes = fs::read(path).map_err(|e| LogError::io("read", path, e))?;
    if bytes.len() <= 8 {
        return Ok(true);
    }
    let (body, crc) = bytes.split_at(bytes.len() - CRC_LEN);
    Ok(crc_matches(body, crc))
}

fn crc_matches(body: &[u8], crc: &[u8]) -> bool {
    let mut expected = [0u8; CRC_LEN];
    expected.copy_from_slice(crc);
    crc32fast::hash(body) == u32::from_le_bytes(expected)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn remove(path: &Path) -> Result<(), LogError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(LogError::io("remove", path, e)),
    }
}

/// Which snapshots a copy of sled's directory keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Snapshots {
    /// The complete ones, as a normal open would use them.
    Whole,
    /// None: sled rebuilds everything from `db`.
    None,
}

/// Copy sled's directory `from` into `to` (created, private), keeping the
/// snapshots `snapshots` says: salvage opens copies so that sled's recovery,
/// which rewrites the data file's tail, never changes the original.
pub(crate) fn copy_store(from: &Path, to: &Path, snapshots: Snapshots) -> Result<(), LogError> {
    create_private_dir(to)?;
    let entries = fs::read_dir(from).map_err(|e| LogError::io("list", from, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| LogError::io("list", from, e))?;
        let name = entry.file_name();
        let source = entry.path();
        let target = to.join(&name);
        let kind = entry
            .file_type()
            .map_err(|e| LogError::io("read", &source, e))?;
        if kind.is_dir() {
            copy_store(&source, &target, Snapshots::Whole)?;
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        let name = name.to_string_lossy();
        if name.starts_with("snap.") {
            let keep = snapshots == Snapshots::Whole
                && !name.ends_with(GENERATING)
                && snapshot_is_whole(&source)?;
            if !keep {
                continue;
            }
        }
        fs::copy(&source, &target).map_err(|e| LogError::io("copy", &source, e))?;
    }
    restrict_files(to)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A snapshot is whole only with its crc; a truncated copy of a whole
    /// one, or an empty file, is not.
    #[test]
    fn snapshot_checksum_is_sleds() {
        let dir = tempfile::tempdir().expect("temp dir");
        let body = b"page table".to_vec();
        let mut whole = body.clone();
        whole.extend_from_slice(&(body.len() as u64).to_le_bytes());
        whole.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        let path = dir.path().join("snap.0000000000000010");
        fs::write(&path, &whole).expect("write");
        assert!(snapshot_is_whole(&path).expect("read"));
        fs::write(&path, &whole[..whole.len() - 1]).expect("write");
        assert!(!snapshot_is_whole(&path).expect("read"));
        fs::write(&path, b"").expect("write");
        assert!(!snapshot_is_whole(&path).expect("read"));
    }
}
