//! Everything the scheduler says to NATS goes through here.
//!
//! - [`bus`]: jobs out, heartbeats and events in, on the streams `flotilla_executor::subjects`
//!   defines.
//! - [`lock`]: the deploy lock, a key in a JetStream key-value bucket with an expiry, renewed
//!   while the deploy runs.

pub mod bus;
pub mod lock;
