//! Integration tests of the proxy with real processes: the test app as upstream,
//! real sockets, and for TLS a real ACME server (Debian's `pebble`).
#![allow(clippy::unwrap_used)]

mod acme;
mod behaviour;
mod connections;
mod fast_path;
mod host;
mod load;
mod process;
mod support;
mod tls;
mod zero_downtime;
