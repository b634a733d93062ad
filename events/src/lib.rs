//! Flotilla's event model, event log and projections.
//!
//! Every deploy is a stream of past-tense [`Event`]s in an append-only log;
//! everything Flotilla knows (history, what each host runs, the exact rollback
//! target, where a failed deploy stopped) is a fold of that log.
//!
//! - [`event`]: the events, one struct each, with stable type names derived
//!   once; [`Envelope`] around each (id, deploy, position, time, host, schema
//!   version, actor).
//! - [`codec`]: the binary record, bincode 2 behind a version byte, with
//!   upcasting of older versions on read.
//! - [`log`]: the [`EventLog`] trait, [`SledLog`] (durable, single writer,
//!   idempotent by event id, group commit) and [`MemoryLog`] for tests, plus
//!   live [`Tail`]s.
//! - [`projection`]: [`Deploys`]/[`DeployState`], [`Releases`] and
//!   [`FleetState`], pure folds.
//! - [`jsonl`]: JSON-lines export and import, the portable form of the log.
//!
//! This crate knows nothing of NATS, Docker or HTTP.
//!
//! ```
//! use flotilla_events::{EventLog, MemoryLog, Projections, Projection, sample::Story};
//!
//! let log = MemoryLog::new();
//! log.append_batch(Story::new("01JDEPLOY0000000000000000A", "v1", 3).events())?;
//! let state = Projections::rebuild(&log)?;
//! let target = flotilla_events::ReleaseTarget::new("app", None);
//! assert_eq!(state.releases.last_good(&target).map(|r| r.version.as_str()), Some("v1"));
//! # Ok::<(), flotilla_events::LogError>(())
//! ```
#![forbid(unsafe_code)]

pub mod codec;
mod envelope;
pub mod event;
mod ids;
pub mod jsonl;
pub mod log;
pub mod projection;
pub mod sample;

pub use envelope::{Envelope, NewEvent, SCHEMA_VERSION};
pub use event::{Event, Step};
pub use ids::{DeployId, EventId, Seq, Timestamp};
pub use log::{
    Appended, EventLog, Events, LogError, MemoryLog, NextStep, Salvage, SledLog, Tail, TailError,
};
pub use projection::{
    DeployState, Deploys, Enrolled, Enrolment, FleetState, Projection, Projections, ReleaseTarget,
    Releases,
};
