//! The admin API on a unix socket (mode 0600): the [`protocol`], the [`server`]
//! the proxy runs, and the typed [`Client`] the executor and the CLI use.

mod client;
pub mod protocol;
pub mod server;

pub use client::{AdminError, Client};
pub use protocol::{DeployRequest, Deployed, ErrorKind, Reply, Request, ServiceStatus};
