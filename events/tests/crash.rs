//! Crash safety, for real: a writer process is killed with SIGKILL at random
//! moments, many times; after each kill the log must reopen with every
//! acknowledged append present, positions contiguous and no torn record.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flotilla_events::{Event, EventLog, SledLog};

/// Kill cycles to run, unless the time budget below runs out first.
const CYCLES: usize = 40;
/// Keeps the whole test well under a minute on two cores.
const BUDGET: Duration = Duration::from_secs(40);

struct Ack {
    seq: u64,
    id: String,
}

/// Run the writer, kill it after `delay`, and return what it acknowledged.
fn run_and_kill(dir: &std::path::Path, delay: Duration) -> Vec<Ack> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_flotilla-events-crash-writer"))
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the crash writer");
    let stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        // A line cut short by the kill has no id and is dropped: it claims
        // nothing the test could check.
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .filter_map(|line| {
                let mut parts = line.split(' ');
                let (Some("ack"), Some(seq), Some(id)) = (parts.next(), parts.next(), parts.next())
                else {
                    return None;
                };
                let seq = seq.parse().ok()?;
                (id.len() == 26).then(|| Ack {
                    seq,
                    id: id.to_owned(),
                })
            })
            .collect::<Vec<_>>()
    });
    std::thread::sleep(delay); // the random moment of the crash, not synchronisation
    let still_running = child.try_wait().expect("poll child").is_none();
    let mut stderr = String::new();
    if still_running {
        child.kill().expect("SIGKILL the writer"); // std sends SIGKILL on Unix
    }
    let status = child.wait().expect("reap the writer");
    if !still_running {
        use std::io::Read;
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        panic!("the writer stopped by itself ({status}): {stderr}");
    }
    reader.join().expect("reader thread")
}

/// Appends acknowledged before a SIGKILL are all there after reopening, in a
/// contiguous, fully readable log, however often the writer is killed.
#[test]
fn acknowledged_appends_survive_sigkill() {
    let dir = tempfile::tempdir().expect("temp dir");
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("crash test seed {seed}");
    let mut rng = seed;
    let started = Instant::now();
    let mut acked: Vec<Ack> = Vec::new();
    let mut cycles = 0;
    let mut highest_acked = 0;
    while cycles < CYCLES && started.elapsed() < BUDGET {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let delay = Duration::from_millis(20 + rng % 300);
        let acks = run_and_kill(dir.path(), delay);
        cycles += 1;
        acked.extend(acks);

        let log = SledLog::open(dir.path()).expect("the log reopens after SIGKILL");
        let events: Vec<_> = log
            .read_all()
            .expect("read")
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("cycle {cycles}: unreadable log after kill: {e}"));
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        let expected: Vec<u64> = (1..=events.len() as u64).collect();
        assert_eq!(seqs, expected, "cycle {cycles}: positions are contiguous");
        assert_eq!(log.last_seq(), events.len() as u64);
        for event in &events {
            let Event::ContainerStarted(c) = &event.event else {
                panic!("cycle {cycles}: unexpected event {event:?}");
            };
            assert_eq!(
                c.name,
                event.id.to_string(),
                "cycle {cycles}: torn record at {}",
                event.seq
            );
        }
        let ids: HashSet<_> = events.iter().map(|e| e.id).collect();
        assert_eq!(
            ids.len(),
            events.len(),
            "cycle {cycles}: an event was stored twice"
        );
        // Every acknowledgement so far, from this writer and the killed ones
        // before it, still holds.
        for ack in &acked {
            let stored = events.get(ack.seq as usize - 1).map(|e| e.id.to_string());
            assert_eq!(
                stored.as_deref(),
                Some(ack.id.as_str()),
                "cycle {cycles}: acknowledged event {} lost",
                ack.seq
            );
        }
        highest_acked = acked.iter().map(|a| a.seq).max().unwrap_or(0);
    }
    eprintln!(
        "{cycles} kills in {:?}, {} acknowledged batches, {highest_acked} events",
        started.elapsed(),
        acked.len()
    );
    assert!(
        cycles >= 10,
        "only {cycles} kill cycles fit in the time budget"
    );
    assert!(
        acked.len() >= cycles,
        "the writer acknowledged too little to test anything"
    );
}
