//! The scheduler service in process: `flotilla_scheduler::service` answering requests on a
//! real NATS server on loopback, over the in-memory fleet transport with simulated executors
//! (the procedure suite's harness). Proves the request protocol: a deploy asked over NATS
//! runs in the service, every event reaches `FLOTILLA_LOG` in log order, secrets cross NATS
//! only sealed, history and rollback come from the service's log alone, and stopping the
//! service cancels a running deploy cleanly. No root, no Docker.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "../procedure/harness.rs"]
mod harness;

use flotilla_deploy::config::{LoadOptions, render};
use flotilla_events::event::DeployKind;
use flotilla_events::{DeployId, Envelope, Event, EventLog, MemoryLog, NewEvent};
use flotilla_protocol::control::{
    ConfigFile, LOG_STREAM, Request, Response, Rollout, RolloutKind, log_subject,
};
use flotilla_protocol::sealing::{HostKey, seal};
use flotilla_protocol::signing::JobSigner;
use flotilla_protocol::wire;
use flotilla_scheduler::service::{Service, ask, published_through};
use flotilla_scheduler::transport::memory::MemoryTransport;
use futures::StreamExt;
use harness::{APP_SECRET, Behaviour, World};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long a test waits for one answer or one event before it fails (never a pass/fail
/// timing: a healthy run answers in milliseconds).
const PATIENCE: Duration = Duration::from_secs(30);

/// `nats-server -js` on a random loopback port, stopped on drop.
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
            let line = lines
                .next()
                .expect("nats-server printed its address")
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

/// The service over `world`'s fleet, with its own log holding what `world` enrolled.
struct Control {
    service: Option<Service<MemoryTransport>>,
    log: Arc<MemoryLog>,
    client: async_nats::Client,
}

async fn control(world: &World, nats: &Nats) -> Control {
    control_with(world, nats, Arc::new(HostKey::generate()), true).await
}

/// [`control`] with a given sealing key (HA instances share one), its log seeded with the
/// world's enrolments or empty (a standby fills it from `FLOTILLA_LOG`).
async fn control_with(world: &World, nats: &Nats, key: Arc<HostKey>, seeded: bool) -> Control {
    let log = Arc::new(MemoryLog::new());
    for e in world.log.read_all().unwrap() {
        let e = e.unwrap();
        if !seeded {
            break;
        }
        log.append(NewEvent {
            id: e.id,
            deploy_id: e.deploy_id,
            at: e.at,
            host: e.host,
            schema_version: e.schema_version,
            actor: e.actor,
            event: e.event,
        })
        .unwrap();
    }
    let client = async_nats::connect(&nats.url).await.unwrap();
    let service = Service {
        transport: world.transport.clone(),
        log: log.clone(),
        signer: Arc::new(JobSigner::from_base64(&world.signer.secret_base64()).unwrap()),
        key,
        client: client.clone(),
        root: world.root.clone(),
        machine: "control".into(),
        observe: Arc::new(|_| {}),
    };
    Control {
        service: Some(service),
        log,
        client,
    }
}

/// A rollout as the CLI asks for it: the config rendered from the project, every secret
/// sealed to the key the service answered `Key` with.
async fn rollout(world: &World, client: &async_nats::Client, kind: RolloutKind) -> Rollout {
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
        kind,
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
        actor: "tester".into(),
        machine: "laptop".into(),
        lock_wait_ms: None,
    }
}

/// The procedure's last event once it held the lock: the outcome comes before it.
fn ends_deploy(e: &Envelope) -> bool {
    matches!(e.event, Event::LockReleased(_))
}

/// Whether the deploy completed on every host it asked for.
fn completed(events: &[Envelope]) -> bool {
    events
        .iter()
        .any(|e| matches!(e.event, Event::DeployCompleted(_)))
}

/// Asks for `rollout` while following its subject, as the CLI does: every event of the
/// deploy as published, up to the one that ends it, and every payload's raw bytes.
async fn run_and_follow(
    client: &async_nats::Client,
    rollout: Rollout,
) -> (Response, Vec<Envelope>, Vec<u8>) {
    let mut follow = client
        .subscribe(log_subject(rollout.deploy_id.as_str()))
        .await
        .unwrap();
    let answer = ask(client, &Request::Rollout(Box::new(rollout)), PATIENCE)
        .await
        .unwrap();
    let mut events = Vec::new();
    let mut raw = Vec::new();
    if !matches!(answer, Response::Accepted { .. }) {
        return (answer, events, raw);
    }
    loop {
        let message = tokio::time::timeout(PATIENCE, follow.next())
            .await
            .expect("the deploy's events keep coming")
            .expect("subscription open");
        raw.extend_from_slice(&message.payload);
        let event: Envelope = wire::decode(&message.payload).unwrap();
        let done = ends_deploy(&event);
        events.push(event);
        if done {
            return (answer, events, raw);
        }
    }
}

/// A deploy asked over NATS runs in the service: it is accepted, every host succeeds, the
/// events a client follows are exactly the service's log of that deploy in order, the
/// secrets crossed NATS only sealed, and after the service stops `FLOTILLA_LOG` ends where
/// the log ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_asked_over_nats_runs_in_the_service() {
    let world = World::with(
        "{}",
        [Behaviour::Healthy, Behaviour::Healthy, Behaviour::Healthy],
    );
    let nats = Nats::start();
    let mut control = control(&world, &nats).await;
    let stop = CancellationToken::new();
    let serve = control
        .service
        .take()
        .unwrap()
        .bind()
        .await
        .unwrap()
        .serve(stop.clone());
    let client = control.client.clone();
    let test = async {
        let asked = rollout(
            &world,
            &client,
            RolloutKind::Deploy {
                version: "v1".into(),
            },
        )
        .await;
        let id = asked.deploy_id.clone();
        let (answer, events, raw) = run_and_follow(&client, asked).await;
        assert_eq!(
            answer,
            Response::Accepted {
                deploy_id: id.clone()
            }
        );
        assert!(completed(&events), "{events:?}");
        let succeeded: Vec<_> = events
            .iter()
            .filter(|e| matches!(e.event, Event::HostSucceeded(_)))
            .filter_map(|e| e.host.clone())
            .collect();
        assert_eq!(succeeded.len(), 3, "{succeeded:?}");
        let text = String::from_utf8_lossy(&raw);
        assert!(!text.contains(APP_SECRET), "a secret crossed NATS in clear");
        // History from the service: the same events, in the same order, as the log.
        let Response::Events { events: page, next } = ask(
            &client,
            &Request::Events {
                deploy_id: Some(id.clone()),
                from: 1,
            },
            PATIENCE,
        )
        .await
        .unwrap() else {
            panic!("no events");
        };
        assert_eq!(next, None);
        assert_eq!(page, control.log.read_deploy(&id).unwrap());
        assert_eq!(events, page[..events.len()].to_vec());
        stop.cancel();
    };
    let (served, ()) = tokio::join!(serve, test);
    served.unwrap();
    let js = async_nats::jetstream::new(control.client.clone());
    assert_eq!(
        published_through(&js).await.unwrap(),
        control.log.last_seq(),
        "{LOG_STREAM} ends where the log ends"
    );
}

/// A rollback asked with nothing but the request (an empty project directory has no log):
/// the service plans it from its own history, back to the release before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_is_planned_from_the_service_log() {
    let world = World::with(
        "{}",
        [Behaviour::Healthy, Behaviour::Healthy, Behaviour::Healthy],
    );
    let nats = Nats::start();
    let mut control = control(&world, &nats).await;
    let stop = CancellationToken::new();
    let serve = control
        .service
        .take()
        .unwrap()
        .bind()
        .await
        .unwrap()
        .serve(stop.clone());
    let client = control.client.clone();
    let test = async {
        for version in ["v1", "v2"] {
            let asked = rollout(
                &world,
                &client,
                RolloutKind::Deploy {
                    version: version.into(),
                },
            )
            .await;
            let (_, events, _) = run_and_follow(&client, asked).await;
            assert!(completed(&events), "{events:?}");
        }
        let asked = rollout(&world, &client, RolloutKind::Rollback { version: None }).await;
        let (answer, events, _) = run_and_follow(&client, asked).await;
        assert!(matches!(answer, Response::Accepted { .. }), "{answer:?}");
        let requested = events
            .iter()
            .find_map(|e| match &e.event {
                Event::DeployRequested(r) => Some(r.clone()),
                _ => None,
            })
            .expect("the rollback is requested");
        assert_eq!(requested.kind, DeployKind::Rollback);
        assert_eq!(requested.version, "v1");
        assert!(completed(&events), "{events:?}");
        stop.cancel();
    };
    let (served, ()) = tokio::join!(serve, test);
    served.unwrap();
}

/// While a deploy runs, `Status` lists it and a second rollout is refused with the lock
/// holder, recording nothing. Stopping the service (SIGTERM) mid-rollout cancels the deploy
/// as Ctrl-C of the CLI did: `DeployCancelled` is recorded and published, the lock is
/// released, and the service returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_service_cancels_a_running_deploy() {
    // h3 takes its job and never answers; the step timeout bounds how long it holds the stop.
    let world = World::with(
        "{step_timeout: 2}",
        [Behaviour::Healthy, Behaviour::Healthy, Behaviour::Silent],
    );
    let nats = Nats::start();
    let mut control = control(&world, &nats).await;
    let stop = CancellationToken::new();
    let serve = control
        .service
        .take()
        .unwrap()
        .bind()
        .await
        .unwrap()
        .serve(stop.clone());
    let client = control.client.clone();
    let transport = world.transport.clone();
    let test = async {
        let asked = rollout(
            &world,
            &client,
            RolloutKind::Deploy {
                version: "v1".into(),
            },
        )
        .await;
        let id = asked.deploy_id.clone();
        let mut follow = client.subscribe(log_subject(id.as_str())).await.unwrap();
        let answer = ask(&client, &Request::Rollout(Box::new(asked)), PATIENCE)
            .await
            .unwrap();
        assert!(matches!(answer, Response::Accepted { .. }), "{answer:?}");
        let Response::Status { running } = ask(&client, &Request::Status, PATIENCE).await.unwrap()
        else {
            panic!("no status");
        };
        assert_eq!(running.len(), 1);
        assert_eq!(running[0].deploy_id, id);
        let second = rollout(
            &world,
            &client,
            RolloutKind::Redeploy {
                version: "v1".into(),
            },
        )
        .await;
        let second_id = second.deploy_id.clone();
        let answer = ask(&client, &Request::Rollout(Box::new(second)), PATIENCE)
            .await
            .unwrap();
        let Response::Refused { reason, hint } = answer else {
            panic!("a second rollout under the lock: {answer:?}");
        };
        assert!(reason.contains("tester"), "names the holder: {reason}");
        assert!(hint.is_some_and(|h| h.contains("--lock-wait")));
        assert!(control.log.read_deploy(&second_id).unwrap().is_empty());
        stop.cancel();
        let mut last = None;
        let mut cancelled = false;
        while let Ok(Some(message)) = tokio::time::timeout(PATIENCE, follow.next()).await {
            let event: Envelope = wire::decode(&message.payload).unwrap();
            cancelled |= matches!(event.event, Event::DeployCancelled(_));
            if ends_deploy(&event) {
                last = Some(event);
                break;
            }
        }
        assert!(cancelled, "DeployCancelled was published");
        assert!(last.is_some(), "the deploy ended on the stream");
        id
    };
    let (served, id) = tokio::join!(serve, test);
    served.unwrap();
    let key = flotilla_scheduler::transport::lock::lock_key("app", None);
    assert_eq!(transport.lock_holder(&key), None, "the lock is released");
    let story: Vec<_> = control
        .log
        .read_deploy(&id)
        .unwrap()
        .iter()
        .filter(|e| e.host.is_none())
        .map(Envelope::type_name)
        .collect();
    assert!(story.contains(&"DeployCancelled"), "{story:?}");
    assert!(story.contains(&"LockReleased"), "{story:?}");
}

/// Absence has no event to await: how long the test watches for a job that must not go out
/// while the stream is gone (without the wait on the stream, jobs go out within milliseconds
/// of the deploy's first events).
const HOLD_WINDOW: Duration = Duration::from_secs(2);

/// Reads the service's log tail until an event of `id` matches `wanted`.
async fn await_logged(
    tail: &mut flotilla_events::log::Tail,
    id: &DeployId,
    wanted: impl Fn(&Event) -> bool,
) {
    tokio::time::timeout(PATIENCE, async {
        loop {
            match tail.recv().await {
                Ok(e) if e.deploy_id == *id && wanted(&e.event) => return,
                Ok(_) | Err(flotilla_events::log::TailError::Lagged { .. }) => {}
                Err(flotilla_events::log::TailError::Closed) => panic!("the log closed"),
            }
        }
    })
    .await
    .expect("the event was logged");
}

/// The leader acts only on what `FLOTILLA_LOG` holds, so a scheduler taking over never
/// misses what the fleet did: while the stream cannot store (it is gone), the deploy starts
/// in the service's log but no job goes out; once the stream is back, the service publishes
/// the whole log to it, the deploy completes on every host, and the stream ends where the log
/// ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_job_goes_out_before_flotilla_log_holds_the_deploy() {
    let world = World::with(
        "{}",
        [Behaviour::Healthy, Behaviour::Healthy, Behaviour::Healthy],
    );
    let nats = Nats::start();
    let mut control = control(&world, &nats).await;
    let stop = CancellationToken::new();
    let serve = control
        .service
        .take()
        .unwrap()
        .bind()
        .await
        .unwrap()
        .serve(stop.clone());
    let client = control.client.clone();
    let js = async_nats::jetstream::new(client.clone());
    let transport = world.transport.clone();
    let mut tail = control.log.subscribe();
    let test = async {
        js.delete_stream(LOG_STREAM).await.unwrap();
        let asked = rollout(
            &world,
            &client,
            RolloutKind::Deploy {
                version: "v1".into(),
            },
        )
        .await;
        let id = asked.deploy_id.clone();
        let answer = ask(&client, &Request::Rollout(Box::new(asked)), PATIENCE)
            .await
            .unwrap();
        assert!(matches!(answer, Response::Accepted { .. }), "{answer:?}");
        await_logged(&mut tail, &id, |e| matches!(e, Event::LockAcquired(_))).await;
        tokio::time::sleep(HOLD_WINDOW).await;
        assert_eq!(
            transport.published(),
            vec![],
            "a job went out while {LOG_STREAM} held none of the deploy"
        );
        js.get_or_create_stream(flotilla_protocol::nats::stream_config(
            &flotilla_protocol::control::log_stream(),
        ))
        .await
        .unwrap();
        await_logged(&mut tail, &id, |e| matches!(e, Event::LockReleased(_))).await;
        let story = control.log.read_deploy(&id).unwrap();
        assert!(completed(&story), "{story:?}");
        assert_eq!(transport.published().len(), 3, "one job per host");
        stop.cancel();
    };
    let (served, ()) = tokio::join!(serve, test);
    served.unwrap();
    let last = control.log.last_seq();
    assert_eq!(
        published_through(&js).await.unwrap(),
        last,
        "{LOG_STREAM} ends where the log ends"
    );
    let mut stream = js.get_stream(LOG_STREAM).await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(info.state.messages, last, "every event once, none missing");
}

/// `flotilla replay ID --cancel`: the `Cancel` request cancels the running deploy (recorded
/// and published, the lock released) while the service keeps serving; cancelling a deploy
/// it does not run is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_request_cancels_the_running_deploy() {
    let world = World::with(
        "{step_timeout: 2}",
        [Behaviour::Healthy, Behaviour::Healthy, Behaviour::Silent],
    );
    let nats = Nats::start();
    let mut control = control(&world, &nats).await;
    let stop = CancellationToken::new();
    let serve = control
        .service
        .take()
        .unwrap()
        .bind()
        .await
        .unwrap()
        .serve(stop.clone());
    let client = control.client.clone();
    let test = async {
        let asked = rollout(
            &world,
            &client,
            RolloutKind::Deploy {
                version: "v1".into(),
            },
        )
        .await;
        let id = asked.deploy_id.clone();
        let mut follow = client.subscribe(log_subject(id.as_str())).await.unwrap();
        let answer = ask(&client, &Request::Rollout(Box::new(asked)), PATIENCE)
            .await
            .unwrap();
        assert!(matches!(answer, Response::Accepted { .. }), "{answer:?}");
        let cancel = Request::Cancel {
            deploy_id: id.clone(),
        };
        assert_eq!(
            ask(&client, &cancel, PATIENCE).await.unwrap(),
            Response::Done
        );
        let mut cancelled = false;
        while let Ok(Some(message)) = tokio::time::timeout(PATIENCE, follow.next()).await {
            let event: Envelope = wire::decode(&message.payload).unwrap();
            cancelled |= matches!(event.event, Event::DeployCancelled(_));
            if ends_deploy(&event) {
                break;
            }
        }
        assert!(cancelled, "DeployCancelled was published");
        // The service goes on; a deploy it does not run cannot be cancelled.
        let unknown = Request::Cancel {
            deploy_id: DeployId::new(),
        };
        let refused = ask(&client, &unknown, PATIENCE).await.unwrap();
        assert!(matches!(refused, Response::Refused { .. }), "{refused:?}");
        stop.cancel();
    };
    let ((), served) = tokio::join!(test, serve);
    served.unwrap();
}

/// Enrolment in service mode: an identity the CLI read over SSH, asked over NATS, lands in
/// the service's log (and on `FLOTILLA_LOG`); the same keys again record nothing; other keys
/// are refused with the `--replace` command, and accepted with `replace`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolment_is_recorded_in_the_service_log() {
    use flotilla_protocol::control::Enrolment;
    use flotilla_protocol::identity::ReportSigner;
    let world = World::with(
        "{}",
        [Behaviour::Healthy, Behaviour::Healthy, Behaviour::Healthy],
    );
    let nats = Nats::start();
    let mut control = control(&world, &nats).await;
    let log = control.log.clone();
    let stop = CancellationToken::new();
    let serve = control
        .service
        .take()
        .unwrap()
        .bind()
        .await
        .unwrap()
        .serve(stop.clone());
    let client = control.client.clone();
    let identity = || {
        serde_json::json!({
            "sealing_key": HostKey::generate().public_key_base64(),
            "signing_key": ReportSigner::generate().public_key_base64(),
            "nats_key": nkeys::KeyPair::new_user().public_key(),
        })
        .to_string()
    };
    let ask_enrol = |identity: String, replace: bool| {
        let client = client.clone();
        async move {
            let req = Request::Enroll(Box::new(Enrolment {
                host: "new-host".into(),
                ssh_host_key: "SHA256:abc".into(),
                identity,
                replace,
                actor: "ana".into(),
            }));
            ask(&client, &req, PATIENCE).await.unwrap()
        }
    };
    let test = async {
        let first = identity();
        let before = log.read_all().unwrap().count();
        let answer = ask_enrol(first.clone(), false).await;
        assert!(
            matches!(
                answer,
                Response::Enrolled {
                    signing_key: Some(_)
                }
            ),
            "{answer:?}"
        );
        let events: Vec<Envelope> = log.read_all().unwrap().map(|e| e.unwrap()).collect();
        assert_eq!(events.len(), before + 1);
        let last = events.last().unwrap();
        assert!(matches!(last.event, Event::HostEnrolled(_)), "{last:?}");
        assert_eq!(last.host.as_deref(), Some("new-host"));
        assert_eq!(
            ask_enrol(first, false).await,
            Response::Enrolled { signing_key: None }
        );
        let other = identity();
        let Response::Refused { hint, .. } = ask_enrol(other.clone(), false).await else {
            panic!("changed keys are refused");
        };
        assert_eq!(
            hint.as_deref(),
            Some("flotilla server enroll new-host --replace")
        );
        assert!(matches!(
            ask_enrol(other, true).await,
            Response::Enrolled {
                signing_key: Some(_)
            }
        ));
        // The enrolment reaches FLOTILLA_LOG like every other event.
        let position = log.read_all().unwrap().count() as u64;
        let js = async_nats::jetstream::new(client.clone());
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while published_through(&js).await.unwrap_or(0) < position {
            assert!(tokio::time::Instant::now() < deadline, "not published");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop.cancel();
    };
    let (served, ()) = tokio::join!(serve, test);
    served.unwrap();
}

/// HA's leader lease on a real NATS: one instance takes it and keeps it by renewing (past
/// its ttl), the other stands by; when the holder stops renewing (its host lost) the standby
/// takes over; a clean release hands it over at once; a holder whose entry someone else
/// overwrote learns that it lost the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_lease_moves_to_a_standby_when_its_holder_stops() {
    use flotilla_scheduler::service::lease::{Contender, LeaseTimes};
    let nats = Nats::start();
    let client = async_nats::connect(&nats.url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    // Short timings so the test waits little; nothing here asserts a duration.
    let times = LeaseTimes {
        ttl: Duration::from_secs(2),
        renew: Duration::from_millis(500),
        poll: Duration::from_millis(200),
    };
    let a = Contender::open(&js, "control-a", times).await.unwrap();
    let b = Contender::open(&js, "control-b", times).await.unwrap();
    let leading = a
        .try_acquire()
        .await
        .unwrap()
        .expect("a free lease is taken");
    assert!(b.try_acquire().await.unwrap().is_none());
    assert_eq!(b.leader().await.unwrap().as_deref(), Some("control-a"));
    // Held past its ttl by renewals alone.
    tokio::time::sleep(times.ttl * 2).await;
    assert!(b.try_acquire().await.unwrap().is_none());
    assert!(!leading.lost().is_cancelled());

    // The holder stops renewing (as a lost host does): the standby takes over.
    let lost = leading.lost();
    drop(leading);
    assert!(lost.is_cancelled());
    let shutdown = CancellationToken::new();
    let taken = tokio::time::timeout(PATIENCE, b.acquire(&shutdown))
        .await
        .expect("the standby takes the lease once it aged out")
        .unwrap();
    assert_eq!(a.leader().await.unwrap().as_deref(), Some("control-b"));

    // A clean release hands it over without waiting for it to age out.
    taken.release().await;
    let leading = a.try_acquire().await.unwrap().expect("released");

    // Someone else wrote the entry: the holder's next renewal finds out.
    let kv = js
        .get_key_value(flotilla_protocol::subjects::LEADER_BUCKET)
        .await
        .unwrap();
    kv.put(flotilla_protocol::subjects::LEADER_KEY, "intruder".into())
        .await
        .unwrap();
    tokio::time::timeout(PATIENCE, leading.lost().cancelled())
        .await
        .expect("the holder learns it lost the lease");
}

/// HA failover in process: two scheduler instances over one fleet, each with its own log.
/// The leader is lost mid-rollout (dropped where it is, as a killed host stops); the standby,
/// which followed `FLOTILLA_LOG` into its own log, takes the lease, resumes the deploy from
/// that log, and finishes it: every host's steps recorded exactly once, one
/// `DeployCompleted`, and the standby's log holds every event the lost leader published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_and_finishes_a_lost_leaders_deploy() {
    use flotilla_scheduler::service::ha;
    use flotilla_scheduler::service::lease::{Contender, LeaseTimes};
    // One host at a time, each step taking a while: the rollout is still going when the
    // leader is lost.
    let world = World::with_latency(
        "{max_parallel: 1}",
        [Behaviour::Healthy, Behaviour::Healthy, Behaviour::Healthy],
        Duration::from_millis(150),
    );
    let nats = Nats::start();
    let key = Arc::new(HostKey::generate());
    let mut leader = control_with(&world, &nats, key.clone(), true).await;
    let mut standby = control_with(&world, &nats, key, false).await;
    let times = LeaseTimes {
        ttl: Duration::from_secs(2),
        renew: Duration::from_millis(500),
        poll: Duration::from_millis(200),
    };
    let js = async_nats::jetstream::new(leader.client.clone());
    let contender_a = Contender::open(&js, "control-a", times).await.unwrap();
    let contender_b = Contender::open(&js, "control-b", times).await.unwrap();
    let client = leader.client.clone();
    let kill_leader = CancellationToken::new();
    let shutdown = CancellationToken::new();
    // The standby starts once the first instance leads, so which one leads is known.
    let leading = CancellationToken::new();
    let run_leader = {
        let service = leader.service.take().unwrap();
        let (kill, shutdown) = (kill_leader.clone(), shutdown.clone());
        async move {
            tokio::select! {
                r = ha::run(service, contender_a, shutdown) => Some(r.unwrap()),
                () = kill.cancelled() => None,
            }
        }
    };
    let test = async {
        // The first instance leads once it answers.
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while ask(&client, &Request::Key, PATIENCE).await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "no leader");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        leading.cancel();
        let asked = rollout(
            &world,
            &client,
            RolloutKind::Deploy {
                version: "v1".into(),
            },
        )
        .await;
        let id = asked.deploy_id.clone();
        let mut follow = client.subscribe(log_subject(id.as_str())).await.unwrap();
        let answer = ask(&client, &Request::Rollout(Box::new(asked)), PATIENCE)
            .await
            .unwrap();
        assert!(matches!(answer, Response::Accepted { .. }), "{answer:?}");
        // The leader is lost once the first host finished its pull.
        let mut published = Vec::new();
        loop {
            let message = tokio::time::timeout(PATIENCE, follow.next())
                .await
                .expect("events keep coming")
                .unwrap();
            let event: Envelope = wire::decode(&message.payload).unwrap();
            let pulled = event.type_name() == "ImagePulled";
            published.push(event);
            if pulled {
                break;
            }
        }
        kill_leader.cancel();
        let mut done = false;
        while let Ok(Some(message)) = tokio::time::timeout(PATIENCE, follow.next()).await {
            let event: Envelope = wire::decode(&message.payload).unwrap();
            done |= matches!(event.event, Event::DeployCompleted(_));
            published.push(event);
            if done {
                break;
            }
        }
        assert!(done, "the deploy completed under the new leader");
        // Let the new leader finish the procedure (lock released) before stopping.
        while let Ok(Some(message)) = tokio::time::timeout(PATIENCE, follow.next()).await {
            let event: Envelope = wire::decode(&message.payload).unwrap();
            if ends_deploy(&event) {
                break;
            }
        }
        shutdown.cancel();
        (id, published)
    };
    let standby_service = standby.service.take().unwrap();
    let run_standby = async {
        leading.cancelled().await;
        ha::run(standby_service, contender_b, shutdown.clone()).await
    };
    let (killed, stopped, (id, published)) = tokio::join!(run_leader, run_standby, test);
    assert_eq!(killed, None, "the leader was lost, not stopped");
    assert_eq!(stopped.unwrap(), ha::Stopped::AsLeader);
    let events = standby.log.read_deploy(&id).unwrap();
    for name in [
        "ImagePulled",
        "ContainerStarted",
        "ProxySwitched",
        "HostSucceeded",
    ] {
        let mut counts = BTreeMap::new();
        for e in events.iter().filter(|e| e.type_name() == name) {
            *counts.entry(e.host.clone().unwrap()).or_insert(0) += 1;
        }
        let once: BTreeMap<String, usize> = ["h1", "h2", "h3"]
            .iter()
            .map(|h| (h.to_string(), 1))
            .collect();
        assert_eq!(counts, once, "{name} once per host");
    }
    let completed = events
        .iter()
        .filter(|e| matches!(e.event, Event::DeployCompleted(_)))
        .count();
    assert_eq!(completed, 1);
    let runs = events
        .iter()
        .filter(|e| matches!(e.event, Event::DeployStarted(_)))
        .count();
    assert_eq!(
        runs, 2,
        "the new leader resumed the deploy (a second engine run)"
    );
    // No event lost: everything published is in the new leader's log, at its position.
    let ids: std::collections::BTreeSet<_> = events.iter().map(|e| e.id).collect();
    for e in &published {
        assert!(
            ids.contains(&e.id),
            "{} missing from the new leader's log",
            e.type_name()
        );
    }
    drop(leader);
}

/// An app operation (`app stop`) whose scheduler is lost mid-run is not left open: the
/// standby taking over records its end (each host's outcome as far as the log knows it, the
/// others failed as interrupted, one `OperationFinished`), releases the deploy lock it held,
/// and the next deploy runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_finishes_an_operation_its_lost_leader_left_open() {
    use flotilla_events::event::Operation;
    use flotilla_scheduler::service::ha;
    use flotilla_scheduler::service::lease::{Contender, LeaseTimes};
    // Each step taking a while: the operation is still going when the leader is lost.
    let world = World::with_latency(
        "{max_parallel: 1}",
        [Behaviour::Healthy, Behaviour::Healthy, Behaviour::Healthy],
        Duration::from_millis(150),
    );
    let nats = Nats::start();
    let key = Arc::new(HostKey::generate());
    let mut leader = control_with(&world, &nats, key.clone(), true).await;
    let mut standby = control_with(&world, &nats, key, false).await;
    let times = LeaseTimes {
        ttl: Duration::from_secs(2),
        renew: Duration::from_millis(500),
        poll: Duration::from_millis(200),
    };
    let js = async_nats::jetstream::new(leader.client.clone());
    let contender_a = Contender::open(&js, "control-a", times).await.unwrap();
    let contender_b = Contender::open(&js, "control-b", times).await.unwrap();
    let client = leader.client.clone();
    let kill_leader = CancellationToken::new();
    let shutdown = CancellationToken::new();
    let leading = CancellationToken::new();
    let run_leader = {
        let service = leader.service.take().unwrap();
        let (kill, shutdown) = (kill_leader.clone(), shutdown.clone());
        async move {
            tokio::select! {
                r = ha::run(service, contender_a, shutdown) => Some(r.unwrap()),
                () = kill.cancelled() => None,
            }
        }
    };
    let test = async {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while ask(&client, &Request::Key, PATIENCE).await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "no leader");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        leading.cancel();
        let v1 = rollout(
            &world,
            &client,
            RolloutKind::Deploy {
                version: "v1".into(),
            },
        )
        .await;
        let (answer, events, _) = run_and_follow(&client, v1).await;
        assert!(matches!(answer, Response::Accepted { .. }), "{answer:?}");
        assert!(completed(&events), "v1 deployed");
        let stop = rollout(
            &world,
            &client,
            RolloutKind::Operation {
                operation: Operation::AppStop,
            },
        )
        .await;
        let id = stop.deploy_id.clone();
        let mut follow = client.subscribe(log_subject(id.as_str())).await.unwrap();
        let answer = ask(&client, &Request::Rollout(Box::new(stop)), PATIENCE)
            .await
            .unwrap();
        assert!(matches!(answer, Response::Accepted { .. }), "{answer:?}");
        // The leader is lost as soon as the operation is recorded as started.
        loop {
            let message = tokio::time::timeout(PATIENCE, follow.next())
                .await
                .expect("events keep coming")
                .unwrap();
            let event: Envelope = wire::decode(&message.payload).unwrap();
            if matches!(event.event, Event::OperationStarted(_)) {
                break;
            }
        }
        kill_leader.cancel();
        let mut finished = false;
        while let Ok(Some(message)) = tokio::time::timeout(PATIENCE, follow.next()).await {
            let event: Envelope = wire::decode(&message.payload).unwrap();
            if ends_deploy(&event) {
                break;
            }
            finished |= matches!(event.event, Event::OperationFinished(_));
        }
        assert!(finished, "the new leader finished the operation");
        // The lock the lost leader held for the operation is free: the next deploy runs.
        let v2 = rollout(
            &world,
            &client,
            RolloutKind::Deploy {
                version: "v2".into(),
            },
        )
        .await;
        let (answer, events, _) = run_and_follow(&client, v2).await;
        assert!(matches!(answer, Response::Accepted { .. }), "{answer:?}");
        assert!(completed(&events), "v2 deployed after the operation");
        shutdown.cancel();
        id
    };
    let standby_service = standby.service.take().unwrap();
    let run_standby = async {
        leading.cancelled().await;
        ha::run(standby_service, contender_b, shutdown.clone()).await
    };
    let (killed, stopped, id) = tokio::join!(run_leader, run_standby, test);
    assert_eq!(killed, None, "the leader was lost, not stopped");
    assert_eq!(stopped.unwrap(), ha::Stopped::AsLeader);
    let events = standby.log.read_deploy(&id).unwrap();
    let count = |name: &str| events.iter().filter(|e| e.type_name() == name).count();
    assert_eq!(count("OperationStarted"), 1, "not run a second time");
    assert_eq!(count("OperationFinished"), 1);
    assert_eq!(count("LockReleased"), 1);
    let mut outcomes = BTreeMap::new();
    for e in &events {
        if matches!(
            e.event,
            Event::OperationSucceeded(_) | Event::OperationFailed(_)
        ) {
            *outcomes.entry(e.host.clone().unwrap()).or_insert(0) += 1;
        }
    }
    let once: BTreeMap<String, usize> = ["h1", "h2", "h3"]
        .iter()
        .map(|h| (h.to_string(), 1))
        .collect();
    assert_eq!(outcomes, once, "one outcome per host");
    let Some(Event::OperationFinished(f)) = events
        .iter()
        .map(|e| &e.event)
        .find(|e| matches!(e, Event::OperationFinished(_)))
    else {
        panic!("finished")
    };
    let failed: Vec<String> = events
        .iter()
        .filter(|e| matches!(e.event, Event::OperationFailed(_)))
        .map(|e| e.host.clone().unwrap())
        .collect();
    assert_eq!(
        f.failed, failed,
        "the failed hosts are the ones that failed"
    );
    drop(leader);
}
