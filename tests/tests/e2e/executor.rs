//! The executor on real hosts: signed jobs published straight to NATS become Docker actions
//! on each host's own engine and a health-gated switch of the host's proxy, reported as
//! events; untrusted jobs are refused; secrets stay sealed; a killed executor finishes its
//! job after a restart.

mod deploy;
mod harness;
mod restart;
