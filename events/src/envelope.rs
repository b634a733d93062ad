//! The envelope around every event: identity, place in the log, time, host,
//! schema version and who caused it.

use serde::{Deserialize, Serialize};

use crate::event::Event;
use crate::ids::{DeployId, EventId, Seq, Timestamp};

/// The schema version this build writes. Bump it when an event or the
/// envelope changes shape, and add an upcaster in `codec` for the old one.
pub const SCHEMA_VERSION: u16 = 6;

/// An event as stored in the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique, sortable id chosen by the producer; appends are idempotent by it.
    pub id: EventId,
    /// The deploy (rollback, accessory change) this event belongs to.
    pub deploy_id: DeployId,
    /// Position in the log, assigned on append: 1, 2, 3, ... without gaps.
    pub seq: Seq,
    /// When it happened, by the producer's clock.
    pub at: Timestamp,
    /// The host it happened on; `None` for deploy-wide events.
    pub host: Option<String>,
    /// Schema version the event was first written with (later versions are
    /// upcast on read, so the payload always has the current shape).
    pub schema_version: u16,
    /// Who caused it: `user@machine` for a person, `scheduler` or
    /// `executor@host` for Flotilla's own parts.
    pub actor: String,
    /// What happened.
    pub event: Event,
}

impl Envelope {
    /// The stable type name of the event inside.
    pub fn type_name(&self) -> &'static str {
        self.event.type_name()
    }
}

/// An event about to be appended: everything but its place in the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewEvent {
    /// See [`Envelope::id`]; keep it when redelivering the same event.
    pub id: EventId,
    /// See [`Envelope::deploy_id`].
    pub deploy_id: DeployId,
    /// See [`Envelope::at`].
    pub at: Timestamp,
    /// See [`Envelope::host`].
    pub host: Option<String>,
    /// See [`Envelope::schema_version`].
    pub schema_version: u16,
    /// See [`Envelope::actor`].
    pub actor: String,
    /// What happened.
    pub event: Event,
}

impl NewEvent {
    /// A deploy-wide event happening now, with a fresh id, caused by `actor`.
    pub fn new(deploy_id: DeployId, actor: impl Into<String>, event: impl Into<Event>) -> Self {
        Self {
            id: EventId::new(),
            deploy_id,
            at: Timestamp::now(),
            host: None,
            schema_version: SCHEMA_VERSION,
            actor: actor.into(),
            event: event.into(),
        }
    }

    /// The same event, happening on `host`.
    pub fn on_host(mut self, host: impl Into<String>) -> Self {
        self.host = Some(host.into());
        self
    }

    /// The same event, at time `at` (e.g. the producer's clock).
    pub fn at(mut self, at: Timestamp) -> Self {
        self.at = at;
        self
    }

    /// The stored form, at position `seq`.
    pub fn into_envelope(self, seq: Seq) -> Envelope {
        Envelope {
            id: self.id,
            deploy_id: self.deploy_id,
            seq,
            at: self.at,
            host: self.host,
            schema_version: self.schema_version,
            actor: self.actor,
            event: self.event,
        }
    }
}

impl From<Envelope> for NewEvent {
    /// Re-append a stored event elsewhere (import, migration): its id, time and
    /// author stay, its position is assigned anew.
    fn from(e: Envelope) -> Self {
        Self {
            id: e.id,
            deploy_id: e.deploy_id,
            at: e.at,
            host: e.host,
            schema_version: e.schema_version,
            actor: e.actor,
            event: e.event,
        }
    }
}
