//! Kamal-compatible configuration loading and pure deploy planning.
//!
//! See ARCHITECTURE.md at the repository root for what this crate owns.
#![forbid(unsafe_code)]
