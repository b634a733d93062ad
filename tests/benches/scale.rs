//! Scale: one real rollout over N simulated hosts, end to end through `Engine::run`.
//!
//! `cargo bench -p flotilla-scheduler --bench scale` (or `scripts/bench/scale.sh`).
//! Environment: `FLOTILLA_BENCH_HOSTS` (default `10,100,1000`), `FLOTILLA_BENCH_RUNS`
//! (rollouts per N, default 3; the median is reported), `FLOTILLA_BENCH_HEARTBEAT_MS`
//! (executors' heartbeat period, default 5000 as `flotilla executor run`).
//!
//! Everything is real except the Docker engine and the host proxy: a `nats-server -js` on
//! loopback with a temp store, the sled event log in a temp dir, N executors each running the
//! real `flotilla_executor::transport::run` loop (own NATS connection, own durable consumer,
//! heartbeats, signed-job verification, sealed registry password) against the simulated
//! runtime with zero-latency steps, and the plan from a generated `config/deploy.yml` with
//! `boot.limit: 100`. The executors' job journals are in memory: on a real fleet each writes
//! its own host's disk, not the scheduler's.
//!
//! The engine runs alone on the main thread (a current-thread runtime, as its work is
//! sequential), the executors on a second runtime, so the main thread's CPU time is the
//! scheduler's own cost (including its NATS client's I/O task).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_deploy::plan::{PlanContext, Release, plan};
use flotilla_events::event::DeployKind;
use flotilla_events::{
    Appended, DeployId, Envelope, Event, EventId, EventLog, Events, LogError, NewEvent, Seq,
    SledLog, Tail,
};
use flotilla_executor::journal::Journal;
use flotilla_executor::runtime::sim::{SimConfig, SimRuntime};
use flotilla_executor::steps::Executor;
use flotilla_executor::transport::{self, NatsSettings};
use flotilla_protocol::sealing::HostKey;
use flotilla_protocol::signing::{JobSigner, JobVerifier};
use flotilla_protocol::subjects;
use flotilla_scheduler::engine::{DeployRun, Engine};
use flotilla_scheduler::rollout::{Amount, Outcome, Policy};
use flotilla_scheduler::transport::nats::NatsTransport;
use tokio_util::sync::CancellationToken;

/// A `nats-server -js` on a random loopback port with its store in a temp dir.
struct Nats {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Nats {
    fn start() -> Nats {
        let dir = tempfile::tempdir().unwrap();
        let mut child = match Command::new("nats-server")
            .args(["--jetstream", "--addr", "127.0.0.1", "--port", "-1"])
            .arg("--store_dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                eprintln!(
                    "scale: cannot run nats-server ({e}): install the Debian package `nats-server` (apt-get install nats-server)"
                );
                std::process::exit(2);
            }
        };
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let url = loop {
            let line = lines
                .next()
                .expect("nats-server exited before listening")
                .unwrap();
            if let Some(addr) = line.split("Listening for client connections on ").nth(1) {
                break format!("nats://{}", addr.trim());
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Nats {
            child,
            url,
            _dir: dir,
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn host_name(i: usize) -> String {
    format!("sim-{i:04}")
}

/// A Kamal config with `n` web hosts behind the proxy, a registry login (sealed per host in
/// every job) and batches of 100.
fn write_config(root: &Path, n: usize, nats_url: &str) {
    let hosts: String = (0..n)
        .map(|i| format!("      - {}\n", host_name(i)))
        .collect();
    let yaml = format!(
        "service: app\nimage: app\nservers:\n  web:\n    hosts:\n{hosts}proxy:\n  host: app.example.com\n\
         registry:\n  server: registry.local:5000\n  username: ci\n  password:\n    - REGISTRY_PASSWORD\n\
         boot:\n  limit: 100\nx-flotilla:\n  nats:\n    url: {nats_url}\n"
    );
    std::fs::create_dir_all(root.join("config")).unwrap();
    std::fs::create_dir_all(root.join(".kamal")).unwrap();
    std::fs::write(root.join("config/deploy.yml"), yaml).unwrap();
    std::fs::write(
        root.join(".kamal/secrets"),
        "REGISTRY_PASSWORD=bench-password\n",
    )
    .unwrap();
}

/// The sled log, with the time spent in appends counted (the flush is most of it).
struct TimedLog {
    inner: SledLog,
    appends: std::sync::Mutex<(usize, Duration)>,
}

impl TimedLog {
    /// Appends and their total time since the last call.
    fn take(&self) -> (usize, Duration) {
        std::mem::take(&mut *self.appends.lock().unwrap())
    }
}

impl EventLog for TimedLog {
    fn append_batch(&self, events: Vec<NewEvent>) -> Result<Vec<Appended>, LogError> {
        let t = Instant::now();
        let out = self.inner.append_batch(events);
        let mut a = self.appends.lock().unwrap();
        a.0 += 1;
        a.1 += t.elapsed();
        out
    }
    fn read_from(&self, from: Seq) -> Result<Events<'_>, LogError> {
        self.inner.read_from(from)
    }
    fn last_seq(&self) -> Seq {
        self.inner.last_seq()
    }
    fn position_of(&self, id: EventId) -> Result<Option<Seq>, LogError> {
        self.inner.position_of(id)
    }
    fn subscribe(&self) -> Tail {
        self.inner.subscribe()
    }
}

/// CPU time this thread has run, from the kernel's scheduler statistics.
fn thread_cpu() -> Duration {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let ns = text
        .split_whitespace()
        .next()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0);
    Duration::from_nanos(ns)
}

/// One rollout's figures.
#[derive(Debug, Clone, Copy)]
struct Run {
    /// `Engine::run` from call to return.
    total: Duration,
    /// From the call until `DeployStarted` is in the log: heartbeats, consumer binding.
    heartbeats: Duration,
    /// From `DeployStarted` to the outcome in the log.
    rollout: Duration,
    /// Events the engine appended during `run`.
    events: usize,
    /// CPU time of the scheduler's thread during `run`.
    cpu: Duration,
    /// Appends to the log during `run`, and the time they took.
    appends: usize,
    append_time: Duration,
}

fn median_by(runs: &[Run], f: impl Fn(&Run) -> Duration) -> Duration {
    let mut v: Vec<Duration> = runs.iter().map(f).collect();
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Starts N executors on `rt`, enrolled in `log` as setup would, and waits until each has
/// its durable consumer.
fn start_fleet(
    rt: &tokio::runtime::Runtime,
    n: usize,
    url: &str,
    scheduler_key: &str,
    stop: &tokio::sync::watch::Receiver<bool>,
    heartbeat: Duration,
    log: &dyn EventLog,
) {
    let sim = SimConfig {
        latency: Duration::ZERO,
        pull_latency: Duration::ZERO,
        failure_rate: 0.0,
        ..Default::default()
    };
    for i in 0..n {
        let host = host_name(i);
        let executor = Arc::new(Executor::new(
            SimRuntime::new(sim.clone()),
            SimRuntime::new(sim.clone()),
            HostKey::generate(),
            host.clone(),
        ));
        let verifier = JobVerifier::new(scheduler_key, &host).unwrap();
        let signing = flotilla_protocol::identity::ReportSigner::generate();
        let enrolled = flotilla_events::event::HostEnrolled {
            ssh_host_key: format!("SHA256:bench-{host}"),
            sealing_key: executor.host_key().public_key_base64(),
            signing_key: signing.public_key_base64(),
            nats_key: format!("Ubench{i}"),
            replaces: None,
        };
        log.append(flotilla_scheduler::enrolment::event(
            &host, "bench", enrolled,
        ))
        .unwrap();
        let settings = NatsSettings {
            url: url.to_owned(),
            creds: None,
            nkey_seed: None,
            ca: None,
            heartbeat_every: heartbeat,
        };
        rt.spawn(transport::run(
            executor,
            verifier,
            signing,
            Journal::in_memory(),
            settings,
            stop.clone(),
        ));
    }
    let url = url.to_owned();
    rt.block_on(async move {
        let client = async_nats::connect(&url).await.unwrap();
        let js = async_nats::jetstream::new(client);
        // The scheduler makes each host's consumer (executors may not); then each executor
        // binds to its own, which shows as a waiting pull request.
        let stream = js
            .get_or_create_stream(flotilla_protocol::nats::stream_config(
                &subjects::jobs_stream(),
            ))
            .await
            .unwrap();
        let mut consumers = Vec::new();
        for i in 0..n {
            let spec = subjects::job_consumer_spec(&host_name(i));
            let c: async_nats::jetstream::consumer::PullConsumer = stream
                .get_or_create_consumer(
                    &subjects::job_consumer(&host_name(i)),
                    flotilla_protocol::nats::consumer_config(&spec),
                )
                .await
                .unwrap();
            consumers.push(c);
        }
        let deadline = Instant::now() + Duration::from_secs(300);
        for mut c in consumers {
            loop {
                if c.info().await.is_ok_and(|i| i.num_waiting > 0) {
                    break;
                }
                assert!(Instant::now() < deadline, "executors did not bind in 300 s");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
}

fn bench(n: usize, runs: usize, heartbeat: Duration) -> (Duration, Vec<Run>) {
    let nats = Nats::start();
    let project = tempfile::tempdir().unwrap();
    write_config(project.path(), n, &nats.url);
    let config = flotilla_deploy::load(&flotilla_deploy::LoadOptions::new(project.path())).unwrap();
    let log_dir = tempfile::tempdir().unwrap();
    let log = TimedLog {
        inner: SledLog::open(log_dir.path().join("events")).unwrap(),
        appends: Default::default(),
    };
    let signer = JobSigner::generate();

    let executors = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // The scheduler connects first, as on a fleet that has seen deploys: the streams exist.
    let scheduler = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let transport = scheduler
        .block_on(NatsTransport::connect(&nats.url, None))
        .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let up = Instant::now();
    start_fleet(
        &executors,
        n,
        &nats.url,
        &signer.public_key_base64(),
        &stop_rx,
        heartbeat,
        &log,
    );
    let fleet_up = up.elapsed();

    let engine = Engine {
        transport: &transport,
        log: &log,
        signer: &signer,
        stored: None,
    };
    let mut results = Vec::new();
    for r in 0..runs {
        let version = format!("v{}", r + 1);
        let release = Release {
            image: format!("{}:{version}", config.repository()),
            version,
        };
        let run = DeployRun {
            config: &config,
            plan: plan(&config, &release, &PlanContext::default()),
            deploy_id: DeployId::new(),
            kind: DeployKind::Deploy,
            actor: "bench".into(),
            config_digest: "bench".into(),
            policy: Policy {
                batch: Some(Amount::Count(100)),
                step_timeout: Some(Duration::from_secs(config.flotilla.rollout.step_timeout)),
                ..Policy::default()
            },
            heartbeat_wait: Duration::from_secs(60),
        };
        let mut events = 0usize;
        let mut started_at = None;
        let mut watch = |e: &Envelope| {
            events += 1;
            if matches!(e.event, Event::DeployStarted(_)) {
                started_at = Some(Instant::now());
            }
        };
        engine.request(&run, &mut |_| {}).unwrap();
        log.take();
        let cpu0 = thread_cpu();
        let t0 = Instant::now();
        let outcome = scheduler
            .block_on(engine.run(run, &mut watch, &CancellationToken::new()))
            .unwrap();
        let total = t0.elapsed();
        let cpu = thread_cpu().saturating_sub(cpu0);
        let (appends, append_time) = log.take();
        assert_eq!(outcome.outcome, Outcome::Succeeded, "rollout failed");
        assert_eq!(outcome.succeeded.len(), n);
        let started_at = started_at.expect("DeployStarted recorded");
        let heartbeats = started_at - t0;
        results.push(Run {
            total,
            heartbeats,
            rollout: total - heartbeats,
            events,
            cpu,
            appends,
            append_time,
        });
        let last = results.last().unwrap();
        eprintln!(
            "  N={n} run {}: total {:.0} ms (heartbeats {:.0} ms, rollout {:.0} ms), {} events, scheduler CPU {:.0} ms, {} log appends taking {:.0} ms",
            r + 1,
            ms(last.total),
            ms(last.heartbeats),
            ms(last.rollout),
            last.events,
            ms(last.cpu),
            last.appends,
            ms(last.append_time)
        );
    }
    let _ = stop_tx.send(true);
    executors.shutdown_timeout(Duration::from_secs(2));
    drop(transport);
    (fleet_up, results)
}

fn main() {
    let hosts: Vec<usize> = std::env::var("FLOTILLA_BENCH_HOSTS")
        .unwrap_or_else(|_| "10,100,1000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("FLOTILLA_BENCH_HOSTS: numbers"))
        .collect();
    let runs: usize = std::env::var("FLOTILLA_BENCH_RUNS")
        .ok()
        .map(|s| s.parse().expect("FLOTILLA_BENCH_RUNS: a number"))
        .unwrap_or(3)
        .max(1);
    let heartbeat = Duration::from_millis(
        std::env::var("FLOTILLA_BENCH_HEARTBEAT_MS")
            .ok()
            .map(|s| s.parse().expect("FLOTILLA_BENCH_HEARTBEAT_MS: a number"))
            .unwrap_or(5000),
    );
    let mut table = BTreeMap::new();
    for &n in &hosts {
        eprintln!("N={n}: starting nats-server, sled log and {n} simulated executors");
        table.insert(n, bench(n, runs, heartbeat));
    }
    println!(
        "\nmedians of {runs} rollout(s) each; batches of 100, zero-latency simulated steps, executor heartbeat every {} ms",
        heartbeat.as_millis()
    );
    println!(
        "| hosts | fleet up (ms) | total Engine::run (ms) | heartbeat wait (ms) | rollout (ms) | wall per host (ms) | scheduler CPU per host (µs) | events | events/s |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (n, (up, runs)) in &table {
        let total = median_by(runs, |r| r.total);
        let hb = median_by(runs, |r| r.heartbeats);
        let rollout = median_by(runs, |r| r.rollout);
        let cpu = median_by(runs, |r| r.cpu);
        let events = median_by(runs, |r| Duration::from_nanos(r.events as u64)).as_nanos();
        let rate = median_by(runs, |r| {
            Duration::from_secs_f64(r.events as f64 / r.total.as_secs_f64())
        })
        .as_secs_f64();
        println!(
            "| {n} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} | {:.0} | {events} | {:.0} |",
            ms(*up),
            ms(total),
            ms(hb),
            ms(rollout),
            ms(total) / *n as f64,
            cpu.as_secs_f64() * 1e6 / *n as f64,
            rate,
        );
    }
}
