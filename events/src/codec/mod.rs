//! The binary record format of the log, behind one version byte.
//!
//! A record is `[version byte][bincode 2 (serde, standard config) of Envelope]`.
//! bincode is positional: a field added to an event changes the bytes, so every
//! change bumps [`SCHEMA_VERSION`] and keeps a frozen copy of the old shape here
//! (see `codec/v1.rs`, `codec/v2.rs`) whose decoder upcasts to the current types. bincode itself is
//! unmaintained and pinned; it stays behind this module so the format can move
//! later (new version byte, new encoder) without losing history.

mod v1;
mod v2;

use crate::envelope::{Envelope, SCHEMA_VERSION};

/// The version byte this build writes.
pub const CURRENT_VERSION: u8 = {
    assert!(SCHEMA_VERSION < 256);
    SCHEMA_VERSION as u8
};

/// A record that cannot be turned back into an event.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The record has no bytes at all.
    #[error("empty record")]
    Empty,
    /// Written by a newer Flotilla (or garbage).
    #[error(
        "unknown record version {0} (this build reads 1 to {CURRENT_VERSION}): upgrade flotilla"
    )]
    UnknownVersion(u8),
    /// The bytes do not form an event of the version they claim.
    #[error("malformed version {version} record: {source}")]
    Malformed {
        /// The version byte found.
        version: u8,
        /// What bincode saw.
        source: bincode::error::DecodeError,
    },
    /// A record decoded but bytes were left over: not what this build wrote.
    #[error("malformed version {version} record: {extra} trailing bytes")]
    TrailingBytes {
        /// The version byte found.
        version: u8,
        /// How many bytes were left.
        extra: usize,
    },
    /// Encoding failed (only for values serde cannot express).
    #[error("cannot encode event: {0}")]
    Encode(#[from] bincode::error::EncodeError),
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Appends `[version][bincode 2 of value]` to `out`: the framing every versioned format of
/// Flotilla shares (log records here, wire messages in `flotilla-protocol`), so bincode stays
/// behind this module.
pub fn encode_framed<T: serde::Serialize>(
    version: u8,
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    out.push(version);
    bincode::serde::encode_into_std_write(value, out, config())?;
    Ok(())
}

/// The version byte of a framed message and its body.
pub fn split_version(bytes: &[u8]) -> Result<(u8, &[u8]), CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    Ok((version, body))
}

/// Decodes the body of a framed message of `version` as a `T` (the shape of that version);
/// short or trailing bytes are errors.
pub fn decode_framed_body<T: serde::de::DeserializeOwned>(
    version: u8,
    body: &[u8],
) -> Result<T, CodecError> {
    decode_body(version, body)
}

/// Encode an envelope as a record of the current version.
pub fn encode(envelope: &Envelope) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(128);
    encode_into(envelope, &mut out)?;
    Ok(out)
}

/// Append the record for `envelope` to `out`.
pub fn encode_into(envelope: &Envelope, out: &mut Vec<u8>) -> Result<(), CodecError> {
    encode_framed(CURRENT_VERSION, envelope, out)
}

/// Decode a record of any version this build knows, upcast to current types.
pub fn decode(record: &[u8]) -> Result<Envelope, CodecError> {
    let (version, body) = split_version(record)?;
    match version {
        CURRENT_VERSION => decode_body::<Envelope>(version, body),
        // Schema 6 only appended `ImageRemoved` and `ImageKept`, schema 5 the `Operation*`
        // events, schema 4 `HostEnrolled`: a schema 3, 4 or 5 record has the current shape.
        3..=5 => decode_body::<Envelope>(version, body),
        2 => decode_body::<v2::Envelope>(version, body).map(Envelope::from),
        1 => decode_body::<v1::Envelope>(version, body).map(Envelope::from),
        other => Err(CodecError::UnknownVersion(other)),
    }
}

fn decode_body<T: serde::de::DeserializeOwned>(version: u8, body: &[u8]) -> Result<T, CodecError> {
    let (value, read) = bincode::serde::decode_from_slice::<T, _>(body, config())
        .map_err(|source| CodecError::Malformed { version, source })?;
    if read != body.len() {
        return Err(CodecError::TrailingBytes {
            version,
            extra: body.len() - read,
        });
    }
    Ok(value)
}

/// Encode a version 1 record: only for building the stored fixture and tests.
#[cfg(test)]
pub(crate) fn encode_v1(envelope: &v1::Envelope) -> Result<Vec<u8>, CodecError> {
    let mut out = vec![1];
    bincode::serde::encode_into_std_write(envelope, &mut out, config())?;
    Ok(out)
}

#[cfg(test)]
mod tests;
