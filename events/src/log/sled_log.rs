//! The event log on disk, in sled.
//!
//! Layout of the log directory: `sled/` holds the sled database, `writer.lock`
//! the single-writer lock, `acknowledged` the last acknowledged position (see
//! `checkpoint`). One sled tree holds two key spaces, written together
//! in one atomic sled batch per append, so an event and its id index entry are
//! stored together or not at all:
//! - `e` + seq (8 bytes, big-endian, so keys sort by position) -> record
//!   (see `codec`);
//! - `i` + event id (16 bytes) -> seq, for idempotent appends.
//!
//! sled 0.34 is beta: its on-disk format may change before 1.0 and it can use
//! much more space than the data (see BENCHMARKS.md). Hence the [`EventLog`]
//! trait in front of it and JSON-lines export/import to move history.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use super::checkpoint::Checkpoint;
use super::lock::WriterLock;
use super::tail::TailSender;
use super::{Appended, EventLog, Events, LogError, Tail};
use crate::codec;
use crate::envelope::{Envelope, NewEvent};
use crate::ids::{EventId, Seq};

const EVENT_PREFIX: u8 = b'e';
const ID_PREFIX: u8 = b'i';

fn event_key(seq: Seq) -> [u8; 9] {
    let mut key = [EVENT_PREFIX; 9];
    key[1..].copy_from_slice(&seq.to_be_bytes());
    key
}

fn id_key(id: EventId) -> [u8; 17] {
    let mut key = [ID_PREFIX; 17];
    key[1..].copy_from_slice(&id.to_bytes());
    key
}

fn seq_from(bytes: &[u8]) -> Option<Seq> {
    Some(Seq::from_be_bytes(bytes.try_into().ok()?))
}

/// The durable [`EventLog`], stored with sled in a directory.
#[derive(Debug)]
pub struct SledLog {
    path: PathBuf,
    db: sled::Db,
    /// Position of the last stored event; the mutex also serialises appends.
    last: Mutex<Seq>,
    tail: TailSender,
    checkpoint: Checkpoint,
    _lock: WriterLock,
}

/// What [`SledLog::salvage`] could read from a damaged log.
#[derive(Debug)]
pub struct Salvage {
    /// Every event that could be read, in order.
    pub events: Vec<Envelope>,
    /// What could not be read, in order.
    pub problems: Vec<LogError>,
}

impl SledLog {
    /// Open (creating if needed) the log in directory `dir`, as its only
    /// writer.
    ///
    /// Fails with [`LogError::Truncated`] when the storage engine dropped
    /// acknowledged events while recovering a damaged file; then
    /// [`SledLog::salvage_dir`] reads what is left.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, LogError> {
        let (log, truncated) = Self::open_unchecked(dir.as_ref())?;
        match truncated {
            Some(e) => Err(e),
            None => Ok(log),
        }
    }

    /// Read every event that can be read from the (possibly damaged) log in
    /// `dir`, listing what could not: the way to export history out of a log
    /// that fails to open or to read.
    pub fn salvage_dir(dir: impl AsRef<Path>) -> Result<Salvage, LogError> {
        let (log, truncated) = Self::open_unchecked(dir.as_ref())?;
        let mut salvage = log.salvage();
        if let Some(e) = truncated {
            salvage.problems.insert(0, e);
        }
        Ok(salvage)
    }

    /// Open, reporting acknowledged events the storage lost beside the log.
    fn open_unchecked(dir: &Path) -> Result<(Self, Option<LogError>), LogError> {
        let path = dir.to_path_buf();
        std::fs::create_dir_all(&path).map_err(|source| LogError::Io {
            action: "create directory",
            path: path.clone(),
            source,
        })?;
        let lock = WriterLock::acquire(&path)?;
        let config = sled::Config::new().path(path.join("sled"));
        let db = guard(&path, || config.open())?;
        let last = guard(&path, || {
            db.range(event_key(0)..=event_key(Seq::MAX))
                .next_back()
                .transpose()
        })?;
        let last = match last {
            None => 0,
            Some((key, _)) => key
                .get(1..)
                .and_then(seq_from)
                .ok_or_else(|| LogError::Corrupt {
                    path: path.clone(),
                    detail: format!("malformed event key {key:?}"),
                })?,
        };
        let (checkpoint, acknowledged) = Checkpoint::open(&path)?;
        let truncated = (acknowledged > last).then(|| LogError::Truncated {
            path: path.clone(),
            stored: last,
            acknowledged,
        });
        let log = Self {
            path,
            db,
            last: Mutex::new(last),
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

    fn last(&self) -> MutexGuard<'_, Seq> {
        // The guarded value is only written after a successful batch, so a
        // panic elsewhere cannot leave it wrong.
        self.last.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stored_position(&self, id: EventId) -> Result<Option<Seq>, LogError> {
        let found = guard(&self.path, || self.db.get(id_key(id)))?;
        match found {
            None => Ok(None),
            Some(value) => seq_from(&value).map(Some).ok_or_else(|| LogError::Corrupt {
                path: self.path.clone(),
                detail: format!("malformed index entry for event {id}"),
            }),
        }
    }
}

/// Run a sled operation, turning its errors and panics into [`LogError`]s:
/// sled 0.34 may panic on some damaged files, and a damaged log must never
/// crash the tool.
fn guard<T>(path: &Path, op: impl FnOnce() -> sled::Result<T>) -> Result<T, LogError> {
    match catch_unwind(AssertUnwindSafe(op)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(sled::Error::Corruption { at, .. })) => Err(LogError::Corrupt {
            path: path.to_path_buf(),
            detail: match at {
                Some(at) => format!("sled found a damaged record at {at}"),
                None => "sled found a damaged record".to_owned(),
            },
        }),
        Ok(Err(sled::Error::ReportableBug(detail))) => Err(LogError::Corrupt {
            path: path.to_path_buf(),
            detail,
        }),
        Ok(Err(source)) => Err(LogError::Store {
            path: path.to_path_buf(),
            source,
        }),
        Err(panic) => Err(LogError::Corrupt {
            path: path.to_path_buf(),
            detail: format!(
                "the storage engine failed: {}",
                panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("panic")
            ),
        }),
    }
}

impl EventLog for SledLog {
    fn append_batch(&self, events: Vec<NewEvent>) -> Result<Vec<Appended>, LogError> {
        let mut last = self.last();
        let listened = self.tail.is_listened();
        let mut batch = sled::Batch::default();
        let mut outcomes = Vec::with_capacity(events.len());
        let mut in_batch: HashMap<EventId, Seq> = HashMap::new();
        let mut stored = Vec::new();
        let mut next = *last + 1;
        let mut record = Vec::with_capacity(256);
        for event in events {
            let known = match in_batch.get(&event.id) {
                Some(&seq) => Some(seq),
                None => self.stored_position(event.id)?,
            };
            if let Some(seq) = known {
                outcomes.push(Appended::Duplicate(seq));
                continue;
            }
            let id = event.id;
            let envelope = event.into_envelope(next);
            record.clear();
            codec::encode_into(&envelope, &mut record)
                .map_err(|source| LogError::Encode { id, source })?;
            batch.insert(&event_key(next)[..], record.as_slice());
            batch.insert(&id_key(id)[..], &next.to_be_bytes()[..]);
            in_batch.insert(id, next);
            outcomes.push(Appended::New(next));
            if listened {
                stored.push(envelope);
            }
            next += 1;
        }
        if next == *last + 1 {
            return Ok(outcomes);
        }
        guard(&self.path, || self.db.apply_batch(batch))?;
        // The batch is in the tree now: later appends must not reuse its
        // positions, even if the flush below fails (a retry then finds the
        // events by id and reports them as duplicates).
        *last = next - 1;
        guard(&self.path, || self.db.flush())?;
        self.checkpoint.record(*last)?;
        drop(last);
        self.tail.publish(stored);
        Ok(outcomes)
    }

    fn read_from(&self, from: Seq) -> Result<Events<'_>, LogError> {
        let from = from.max(1);
        let iter = self.db.range(event_key(from)..=event_key(Seq::MAX));
        Ok(Box::new(SledEvents {
            path: &self.path,
            iter,
            expected: from,
            pending: None,
            failed: false,
        }))
    }

    fn last_seq(&self) -> Seq {
        *self.last()
    }

    fn position_of(&self, id: EventId) -> Result<Option<Seq>, LogError> {
        self.stored_position(id)
    }

    fn subscribe(&self) -> Tail {
        self.tail.subscribe()
    }
}

/// Reads records in key order, checking that positions are contiguous and
/// that each record is the event its key says.
struct SledEvents<'a> {
    path: &'a Path,
    iter: sled::Iter,
    expected: Seq,
    /// An entry read ahead while reporting a gap.
    pending: Option<(Seq, sled::IVec)>,
    /// Set once sled itself failed: its iterator cannot be trusted after that.
    failed: bool,
}

impl Iterator for SledEvents<'_> {
    type Item = Result<Envelope, LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (seq, value) = match self.pending.take() {
            Some(entry) => entry,
            None => match self.next_entry()? {
                Ok(entry) => entry,
                Err(e) => return Some(Err(e)),
            },
        };
        if seq != self.expected {
            let expected = self.expected;
            self.expected = seq;
            // Report the gap now; the record at `seq` comes on the next call.
            self.pending = Some((seq, value));
            return Some(Err(LogError::Gap {
                expected,
                found: seq,
            }));
        }
        self.expected = seq + 1;
        Some(match codec::decode(&value) {
            Ok(event) if event.seq == seq => Ok(event),
            Ok(event) => Err(LogError::Corrupt {
                path: self.path.to_path_buf(),
                detail: format!("record at {seq} claims to be event {}", event.seq),
            }),
            Err(source) => Err(LogError::Record { seq, source }),
        })
    }
}

impl SledEvents<'_> {
    /// The next raw entry, or the error that ends iteration.
    fn next_entry(&mut self) -> Option<Result<(Seq, sled::IVec), LogError>> {
        if self.failed {
            return None;
        }
        let entry = guard(self.path, || self.iter.next().transpose());
        let (key, value) = match entry {
            Ok(Some(entry)) => entry,
            Ok(None) => return None,
            Err(e) => {
                self.failed = true;
                return Some(Err(e));
            }
        };
        match key.get(1..).and_then(seq_from) {
            Some(seq) => Some(Ok((seq, value))),
            None => {
                self.failed = true;
                Some(Err(LogError::Corrupt {
                    path: self.path.to_path_buf(),
                    detail: format!("malformed event key {key:?}"),
                }))
            }
        }
    }
}

/// Ways to damage a log on purpose, for tests of how damage is reported.
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// Replace the record at `seq` with `bytes`.
    pub(crate) fn overwrite_record(log: &SledLog, seq: Seq, bytes: &[u8]) {
        log.db.insert(event_key(seq), bytes).expect("overwrite");
    }

    /// Delete the record at `seq`.
    pub(crate) fn remove_record(log: &SledLog, seq: Seq) {
        log.db.remove(event_key(seq)).expect("remove");
    }
}
