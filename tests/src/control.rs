//! The scheduler service on a fleet host, as `flotilla setup` boots it (the
//! `flotilla-scheduler` container): what the fleet tests need to reach it.

/// The port the service serves `/metrics` on, at its host's address.
pub const SERVICE_METRICS_PORT: u16 = 9394;
