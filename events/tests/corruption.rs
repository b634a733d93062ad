//! A damaged log file gives a clear error and a way to export what is
//! readable, never a panic.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use flotilla_events::sample::Story;
use flotilla_events::{Envelope, EventLog, LogError, SledLog};

/// Write 50 ten-host deploys (3,400 events) and return them as stored.
fn write_log(dir: &Path) -> Vec<Envelope> {
    let log = SledLog::open(dir).unwrap();
    for i in 0..50u128 {
        let mut story = Story::new(&format!("01D0000000000000000000{i:04}"), "v1", 10);
        story.first_id = i * 1000 + 1;
        log.append_batch(story.events()).unwrap();
    }
    log.read_all().unwrap().collect::<Result<_, _>>().unwrap()
}

/// Flip `len` bytes of sled's data file starting at `fraction` of its length.
fn damage(dir: &Path, fraction: f64, len: usize) {
    let db = dir.join("sled/db");
    let mut bytes = std::fs::read(&db).unwrap();
    let at = (bytes.len() as f64 * fraction) as usize;
    let end = (at + len).min(bytes.len());
    for b in &mut bytes[at..end] {
        *b ^= 0xAA;
    }
    std::fs::write(&db, &bytes).unwrap();
}

/// Damage anywhere in the data file never crashes the tool: the log either
/// still reads in full, or opening or reading it fails with an error saying
/// what is wrong (regression: sled sometimes lost the middle of the file and
/// reads simply ended early). When sled's recovery silently cut off events (damage past the
/// start), the acknowledged high-water mark turns that into an error naming
/// what was lost; when sled cannot open the file at all (even by panicking
/// inside), open says it is corrupted. Either way salvage returns only intact
/// events and counts the rest as lost.
#[test]
fn damaged_file_gives_clear_error_and_salvage() {
    let mut detected = 0;
    for (fraction, len) in [
        (0.0, 64),
        (0.1, 512),
        (0.5, 4096),
        (0.9, 64),
        (0.8, 1 << 20),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let written = write_log(dir.path());
        damage(dir.path(), fraction, len);
        match SledLog::open(dir.path()) {
            Ok(log) => {
                // Either sled repaired it and every event reads back, or reading stops
                // with a damage error (never a silently shorter history).
                let read: Result<Vec<Envelope>, LogError> = log.read_all().unwrap().collect();
                match read {
                    Ok(read) => assert_eq!(
                        read, written,
                        "damage at {fraction} was repaired, or is an error"
                    ),
                    Err(err) => {
                        eprintln!("damage at {fraction}: {err}");
                        detected += 1;
                        assert!(err.is_damage(), "damage at {fraction}: {err}");
                        drop(log);
                        assert_salvage(dir.path(), &written, fraction, len);
                    }
                }
            }
            Err(err @ LogError::Truncated { .. }) => {
                eprintln!("damage at {fraction}: {err}");
                detected += 1;
                assert!(err.to_string().contains("is damaged"), "{err}");
                assert_salvage(dir.path(), &written, fraction, len);
            }
            Err(err) => {
                // sled itself cannot open the file (it may even panic inside:
                // that is caught and reported too); salvage still finds the
                // intact events in sled's raw files.
                eprintln!("damage at {fraction}: {err}");
                detected += 1;
                assert!(err.is_damage(), "damage at {fraction}: {err}");
                assert!(err.to_string().contains("is corrupted"), "{err}");
                assert_salvage(dir.path(), &written, fraction, len);
            }
        }
    }
    assert!(detected > 0, "no damage pattern reached the error path");
}

/// Salvage of a damaged log returns only intact events, at their positions,
/// and accounts for every one it could not recover.
fn assert_salvage(dir: &Path, written: &[Envelope], fraction: f64, len: usize) {
    let salvage = match SledLog::salvage_dir(dir) {
        Ok(salvage) => salvage,
        Err(e) => {
            assert!(e.is_damage(), "damage at {fraction}: {e}");
            return;
        }
    };
    eprintln!(
        "damage at {fraction}: salvaged {} of {}",
        salvage.events.len(),
        written.len()
    );
    for event in &salvage.events {
        assert_eq!(
            event,
            &written[event.seq as usize - 1],
            "salvaged events are intact"
        );
    }
    assert_eq!(
        salvage.lost(),
        (written.len() - salvage.events.len()) as u64,
        "damage at {fraction}: {:?}",
        salvage.problems
    );
    if salvage.lost() > 0 {
        assert!(!salvage.problems.is_empty(), "damage at {fraction}");
    }
    // A few KiB of damage costs at most the deploys (68 events each) whose
    // bytes it touched, never every event after it (regression: 64 bytes at
    // 90% lost 408 events once the log had been opened).
    if len <= 4096 {
        assert!(
            salvage.lost() <= 2 * 68,
            "damage at {fraction}: lost {} events",
            salvage.lost()
        );
    }
}
