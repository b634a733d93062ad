//! Flotilla's host agent: `flotilla executor run` takes signed jobs for its host from NATS
//! JetStream, carries them out against the host's Docker engine and proxy, and publishes
//! one event per step.
//!
//! Layout, from the wire inwards (the contract itself — subjects, messages, signing, sealing
//! — is `flotilla_protocol`'s, shared with the scheduler):
//! - [`keys`]: the host's sealing key in its state directory (mode 0600);
//! - [`transport`]: the NATS loop (consumer, acks, reconnect, heartbeats);
//! - [`journal`]: finished jobs and their reports, so no job runs twice;
//! - [`job`]: one job's steps in order, reported as they finish;
//! - [`steps`]: what each step does, idempotently, through [`runtime`];
//! - [`repoint`]: proxy routes followed to their containers' new addresses after an engine
//!   restart;
//! - [`telemetry`]: spans and step metrics of finished jobs, off unless configured;
//! - [`runtime`]: the [`runtime::Runtime`] and [`runtime::Proxy`] seams, over Docker and the
//!   proxy socket ([`runtime::docker`]) or simulated ([`runtime::sim`]).
//!
//! Only `transport` talks to NATS; only `runtime::docker` talks to Docker and the proxy.
//! The executor does not read Kamal config: jobs carry fully resolved steps.
//!
//! How a scheduler drives executors (all of it through this crate's types):
//!
//! ```no_run
//! use flotilla_protocol::{nats, signing::JobSigner, subjects, wire};
//! # async fn demo(js: async_nats::jetstream::Context, job: wire::Job) -> Result<(), Box<dyn std::error::Error>> {
//! let signer = JobSigner::generate(); // executors trust signer.public_key_base64()
//! js.get_or_create_stream(nats::stream_config(&subjects::jobs_stream())).await?;
//! js.get_or_create_stream(nats::stream_config(&subjects::events_stream())).await?;
//! let msg = async_nats::jetstream::message::PublishMessage::build()
//!     .payload(signer.sign(&job)?.into())
//!     .message_id(&job.id);
//! js.send_publish(subjects::job_subject(&job.host), msg).await?.await?;
//! // Reports arrive on subjects::event_subject(deploy, host); each decodes as a wire::Report:
//! // Report::Event(JobEvent { step: None, .. }) is the job's last (HostSucceeded/HostFailed).
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod job;
pub mod journal;
pub mod keys;
pub mod repoint;
pub mod runtime;
pub mod steps;
pub mod telemetry;
pub mod transport;
