//! Flotilla's rollout engine: turns a plan into jobs, batches hosts, consumes events, appends
//! them to the event log, folds state and decides what happens next.
//!
//! - [`admission`]: which reports count (signature, host, deploy and job checked), pure.
//! - [`engine`]: one deploy from plan to outcome: jobs out, events into the log, policy decides.
//! - [`enrolment`]: whether a host's presented keys are recorded (`HostEnrolled`), pure.
//! - [`hooks`]: Kamal hooks with `KAMAL_*` variables.
//! - [`procedure`]: the deploy procedures (`deploy`, `redeploy`, `rollback`, `resume`,
//!   `auto_rollback`) as named stages over the two seams, [`transport::Transport`] and
//!   `flotilla_events::EventLog`;
//! - [`operation`]: state-changing commands other than rollouts (`app stop`, `prune`, `proxy
//!   reboot`, ...) recorded as `Operation*` events with each host's outcome.
//! - [`jobs`]: a host's planned steps as the signed job its executor runs, secrets sealed.
//! - [`service`]: `flotilla scheduler run`, the procedures behind NATS requests, the log
//!   published to `FLOTILLA_LOG`.
//! - [`stored`]: how far the log is stored in `FLOTILLA_LOG`, which the engine waits on before
//!   it acts, in service mode.
//! - [`rollout`]: the rollout policy as a pure state machine (primary role first, `boot.limit`
//!   and `boot.wait`, canary, max parallel, failure budget, step timeout).
//!
//! See ARCHITECTURE.md at the repository root for what this crate owns.
#![forbid(unsafe_code)]

pub mod admission;
pub mod engine;
pub mod enrolment;
pub mod hooks;
pub mod jobs;
pub mod metrics;
pub mod operation;
pub mod procedure;
pub mod rollout;
pub mod service;
pub mod stored;
pub mod trace;
pub mod transport;
