//! Kamal-compatible configuration loading and pure deploy planning.
//!
//! [`config`] turns a Kamal project (`config/deploy.yml`, `config/deploy.DEST.yml`,
//! `.kamal/secrets*`) into a typed, validated [`config::Config`]. It reads files and may run the
//! `$(command)`s the secrets files ask for; it does no network and knows nothing of Docker.
//!
//! [`plan`] turns a config and a release into a [`plan::Plan`]: per host, the ordered steps to
//! run it, as plain data. Pure: no I/O at all.
//!
//! See ARCHITECTURE.md at the repository root for what this crate owns.
#![forbid(unsafe_code)]

pub mod commands;
pub mod config;
pub mod plan;

pub use config::{Config, ConfigErrors, LoadOptions, load};
