//! Flotilla's end-to-end tests: one test binary, one module per area, all on a real local
//! fleet (network namespaces with their own Docker engines and SSH servers, and a registry),
//! whose bare hosts each test sets up the user's way (`flotilla setup` or `server bootstrap`).
//! They need root and the Debian packages `scripts/test` installs; a missing piece is a
//! failure, never a skip.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod builder;
mod commands;
mod control;
mod control_ha;
mod dashboards;
mod deploy;
mod executor;
mod faults;
mod fleet;
mod load;
mod metrics;
mod project;
mod server;
mod service_metrics;
mod setup;
mod support;
mod traces;
