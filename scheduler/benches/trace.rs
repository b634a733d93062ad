//! The cost of deploy traces: the fold `trace::live` runs on every event of a rollout (in
//! its background task, off the engine's path), and encoding a whole 1,000-host deploy's
//! spans as the OTLP protobuf one replay sends.
//!
//! `cargo bench -p flotilla-scheduler --bench trace`. Environment: `FLOTILLA_BENCH_RUNS`
//! (default 5; medians are reported).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use flotilla_events::Envelope;
use flotilla_events::sample::Story;
use flotilla_scheduler::trace::{SERVICE_NAME, TraceFold};
use std::time::{Duration, Instant};

const HOSTS: usize = 1_000;
const ID: &str = "01JDEPLOY00000000000000000";

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn main() {
    let runs: usize = std::env::var("FLOTILLA_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let mut story = Story::new(ID, "v2", HOSTS);
    story.previous = Some("v1".into());
    let events: Vec<Envelope> = story
        .events()
        .into_iter()
        .enumerate()
        .map(|(i, e)| e.into_envelope(i as u64 + 1))
        .collect();
    let mut spans = Vec::new();
    let fold = median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                let mut fold = TraceFold::new(ID);
                spans = events.iter().flat_map(|e| fold.apply(e)).collect();
                t.elapsed()
            })
            .collect(),
    );
    println!(
        "fold: {} events of one {HOSTS}-host deploy into {} spans in {:.2} ms, {:.0} ns/event",
        events.len(),
        spans.len(),
        fold.as_secs_f64() * 1e3,
        fold.as_nanos() as f64 / events.len() as f64
    );
    let mut bytes = 0;
    let encode = median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                bytes = flotilla_telemetry::otlp::encode(SERVICE_NAME, &spans).len();
                t.elapsed()
            })
            .collect(),
    );
    println!(
        "encode: {} spans as one OTLP request of {} kB in {:.2} ms",
        spans.len(),
        bytes / 1000,
        encode.as_secs_f64() * 1e3
    );
}
