//! Speed of the event log: durable appends (group commit and one at a time),
//! folding projections, and reopening plus rebuilding from 1,000,000 events.
//!
//! `cargo bench -p flotilla-events`; results and the machine in BENCHMARKS.md.
//! The 1M-event log is built once per run (not timed) and its size on disk
//! per event is printed.
//!
//! CPU-bound benchmarks (folds, decode, rebuild) run twice: by wall time
//! (`fold/...`, `rebuild/...`) and by process CPU time (`cpu_fold/...`,
//! `cpu_rebuild/...`), because the 2-core machine is shared with other work.
#![allow(clippy::unwrap_used)]

#[path = "support/cpu_time.rs"]
mod cpu_time;

use std::path::Path;
use std::time::Duration;

use criterion::measurement::Measurement;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use flotilla_events::sample::Story;
use flotilla_events::{Envelope, EventLog, NewEvent, Projection, Projections, SledLog, codec};

/// `count` events of realistic deploys (20 hosts each), ids starting at `first`.
fn events(count: usize, first: u128) -> Vec<NewEvent> {
    let mut out = Vec::with_capacity(count + 200);
    let mut n = 0u128;
    while out.len() < count {
        let id = format!("01D{:023}", first + n);
        let mut story = Story::new(&id, &format!("v{n}"), 20);
        story.previous = Some(format!("v{}", n.saturating_sub(1)));
        story.first_id = first + out.len() as u128;
        out.extend(story.events());
        n += 1;
    }
    out.truncate(count);
    out
}

fn envelopes(count: usize) -> Vec<Envelope> {
    events(count, 1)
        .into_iter()
        .enumerate()
        .map(|(i, e)| e.into_envelope(i as u64 + 1))
        .collect()
}

fn dir_size(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                dir_size(&entry.path())
            } else {
                meta.len()
            }
        })
        .sum()
}

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("append");
    for batch in [1000usize, 100, 1] {
        let dir = tempfile::tempdir().unwrap();
        let log = SledLog::open(dir.path()).unwrap();
        let mut next_id = 1u128;
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(format!("durable_batch_{batch}"), |b| {
            b.iter_batched(
                || {
                    let events = events(batch, next_id);
                    next_id += batch as u128 + 1000;
                    events
                },
                |events| log.append_batch(events).unwrap(),
                BatchSize::PerIteration,
            );
        });
    }
    group.finish();
}

fn fold<M: Measurement>(c: &mut Criterion<M>, name: &str) {
    let events = envelopes(100_000);
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(events.len() as u64));
    group.bench_function("all_projections_100k", |b| {
        b.iter(|| {
            let mut state = Projections::default();
            state.apply_all(&events);
            state
        });
    });
    let hot = envelopes(10_000);
    group.throughput(Throughput::Elements(hot.len() as u64));
    group.bench_function("all_projections_10k", |b| {
        b.iter(|| {
            let mut state = Projections::default();
            state.apply_all(&hot);
            state
        });
    });
    group.throughput(Throughput::Elements(events.len() as u64));
    group.bench_function("deploys_100k", |b| {
        b.iter(|| {
            let mut state = flotilla_events::Deploys::default();
            state.apply_all(&events);
            state
        });
    });
    group.bench_function("releases_100k", |b| {
        b.iter(|| {
            let mut state = flotilla_events::Releases::default();
            state.apply_all(&events);
            state
        });
    });
    group.bench_function("fleet_100k", |b| {
        b.iter(|| {
            let mut state = flotilla_events::FleetState::default();
            state.apply_all(&events);
            state
        });
    });
    let records: Vec<Vec<u8>> = events.iter().map(|e| codec::encode(e).unwrap()).collect();
    let bytes: usize = records.iter().map(Vec::len).sum();
    eprintln!(
        "mean record size: {:.1} bytes",
        bytes as f64 / records.len() as f64
    );
    group.bench_function("decode_100k", |b| {
        b.iter(|| {
            records
                .iter()
                .map(|r| codec::decode(r).unwrap().seq)
                .sum::<u64>()
        });
    });
    group.finish();
}

fn rebuild<M: Measurement>(c: &mut Criterion<M>, name: &str) {
    const EVENTS: usize = 1_000_000;
    let dir = tempfile::tempdir().unwrap();
    {
        let log = SledLog::open(dir.path()).unwrap();
        let all = events(EVENTS, 1);
        let started = std::time::Instant::now();
        for chunk in all.chunks(10_000) {
            log.append_batch(chunk.to_vec()).unwrap();
        }
        eprintln!(
            "wrote {EVENTS} events in {:?}; sled size_on_disk {} bytes",
            started.elapsed(),
            log.size_on_disk().unwrap()
        );
    }
    let size = dir_size(dir.path());
    eprintln!(
        "log directory after close: {size} bytes, {:.1} bytes per event",
        size as f64 / EVENTS as f64
    );
    let mut group = c.benchmark_group(name);
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.bench_function("open_and_fold_1m", |b| {
        b.iter(|| {
            let log = SledLog::open(dir.path()).unwrap();
            let state = Projections::rebuild(&log).unwrap();
            assert_eq!(log.last_seq(), EVENTS as u64);
            state
        });
    });
    // What a writer pays after opening a big log: its first append builds
    // the id index from every segment's id list.
    let mut next_id = 10_000_000u128;
    group.throughput(Throughput::Elements(1));
    group.bench_function("open_and_first_append_1m", |b| {
        b.iter(|| {
            let log = SledLog::open(dir.path()).unwrap();
            next_id += 1000;
            log.append_batch(events(1, next_id)).unwrap()
        });
    });
    group.finish();
    let sample: Vec<Envelope> = envelopes(10_000);
    let json: usize = sample
        .iter()
        .map(|e| serde_json::to_string(e).unwrap().len() + 1)
        .sum();
    eprintln!(
        "JSON lines export: {:.1} bytes per event",
        json as f64 / sample.len() as f64
    );
}

fn fold_wall(c: &mut Criterion) {
    fold(c, "fold");
}

fn rebuild_wall(c: &mut Criterion) {
    rebuild(c, "rebuild");
}

fn fold_cpu(c: &mut Criterion<cpu_time::ProcessCpuTime>) {
    fold(c, "cpu_fold");
}

fn rebuild_cpu(c: &mut Criterion<cpu_time::ProcessCpuTime>) {
    rebuild(c, "cpu_rebuild");
}

criterion_group!(wall, fold_wall, append, rebuild_wall);
criterion_group! {
    name = cpu;
    config = Criterion::default().with_measurement(cpu_time::ProcessCpuTime);
    targets = fold_cpu, rebuild_cpu
}
criterion_main!(wall, cpu);
