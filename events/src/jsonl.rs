//! JSON lines export and import: the portable form of the log.
//!
//! sled's on-disk format is not promised stable, so this is how history moves
//! between machines, Flotilla versions or storage engines: one [`Envelope`] per
//! line, as serde writes it (ids as ULID text, times as RFC 3339).

use std::io::{BufRead, Write};

use crate::envelope::{Envelope, NewEvent};
use crate::log::{Appended, EventLog, LogError};

/// Events appended per durable batch while importing.
const IMPORT_BATCH: usize = 1000;

/// Why an export or import stopped.
#[derive(Debug, thiserror::Error)]
pub enum JsonlError {
    /// Reading the log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// Writing the output failed.
    #[error("write events: {0}")]
    Write(#[source] std::io::Error),
    /// Reading the input failed.
    #[error("line {line}: read failed: {source}")]
    Read {
        /// 1-based line number.
        line: u64,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A line is not an event.
    #[error("line {line}: not an event: {source}")]
    Parse {
        /// 1-based line number.
        line: u64,
        /// What serde saw, with its column.
        source: serde_json::Error,
    },
}

/// Write one event as a JSON line.
pub fn write_line(event: &Envelope, out: &mut impl Write) -> Result<(), JsonlError> {
    serde_json::to_writer(&mut *out, event).map_err(|e| JsonlError::Write(e.into()))?;
    out.write_all(b"\n").map_err(JsonlError::Write)
}

/// Write events as JSON lines; returns how many were written.
pub fn export(
    events: impl IntoIterator<Item = Result<Envelope, LogError>>,
    out: &mut impl Write,
) -> Result<u64, JsonlError> {
    let mut written = 0;
    for event in events {
        write_line(&event?, out)?;
        written += 1;
    }
    out.flush().map_err(JsonlError::Write)?;
    Ok(written)
}

/// What an import did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Imported {
    /// Events stored.
    pub stored: u64,
    /// Lines that repeated an event already imported (same id), skipped.
    pub duplicates: u64,
}

/// Load JSON lines into `log`, which must be empty. Events keep their ids,
/// times, hosts and authors; positions are assigned anew, in file order (an
/// export of a salvaged log may have gaps; the imported log has none).
/// Blank lines are skipped. Nothing is stored unless the whole file parses.
pub fn import(input: impl BufRead, log: &dyn EventLog) -> Result<Imported, JsonlError> {
    let existing = log.last_seq();
    if existing > 0 {
        return Err(LogError::NotEmpty { events: existing }.into());
    }
    let mut events = Vec::new();
    for (index, line) in input.lines().enumerate() {
        let line_no = index as u64 + 1;
        let line = line.map_err(|source| JsonlError::Read {
            line: line_no,
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let event: Envelope = serde_json::from_str(&line).map_err(|source| JsonlError::Parse {
            line: line_no,
            source,
        })?;
        events.push(NewEvent::from(event));
    }
    let mut imported = Imported::default();
    let mut rest = events.into_iter().peekable();
    while rest.peek().is_some() {
        let batch: Vec<NewEvent> = rest.by_ref().take(IMPORT_BATCH).collect();
        for outcome in log.append_batch(batch)? {
            match outcome {
                Appended::New(_) => imported.stored += 1,
                Appended::Duplicate(_) => imported.duplicates += 1,
            }
        }
    }
    Ok(imported)
}
