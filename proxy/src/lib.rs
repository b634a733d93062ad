//! Flotilla's zero-downtime host proxy.
//!
//! See ARCHITECTURE.md at the repository root for what this crate owns.
#![forbid(unsafe_code)]
