//! Flotilla's telemetry plumbing, shared by the scheduler, the executor and the proxy:
//! - `ids`: trace and span ids derived from a deploy id and names, never random, so a
//!   deploy's live export, its replay from the event log and the executor's own spans
//!   all land in one trace without any id travelling in the job.
//! - `span`: a finished span as plain data (`Span`), what the span builders return.
//! - `otlp`: `Span`s to an OTLP `ExportTraceServiceRequest`, protobuf-encoded.
//! - `export`: the OTLP/HTTP exporter, one HTTP/1.1 `POST /v1/traces` per batch over hyper
//!   (no gRPC stack and no second TLS provider in the tree); endpoint from
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` or the config.
//! - `metrics_http`: the one `/metrics` HTTP server the scheduler, the executor and the proxy
//!   serve Prometheus text from (all the proxy uses: it turns off the default `otlp` feature).
//!
//! This crate knows nothing of the event log, NATS or Docker: callers turn their own data
//! into `Span`s. Spans never carry secrets: callers put names, versions, digests and error
//! text in attributes, never environment values.
#![forbid(unsafe_code)]

#[cfg(feature = "otlp")]
pub mod export;
#[cfg(feature = "otlp")]
pub mod ids;
pub mod metrics_http;
#[cfg(feature = "otlp")]
pub mod otlp;
#[cfg(feature = "otlp")]
pub mod span;

#[cfg(feature = "otlp")]
pub use export::{Endpoint, ExportError, Exporter};
#[cfg(feature = "otlp")]
pub use ids::{SpanId, TraceId};
#[cfg(feature = "otlp")]
pub use span::{Attr, Span, Status};
