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
//!   serve Prometheus text from.
//!
//! This crate knows nothing of the event log, NATS or Docker: callers turn their own data
//! into `Span`s. Spans never carry secrets: callers put names, versions, digests and error
//! text in attributes, never environment values.
#![forbid(unsafe_code)]

pub mod export;
pub mod ids;
pub mod metrics_http;
pub mod otlp;
pub mod span;

pub use export::{Endpoint, ExportError, Exporter};
pub use ids::{SpanId, TraceId};
pub use span::{Attr, Span, Status};
