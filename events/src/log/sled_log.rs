//! The event log on disk, in sled.
//!
//! Layout of the log directory (0700, every file 0600): `sled/` holds the
//! sled database (its files are described, and made safe to open after a
//! crash or a full disk, in `sled_dir`), `writer.lock` the single-writer
//! lock, `acknowledged` the last acknowledged position (see `checkpoint`),
//! and after a recovery that lost events, `db.before-recovery` and
//! `blobs.before-recovery/` (see `pre_recovery`).
//!
//! In sled, key `e` + position of a batch's first event (8 bytes,
//! big-endian, so keys sort by position) holds that batch as one `segment`;
//! a batch larger than a segment is several segments written in one atomic
//! sled batch, so an append is stored whole or not at all.
//!
//! The id index that makes appends idempotent lives in memory: it is built
//! on the first append (or lookup) after opening, so readers never pay for it,
//! from key `i` + first position, a copy of each segment's ids written in the
//! same sled batch.
//!
//! sled reports through the `log` crate as well as through its errors (an
//! ERROR line when a flush fails, a WARN line for a damaged snapshot): every
//! such condition also reaches the caller as a [`LogError`], so a binary
//! should silence the `sled` target (`sled=off` in a tracing `EnvFilter`).
//!
//! sled 0.34 is beta: its on-disk format may change before 1.0 and it uses
//! more space than the data (see BENCHMARKS.md). Hence the [`EventLog`] trait
//! in front of it and JSON-lines export/import to move history.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use super::checkpoint::Checkpoint;
use super::guard::guard;
use super::lock::WriterLock;
use super::pre_recovery::PreRecovery;
use super::salvage::Salvage;
use super::segment::{MAX_EVENTS, Segment, SegmentWriter};
use super::sled_dir;
use super::tail::TailSender;
use super::{Appended, EventLog, Events, LogError, Tail};
use crate::codec;
use crate::envelope::{Envelope, NewEvent};
use crate::ids::{EventId, Seq};

const SEGMENT_PREFIX: u8 = b'e';
const IDS_PREFIX: u8 = b'i';

fn segment_key(first: Seq) -> [u8; 9] {
    let mut key = [SEGMENT_PREFIX; 9];
    key[1..].copy_from_slice(&first.to_be_bytes());
    key
}

/// Key of a segment's id list, a copy of its ids kept apart so that building
/// the id index reads 16 bytes per event instead of whole segments.
fn ids_key(first: Seq) -> [u8; 9] {
    let mut key = [IDS_PREFIX; 9];
    key[1..].copy_from_slice(&first.to_be_bytes());
    key
}

fn first_seq(key: &[u8]) -> Option<Seq> {
    match key.split_first() {
        Some((&SEGMENT_PREFIX, rest)) => Some(Seq::from_be_bytes(rest.try_into().ok()?)),
        _ => None,
    }
}

/// The durable [`EventLog`], stored with sled in a directory.
#[derive(Debug)]
pub struct SledLog {
    path: PathBuf,
    db: sled::Db,
    /// The writer's state; the mutex also serialises appends.
    writer: Mutex<Writer>,
    tail: TailSender,
    checkpoint: Checkpoint,
    _lock: WriterLock,
}

#[derive(Debug)]
struct Writer {
    /// Position of the last stored event.
    last: Seq,
    /// Position of every stored event by id, once built.
    ids: Option<HashMap<EventId, Seq>>,
}

impl SledLog {
    /// Open (creating if needed) the log in directory `dir`, as its only
    /// writer.
    ///
    /// Fails with [`LogError::Truncated`] when the storage engine dropped
    /// acknowledged events while recovering a damaged file; then
    /// [`SledLog::salvage_dir`] reads what is left, including the data as it
    /// was before sled's recovery cut it, which this open then keeps beside
    /// the log. A snapshot sled left unfinished or damaged (a crash or a full
    /// disk while writing it) is removed first: sled rebuilds its state from
    /// the data file.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, LogError> {
        let (log, truncated) = Self::open_unchecked(dir.as_ref())?;
        match truncated {
            Some(e) => Err(e),
            None => Ok(log),
        }
    }

    /// Open, reporting acknowledged events the storage lost beside the log.
    fn open_unchecked(dir: &Path) -> Result<(Self, Option<LogError>), LogError> {
        let path = dir.to_path_buf();
        sled_dir::create_private_dir(&path)?;
        let lock = WriterLock::acquire(&path)?;
        let store = path.join(STORE_DIR);
        sled_dir::prepare(&store)?;
        let before = PreRecovery::read(&store)?;
        let opened = open_store(&path, &store).and_then(|db| {
            let last = last_position(&db, &path)?;
            Ok((db, last))
        });
        let (db, last) = match opened {
            Ok(opened) => opened,
            Err(e) => {
                if e.is_damage() {
                    // Best effort: the damage is what to report; a copy that
                    // finds no room (a full disk) must not hide it.
                    let _ = before.keep(&path, &store);
                }
                return Err(e);
            }
        };
        let (checkpoint, acknowledged) = Checkpoint::open(&path)?;
        let truncated = (acknowledged > last).then(|| LogError::Truncated {
            path: path.clone(),
            stored: last,
            acknowledged,
        });
        if truncated.is_some() {
            // As above: the lost events are what to report.
            let _ = before.keep(&path, &store);
        }
        let log = Self {
            path,
            db,
            writer: Mutex::new(Writer { last, ids: None }),
            tail: TailSender::new(),
            checkpoint,
            _lock: lock,
        };
        Ok((log, truncated))
    }

    /// The log directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes the log occupies on disk, as sled counts them.
    pub fn size_on_disk(&self) -> Result<u64, LogError> {
        guard(&self.path, || self.db.size_on_disk())
    }

    /// Read every event that can be read from this log, and list what could
    /// not.
    pub fn salvage(&self) -> Salvage {
        let mut salvage = Salvage {
            events: Vec::new(),
            problems: Vec::new(),
            acknowledged: self.last_seq(),
        };
        let events = match self.read_from(1) {
            Ok(events) => events,
            Err(e) => {
                salvage.problems.push(e);
                return salvage;
            }
        };
        for item in events {
            match item {
                Ok(event) => salvage.events.push(event),
                Err(e) => {
                    let go_on = e.is_damage();
                    salvage.problems.push(e);
                    if !go_on {
                        break;
                    }
                }
            }
        }
        salvage
    }

    fn writer(&self) -> MutexGuard<'_, Writer> {
        // The state is only changed after a successful sled batch, so a panic
        // elsewhere cannot leave it wrong.
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Build the id index from the segments' id lists.
    fn load_ids(&self, events: Seq) -> Result<HashMap<EventId, Seq>, LogError> {
        let mut ids = HashMap::with_capacity(usize::try_from(events).unwrap_or(0));
        for entry in self.db.range(ids_key(0)..=ids_key(Seq::MAX)) {
            let (key, value) = guard(&self.path, || entry)?;
            let first = match key.split_first() {
                Some((&IDS_PREFIX, rest)) => rest.try_into().ok().map(Seq::from_be_bytes),
                _ => None,
            };
            // Damage is reported by reads; appends go on, and events in a
            // damaged list cannot be recognised as duplicates.
            let Some(first) = first else { continue };
            for (i, id) in value.chunks_exact(16).enumerate() {
                let mut bytes = [0u8; 16];
                bytes.copy_from_slice(id);
                ids.insert(
                    EventId::from_u128(u128::from_be_bytes(bytes)),
                    first + i as Seq,
                );
            }
        }
        Ok(ids)
    }
}

/// sled locks its data file for as long as any of its threads holds the database: a database
/// this process just dropped (its flusher finishing its last tick) still holds it for a moment.
/// The log's own `writer.lock` keeps other processes out, so a conflict on sled's lock here is
/// that moment, waited out rather than reported.
const SLED_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// How often sled's lock is tried again meanwhile: a `flock` held by a thread cannot be awaited.
const SLED_LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(10);

/// Whether sled could not take its own file lock.
fn held_by_sled(e: &std::io::Error) -> bool {
    e.to_string().contains("could not acquire lock")
}

/// The directory of sled's files inside the log directory.
pub(super) const STORE_DIR: &str = "sled";

/// Open the sled database in `store`, the store of the log in `path`
/// (errors name the log).
pub(super) fn open_store(path: &Path, store: &Path) -> Result<sled::Db, LogError> {
    let config = sled::Config::new().path(store);
    let deadline = std::time::Instant::now() + SLED_LOCK_WAIT;
    let db = loop {
        match guard(path, || config.open()) {
            Err(LogError::Io { source, .. })
                if held_by_sled(&source) && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(SLED_LOCK_RETRY);
            }
            other => break other?,
        }
    };
    // sled made its files with the process umask; they hold the events.
    sled_dir::restrict_files(store)?;
    Ok(db)
}

/// Position of the last event stored in `db`, 0 when it has none.
pub(super) fn last_position(db: &sled::Db, path: &Path) -> Result<Seq, LogError> {
    let last_segment = guard(path, || {
        db.range(segment_key(0)..=segment_key(Seq::MAX))
            .next_back()
            .transpose()
    })?;
    let Some((key, value)) = last_segment else {
        return Ok(0);
    };
    let Some(first) = first_seq(&key) else {
        return Err(LogError::Corrupt {
            path: path.to_path_buf(),
            detail: format!("malformed segment key {key:?}"),
        });
    };
    match Segment::parse(&value) {
        Ok(segment) => Ok(first + segment.count() as Seq - 1),
        Err(detail) => Err(LogError::Corrupt {
            path: path.to_path_buf(),
            detail: format!("last segment: {detail}"),
        }),
    }
}

/// Every event stored in `db`, in order, from position 1 up to `end`, with
/// an error for each one that cannot be read.
pub(super) fn read_store<'a>(
    db: &sled::Db,
    path: &'a Path,
    end: Seq,
) -> impl Iterator<Item = Result<Envelope, LogError>> + 'a {
    SledEvents {
        path,
        iter: db.range(segment_key(0)..=segment_key(Seq::MAX)),
        from: 1,
        end,
        expected: Some(1),
        current: Vec::new().into_iter(),
        failed: false,
    }
}

impl EventLog for SledLog {
    fn append_batch(&self, events: Vec<NewEvent>) -> Result<Vec<Appended>, LogError> {
        let mut writer = self.writer();
        if writer.ids.is_none() {
            writer.ids = Some(self.load_ids(writer.last)?);
        }
        let listened = self.tail.is_listened();
        let mut outcomes = Vec::with_capacity(events.len());
        let mut new_ids: HashMap<EventId, Seq> = HashMap::new();
        let mut stored = Vec::new();
        let mut batch = sled::Batch::default();
        let mut segment = SegmentWriter::new();
        let mut segment_first = writer.last + 1;
        let mut next = writer.last + 1;
        for event in events {
            let known = new_ids
                .get(&event.id)
                .or_else(|| writer.ids.as_ref().and_then(|ids| ids.get(&event.id)));
            if let Some(&seq) = known {
                outcomes.push(Appended::Duplicate(seq));
                continue;
            }
            let id = event.id;
            let envelope = event.into_envelope(next);
            segment
                .push(&envelope)
                .map_err(|source| LogError::Encode { id, source })?;
            new_ids.insert(id, next);
            outcomes.push(Appended::New(next));
            if listened {
                stored.push(envelope);
            }
            next += 1;
            if segment.len() == MAX_EVENTS {
                let full = std::mem::replace(&mut segment, SegmentWriter::new());
                batch.insert(&ids_key(segment_first)[..], full.ids());
                batch.insert(&segment_key(segment_first)[..], full.finish());
                segment_first = next;
            }
        }
        if segment.len() > 0 {
            batch.insert(&ids_key(segment_first)[..], segment.ids());
            batch.insert(&segment_key(segment_first)[..], segment.finish());
        }
        if new_ids.is_empty() {
            return Ok(outcomes);
        }
        guard(&self.path, || self.db.apply_batch(batch))?;
        // The batch is in the tree now: later appends must not reuse its
        // positions, even if the flush below fails (a retry then finds the
        // events by id and reports them as duplicates).
        writer.last = next - 1;
        if let Some(ids) = writer.ids.as_mut() {
            ids.extend(new_ids);
        }
        guard(&self.path, || self.db.flush())?;
        self.checkpoint.record(writer.last)?;
        drop(writer);
        self.tail.publish(stored);
        Ok(outcomes)
    }

    fn read_from(&self, from: Seq) -> Result<Events<'_>, LogError> {
        let from = from.max(1);
        // Start at the segment holding `from`: the last one starting at or
        // before it.
        let start = guard(&self.path, || {
            self.db
                .range(segment_key(0)..=segment_key(from))
                .next_back()
                .transpose()
        })?
        .and_then(|(key, _)| first_seq(&key))
        .unwrap_or(from);
        let iter = self.db.range(segment_key(start)..=segment_key(Seq::MAX));
        Ok(Box::new(SledEvents {
            path: &self.path,
            iter,
            from,
            end: self.writer().last,
            expected: Some(start),
            current: Vec::new().into_iter(),
            failed: false,
        }))
    }

    fn last_seq(&self) -> Seq {
        self.writer().last
    }

    fn position_of(&self, id: EventId) -> Result<Option<Seq>, LogError> {
        let mut writer = self.writer();
        if writer.ids.is_none() {
            writer.ids = Some(self.load_ids(writer.last)?);
        }
        Ok(writer.ids.as_ref().and_then(|ids| ids.get(&id).copied()))
    }

    fn subscribe(&self) -> Tail {
        self.tail.subscribe()
    }
}

/// Reads segments in key order, checking that positions are contiguous and
/// that each record is the event its place says.
struct SledEvents<'a> {
    path: &'a Path,
    iter: sled::Iter,
    /// Events before this position are skipped.
    from: Seq,
    /// The last position the log holds: reading must get this far.
    end: Seq,
    /// The position the next segment should start at; `None` after a
    /// damaged segment, whose size is unknown.
    expected: Option<Seq>,
    /// Results of the segment being read.
    current: std::vec::IntoIter<Result<Envelope, LogError>>,
    /// Set once sled itself failed: its iterator cannot be trusted after that.
    failed: bool,
}

impl Iterator for SledEvents<'_> {
    type Item = Result<Envelope, LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(item) = self.current.next() {
                return Some(item);
            }
            if self.failed {
                return None;
            }
            let (key, value) = match guard(self.path, || self.iter.next().transpose()) {
                Ok(Some(entry)) => entry,
                // sled can lose entries in the middle of a damaged file and simply stop:
                // ending before the last stored position is damage, not the end.
                Ok(None) => {
                    self.failed = true;
                    return match self.expected {
                        Some(expected) if expected <= self.end && expected >= self.from => {
                            Some(Err(LogError::Gap {
                                expected,
                                found: self.end + 1,
                            }))
                        }
                        _ => None,
                    };
                }
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            };
            self.current = self.read_segment(&key, &value).into_iter();
        }
    }
}

impl SledEvents<'_> {
    /// Everything one segment yields: a gap before it, its events or errors.
    fn read_segment(&mut self, key: &[u8], value: &[u8]) -> Vec<Result<Envelope, LogError>> {
        let mut out = Vec::new();
        let Some(first) = first_seq(key) else {
            out.push(Err(LogError::Corrupt {
                path: self.path.to_path_buf(),
                detail: format!("malformed segment key {key:?}"),
            }));
            return out;
        };
        if let Some(expected) = self.expected.filter(|&e| e != first) {
            out.push(Err(LogError::Gap {
                expected,
                found: first,
            }));
        }
        let segment = match Segment::parse(value) {
            Ok(segment) => segment,
            Err(detail) => {
                self.expected = None;
                out.push(Err(LogError::Corrupt {
                    path: self.path.to_path_buf(),
                    detail: format!("segment starting at event {first}: {detail}"),
                }));
                return out;
            }
        };
        self.expected = Some(first + segment.count() as Seq);
        out.reserve(segment.count());
        for (i, (record, id)) in segment.records().zip(segment.ids()).enumerate() {
            let seq = first + i as Seq;
            if seq < self.from {
                continue;
            }
            out.push(match codec::decode(record) {
                Ok(event) if event.seq == seq && event.id == id => Ok(event),
                Ok(event) => Err(LogError::Corrupt {
                    path: self.path.to_path_buf(),
                    detail: format!(
                        "record at {seq} holds event {} ({}), not the one indexed there ({id})",
                        event.seq, event.id
                    ),
                }),
                Err(source) => Err(LogError::Record { seq, source }),
            });
        }
        out
    }
}

/// Ways to damage a log on purpose, for tests of how damage is reported.
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// Replace the record of event `seq` with `bytes`, inside its segment.
    pub(crate) fn overwrite_record(log: &SledLog, seq: Seq, bytes: &[u8]) {
        let (key, value) = log
            .db
            .range(segment_key(0)..=segment_key(seq))
            .next_back()
            .expect("a segment")
            .expect("readable");
        let first = first_seq(&key).expect("segment key");
        let segment = Segment::parse(&value).expect("segment");
        let ids: Vec<EventId> = segment.ids().collect();
        let records: Vec<&[u8]> = segment.records().collect();
        let mut out = vec![1u8];
        out.extend_from_slice(&(ids.len() as u32).to_le_bytes());
        for id in &ids {
            out.extend_from_slice(&id.to_bytes());
        }
        let index = (seq - first) as usize;
        for (i, r) in records.iter().enumerate() {
            let len = if i == index { bytes.len() } else { r.len() };
            out.extend_from_slice(&(len as u32).to_le_bytes());
        }
        for (i, r) in records.iter().enumerate() {
            out.extend_from_slice(if i == index { bytes } else { r });
        }
        log.db.insert(key, out).expect("overwrite");
    }

    /// Delete the segment starting at event `first`.
    pub(crate) fn remove_segment(log: &SledLog, first: Seq) {
        log.db
            .remove(segment_key(first))
            .expect("remove")
            .expect("segment existed");
    }
}
