//! The local fleet and helpers for Flotilla's end-to-end tests.
//!
//! - [`bare`]: the static `flotilla` and the fleet's NATS image, for `flotilla setup` on bare hosts.
//! - [`control`]: the scheduler service's port on the control host.
//! - [`fleet`]: real hosts on one machine (network namespaces, own `dockerd` and `sshd`) and a
//!   registry; hosts start bare (no agent, no NATS); `Fleet::up` / `Fleet::down`.
//! - [`testapp`]: builds the test app as a `FROM scratch` image and pushes it to the fleet.
//! - [`wire`]: a recording TCP relay and a NATS impostor, the network adversaries of the
//!   transport tests (run on a host through `flotilla-fleet relay` / `mitm`).
//!
//! The end-to-end tests themselves live in `tests/e2e/` (one test binary, one module per area).
#![forbid(unsafe_code)]

pub mod bare;
pub mod control;
pub mod fleet;
pub mod testapp;
pub mod wire;
