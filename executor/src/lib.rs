//! Flotilla's host agent: `flotilla executor run` takes signed jobs for its host from NATS
//! JetStream, carries them out against the host's Docker engine and proxy, and publishes
//! one event per step.
//!
//! Layout, from the wire inwards:
//! - [`subjects`]: the NATS contract (subjects, streams, the per-host durable consumer);
//! - [`wire`]: jobs, reports and heartbeats, and their versioned encoding;
//! - [`signing`]: ed25519 job signatures and admission (unsigned, forged, expired, wrong host);
//! - [`sealing`]: secrets sealed to the host's own x25519 key, opened only in memory;
//! - [`transport`]: the NATS loop (consumer, acks, reconnect, heartbeats);
//! - [`journal`]: finished jobs and their reports, so no job runs twice;
//! - [`job`]: one job's steps in order, reported as they finish;
//! - [`steps`]: what each step does, idempotently, through [`runtime`];
//! - [`runtime`]: the [`runtime::Runtime`] and [`runtime::Proxy`] seams, over Docker and the
//!   proxy socket ([`runtime::docker`]) or simulated ([`runtime::sim`]).
//!
//! Only `transport` talks to NATS; only `runtime::docker` talks to Docker and the proxy.
//! The executor does not read Kamal config: jobs carry fully resolved steps.
#![forbid(unsafe_code)]

pub mod job;
pub mod journal;
pub mod runtime;
pub mod sealing;
pub mod signing;
pub mod steps;
pub mod subjects;
pub mod transport;
pub mod wire;
