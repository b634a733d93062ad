//! The contract every [`EventLog`] keeps, checked for both implementations,
//! and what only the durable one promises (reopening, locking, damage).

use super::sled_log::test_support;
use super::*;
use crate::sample::Story;

fn story(id: &str, first_id: u128) -> Vec<NewEvent> {
    let mut story = Story::new(id, "v1", 3);
    story.first_id = first_id;
    story.events()
}

fn all(log: &dyn EventLog) -> Vec<Envelope> {
    log.read_all()
        .expect("read")
        .collect::<Result<_, _>>()
        .expect("every record reads")
}

fn contract(log: &dyn EventLog) {
    // Appends get positions 1, 2, 3, ... and read back in order, unchanged.
    let first = story("01D000000000000000000000A1", 1);
    let outcomes = log.append_batch(first.clone()).expect("append");
    let n = first.len() as u64;
    assert_eq!(outcomes, (1..=n).map(Appended::New).collect::<Vec<_>>());
    assert_eq!(log.last_seq(), n);
    let stored = all(log);
    let expected: Vec<Envelope> = first
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, e)| e.into_envelope(i as u64 + 1))
        .collect();
    assert_eq!(stored, expected);

    // A redelivered event is stored once and reported at its first position,
    // alone, in a batch with new events, or twice in the same batch.
    let again = log.append(first[3].clone()).expect("append duplicate");
    assert_eq!(again, Appended::Duplicate(4));
    let second = story("01D000000000000000000000B2", 1000);
    let mut mixed = vec![first[0].clone(), second[0].clone(), second[0].clone()];
    mixed.extend(second[1..].iter().cloned());
    let outcomes = log.append_batch(mixed).expect("append mixed");
    assert_eq!(outcomes[0], Appended::Duplicate(1));
    assert_eq!(outcomes[1], Appended::New(n + 1));
    assert_eq!(outcomes[2], Appended::Duplicate(n + 1));
    assert_eq!(outcomes[3], Appended::New(n + 2));
    let total = n + second.len() as u64;
    assert_eq!(log.last_seq(), total);
    assert_eq!(log.position_of(second[5].id).expect("lookup"), Some(n + 6));

    // Reading from a position, and one deploy's events.
    let suffix: Vec<Envelope> = log
        .read_from(n + 1)
        .expect("read")
        .collect::<Result<_, _>>()
        .expect("records read");
    assert_eq!(suffix.len(), second.len());
    assert!(suffix.iter().all(|e| e.deploy_id == second[0].deploy_id));
    let deploy = log.read_deploy(&first[0].deploy_id).expect("read deploy");
    assert_eq!(deploy, expected);
    assert_eq!(log.read_from(total + 1).expect("read").count(), 0);

    // A live tail sees later appends, in order, and nothing twice.
    let mut tail = log.subscribe();
    let third = story("01D000000000000000000000C3", 2000);
    log.append_batch(third[..2].to_vec()).expect("append");
    log.append_batch(third[..4].to_vec()).expect("append");
    let mut live = Vec::new();
    while let Some(event) = tail.try_recv().expect("tail") {
        live.push(event.seq);
    }
    assert_eq!(live, (total + 1..=total + 4).collect::<Vec<_>>());
}

/// The in-memory log keeps the log contract: positions, idempotent appends,
/// reads, live tail.
#[test]
fn memory_log_keeps_the_contract() {
    contract(&MemoryLog::new());
}

/// The sled log keeps the same contract.
#[test]
fn sled_log_keeps_the_contract() {
    let dir = tempfile::tempdir().expect("temp dir");
    contract(&SledLog::open(dir.path()).expect("open"));
}

/// Events survive closing and reopening the log; positions continue where
/// they stopped and redelivered events are still recognised.
#[test]
fn sled_log_reopens_with_everything() {
    let dir = tempfile::tempdir().expect("temp dir");
    let events = story("01D000000000000000000000A1", 1);
    let before = {
        let log = SledLog::open(dir.path()).expect("open");
        log.append_batch(events.clone()).expect("append");
        all(&log)
    };
    let log = SledLog::open(dir.path()).expect("reopen");
    assert_eq!(all(&log), before);
    assert_eq!(
        log.append(events[0].clone()).expect("append"),
        Appended::Duplicate(1)
    );
    let next = story("01D000000000000000000000B2", 500);
    let outcome = log.append(next[0].clone()).expect("append");
    assert_eq!(outcome, Appended::New(events.len() as u64 + 1));
}

/// A second writer on the same log is refused with an error naming the
/// holder; once the first closes, the log opens.
#[test]
fn second_writer_gets_a_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = SledLog::open(dir.path()).expect("open");
    let err = SledLog::open(dir.path()).expect_err("second writer");
    let message = err.to_string();
    assert!(matches!(err, LogError::Locked { .. }), "{message}");
    assert!(message.contains("is in use by pid"), "{message}");
    assert!(
        message.contains(&std::process::id().to_string()),
        "{message}"
    );
    drop(first);
    SledLog::open(dir.path()).expect("open after the first closed");
}

/// An unreadable record or a missing batch is reported with its position,
/// and salvage still recovers every other event.
#[test]
fn damaged_records_are_reported_and_salvaged() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = SledLog::open(dir.path()).expect("open");
    let events = story("01D000000000000000000000A1", 1);
    let n = events.len() as u64;
    log.append_batch(events[..10].to_vec()).expect("append");
    log.append_batch(events[10..20].to_vec()).expect("append");
    log.append_batch(events[20..].to_vec()).expect("append");
    test_support::overwrite_record(&log, 3, b"\x02garbage");
    test_support::remove_segment(&log, 11);

    let results: Vec<Result<Envelope, LogError>> = log.read_all().expect("read").collect();
    let errors: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(ToString::to_string))
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].starts_with("event 3 cannot be read: malformed version 2 record"),
        "{errors:?}"
    );
    assert_eq!(
        errors[1],
        "events 11 to 20 are missing (next stored event is 21)"
    );
    let salvage = log.salvage();
    assert_eq!(salvage.problems.len(), 2);
    let seqs: Vec<u64> = salvage.events.iter().map(|e| e.seq).collect();
    let expected: Vec<u64> = (1..=n)
        .filter(|s| *s != 3 && !(11..=20).contains(s))
        .collect();
    assert_eq!(seqs, expected);
}

/// Reading from a position inside a batch starts exactly there, and a batch
/// larger than one segment is stored and read whole.
#[test]
fn read_from_inside_a_batch_and_large_batches() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = SledLog::open(dir.path()).expect("open");
    let mut events = Vec::new();
    for i in 0..80u128 {
        let mut s = Story::new(&format!("01D0000000000000000000{i:04}"), "v1", 10);
        s.first_id = i * 1000 + 1;
        events.extend(s.events());
    }
    assert!(events.len() > 4096);
    let n = events.len() as u64;
    log.append_batch(events).expect("append");
    let from: Vec<u64> = log
        .read_from(4095)
        .expect("read")
        .map(|e| e.expect("readable").seq)
        .collect();
    assert_eq!(from, (4095..=n).collect::<Vec<_>>());
    drop(log);
    let log = SledLog::open(dir.path()).expect("reopen");
    assert_eq!(log.last_seq(), n);
    assert_eq!(all(&log).len() as u64, n);
}

/// A live view that falls behind is told how many events it missed, and
/// can read them back from the log by position.
#[test]
fn lagging_tail_is_told_and_can_catch_up() {
    let log = MemoryLog::new();
    let mut tail = log.subscribe();
    let mut events = Vec::new();
    for i in 0..80u128 {
        let mut s = Story::new(&format!("01D0000000000000000000{i:04}"), "v1", 10);
        s.first_id = i * 1000 + 1;
        events.extend(s.events());
    }
    let n = events.len() as u64;
    assert!(n > super::tail::CAPACITY as u64);
    log.append_batch(events).expect("append");
    let Err(TailError::Lagged { missed }) = tail.try_recv() else {
        panic!("a tail more than CAPACITY behind must lag");
    };
    let first_live = tail.try_recv().expect("tail").expect("an event").seq;
    assert_eq!(first_live, missed + 1);
    let caught_up = log
        .read_from(1)
        .expect("read")
        .take(missed as usize)
        .count();
    assert_eq!(caught_up as u64, missed);
}
