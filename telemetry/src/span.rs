//! A finished span as plain data.

use crate::ids::{SpanId, TraceId};

/// One finished span. Times are Unix nanoseconds.
#[derive(Clone, Debug, PartialEq)]
pub struct Span {
    /// The trace (one per deploy).
    pub trace_id: TraceId,
    /// This span.
    pub span_id: SpanId,
    /// The enclosing span; `None` for a trace's root.
    pub parent: Option<SpanId>,
    /// What the span stands for: `deploy`, `host`, a step's name.
    pub name: String,
    /// When it started.
    pub start_unix_nanos: u64,
    /// When it ended.
    pub end_unix_nanos: u64,
    /// Key-value attributes, in a stable order.
    pub attributes: Vec<(String, Attr)>,
    /// Whether it succeeded.
    pub status: Status,
}

/// An attribute value.
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    /// Text.
    Str(String),
    /// A whole number.
    Int(i64),
}

/// A span's outcome.
#[derive(Clone, Debug, PartialEq)]
pub enum Status {
    /// Nothing said (still running when exported, or not applicable).
    Unset,
    /// Succeeded.
    Ok,
    /// Failed, with the error text.
    Error(String),
}

impl Span {
    /// The text attribute `key`, if present.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.iter().find_map(|(k, v)| match v {
            Attr::Str(s) if k == key => Some(s.as_str()),
            _ => None,
        })
    }
}

/// Milliseconds since the Unix epoch as Unix nanoseconds (negative times clamp to 0).
pub fn ms_to_nanos(ms: i64) -> u64 {
    u64::try_from(ms).unwrap_or(0).saturating_mul(1_000_000)
}
