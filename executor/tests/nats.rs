//! The NATS loop against a real `nats-server` (JetStream) on loopback, with the simulated
//! runtime standing in for Docker (the Docker side is proved by the fleet's end-to-end tests):
//! jobs are consumed and reported, and the executor keeps working after the server restarts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_events::{DeployId, Timestamp};
use flotilla_executor::journal::Journal;
use flotilla_executor::runtime::sim::{SimConfig, SimRuntime};
use flotilla_executor::steps::Executor;
use flotilla_executor::transport::{self, NatsSettings};
use flotilla_protocol::sealing::HostKey;
use flotilla_protocol::signing::{JobSigner, JobVerifier};
use flotilla_protocol::subjects;
use flotilla_protocol::wire::{self, *};
use futures::StreamExt as _;

mod support;
use support::Server;

fn job(id: &str, version: &str) -> Job {
    let now = Timestamp::now();
    Job {
        id: id.into(),
        deploy_id: DeployId::from("01DEPLOY"),
        host: "10.0.0.5".into(),
        issued_at: now,
        expires_at: Timestamp::from_unix_ms(now.unix_ms() + 600_000),
        generation: u64::try_from(now.unix_ms()).unwrap(),
        scope: "app".into(),
        steps: vec![
            JobStep::PullImage(PullImage {
                image: format!("r/app:{version}"),
                auth: None,
            }),
            JobStep::StartContainer(StartContainer {
                service: "app".into(),
                role: "web".into(),
                destination: None,
                version: version.into(),
                config: ContainerConfig {
                    image: format!("r/app:{version}"),
                    ..Default::default()
                },
            }),
        ],
    }
}

/// The executor's report key, for checking every report's signature.
static REPORT_KEY: std::sync::OnceLock<flotilla_protocol::identity::ReportVerifier> =
    std::sync::OnceLock::new();

/// Waits for the final event of `job_id` on `reports`.
async fn finished(reports: &mut async_nats::Subscriber, job_id: &str) -> Vec<&'static str> {
    let mut types = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let m = tokio::time::timeout_at(deadline, reports.next())
            .await
            .unwrap_or_else(|_| panic!("job {job_id} not finished; saw {types:?}"))
            .unwrap();
        // Every report is signed with the executor's key, over the exact report bytes.
        let signed = wire::decode::<wire::SignedReport>(&m.payload).unwrap();
        let key = REPORT_KEY.get().expect("the executor's key is known");
        assert!(
            key.verify(&signed.report, &signed.signature),
            "report not signed by the host"
        );
        if let Report::Event(e) = wire::decode::<Report>(&signed.report).unwrap()
            && e.job_id == job_id
        {
            types.push(e.event.event.type_name());
            if e.step.is_none() {
                return types;
            }
        }
    }
}

/// Jobs published for this host run and are reported; after the NATS server goes away and
/// comes back, the executor reconnects by itself and runs the next job; SIGTERM-like
/// shutdown makes `run` return.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumes_jobs_and_survives_a_server_restart() {
    let store = std::env::temp_dir().join(format!("flotilla-exec-nats-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&store);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = Server::start(port, &store);
    let url = format!("nats://127.0.0.1:{port}");

    let signer = JobSigner::generate();
    let config = SimConfig {
        latency: Duration::ZERO,
        pull_latency: Duration::from_millis(5),
        failure_rate: 0.0,
        ..Default::default()
    };
    let executor = Arc::new(Executor::new(
        SimRuntime::new(config.clone()),
        SimRuntime::new(config),
        HostKey::generate(),
        "10.0.0.5",
    ));
    let verifier = JobVerifier::new(&signer.public_key_base64(), "10.0.0.5").unwrap();
    let settings = NatsSettings {
        url: url.clone(),
        creds: None,
        nkey_seed: None,
        ca: None,
        heartbeat_every: Duration::from_secs(1),
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let signing = flotilla_protocol::identity::ReportSigner::generate();
    let _ = REPORT_KEY.set(
        flotilla_protocol::identity::ReportVerifier::new(&signing.public_key_base64()).unwrap(),
    );
    let run = tokio::spawn(transport::run(
        executor,
        verifier,
        signing,
        Journal::in_memory(),
        settings,
        stop_rx,
    ));

    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(&url)
        .await
        .unwrap();
    let mut reports = client
        .subscribe(format!("{}.>", subjects::EVENT_PREFIX))
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client.clone());
    js.get_or_create_stream(flotilla_protocol::nats::stream_config(
        &subjects::jobs_stream(),
    ))
    .await
    .unwrap();
    js.get_or_create_stream(flotilla_protocol::nats::stream_config(
        &subjects::events_stream(),
    ))
    .await
    .unwrap();
    // The scheduler's part: the host's job consumer. Until it exists the executor waits.
    let jobs = js.get_stream(subjects::JOBS_STREAM).await.unwrap();
    let _: async_nats::jetstream::consumer::PullConsumer = jobs
        .get_or_create_consumer(
            &subjects::job_consumer("10.0.0.5"),
            flotilla_protocol::nats::consumer_config(&subjects::job_consumer_spec("10.0.0.5")),
        )
        .await
        .unwrap();
    let publish = |job: Job| {
        let js = js.clone();
        let payload = signer.sign(&job).unwrap();
        async move {
            // The server may still be coming back: retry until the stream stores the job.
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let m = async_nats::jetstream::message::PublishMessage::build()
                    .payload(payload.clone().into())
                    .message_id(&job.id);
                let stored = match js.send_publish(subjects::job_subject(&job.host), m).await {
                    Ok(ack) => ack.await.is_ok(),
                    Err(_) => false,
                };
                if stored {
                    return;
                }
                assert!(Instant::now() < deadline, "could not publish {}", job.id);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };

    publish(job("job-1", "v1")).await;
    assert_eq!(
        finished(&mut reports, "job-1").await,
        ["ImagePulled", "ContainerStarted", "HostSucceeded"]
    );

    server.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _server = Server::start(port, &store);
    publish(job("job-2", "v2")).await;
    assert_eq!(
        finished(&mut reports, "job-2").await,
        ["ImagePulled", "ContainerStarted", "HostSucceeded"]
    );

    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("run returns on shutdown")
        .unwrap()
        .unwrap();
    let _ = std::fs::remove_dir_all(&store);
}
