//! The local fleet and helpers for Flotilla's end-to-end tests.
//!
//! - [`agents`]: `flotilla proxy run` and `flotilla executor run` on fleet hosts.
//! - [`bare`]: the static `flotilla` and the fleet's NATS image, for `flotilla setup` on bare hosts.
//! - [`fleet`]: real hosts on one machine (network namespaces, own `dockerd` and `sshd`), a
//!   registry and a NATS server; `Fleet::up` / `Fleet::down`.
//! - [`testapp`]: builds the test app as a `FROM scratch` image and pushes it to the fleet.
//! - [`wire`]: a recording TCP relay and a NATS impostor, the network adversaries of the
//!   transport tests (run on a host through `flotilla-fleet relay` / `mitm`).
//!
//! The end-to-end tests themselves live in `tests/e2e/` (one test binary, one module per area).
#![forbid(unsafe_code)]

pub mod agents;
pub mod bare;
pub mod control;
pub mod fleet;
pub mod testapp;
pub mod wire;
