//! Everything the scheduler says to NATS goes through here.
//!
//! - [`lock`]: the deploy lock, a key in a JetStream key-value bucket with an expiry, renewed
//!   while the deploy runs.

pub mod lock;
