//! Salvage: every event still intact in a damaged log, and an account of
//! what is lost.
//!
//! sled recovers a log in one of two ways: from its newest snapshot plus the
//! data written after it, or, with no snapshot, by scanning the whole data
//! file. They fail differently: damage in data a snapshot already covers
//! makes the snapshot's pages unreadable (a tree that cannot be walked: 0 of
//! 252 events), while the scan stops at the first damaged record and keeps
//! everything before it. Salvage therefore reads the log both ways, each on
//! a private copy of sled's files (sled's recovery rewrites the data file's
//! tail, and salvage must never make a later, better attempt impossible),
//! and keeps the union, checking that the two never disagree on an event.
//!
//! sled applies an append's keys as one batch and drops a batch whole when
//! any of its records is damaged, so an event can be intact on disk yet in
//! neither view. Last, salvage scans sled's raw files for segments and fills
//! the positions still missing with the events it finds there whose bytes
//! sled's checksums vouch for (`raw_scan`), up to the last acknowledged
//! position: nothing beyond was ever promised.
//!
//! sled's recovery zeroes everything after the first damaged record, so the
//! first command to open a damaged log would destroy intact events; an open
//! that finds acknowledged events lost keeps the data file as it was before
//! (`db.before-recovery` and `blobs.before-recovery/`, see `pre_recovery`),
//! and salvage reads that copy the same ways.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::LogError;
use super::checkpoint::Checkpoint;
use super::lock::WriterLock;
use super::pre_recovery::{BLOBS_BEFORE_RECOVERY, DB_BEFORE_RECOVERY};
use super::raw_scan::RawScan;
use super::sled_dir::{self, Snapshots};
use super::sled_log::{self, STORE_DIR};
use crate::SledLog;
use crate::envelope::Envelope;
use crate::ids::Seq;

/// What salvage could read from a damaged log.
#[derive(Debug)]
pub struct Salvage {
    /// Every event that could be read, in order.
    pub events: Vec<Envelope>,
    /// What could not be read, in order.
    pub problems: Vec<LogError>,
    /// The last position the log had acknowledged (0 when unknown): with
    /// the last event read, it bounds what was lost.
    pub acknowledged: Seq,
}

impl Salvage {
    /// How many events that were stored could not be recovered: positions
    /// up to the last acknowledged (or read) one that are not in
    /// [`Salvage::events`].
    pub fn lost(&self) -> Seq {
        let last = self
            .events
            .last()
            .map_or(0, |e| e.seq)
            .max(self.acknowledged);
        last.saturating_sub(self.events.len() as Seq)
    }
}

/// One way of reading the log: its events by position and what failed.
struct View {
    events: BTreeMap<Seq, Envelope>,
    problems: Vec<LogError>,
}

impl SledLog {
    /// Read every event still intact in the (possibly damaged) log in `dir`,
    /// listing what could not be read: the way to export history out of a
    /// log that fails to open or to read.
    ///
    /// The log's files are not changed: sled opens copies of them, in the
    /// system's temporary directory (`TMPDIR`), so salvage works on a full
    /// disk or a read-only file system and can be run again.
    pub fn salvage_dir(dir: impl AsRef<Path>) -> Result<Salvage, LogError> {
        let dir = dir.as_ref();
        // The lock keeps a writer from changing the files while they are
        // copied; a log that cannot be written has no writer to fear.
        let _lock = match WriterLock::acquire(dir) {
            Ok(lock) => Some(lock),
            Err(LogError::ReadOnly { .. }) => None,
            Err(e) => return Err(e),
        };
        let acknowledged = Checkpoint::read(dir)?;
        let store = dir.join(STORE_DIR);
        let scratch = Scratch::new()?;
        let mut views = Vec::new();
        let snapshots = sled_dir::snapshot_files(&store)?;
        // The data file as it is, and as it was before an open's recovery
        // zeroed what followed damage, if that open kept a copy.
        let before = dir.join(DB_BEFORE_RECOVERY);
        let kept_blobs = dir.join(BLOBS_BEFORE_RECOVERY);
        let mut data_files = vec![store.join("db")];
        if before.exists() {
            data_files.push(before);
        }
        for (i, data) in data_files.iter().enumerate() {
            for (j, keep) in [Snapshots::Whole, Snapshots::None].into_iter().enumerate() {
                if keep == Snapshots::None && snapshots.is_empty() {
                    // Without snapshots the first read already was a full scan.
                    break;
                }
                let copy = scratch.path.join(format!("{i}-{j}"));
                sled_dir::copy_store(&store, &copy, keep)?;
                if i > 0 {
                    std::fs::copy(data, copy.join("db"))
                        .map_err(|e| LogError::io("copy", data, e))?;
                    copy_files(&kept_blobs, &copy.join("blobs"))?;
                }
                views.push(read_view(dir, &copy));
            }
        }
        let mut blob_files = list_files(&store.join("blobs"))?;
        blob_files.extend(list_files(&kept_blobs)?);
        let (raw, scan_problem) = match RawScan::read(&data_files, &blob_files) {
            Ok(raw) => (Some(raw), None),
            Err(e) => (None, Some(e)),
        };
        let mut salvage = merge(dir, acknowledged, views, raw)?;
        salvage.problems.extend(scan_problem);
        Ok(salvage)
    }
}

/// Open the copy of sled's files in `copy` and read every event it gives.
fn read_view(dir: &Path, copy: &Path) -> Result<View, LogError> {
    let db = sled_log::open_store(dir, copy)?;
    let mut view = View {
        events: BTreeMap::new(),
        problems: Vec::new(),
    };
    // A damaged last segment still lets the rest be read.
    let end = match sled_log::last_position(&db, dir) {
        Ok(end) => end,
        Err(e) => {
            view.problems.push(e);
            0
        }
    };
    for item in sled_log::read_store(&db, dir, end) {
        match item {
            Ok(event) => {
                view.events.insert(event.seq, event);
            }
            Err(e) => view.problems.push(e),
        }
    }
    Ok(view)
}

/// The files directly in `dir`, none when it does not exist.
fn list_files(dir: &Path) -> Result<Vec<PathBuf>, LogError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(LogError::io("list", dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| LogError::io("list", dir, e))?.path();
        if path.is_file() {
            out.push(path);
        }
    }
    Ok(out)
}

/// Copy the files directly in `from` (if it exists) into `to`.
fn copy_files(from: &Path, to: &Path) -> Result<(), LogError> {
    for file in list_files(from)? {
        if let Some(name) = file.file_name() {
            std::fs::copy(&file, to.join(name)).map_err(|e| LogError::io("copy", &file, e))?;
        }
    }
    Ok(())
}

/// The union of the views, filled in from the raw scan, and the problems
/// that explain what none of them could read.
fn merge(
    dir: &Path,
    acknowledged: Seq,
    views: Vec<Result<View, LogError>>,
    raw: Option<RawScan>,
) -> Result<Salvage, LogError> {
    let mut opened = Vec::new();
    let mut failed = Vec::new();
    for view in views {
        match view {
            Ok(view) => opened.push(view),
            Err(e) => failed.push(e),
        }
    }
    let sled_failed = opened.is_empty();
    // The view with the most events leads (on a tie, the normal open).
    opened.sort_by_key(|view| std::cmp::Reverse(view.events.len()));
    let mut events: BTreeMap<Seq, Envelope> = BTreeMap::new();
    let mut conflicts = Vec::new();
    let mut unreadable = Vec::new();
    let mut others = Vec::new();
    for (i, view) in opened.into_iter().enumerate() {
        for (seq, event) in view.events {
            match events.get(&seq) {
                None => {
                    events.insert(seq, event);
                }
                Some(kept) if kept.id != event.id => conflicts.push(LogError::Corrupt {
                    path: dir.to_path_buf(),
                    detail: format!(
                        "two different events are stored at position {seq} ({} and {}); \
                         salvage kept the first",
                        kept.id, event.id
                    ),
                }),
                Some(_) => {}
            }
        }
        for problem in view.problems {
            match problem {
                LogError::Record { seq, .. } => unreadable.push((seq, problem)),
                // Recomputed below from what the union still lacks.
                LogError::Gap { .. } | LogError::Truncated { .. } => {}
                // Sled's own errors and damaged segments of the leading view
                // say why events are missing; the other views' would repeat
                // them.
                _ if i == 0 => others.push(problem),
                _ => {}
            }
        }
    }
    if sled_failed {
        // Neither way could open the log: the first failure says why.
        others.extend(failed.into_iter().next());
    }
    if let Some(raw) = raw {
        fill_from_raw(dir, &mut events, raw, acknowledged, &mut conflicts);
    }
    if events.is_empty()
        && sled_failed
        && let Some(why) = others.pop()
    {
        return Err(why);
    }
    let last = events.keys().next_back().copied().unwrap_or(0);
    let mut problems = Vec::new();
    if acknowledged > last {
        problems.push(LogError::Truncated {
            path: dir.to_path_buf(),
            stored: last,
            acknowledged,
        });
    }
    let missing = missing_ranges(&events);
    if !missing.is_empty() || acknowledged > last {
        problems.extend(others);
    }
    unreadable.sort_by_key(|(seq, _)| *seq);
    unreadable.dedup_by_key(|(seq, _)| *seq);
    let mut unreadable = unreadable.into_iter().peekable();
    for (first, last_missing) in missing {
        let mut explained = 0;
        while let Some((seq, _)) = unreadable.peek() {
            if *seq > last_missing {
                break;
            }
            if let Some((seq, problem)) = unreadable.next()
                && seq >= first
            {
                problems.push(problem);
                explained += 1;
            }
        }
        if explained < last_missing - first + 1 {
            problems.push(LogError::Gap {
                expected: first,
                found: last_missing + 1,
            });
        }
    }
    problems.extend(conflicts);
    Ok(Salvage {
        events: events.into_values().collect(),
        problems,
        acknowledged,
    })
}

/// Put the raw scan's events at the positions still missing, up to the last
/// acknowledged one (any position when the mark is unknown), if sled's
/// checksums vouch for their bytes. A position for which the scan found two
/// different events stays missing: which one was acknowledged cannot be
/// told.
fn fill_from_raw(
    dir: &Path,
    events: &mut BTreeMap<Seq, Envelope>,
    mut raw: RawScan,
    acknowledged: Seq,
    conflicts: &mut Vec<LogError>,
) {
    let read = events.keys().next_back().copied().unwrap_or(0);
    let bound = if acknowledged == 0 {
        Seq::MAX
    } else {
        acknowledged.max(read)
    };
    let mut found: BTreeMap<Seq, Option<usize>> = BTreeMap::new();
    for index in 0..raw.found.len() {
        let seq = raw.found[index].event.seq;
        if seq == 0 || seq > bound || events.contains_key(&seq) {
            continue;
        }
        if found.get(&seq).is_some_and(|kept| {
            kept.is_none_or(|kept| raw.found[kept].event.id == raw.found[index].event.id)
        }) {
            // The same event again (sled keeps old copies of its nodes), or
            // a position already in conflict.
            continue;
        }
        if !raw.vouched(index) {
            continue;
        }
        match found.get(&seq).copied().flatten() {
            None => {
                found.insert(seq, Some(index));
            }
            Some(kept) => {
                conflicts.push(LogError::Corrupt {
                    path: dir.to_path_buf(),
                    detail: format!(
                        "two different events are stored at position {seq} ({} and {}); \
                         salvage kept neither",
                        raw.found[kept].event.id, raw.found[index].event.id
                    ),
                });
                found.insert(seq, None);
            }
        }
    }
    for (seq, index) in found {
        if let Some(index) = index {
            events.insert(seq, raw.found[index].event.clone());
        }
    }
}

/// Positions missing before the last event, as inclusive ranges.
fn missing_ranges(events: &BTreeMap<Seq, Envelope>) -> Vec<(Seq, Seq)> {
    let mut out = Vec::new();
    let mut expected = 1;
    for &seq in events.keys() {
        if seq > expected {
            out.push((expected, seq - 1));
        }
        expected = seq + 1;
    }
    out
}

/// A private directory for salvage's copies, removed when dropped.
struct Scratch {
    path: PathBuf,
}

impl Scratch {
    fn new() -> Result<Self, LogError> {
        use std::os::unix::fs::DirBuilderExt;
        let base = std::env::temp_dir();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = base.join(format!(
            "flotilla-salvage-{}-{nanos:09}",
            std::process::id()
        ));
        std::fs::DirBuilder::new()
            .mode(sled_dir::PRIVATE_DIR_MODE)
            .create(&path)
            .map_err(|e| LogError::io("create a salvage directory in", &base, e))?;
        Ok(Self { path })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Best effort: a copy left behind in the temporary directory holds
        // nothing the log does not, and is private (0700).
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
