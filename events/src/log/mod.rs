//! The append-only event log: the [`EventLog`] trait, its sled implementation
//! ([`SledLog`]) and an in-memory one for tests ([`MemoryLog`]).
//!
//! Contract of every implementation:
//! - appends are durable when they return (the sled log flushes and fsyncs;
//!   a batch shares one flush: group commit);
//! - appends are idempotent by [`EventId`]: a redelivered event is stored once
//!   and reported as [`Appended::Duplicate`] with its original position;
//! - positions ([`Seq`]) start at 1 and have no gaps;
//! - one writer: the log is opened by one process at a time.

mod checkpoint;
mod error;
mod guard;
mod lock;
mod memory;
mod pre_recovery;
mod raw_scan;
mod salvage;
mod segment;
mod sled_dir;
mod sled_log;
mod tail;

pub use error::{LogError, NextStep};
pub use lock::Holder;
pub use memory::MemoryLog;
pub use salvage::Salvage;
pub use sled_log::SledLog;
pub use tail::{Tail, TailError};

use crate::envelope::{Envelope, NewEvent};
use crate::ids::{DeployId, EventId, Seq};

/// What became of one appended event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Appended {
    /// Stored now, at this position.
    New(Seq),
    /// Already stored (same event id), at this position; nothing was written.
    Duplicate(Seq),
}

impl Appended {
    /// Where the event is in the log, whether stored now or before.
    pub fn seq(self) -> Seq {
        match self {
            Self::New(seq) | Self::Duplicate(seq) => seq,
        }
    }
}

/// Events read from a log, in order; an item is an error when a record cannot
/// be read, and reading may go on past it (see [`SledLog::salvage`]).
pub type Events<'a> = Box<dyn Iterator<Item = Result<Envelope, LogError>> + Send + 'a>;

/// The event log.
///
/// Methods take `&self` and implementations are `Send + Sync`, so one log can
/// be shared (`Arc<dyn EventLog>`) by the scheduler's tasks; appends block for
/// the flush, so async callers run them in `spawn_blocking`.
pub trait EventLog: Send + Sync {
    /// Append events in order, durably, all or nothing; returns one outcome
    /// per event, in the same order.
    fn append_batch(&self, events: Vec<NewEvent>) -> Result<Vec<Appended>, LogError>;

    /// Append one event durably.
    fn append(&self, event: NewEvent) -> Result<Appended, LogError> {
        let mut outcomes = self.append_batch(vec![event])?;
        outcomes
            .pop()
            .ok_or(LogError::Internal("append returned no outcome"))
    }

    /// Every event from position `from` (inclusive) to the end, in order.
    fn read_from(&self, from: Seq) -> Result<Events<'_>, LogError>;

    /// Every event, in order.
    fn read_all(&self) -> Result<Events<'_>, LogError> {
        self.read_from(1)
    }

    /// The events of one deploy, in order (a scan of the whole log).
    fn read_deploy(&self, deploy_id: &DeployId) -> Result<Vec<Envelope>, LogError> {
        let mut out = Vec::new();
        for event in self.read_all()? {
            let event = event?;
            if &event.deploy_id == deploy_id {
                out.push(event);
            }
        }
        Ok(out)
    }

    /// Position of the last event, 0 when the log is empty.
    fn last_seq(&self) -> Seq;

    /// Whether an event with this id is stored, and where.
    fn position_of(&self, id: EventId) -> Result<Option<Seq>, LogError>;

    /// Live events appended from now on, for live views. A tail that falls
    /// behind gets [`TailError::Lagged`] and re-reads with [`Self::read_from`].
    fn subscribe(&self) -> Tail;
}

#[cfg(test)]
mod tests;
