//! The cost of the scheduler's metrics: folding one event (what the engine's `watch` adds to
//! every event of a rollout), rebuilding them from a log at start, and rendering a scrape.
//!
//! `cargo bench -p flotilla-scheduler --bench metrics`. Environment: `FLOTILLA_BENCH_RUNS`
//! (default 5; medians are reported). The events are `flotilla_events::sample::Story` deploys
//! of 1,000 hosts each: the shape of the 1,000-host scale rollout.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use flotilla_events::sample::Story;
use flotilla_events::{Envelope, EventLog, SledLog};
use flotilla_scheduler::metrics::Metrics;
use std::time::{Duration, Instant};

const HOSTS: usize = 1_000;
const DEPLOYS: usize = 10;

fn deploys() -> Vec<Vec<flotilla_events::NewEvent>> {
    (0..DEPLOYS)
        .map(|k| {
            let mut s = Story::new(&format!("01JDEPLOY{k:0>17}"), &format!("v{k}"), HOSTS);
            s.first_id = 1 + (k as u128) * 1_000_000;
            if k > 0 {
                s.previous = Some(format!("v{}", k - 1));
            }
            s.events()
        })
        .collect()
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn main() {
    let runs: usize = std::env::var("FLOTILLA_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let stories = deploys();
    let mut seq = 0;
    let envelopes: Vec<Envelope> = stories
        .iter()
        .flatten()
        .map(|e| {
            seq += 1;
            e.clone().into_envelope(seq)
        })
        .collect();
    let one_deploy = stories[0].len();

    // Live: the fold the engine's watch adds per event.
    let live = median(
        (0..runs)
            .map(|_| {
                let m = Metrics::new();
                let t = Instant::now();
                for e in &envelopes[..one_deploy] {
                    m.observe(e);
                }
                t.elapsed()
            })
            .collect(),
    );
    let per_event = live.as_nanos() as f64 / one_deploy as f64;
    println!(
        "observe: {one_deploy} events of one {HOSTS}-host deploy in {:.2} ms, {per_event:.0} ns/event, \
         {:.3}% of the 5 s goal for a {HOSTS}-host rollout",
        live.as_secs_f64() * 1e3,
        live.as_secs_f64() / 5.0 * 100.0
    );

    // Rebuild at start, from a real sled log, against reading the same log alone.
    let dir = tempfile::tempdir().unwrap();
    let log = SledLog::open(dir.path().join("events")).unwrap();
    for events in &stories {
        log.append_batch(events.clone()).unwrap();
    }
    let total = envelopes.len();
    let read = median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                let n = log.read_all().unwrap().filter(|e| e.is_ok()).count();
                assert_eq!(n, total);
                t.elapsed()
            })
            .collect(),
    );
    let mut rebuilt = None;
    let rebuild = median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                rebuilt = Some(Metrics::rebuild(&log).unwrap());
                t.elapsed()
            })
            .collect(),
    );
    println!(
        "rebuild: {total} events ({DEPLOYS} deploys x {HOSTS} hosts) in {:.1} ms; reading the log alone {:.1} ms ({:.2}x)",
        rebuild.as_secs_f64() * 1e3,
        read.as_secs_f64() * 1e3,
        rebuild.as_secs_f64() / read.as_secs_f64()
    );

    // A scrape.
    let m = rebuilt.unwrap();
    let mut size = 0;
    let render = median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                size = m.render().len();
                t.elapsed()
            })
            .collect(),
    );
    println!(
        "render: {size} bytes in {:.3} ms",
        render.as_secs_f64() * 1e3
    );
}
