//! Deterministic trace and span ids.
//!
//! A deploy id is a ULID: its 128 bits are the trace id as they are, so a trace can be
//! found from a deploy id by eye. A span id is the first 8 bytes of SHA-256 over the trace
//! id and the span's key parts (`["host", "10.0.0.5"]`), so whoever knows a span's place in
//! the deploy (the scheduler live, a replay of the log, the executor from its job) computes
//! the same id, and a replayed trace replaces the live one instead of doubling it.

use sha2::{Digest, Sha256};
use std::fmt;

/// An OTLP trace id: 16 bytes, never all zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceId(pub [u8; 16]);

/// An OTLP span id: 8 bytes, never all zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpanId(pub [u8; 8]);

impl TraceId {
    /// The trace of deploy `deploy_id`: the ULID's bits, or (for an id that is not a ULID,
    /// as tests may use) the first 16 bytes of its SHA-256.
    pub fn for_deploy(deploy_id: &str) -> Self {
        match ulid::Ulid::from_string(deploy_id) {
            Ok(u) if u.0 != 0 => Self(u.0.to_be_bytes()),
            _ => {
                let digest = Sha256::digest(deploy_id.as_bytes());
                let mut id = [0u8; 16];
                id.copy_from_slice(&digest[..16]);
                if id == [0; 16] {
                    id[15] = 1;
                }
                Self(id)
            }
        }
    }

    /// The deploy's root span: what every other span of the trace hangs under, the
    /// executor's too (it knows the deploy id from its job).
    pub fn root(&self) -> SpanId {
        self.span(&["deploy"])
    }

    /// The span of this trace identified by `parts` (see the module doc).
    pub fn span(&self, parts: &[&str]) -> SpanId {
        let mut h = Sha256::new();
        h.update(self.0);
        for p in parts {
            // Length-prefixed, so ["ab", "c"] and ["a", "bc"] differ.
            h.update((p.len() as u64).to_be_bytes());
            h.update(p.as_bytes());
        }
        let digest = h.finalize();
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        if id == [0; 8] {
            id[7] = 1;
        }
        SpanId(id)
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deploy's trace id is its ULID, so `flotilla replay ID` and a tracing tool's
    /// search by trace id find each other.
    #[test]
    fn a_ulid_deploy_id_is_its_trace_id() {
        let id = "01JZ8XK6Q0V3M9N4B2C7D5E8F1";
        let ulid = ulid::Ulid::from_string(id).unwrap();
        assert_eq!(TraceId::for_deploy(id).0, ulid.0.to_be_bytes());
        assert_eq!(
            TraceId::for_deploy(id).to_string(),
            format!("{:032x}", ulid.0)
        );
    }

    /// Span ids depend on the trace and every key part, and on nothing else.
    #[test]
    fn span_ids_are_stable_and_distinct() {
        let t = TraceId::for_deploy("01JZ8XK6Q0V3M9N4B2C7D5E8F1");
        let u = TraceId::for_deploy("not-a-ulid");
        assert_eq!(t.span(&["host", "h1"]), t.span(&["host", "h1"]));
        assert_ne!(t.span(&["host", "h1"]), t.span(&["host", "h2"]));
        assert_ne!(t.span(&["host", "h1"]), u.span(&["host", "h1"]));
        assert_ne!(t.span(&["ab", "c"]), t.span(&["a", "bc"]));
        assert_eq!(u, TraceId::for_deploy("not-a-ulid"));
    }
}
