//! Identifiers and timestamps carried by every envelope.
//!
//! Each type serializes compactly in the binary log (integers) and readably in
//! JSON lines (ULID text, RFC 3339 time): serde's `is_human_readable` picks the
//! form, so one derive serves both the log and the export.

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use ulid::{Generator, Ulid};

/// Position of an event in the log: 1 for the first event, contiguous, assigned
/// by the log on append.
pub type Seq = u64;

/// Unique, time-sortable identity of one event (a ULID).
///
/// The producer of an event chooses its id once; a redelivered copy carries the
/// same id, which is what makes appends idempotent.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(Ulid);

impl EventId {
    /// A fresh id, strictly greater than every id made earlier by this process.
    pub fn new() -> Self {
        static GENERATOR: Mutex<Option<Generator>> = Mutex::new(None);
        let mut guard = GENERATOR.lock().unwrap_or_else(|p| p.into_inner());
        let generator = guard.get_or_insert_with(Generator::new);
        // The generator only fails when 2^80 ids were made in one millisecond.
        Self(generator.generate().unwrap_or_else(|_| Ulid::new()))
    }

    /// The id as its 128-bit value (big-endian bytes sort like the ids).
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_bytes()
    }

    /// Rebuild an id from its 128-bit value.
    pub fn from_u128(value: u128) -> Self {
        Self(Ulid(value))
    }

    /// The 128-bit value.
    pub fn as_u128(self) -> u128 {
        self.0.0
    }
}

impl Default for EventId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventId({})", self.0)
    }
}

impl FromStr for EventId {
    type Err = ulid::DecodeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ulid::from_string(s).map(Self)
    }
}

impl Serialize for EventId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(&self.0)
        } else {
            s.serialize_u128(self.0.0)
        }
    }
}

impl<'de> Deserialize<'de> for EventId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let text = String::deserialize(d)?;
            text.parse().map_err(serde::de::Error::custom)
        } else {
            u128::deserialize(d).map(Self::from_u128)
        }
    }
}

/// Identity of one deploy (or rollback, or accessory change): every event of
/// that operation carries it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeployId(String);

impl DeployId {
    /// A fresh deploy id: a ULID, so deploy ids sort by creation time.
    pub fn new() -> Self {
        Self(EventId::new().to_string())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for DeployId {
    fn default() -> Self {
        Self::new()
    }
}

impl From<&str> for DeployId {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl From<String> for DeployId {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl fmt::Display for DeployId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DeployId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeployId({})", self.0)
    }
}

/// A moment, with millisecond precision, as milliseconds since the Unix epoch.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        let now = OffsetDateTime::now_utc();
        Self((now.unix_timestamp_nanos() / 1_000_000) as i64)
    }

    /// A timestamp from milliseconds since the Unix epoch.
    pub const fn from_unix_ms(ms: i64) -> Self {
        Self(ms)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn unix_ms(self) -> i64 {
        self.0
    }

    /// Milliseconds from `earlier` to `self` (negative if `earlier` is later).
    pub const fn millis_since(self, earlier: Timestamp) -> i64 {
        self.0 - earlier.0
    }

    fn to_datetime(self) -> Option<OffsetDateTime> {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000).ok()
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_datetime().and_then(|t| t.format(&Rfc3339).ok()) {
            Some(text) => f.write_str(&text),
            None => write!(f, "@{}ms", self.0),
        }
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({self})")
    }
}

impl FromStr for Timestamp {
    type Err = time::error::Parse;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = OffsetDateTime::parse(s, &Rfc3339)?;
        Ok(Self((t.unix_timestamp_nanos() / 1_000_000) as i64))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            s.serialize_i64(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let text = String::deserialize(d)?;
            text.parse().map_err(serde::de::Error::custom)
        } else {
            i64::deserialize(d).map(Self)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Event ids made one after another sort in creation order, so the log's
    /// ids can be compared without looking at timestamps.
    #[test]
    fn event_ids_are_unique_and_sorted() {
        let ids: Vec<EventId> = (0..1000).map(|_| EventId::new()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }

    /// Timestamps print as RFC 3339 and parse back to the same millisecond.
    #[test]
    fn timestamp_text_round_trips() {
        let t = Timestamp::from_unix_ms(1_795_000_000_123);
        let text = t.to_string();
        assert_eq!(text, "2026-11-18T11:06:40.123Z");
        assert_eq!(text.parse::<Timestamp>().ok(), Some(t));
    }
}
