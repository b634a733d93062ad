//! `Span`s as an OTLP `ExportTraceServiceRequest` (the protobuf OTLP/HTTP carries).

use crate::span::{Attr, Span, Status};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{self as pb, ResourceSpans, ScopeSpans, status};
use prost::Message;

/// The instrumentation scope every Flotilla span is reported under.
pub const SCOPE: &str = "flotilla";

/// The request for `spans`, reported by the service `service_name` (the OTel resource's
/// `service.name`: `flotilla-scheduler`, `flotilla-executor`).
pub fn request(service_name: &str, spans: &[Span]) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", &Attr::Str(service_name.to_owned()))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: SCOPE.to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    ..Default::default()
                }),
                spans: spans.iter().map(span).collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// The protobuf bytes of [`request`].
pub fn encode(service_name: &str, spans: &[Span]) -> Vec<u8> {
    request(service_name, spans).encode_to_vec()
}

fn span(s: &Span) -> pb::Span {
    let (code, message) = match &s.status {
        Status::Unset => (status::StatusCode::Unset, String::new()),
        Status::Ok => (status::StatusCode::Ok, String::new()),
        Status::Error(m) => (status::StatusCode::Error, m.clone()),
    };
    pb::Span {
        trace_id: s.trace_id.0.to_vec(),
        span_id: s.span_id.0.to_vec(),
        parent_span_id: s.parent.map(|p| p.0.to_vec()).unwrap_or_default(),
        name: s.name.clone(),
        kind: pb::span::SpanKind::Internal as i32,
        start_time_unix_nano: s.start_unix_nanos,
        end_time_unix_nano: s.end_unix_nanos,
        attributes: s.attributes.iter().map(|(k, v)| kv(k, v)).collect(),
        status: Some(pb::Status {
            message,
            code: code as i32,
        }),
        ..Default::default()
    }
}

fn kv(key: &str, value: &Attr) -> KeyValue {
    let value = match value {
        Attr::Str(s) => any_value::Value::StringValue(s.clone()),
        Attr::Int(i) => any_value::Value::IntValue(*i),
    };
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::TraceId;

    /// What is encoded decodes back to the same tree, ids, times, attributes and status: the
    /// bytes a collector receives say what the span builder said.
    #[test]
    fn spans_round_trip_through_protobuf() {
        let t = TraceId::for_deploy("01JZ8XK6Q0V3M9N4B2C7D5E8F1");
        let root = t.span(&["deploy"]);
        let spans = vec![Span {
            trace_id: t,
            span_id: t.span(&["host", "h1"]),
            parent: Some(root),
            name: "host".into(),
            start_unix_nanos: 1_000_000,
            end_unix_nanos: 3_000_000,
            attributes: vec![
                ("flotilla.host".into(), Attr::Str("h1".into())),
                ("flotilla.attempt".into(), Attr::Int(0)),
            ],
            status: Status::Error("pull failed".into()),
        }];
        let bytes = encode("flotilla-scheduler", &spans);
        let back = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
        let s = &back.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(s.trace_id, t.0.to_vec());
        assert_eq!(s.parent_span_id, root.0.to_vec());
        assert_eq!(s.name, "host");
        assert_eq!(
            (s.start_time_unix_nano, s.end_time_unix_nano),
            (1_000_000, 3_000_000)
        );
        assert_eq!(s.attributes.len(), 2);
        assert_eq!(s.status.as_ref().unwrap().message, "pull failed");
        assert_eq!(
            s.status.as_ref().unwrap().code,
            status::StatusCode::Error as i32
        );
    }
}
