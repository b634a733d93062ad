//! An event log in memory, with the same contract as the sled one minus
//! durability: for tests of the parts that append and fold.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use super::tail::TailSender;
use super::{Appended, EventLog, Events, LogError, Tail};
use crate::envelope::{Envelope, NewEvent};
use crate::ids::{EventId, Seq};

/// An in-memory [`EventLog`].
#[derive(Debug)]
pub struct MemoryLog {
    inner: Mutex<Inner>,
    tail: TailSender,
}

#[derive(Debug, Default)]
struct Inner {
    events: Vec<Envelope>,
    ids: HashMap<EventId, Seq>,
}

impl MemoryLog {
    /// An empty log.
    pub fn new() -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            tail: TailSender::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave `Inner` half-updated:
        // every mutation below completes before the next can start.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Default for MemoryLog {
    fn default() -> Self {
        Self::new()
    }
}

impl EventLog for MemoryLog {
    fn append_batch(&self, events: Vec<NewEvent>) -> Result<Vec<Appended>, LogError> {
        let mut inner = self.lock();
        let mut outcomes = Vec::with_capacity(events.len());
        let mut stored = Vec::new();
        for event in events {
            if let Some(&seq) = inner.ids.get(&event.id) {
                outcomes.push(Appended::Duplicate(seq));
                continue;
            }
            let seq = inner.events.len() as Seq + 1;
            inner.ids.insert(event.id, seq);
            let envelope = event.into_envelope(seq);
            inner.events.push(envelope.clone());
            stored.push(envelope);
            outcomes.push(Appended::New(seq));
        }
        drop(inner);
        self.tail.publish(stored);
        Ok(outcomes)
    }

    fn read_from(&self, from: Seq) -> Result<Events<'_>, LogError> {
        let inner = self.lock();
        let start = (from.max(1) - 1) as usize;
        let events: Vec<Envelope> = inner.events.get(start..).unwrap_or_default().to_vec();
        Ok(Box::new(events.into_iter().map(Ok)))
    }

    fn last_seq(&self) -> Seq {
        self.lock().events.len() as Seq
    }

    fn position_of(&self, id: EventId) -> Result<Option<Seq>, LogError> {
        Ok(self.lock().ids.get(&id).copied())
    }

    fn subscribe(&self) -> Tail {
        self.tail.subscribe()
    }
}
