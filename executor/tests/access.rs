//! NATS as setup configures it (`flotilla_protocol::access`), against a real `nats-server`
//! with nkey authorization on loopback: the host's executor does its whole job with its own
//! credentials, and those credentials can do nothing else. Each attack below was possible on
//! an open NATS; here each must end in the server's permissions violation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use flotilla_events::{DeployId, Timestamp};
use flotilla_executor::journal::Journal;
use flotilla_executor::runtime::sim::{SimConfig, SimRuntime};
use flotilla_executor::steps::Executor;
use flotilla_executor::transport::{self, NatsSettings};
use flotilla_protocol::access::{self, User};
use flotilla_protocol::identity::ReportSigner;
use flotilla_protocol::nats::{consumer_config, stream_config};
use flotilla_protocol::sealing::HostKey;
use flotilla_protocol::signing::{JobSigner, JobVerifier};
use flotilla_protocol::subjects;
use flotilla_protocol::wire::{self, *};
use futures::StreamExt as _;
use support::{Server, free_port};

const H1: &str = "10.0.0.5";
const H2: &str = "10.0.0.6";
/// How long the server may take to answer a violation or a job (it answers in milliseconds).
const ANSWER: Duration = Duration::from_secs(20);

/// A client with `seed`'s credentials whose server errors arrive on the returned channel.
async fn client(
    url: &str,
    seed: &str,
    inbox: &str,
) -> (
    async_nats::Client,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let c = async_nats::ConnectOptions::new()
        .nkey(seed.to_owned())
        .custom_inbox_prefix(inbox)
        .event_callback(move |e| {
            let tx = tx.clone();
            async move {
                if let async_nats::Event::ServerError(async_nats::ServerError::Other(m)) = e {
                    let _ = tx.send(m);
                }
            }
        })
        .connect(url)
        .await
        .expect("a client with enrolled credentials connects");
    (c, rx)
}

/// Waits for the server's permissions violation naming `subject`.
async fn violation(errors: &mut tokio::sync::mpsc::UnboundedReceiver<String>, subject: &str) {
    let quoted = format!("\"{subject}\"");
    loop {
        let e = tokio::time::timeout(ANSWER, errors.recv())
            .await
            .unwrap_or_else(|_| panic!("no permissions violation for {subject}"))
            .expect("error channel open");
        if e.contains("Permissions Violation") && e.contains(&quoted) {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_credentials_reach_only_the_hosts_own_subjects() {
    let dir = tempfile::tempdir().unwrap();
    let operator = nkeys::KeyPair::new_user();
    let h1 = nkeys::KeyPair::new_user();
    let h2 = nkeys::KeyPair::new_user();
    let users = [
        User {
            nkey: operator.public_key(),
            permissions: access::operator_permissions(),
        },
        User {
            nkey: h1.public_key(),
            permissions: access::host_permissions(H1),
        },
        User {
            nkey: h2.public_key(),
            permissions: access::host_permissions(H2),
        },
    ];
    let port = free_port();
    let _server = Server::start_with_config(port, dir.path(), &access::authorization_conf(&users));
    let url = format!("nats://127.0.0.1:{port}");

    // Without credentials, or with a key nobody enrolled, nothing connects: no passive
    // subscriber, no app container on a host.
    assert!(
        async_nats::connect(&url).await.is_err(),
        "anonymous connection admitted"
    );
    let stranger = nkeys::KeyPair::new_user().seed().unwrap();
    assert!(
        async_nats::ConnectOptions::new()
            .nkey(stranger)
            .connect(&url)
            .await
            .is_err(),
        "an unknown key was admitted"
    );

    // The operator (scheduler) makes the streams and each host's consumer.
    let (op, _) = client(&url, &operator.seed().unwrap(), "_INBOX").await;
    let js = async_nats::jetstream::new(op.clone());
    let jobs = js
        .get_or_create_stream(stream_config(&subjects::jobs_stream()))
        .await
        .unwrap();
    js.get_or_create_stream(stream_config(&subjects::events_stream()))
        .await
        .unwrap();
    js.get_or_create_stream(stream_config(&subjects::lock_bucket_stream()))
        .await
        .unwrap();
    for h in [H1, H2] {
        let _: async_nats::jetstream::consumer::PullConsumer = jobs
            .get_or_create_consumer(
                &subjects::job_consumer(h),
                consumer_config(&subjects::job_consumer_spec(h)),
            )
            .await
            .unwrap();
    }
    let mut events = op
        .subscribe(format!("{}.>", subjects::EVENT_PREFIX))
        .await
        .unwrap();

    // The real executor of H1, with H1's credentials only, takes a job and reports it.
    let sim = SimConfig {
        latency: Duration::ZERO,
        pull_latency: Duration::ZERO,
        failure_rate: 0.0,
        ..Default::default()
    };
    let executor = Arc::new(Executor::new(
        SimRuntime::new(sim.clone()),
        SimRuntime::new(sim),
        HostKey::generate(),
        H1,
    ));
    let scheduler = JobSigner::generate();
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(transport::run(
        executor,
        JobVerifier::new(&scheduler.public_key_base64(), H1).unwrap(),
        ReportSigner::generate(),
        Journal::in_memory(),
        NatsSettings {
            url: url.clone(),
            creds: None,
            nkey_seed: Some(zeroize::Zeroizing::new(h1.seed().unwrap())),
            ca: None,
            heartbeat_every: Duration::from_secs(1),
        },
        stop_rx,
    ));
    let now = Timestamp::now();
    let job = Job {
        id: "01ACCESSJOB".into(),
        deploy_id: DeployId::from("01ACCESS"),
        host: H1.into(),
        issued_at: now,
        expires_at: Timestamp::from_unix_ms(now.unix_ms() + 600_000),
        generation: 1,
        scope: "app".into(),
        steps: vec![JobStep::PullImage(PullImage {
            image: "r/app:v1".into(),
            auth: None,
        })],
    };
    js.publish(
        subjects::job_subject(H1),
        scheduler.sign(&job).unwrap().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let finished = tokio::time::timeout(ANSWER, async {
        while let Some(m) = events.next().await {
            let signed: SignedReport = wire::decode(&m.payload).unwrap();
            if let Report::Event(e) = wire::decode::<Report>(&signed.report).unwrap()
                && e.step.is_none()
            {
                return (m.subject.to_string(), e.event.event.type_name());
            }
        }
        panic!("event subscription ended")
    })
    .await
    .expect("H1's executor finished its job with its own credentials");
    assert_eq!(
        finished,
        ("flotilla.evt.01access.10-0-0-5".to_owned(), "HostSucceeded")
    );

    // Everything else H1's credentials try is refused by the server.
    let (attacker, mut errors) =
        client(&url, &h1.seed().unwrap(), &access::host_inbox_prefix(H1)).await;
    let consumer2 = subjects::job_consumer(H2);
    let consumer1 = subjects::job_consumer(H1);
    for subject in [
        // Read every host's jobs (and their sealed secrets), or everything at all.
        "flotilla.job.>",
        ">",
        // Read another host's replies (its pulled jobs arrive there).
        "_INBOX_10-0-0-6.>",
    ] {
        let _sub = attacker.subscribe(subject).await.unwrap();
        attacker.flush().await.unwrap();
        violation(&mut errors, subject).await;
    }
    for subject in [
        // Report for another host, or inject a job for it.
        "flotilla.evt.01access.10-0-0-6".to_owned(),
        "flotilla.job.10-0-0-6".to_owned(),
        // Make, change or delete streams and consumers: recreate its own consumer with
        // another filter, delete another host's.
        "$JS.API.STREAM.CREATE.EVIL".to_owned(),
        format!("$JS.API.STREAM.DELETE.{}", subjects::JOBS_STREAM),
        format!(
            "$JS.API.CONSUMER.CREATE.{}.{consumer1}",
            subjects::JOBS_STREAM
        ),
        format!(
            "$JS.API.CONSUMER.DURABLE.CREATE.{}.{consumer1}",
            subjects::JOBS_STREAM
        ),
        format!(
            "$JS.API.CONSUMER.DELETE.{}.{consumer2}",
            subjects::JOBS_STREAM
        ),
        // Pull another host's jobs through its consumer.
        format!(
            "$JS.API.CONSUMER.MSG.NEXT.{}.{consumer2}",
            subjects::JOBS_STREAM
        ),
        // Write the deploy lock.
        format!("$KV.{}.testapp", subjects::LOCK_BUCKET),
    ] {
        attacker
            .publish(subject.clone(), "forged".into())
            .await
            .unwrap();
        attacker.flush().await.unwrap();
        violation(&mut errors, &subject).await;
    }
}
