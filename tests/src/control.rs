//! The control plane on a fleet host, as `flotilla setup` boots it in service mode
//! (`x-flotilla.scheduler.mode: service`): the `flotilla-scheduler` container beside NATS on
//! the control host. Nothing here starts it: the tests run `flotilla setup`.

/// The port the service serves `/metrics` on, at its host's address
/// (`flotilla_setup::plan::SCHEDULER_METRICS`).
pub const SERVICE_METRICS_PORT: u16 = 9394;
