//! The contract between Flotilla's scheduler and its executors, and nothing that does I/O.
//!
//! Both sides import this crate; neither imports the other (wadm's `wadm-types` is the model):
//! - [`control`]: the CLI's requests to the scheduler service and the `FLOTILLA_LOG` stream;
//! - [`access`]: who may do what on NATS (a host's executor, the operators), as data;
//! - [`subjects`]: subject, stream, consumer and key-value names and settings, as plain data
//!   (the `nats` feature turns them into async-nats configs: [`nats`]);
//! - [`wire`]: jobs, job steps, reports and heartbeats, framed with a version byte by the event
//!   log's codec machinery (`flotilla_events::codec`), with stored fixtures that prove old
//!   versions still decode;
//! - [`signing`]: ed25519 job signatures and admission (unsigned, forged, expired, wrong host);
//! - [`sealing`]: secrets sealed to a host's x25519 key, opened only in memory;
//! - [`identity`]: a host's public keys as enrolled, and report signatures;
//! - [`names`]: Kamal's names on hosts (containers, proxy services, labels, the lock key);
//! - [`text`]: error text that travels in events, rendered one way on both sides;
//! - [`finish`]: which event finishes which step, typed, for the executor that reports and the
//!   scheduler that resumes.
#![forbid(unsafe_code)]

pub mod access;
pub mod control;
pub mod finish;
pub mod identity;
pub mod names;
#[cfg(feature = "nats")]
pub mod nats;
pub mod proxy_run;
pub mod sealing;
pub mod signing;
pub mod subjects;
pub mod text;
pub mod wire;
