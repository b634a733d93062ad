//! Per-step overhead of the executor over the raw Docker API call it makes, on a real engine.
//!
//! `FLOTILLA_BENCH_DOCKER=/path/docker.sock FLOTILLA_BENCH_IMAGE=registry/testapp:v1 \
//!   cargo bench -p flotilla-executor --bench step_overhead`
//! (`scripts/bench/executor.sh` brings up a one-host fleet and runs this against it.)
//! With the argument `keygen` it prints a fresh scheduler public key and exits.
//!
//! Each step below makes exactly one Docker call on the idempotent path (the container
//! already runs), so step time minus raw-call time is what the step logic, event building and
//! report encoding add.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use flotilla_events::{DeployId, Timestamp};
use flotilla_executor::runtime::Runtime as _;
use flotilla_executor::runtime::docker::DockerRuntime;
use flotilla_executor::runtime::sim::SimRuntime;
use flotilla_executor::steps::Executor;
use flotilla_protocol::sealing::{HostKey, seal};
use flotilla_protocol::signing::JobSigner;
use flotilla_protocol::wire::{self, *};

const ROUNDS: usize = 300;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if std::env::args().any(|a| a == "keygen") {
        println!("{}", JobSigner::generate().public_key_base64());
        return;
    }
    let (Ok(socket), Ok(image)) = (
        std::env::var("FLOTILLA_BENCH_DOCKER"),
        std::env::var("FLOTILLA_BENCH_IMAGE"),
    ) else {
        eprintln!(
            "step_overhead: set FLOTILLA_BENCH_DOCKER and FLOTILLA_BENCH_IMAGE (see scripts/bench/executor.sh); skipping"
        );
        return;
    };
    let docker = DockerRuntime::connect(socket.as_ref())
        .await
        .expect("docker");
    let raw = docker.client().clone();
    let key = HostKey::generate();
    let sealed = seal(&key.public_key_base64(), "bench-secret").unwrap();
    let ex = Executor::new(docker, SimRuntime::default(), key, "bench-host");
    let start = StartContainer {
        service: "bench".into(),
        role: "web".into(),
        destination: None,
        version: "v1".into(),
        config: ContainerConfig {
            image: image.clone(),
            env: vec![("A".into(), "b".into())],
            secret_env: vec![("SECRET".into(), sealed)],
            ..Default::default()
        },
    };
    ex.run_step(&JobStep::PullImage(PullImage { image, auth: None }))
        .await
        .expect("pull");
    ex.run_step(&JobStep::StartContainer(start.clone()))
        .await
        .expect("start");
    let name = start.container_name();
    let job = Job {
        id: "01BENCH".into(),
        deploy_id: DeployId::from("bench"),
        host: "bench-host".into(),
        issued_at: Timestamp::now(),
        expires_at: Timestamp::now(),
        generation: 1,
        scope: "bench".into(),
        steps: vec![],
    };

    let mut raw_times = Vec::new();
    let mut existing = Vec::new();
    let mut started = Vec::new();
    // Interleaved, so load on the shared machine hits all three alike.
    for _ in 0..ROUNDS {
        let t = Instant::now();
        raw.inspect_container(
            &name,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .unwrap();
        raw_times.push(t.elapsed());

        for (step, times) in [
            (
                JobStep::StartExisting(ContainerRef {
                    container: name.clone(),
                }),
                &mut existing,
            ),
            (JobStep::StartContainer(start.clone()), &mut started),
        ] {
            let t = Instant::now();
            let events = ex.run_step(&step).await.unwrap();
            for (k, e) in events.into_iter().enumerate() {
                let report = Report::Event(JobEvent {
                    job_id: job.id.clone(),
                    step: Some(0),
                    event: ex.envelope(&job, Some(0), k, e),
                });
                std::hint::black_box(wire::encode(&report).unwrap());
            }
            times.push(t.elapsed());
        }
    }
    let raw_m = median(raw_times);
    println!("rounds: {ROUNDS}");
    println!(
        "raw inspect_container (bollard): median {:.0} us",
        us(raw_m)
    );
    for (what, times) in [
        ("StartExisting step (inspect + event + encode)", existing),
        (
            "StartContainer step, already running (inspect + unseal + event + encode)",
            started,
        ),
    ] {
        let m = median(times);
        println!(
            "{what}: median {:.0} us, overhead {:.0} us",
            us(m),
            us(m.saturating_sub(raw_m))
        );
    }
    ex.runtime.remove(&name).await.unwrap();
}
