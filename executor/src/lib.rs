//! Flotilla's host agent: `flotilla executor run` takes signed jobs for its host from NATS
//! JetStream, carries them out against the host's Docker engine and proxy, and publishes
//! one event per step.
//!
//! Layout:
//! - [`subjects`]: the NATS contract (subjects, streams, the per-host consumer);
//! - [`wire`]: the job, report and heartbeat types and their versioned encoding;
//! - [`signing`]: ed25519 job signatures and admission (unsigned, expired, wrong host);
//! - [`sealing`]: secrets sealed to the host's x25519 key;
//!
//! Only `transport` talks to NATS; only `runtime::docker` talks to Docker.
#![forbid(unsafe_code)]

pub mod sealing;
pub mod signing;
pub mod subjects;
pub mod wire;
