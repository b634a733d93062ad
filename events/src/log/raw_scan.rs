//! Salvage's raw scan: events found in sled's files without sled, kept only
//! where sled's own checksums vouch for their bytes.
//!
//! A record that decodes and carries its listed id can still have been
//! changed by damage inside a string (an image digest, a host name), and a
//! salvage that returned such an event would be worse than one that said it
//! was lost. sled checksums everything it writes (from its source, 0.34.7):
//! - a message in the data file is `[crc32 LE][kind][len][segment
//!   number][page id]` then `len` bytes of body, the three numbers in sled's
//!   varint; the crc32 is of the body then the header after the crc, xored
//!   with `0xFFFF_FFFF` (`calculate_message_crc32`). A message never crosses
//!   a sled segment (512 KiB, sled's default, which the log never changes)
//!   and starts after the segment's 20-byte header; one larger than a
//!   quarter segment goes to a blob file instead.
//! - a blob file is `[crc32 LE][kind][data]`, the crc32 of kind then data.
//!
//! So an event is used only if its segment lies inside a message whose
//! checksum matches, or in a blob file whose checksum matches.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::LogError;
use super::segment;
use crate::envelope::Envelope;

/// sled's segment size: 512 KiB, its default (`conf` holds it; the log
/// never sets another).
const SLED_SEGMENT: usize = 512 * 1024;
/// The header at the start of each sled segment.
const SLED_SEGMENT_HEADER: usize = 20;
/// The largest message body sled writes inline: a quarter segment less the
/// segment header (`MINIMUM_ITEMS_PER_SEGMENT`); larger ones are blobs.
const MAX_INLINE_BODY: usize = SLED_SEGMENT / 4 - SLED_SEGMENT_HEADER;

/// An event found in a raw file.
pub(crate) struct Found {
    /// The event as decoded.
    pub(crate) event: Envelope,
    /// Index of the file it was found in.
    file: usize,
    /// Where its segment lies in that file.
    span: Range<usize>,
}

/// The files scanned and what was found in them.
pub(crate) struct RawScan {
    /// Each data file's bytes; `None` for a blob file, verified whole when
    /// read.
    files: Vec<Option<Vec<u8>>>,
    pub(crate) found: Vec<Found>,
    /// Whether the segment at (file, span start) is vouched for.
    checked: HashMap<(usize, usize), bool>,
}

impl RawScan {
    /// Scan sled data files (`db`, or a copy of it) and blob files; a blob
    /// whose checksum does not match is skipped whole.
    pub(crate) fn read(data_files: &[PathBuf], blob_files: &[PathBuf]) -> Result<Self, LogError> {
        let mut scan = Self {
            files: Vec::new(),
            found: Vec::new(),
            checked: HashMap::new(),
        };
        for path in data_files {
            let bytes = read(path)?;
            let file = scan.files.len();
            scan.found.extend(
                segment::find_events(&bytes)
                    .into_iter()
                    .map(|(event, span)| Found { event, file, span }),
            );
            scan.files.push(Some(bytes));
        }
        for path in blob_files {
            let bytes = read(path)?;
            if !blob_is_whole(&bytes) {
                continue;
            }
            let file = scan.files.len();
            scan.found.extend(
                segment::find_events(&bytes)
                    .into_iter()
                    .map(|(event, span)| Found { event, file, span }),
            );
            scan.files.push(None);
        }
        Ok(scan)
    }

    /// Whether sled's checksums vouch for the bytes of `found[index]`.
    pub(crate) fn vouched(&mut self, index: usize) -> bool {
        let Some(found) = self.found.get(index) else {
            return false;
        };
        let key = (found.file, found.span.start);
        if let Some(&known) = self.checked.get(&key) {
            return known;
        }
        let known = match self.files.get(found.file) {
            // A blob file: checked whole when read.
            Some(None) => true,
            Some(Some(bytes)) => in_whole_message(bytes, &found.span),
            None => false,
        };
        self.checked.insert(key, known);
        known
    }
}

fn read(path: &Path) -> Result<Vec<u8>, LogError> {
    std::fs::read(path).map_err(|e| LogError::io("read", path, e))
}

fn blob_is_whole(bytes: &[u8]) -> bool {
    let Some((crc, rest)) = bytes.split_first_chunk::<4>() else {
        return false;
    };
    !rest.is_empty() && crc32fast::hash(rest) == u32::from_le_bytes(*crc)
}

/// Whether `span` of the data file `bytes` lies in the body of a sled
/// message whose checksum matches. Message starts are tried from the
/// nearest one back (a single insert's message starts a few dozen bytes
/// before its value; a whole node's, up to a quarter segment).
fn in_whole_message(bytes: &[u8], span: &Range<usize>) -> bool {
    let segment_start = span.start / SLED_SEGMENT * SLED_SEGMENT;
    let segment_end = (segment_start + SLED_SEGMENT).min(bytes.len());
    if span.end > segment_end {
        return false;
    }
    let earliest = (segment_start + SLED_SEGMENT_HEADER)
        .max(span.start.saturating_sub(MAX_INLINE_BODY + MAX_HEADER));
    (earliest..span.start).rev().any(|start| {
        message_at(bytes, start, segment_end)
            .is_some_and(|body| body.start <= span.start && span.end <= body.end)
    })
}

/// sled's longest message header: crc, kind and three 9-byte varints.
const MAX_HEADER: usize = 4 + 1 + 3 * 9;

/// The body of the message starting at `start`, if a message with a
/// matching checksum starts there and ends by `limit`.
fn message_at(bytes: &[u8], start: usize, limit: usize) -> Option<Range<usize>> {
    let header = bytes.get(start..limit)?;
    let (crc, rest) = header.split_first_chunk::<4>()?;
    let mut cursor = rest.get(1..)?;
    let len = varint(&mut cursor)?;
    let _segment_number = varint(&mut cursor)?;
    let _page = varint(&mut cursor)?;
    let header_len = header.len() - cursor.len();
    let body_start = start + header_len;
    let body_end = body_start.checked_add(usize::try_from(len).ok()?)?;
    if body_end > limit {
        return None;
    }
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&bytes[body_start..body_end]);
    hasher.update(&bytes[start + 4..body_start]);
    (hasher.finalize() ^ 0xFFFF_FFFF == u32::from_le_bytes(*crc)).then_some(body_start..body_end)
}

/// sled's varint (`impl Serialize for u64`): up to 240 in one byte, up to
/// 2,287 in two, up to 67,823 in three, else a length byte (250 to 255 for
/// 3 to 8 bytes) and the value little-endian.
fn varint(cursor: &mut &[u8]) -> Option<u64> {
    let (&first, rest) = cursor.split_first()?;
    let (value, used) = match first {
        0..=240 => (u64::from(first), 0),
        241..=248 => (
            240 + 256 * (u64::from(first) - 241) + u64::from(*rest.first()?),
            1,
        ),
        249 => (
            2288 + 256 * u64::from(*rest.first()?) + u64::from(*rest.get(1)?),
            2,
        ),
        other => {
            let size = usize::from(other) - 247;
            let mut aligned = [0u8; 8];
            aligned[..size].copy_from_slice(rest.get(..size)?);
            (u64::from_le_bytes(aligned), size)
        }
    };
    *cursor = &rest[used..];
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// sled's varint, as its serializer writes the boundaries.
    #[test]
    fn varint_reads_sleds_encoding() {
        let cases: [(&[u8], u64); 5] = [
            (&[240], 240),
            (&[241, 1], 241),
            (&[248, 255], 2287),
            (&[249, 0, 0], 2288),
            (&[250, 1, 0, 1], 65537),
        ];
        for (bytes, value) in cases {
            let mut cursor = bytes;
            assert_eq!(varint(&mut cursor), Some(value), "{bytes:?}");
            assert!(cursor.is_empty());
        }
    }

    /// A message is found with a matching checksum, and not once a byte of
    /// its body changed.
    #[test]
    fn message_checksum_is_sleds() {
        let body = b"a node holding a segment".to_vec();
        let after_crc = [7u8, body.len() as u8, 3, 5];
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&body);
        hasher.update(&after_crc);
        let crc = hasher.finalize() ^ 0xFFFF_FFFF;
        let mut bytes = vec![0u8; 100];
        bytes.extend_from_slice(&crc.to_le_bytes());
        bytes.extend_from_slice(&after_crc);
        bytes.extend_from_slice(&body);
        let body_at = 100 + 4 + after_crc.len();
        assert_eq!(
            message_at(&bytes, 100, bytes.len()),
            Some(body_at..body_at + body.len())
        );
        assert!(in_whole_message(&bytes, &(body_at + 2..body_at + 10)));
        bytes[body_at + 3] ^= 1;
        assert_eq!(message_at(&bytes, 100, bytes.len()), None);
        assert!(!in_whole_message(&bytes, &(body_at + 2..body_at + 10)));
    }
}
