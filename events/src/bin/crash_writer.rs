//! Test helper for the crash-safety test (`tests/crash.rs`), not a user tool.
//!
//! Appends batches of events to the log in the directory given as the only
//! argument, forever, and prints `ack SEQ ID` for the last event of each batch
//! once `append_batch` has returned (that is, once the batch is durable). Each
//! event's container name repeats its own id, so a reader can tell a torn or
//! mixed-up record from a whole one. Every fifth batch re-appends the previous
//! one first, as a redelivery would.
#![forbid(unsafe_code)]

use std::io::Write;

use flotilla_events::event::ContainerStarted;
use flotilla_events::{Appended, DeployId, EventLog, NewEvent, SledLog};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).ok_or("usage: crash_writer DIR")?;
    let log = SledLog::open(&dir)?;
    let deploy = DeployId::new();
    let mut rng = u64::from(std::process::id()) | 1;
    let mut previous: Vec<NewEvent> = Vec::new();
    let stdout = std::io::stdout();
    for round in 0u64.. {
        // xorshift: enough randomness for batch sizes without a dependency.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let size = 1 + (rng % 64) as usize;
        let batch: Vec<NewEvent> = (0..size)
            .map(|_| {
                let mut event = NewEvent::new(
                    deploy.clone(),
                    "crash-writer",
                    ContainerStarted {
                        name: String::new(),
                        container_id: format!("{}-{round}", std::process::id()),
                        version: "v1".into(),
                        role: "web".into(),
                    },
                );
                if let flotilla_events::Event::ContainerStarted(c) = &mut event.event {
                    c.name = event.id.to_string();
                }
                event.host = Some("web-1".into());
                event
            })
            .collect();
        if round % 5 == 4 && !previous.is_empty() {
            let again = log.append_batch(previous.clone())?;
            if again.iter().any(|o| matches!(o, Appended::New(_))) {
                return Err("a redelivered event was stored twice".into());
            }
        }
        let outcomes = log.append_batch(batch.clone())?;
        let (Some(last), Some(event)) = (outcomes.last(), batch.last()) else {
            return Err("append returned no outcome".into());
        };
        let mut out = stdout.lock();
        writeln!(out, "ack {} {}", last.seq(), event.id)?;
        out.flush()?;
        previous = batch;
    }
    Ok(())
}
