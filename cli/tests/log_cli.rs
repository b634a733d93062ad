//! The event log's accidents as a user meets them through the real binary: what
//! `flotilla` prints is its own message with the next step, never a raw line from sled
//! (which reports its failures through the `log` crate).
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

use flotilla_events::sample::Story;
use flotilla_events::{EventLog, SledLog};

/// `flotilla ARGS` with only PATH in its environment (no `RUST_LOG`: what a user runs).
fn flotilla(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Lines a user could see that did not come from flotilla: sled's own logging, or a
/// tracing line at ERROR level.
fn raw_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.contains("sled") && !l.contains("flotilla") || l.contains(" ERROR "))
        .collect()
}

/// A log whose last bytes were damaged (a torn write, a bad sector): reading it fails
/// (exit 1) saying the log is damaged and to run `flotilla events --salvage`, with no raw
/// sled line; the salvage then prints every intact event and says how many were lost.
#[test]
fn damaged_log_tail_is_told_in_flotillas_words_and_salvaged() {
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("events");
    let mut written = 0;
    for i in 0..4u128 {
        let log = SledLog::open(&log_dir).unwrap();
        let mut story = Story::new(&format!("01D0000000000000000000{i:04}"), "v1", 3);
        story.first_id = i * 1000 + 1;
        for chunk in story.events().chunks(3) {
            log.append_batch(chunk.to_vec()).unwrap();
            written += chunk.len();
        }
    }
    drop(SledLog::open(&log_dir).unwrap());
    let data = log_dir.join("sled/db");
    let mut bytes = std::fs::read(&data).unwrap();
    let end = bytes.iter().rposition(|b| *b != 0).unwrap() + 1;
    for b in &mut bytes[end - 64..end] {
        *b ^= 0xAA;
    }
    std::fs::write(&data, &bytes).unwrap();

    let log_arg = log_dir.to_str().unwrap();
    let read = flotilla(dir.path(), &["events", "--log", log_arg]);
    assert_eq!(read.status.code(), Some(1), "{}", stderr(&read));
    let said = stderr(&read);
    assert!(said.contains("flotilla events --salvage"), "{said}");
    assert!(raw_lines(&said).is_empty(), "raw output: {said}");

    let salvaged = flotilla(
        dir.path(),
        &["events", "--salvage", "--json", "--log", log_arg],
    );
    assert_eq!(salvaged.status.code(), Some(0), "{}", stderr(&salvaged));
    let recovered = String::from_utf8_lossy(&salvaged.stdout).lines().count();
    // At most the last batch is lost. It may be none: what lies at the file's end depends on
    // when sled's background flusher ran, and when the damaged bytes hold no event record the
    // salvage needs, it keeps every event (a CI run saw 104 of 104, the read still refused).
    assert!(
        recovered > 0 && recovered <= written && recovered + 3 >= written,
        "recovered {recovered} of {written}"
    );
    let said = stderr(&salvaged);
    assert!(
        said.contains(&format!("salvaged {recovered} events")),
        "{said}"
    );
    assert!(raw_lines(&said).is_empty(), "raw output: {said}");
}
