//! The control plane's cost: the same deploy run in process (embedded mode) and through the
//! scheduler service (asked over NATS, its events followed on `FLOTILLA_LOG` until the
//! deploy's last event, as the CLI does), and the time a standby takes to resume a lost
//! leader's deploy.
//!
//! `cargo bench -p flotilla-e2e --bench control`. Environment: `FLOTILLA_BENCH_HOSTS`
//! (default `3`; see BENCHMARKS.md for larger N), `FLOTILLA_BENCH_RUNS` (default 5; the median is reported),
//! `FLOTILLA_BENCH_STEP_MS` (default 0: each simulated step takes this long; 42 gives a
//! 3-host deploy about the length of the real one on the local fleet, 670-700 ms, so the ratio
//! is the service's cost on a deploy's real length; 0 shows the cost alone).
//!
//! The two are interleaved run by run (after one unmeasured deploy each). The fleet is the
//! procedure suite's: the in-memory transport with simulated executors
//! (zero-latency steps), so what differs between the two columns is the service path alone:
//! the request over a real `nats-server -js` on loopback, the config rendered and decoded,
//! secrets sealed and opened, every event published to `FLOTILLA_LOG` and read back by the
//! follower. The failover figure uses the production lease timings (`LEASE_TTL`,
//! `LEASE_POLL`): from the leader dropped mid-rollout to the new leader's first event.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "../tests/procedure/harness.rs"]
mod harness;

use flotilla_deploy::config::{LoadOptions, render};
use flotilla_events::{DeployId, Envelope, Event, EventLog, MemoryLog, NewEvent, Timestamp};
use flotilla_protocol::control::{
    ConfigFile, Request, Response, Rollout, RolloutKind, log_subject,
};
use flotilla_protocol::sealing::{HostKey, seal};
use flotilla_protocol::signing::JobSigner;
use flotilla_protocol::wire;
use flotilla_scheduler::service::lease::{Contender, LeaseTimes};
use flotilla_scheduler::service::{Service, ask, ha};
use flotilla_scheduler::transport::memory::MemoryTransport;
use futures::StreamExt;
use harness::{Behaviour, World};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const PATIENCE: Duration = Duration::from_secs(60);

struct Nats {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Nats {
    fn start() -> Nats {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new("nats-server")
            .args(["--jetstream", "--addr", "127.0.0.1", "--port", "-1"])
            .arg("--store_dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nats-server runs (apt-get install nats-server)");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let url = loop {
            let line = lines.next().expect("nats-server address").unwrap();
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

/// A service over `world`'s fleet with a log holding the world's log (`seeded`) or nothing
/// (a standby).
async fn service(
    world: &World,
    client: &async_nats::Client,
    key: Arc<HostKey>,
    seeded: bool,
) -> Service<MemoryTransport> {
    let log = Arc::new(MemoryLog::new());
    if seeded {
        for e in world.log.read_all().unwrap() {
            // The whole log, in-process deploys included: job generations continue from it
            // (the executors refuse a generation older than they applied).
            log.append(NewEvent::from(e.unwrap())).unwrap();
        }
    }
    Service {
        transport: world.transport.clone(),
        log,
        signer: Arc::new(JobSigner::from_base64(&world.signer.secret_base64()).unwrap()),
        key,
        client: client.clone(),
        root: world.root.clone(),
        machine: "control".into(),
        observe: Arc::new(|_| {}),
    }
}

async fn rollout(world: &World, client: &async_nats::Client, version: &str) -> Rollout {
    let Response::Key { public } = ask(client, &Request::Key, PATIENCE).await.unwrap() else {
        panic!("no key");
    };
    let files = render(&LoadOptions {
        root: world.root.clone(),
        config_file: "config/deploy.yml".into(),
        destination: None,
        env: BTreeMap::new(),
    })
    .unwrap();
    Rollout {
        kind: RolloutKind::Deploy {
            version: version.into(),
        },
        deploy_id: DeployId::new(),
        config: files
            .into_iter()
            .map(|f| ConfigFile {
                path: f.path.display().to_string(),
                text: f.text,
            })
            .collect(),
        destination: None,
        secrets: world
            .config
            .secrets
            .iter()
            .map(|(name, value)| (name.to_owned(), seal(&public, value.expose()).unwrap()))
            .collect(),
        hosts: vec![],
        roles: vec![],
        primary: false,
        preamble: vec![],
        actor: "bench".into(),
        machine: "bench".into(),
        lock_wait_ms: None,
    }
}

/// Where a deploy through the service spends its time, from the events' own timestamps
/// (milliseconds): asked to its first event (request, config, secrets, plan, lock), first
/// event to last (the rollout), and last event appended to the follower holding it (the
/// publish to `FLOTILLA_LOG` and the delivery).
#[derive(Debug, Clone, Copy)]
struct Phases {
    start: i64,
    rollout: i64,
    follow: i64,
}

/// Asks for a deploy and follows it to its last event (`LockReleased`), as the CLI does.
async fn deploy_through_service(
    world: &World,
    client: &async_nats::Client,
    version: &str,
) -> Phases {
    let asked_at = Timestamp::now();
    let asked = rollout(world, client, version).await;
    let mut follow = client
        .subscribe(log_subject(asked.deploy_id.as_str()))
        .await
        .unwrap();
    let answer = ask(client, &Request::Rollout(Box::new(asked)), PATIENCE)
        .await
        .unwrap();
    assert!(matches!(answer, Response::Accepted { .. }), "{answer:?}");
    // Followed on the runtime's workers, not on the thread the service's rollouts run on:
    // the CLI that follows a deploy is another process, usually on another machine.
    let version = version.to_owned();
    tokio::spawn(async move {
        let mut completed = false;
        let mut failed = None;
        let mut first = None;
        loop {
            let message = tokio::time::timeout(PATIENCE, follow.next())
                .await
                .expect("events")
                .unwrap();
            let event: Envelope = wire::decode(&message.payload).unwrap();
            let first = *first.get_or_insert(event.at);
            match &event.event {
                Event::DeployCompleted(_) => completed = true,
                // Why a run did not complete, in the panic below (the first host's reason).
                Event::HostFailed(f) if failed.is_none() => {
                    failed = Some(format!("{:?}: {}", event.host, f.error));
                }
                Event::LockReleased(_) => {
                    assert!(completed, "deploy {version} did not complete: {failed:?}");
                    return Phases {
                        start: first.millis_since(asked_at),
                        rollout: event.at.millis_since(first),
                        follow: Timestamp::now().millis_since(event.at),
                    };
                }
                _ => {}
            }
        }
    })
    .await
    .unwrap()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn env_list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(|s| s.trim().parse().unwrap())
        .collect()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let runs = env_list("FLOTILLA_BENCH_RUNS", "5")[0];
    let nats = Nats::start();
    let step = Duration::from_millis(env_list("FLOTILLA_BENCH_STEP_MS", "0")[0] as u64);
    println!("hosts  in-process  through-service  ratio   (median of {runs}, each step {step:?})");
    for n in env_list("FLOTILLA_BENCH_HOSTS", "3") {
        runtime.block_on(async {
            let hosts: Vec<String> = (1..=n).map(|i| format!("h{i}")).collect();
            let names: Vec<&str> = hosts.iter().map(String::as_str).collect();
            let mut world = World::new(&names, "{max_parallel: 100}");
            world.latency = step;
            for h in &names {
                world.executor(h, Behaviour::Healthy);
            }
            // One deploy before the service starts, so both logs hold the same history.
            world.deploy("warm").await.1.unwrap();
            let client = async_nats::connect(&nats.url).await.unwrap();
            let svc = service(&world, &client, Arc::new(HostKey::generate()), true).await;
            let stop = CancellationToken::new();
            let serve = svc.bind().await.unwrap().serve(stop.clone());
            // Interleaved, run by run, so a change in the machine's load falls on both
            // columns alike; the first through the service (streams and consumers created)
            // is not counted either.
            let measure = async {
                deploy_through_service(&world, &client, "swarm").await;
                let (mut embedded, mut through, mut phases) = (Vec::new(), Vec::new(), Vec::new());
                for r in 0..runs {
                    let t = Instant::now();
                    let (_, finished) = world.deploy(&format!("e{r}")).await;
                    finished.unwrap();
                    embedded.push(t.elapsed());
                    let t = Instant::now();
                    phases.push(deploy_through_service(&world, &client, &format!("s{r}")).await);
                    through.push(t.elapsed());
                }
                stop.cancel();
                (embedded, through, phases)
            };
            let (served, (embedded, through, phases)) = tokio::join!(serve, measure);
            served.unwrap();
            let (e, s) = (median(embedded), median(through));
            let ms = |f: fn(&Phases) -> i64| {
                let mut v: Vec<i64> = phases.iter().map(f).collect();
                v.sort_unstable();
                v[v.len() / 2]
            };
            println!(
                "{n:>5}  {:>10.1?}  {:>15.1?}  {:>5.2}   service: asked to first event {} ms, \
                 rollout {} ms, last event to follower {} ms",
                e,
                s,
                s.as_secs_f64() / e.as_secs_f64(),
                ms(|p| p.start),
                ms(|p| p.rollout),
                ms(|p| p.follow),
            );
        });
    }
    runtime.block_on(failover(&nats, runs.min(3)));
}

/// Leader lost mid-rollout (dropped after the first host's pull) to the new leader's first
/// event on `FLOTILLA_LOG`, with the production lease timings.
async fn failover(nats: &Nats, runs: usize) {
    let mut times = Vec::new();
    for _ in 0..runs {
        let world = World::with_latency(
            "{max_parallel: 1}",
            [Behaviour::Healthy, Behaviour::Healthy, Behaviour::Healthy],
            Duration::from_millis(200),
        );
        let client = async_nats::connect(&nats.url).await.unwrap();
        // A fresh bucket and log stream for each run: another run's lease must not linger.
        let js = async_nats::jetstream::new(client.clone());
        let _ = js.delete_stream("KV_flotilla-leader").await;
        let _ = js.delete_stream("KV_flotilla-rollouts").await;
        let _ = js.delete_stream("FLOTILLA_LOG").await;
        let key = Arc::new(HostKey::generate());
        let leader = service(&world, &client, key.clone(), true).await;
        let standby = service(&world, &client, key, false).await;
        let a = Contender::open(&js, "a", LeaseTimes::default())
            .await
            .unwrap();
        let b = Contender::open(&js, "b", LeaseTimes::default())
            .await
            .unwrap();
        let kill = CancellationToken::new();
        let shutdown = CancellationToken::new();
        let leading = CancellationToken::new();
        let run_leader = async {
            tokio::select! {
                r = ha::run(leader, a, shutdown.clone()) => { r.unwrap(); }
                () = kill.cancelled() => {}
            }
        };
        let run_standby = async {
            leading.cancelled().await;
            ha::run(standby, b, shutdown.clone()).await.unwrap();
        };
        let measure = async {
            while ask(&client, &Request::Key, PATIENCE).await.is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            leading.cancel();
            let asked = rollout(&world, &client, "v1").await;
            let mut follow = client
                .subscribe(log_subject(asked.deploy_id.as_str()))
                .await
                .unwrap();
            ask(&client, &Request::Rollout(Box::new(asked)), PATIENCE)
                .await
                .unwrap();
            loop {
                let message = follow.next().await.unwrap();
                let event: Envelope = wire::decode(&message.payload).unwrap();
                if event.type_name() == "ImagePulled" {
                    break;
                }
            }
            // The standby must be following before the leader goes.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let lost = Instant::now();
            kill.cancel();
            let first = loop {
                let message = tokio::time::timeout(PATIENCE, follow.next())
                    .await
                    .unwrap()
                    .unwrap();
                let event: Envelope = wire::decode(&message.payload).unwrap();
                if event.type_name() == "DeployStarted" {
                    break lost.elapsed();
                }
            };
            loop {
                let message = follow.next().await.unwrap();
                let event: Envelope = wire::decode(&message.payload).unwrap();
                if matches!(event.event, Event::LockReleased(_)) {
                    break;
                }
            }
            shutdown.cancel();
            first
        };
        let ((), (), took) = tokio::join!(run_leader, run_standby, measure);
        times.push(took);
    }
    println!(
        "failover (leader lost to the resumed run's DeployStarted): median {:.1?} of {runs}",
        median(times)
    );
}
