//! Flotilla's zero-downtime host proxy, what `flotilla proxy run` serves on each host.
//!
//! Layout, from the wire inwards:
//! - [`server`] binds the HTTP, HTTPS and metrics listeners and the admin socket and
//!   shuts down gracefully; [`worker`] threads (one per core) accept and serve clients,
//!   and [`conns`] closes the connections that stay silent or idle too long;
//! - `fast` serves the common request (GET or HEAD, no body, keep-alive HTTP/1.1) in
//!   the client's task and hands anything else to hyper;
//! - [`forward`] is hyper's data path: route lookup, maintenance, pause, limits,
//!   `X-Forwarded-*`, WebSocket upgrades, and the upstream request over a
//!   per-worker keep-alive pool (`upstream`);
//! - [`router`] holds the routing table as immutable snapshots swapped atomically,
//!   and [`target`] counts in-flight requests per target so a switch can drain;
//! - [`control`] carries out admin operations (the health-gated deploy) and saves
//!   [`state`] after every change; [`admin`] is the socket protocol, server and client;
//! - [`tls`] picks certificates by SNI, [`acme`] issues them by HTTP-01;
//!   [`metrics`] is the Prometheus registry.
//!
//! Decisions: one crypto provider (aws-lc-rs) in the whole tree; upstreams are
//! spoken to in HTTP/1.1 with pooled keep-alive connections; clients may use
//! HTTP/1.1 or HTTP/2 (ALPN on TLS, prior knowledge in clear text).
#![forbid(unsafe_code)]

pub mod acme;
pub mod admin;
mod body;
pub mod conns;
pub mod control;
mod fast;
pub mod forward;
pub mod handover;
pub mod health;
pub mod metrics;
pub mod router;
mod run_args;
pub mod server;
pub mod spec;
pub mod state;
pub mod target;
pub mod tls;
mod upstream;
pub mod worker;

pub use body::PROXY_HEADER;
pub use conns::ClientTimeouts;
pub use fast::UPSTREAM_CONNECTIONS_PER_TARGET;
pub use run_args::{BadListen, RunArgs};
pub use server::{ProxyConfig, ProxyError, Running, run, shutdown_signal, start};
pub use spec::{HealthCheck, ServiceSpec, TlsSpec};

/// Where the admin socket lives unless told otherwise.
pub const DEFAULT_ADMIN_SOCKET: &str = "/run/flotilla/proxy.sock";
