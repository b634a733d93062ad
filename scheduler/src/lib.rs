//! Flotilla's rollout engine.
//!
//! See ARCHITECTURE.md at the repository root for what this crate owns.
#![forbid(unsafe_code)]
