//! Flotilla's host agent: jobs from NATS to Docker actions and events.
//!
//! See ARCHITECTURE.md at the repository root for what this crate owns.
#![forbid(unsafe_code)]
