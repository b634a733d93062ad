//! flotilla-ssh against real OpenSSH servers (see `harness`): one test binary, a module per
//! area.
// Test helpers panic on any failure: that is how a test reports it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

mod auth;
mod exec;
mod fleet;
mod host_keys;
mod proxy;
mod tunnels;
