//! The deploy procedure in process, given/when/then: the scheduler's `procedure` library over
//! the memory log and the in-memory transport, with simulated executors running the real
//! executor's job runner. No root, no Docker, no NATS; tokio's clock is paused, so step
//! timeouts and lock waits take no wall time. The end-to-end suite (`tests/e2e`) proves the
//! same on real parts.

mod harness;
mod operations;

use flotilla_events::event::{DeployKind, FailureCause, Step};
use flotilla_events::projection::{Outcome as ReleaseOutcome, Projections, ReleaseTarget};
use flotilla_events::{DeployId, Event};
use flotilla_executor::runtime::sim::SimFailure;
use flotilla_scheduler::procedure::plans;
use flotilla_scheduler::procedure::{self, ProcedureError};
use flotilla_scheduler::rollout::Outcome;
use flotilla_scheduler::transport::lock::{LockError, LockInfo};
use flotilla_scheduler::transport::{HeldLock, Transport, TransportError};
use futures::FutureExt as _;
use harness::{APP_SECRET, Behaviour, World, host_failed};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const HOSTS: [&str; 3] = ["h1", "h2", "h3"];

fn all(n: usize) -> BTreeMap<String, usize> {
    HOSTS.iter().map(|h| ((*h).to_owned(), n)).collect()
}

/// With the clock paused, this returns once every other task is idle: the simulated
/// executors have finished whatever they were doing.
async fn settle() {
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// A healthy fleet: every host pulls, starts, switches and succeeds exactly once; the deploy
/// records its own story in order, releases its lock, deletes its report consumer, and no
/// secret is in any event.
#[tokio::test(start_paused = true)]
async fn healthy_deploy_succeeds_everywhere_once() {
    let world = World::with(
        "{}",
        [Behaviour::Healthy, Behaviour::Healthy, Behaviour::Healthy],
    );
    let (req, result) = world.deploy("v1").await;
    let finished = result.expect("deploy runs");
    assert_eq!(finished.outcome.outcome, Outcome::Succeeded);
    let id = &req.deploy_id;
    for name in [
        "ImagePulled",
        "ContainerStarted",
        "ProxySwitched",
        "HostSucceeded",
    ] {
        assert_eq!(world.count(id, name), all(1), "{name} per host");
    }
    assert_eq!(
        world.story(id),
        [
            "DeployRequested",
            "LockAcquired",
            "DeployStarted",
            "DeployCompleted",
            "LockReleased"
        ]
    );
    assert!(
        world.transport.lock_holder("app").is_none(),
        "lock released"
    );
    assert_eq!(
        world.transport.forgotten(),
        [id.to_string()],
        "the deploy's report consumer is deleted"
    );
    let json = serde_json::to_string(&world.events(id)).expect("json");
    assert!(!json.contains(APP_SECRET), "a secret reached the event log");
}

/// `canary: 1`: the canary host fails its health check, so no other host is ever sent a job;
/// the failure names the step and says it failed (not refused, not timed out).
#[tokio::test(start_paused = true)]
async fn failed_canary_stops_the_rollout() {
    let world = World::with(
        "{canary: 1}",
        [
            Behaviour::Fails(SimFailure::Unhealthy),
            Behaviour::Healthy,
            Behaviour::Healthy,
        ],
    );
    let (req, result) = world.deploy("v1").await;
    let finished = result.expect("deploy runs");
    assert!(
        matches!(&finished.outcome.outcome, Outcome::Failed { reason, .. } if reason.contains("canary")),
        "{:?}",
        finished.outcome.outcome
    );
    let sent: Vec<String> = world
        .transport
        .published()
        .into_iter()
        .map(|(h, _)| h)
        .collect();
    assert_eq!(sent, ["h1"], "only the canary got a job");
    let failed = host_failed(&world, &req.deploy_id, "h1").expect("h1 failed");
    assert_eq!(failed.step, Step::SwitchProxy);
    assert_eq!(failed.cause, FailureCause::StepFailed);
    assert_eq!(world.story(&req.deploy_id).last(), Some(&"LockReleased"));
}

/// `max_failures: 1` lets one host fail (the deploy is degraded, the others serve the new
/// version); two failures stop it.
#[tokio::test(start_paused = true)]
async fn max_failures_as_a_count() {
    let world = World::with(
        "{max_failures: 1, max_parallel: 1}",
        [
            Behaviour::Healthy,
            Behaviour::Fails(SimFailure::Pull),
            Behaviour::Healthy,
        ],
    );
    let (req, result) = world.deploy("v1").await;
    let outcome = result.expect("deploy runs").outcome;
    assert_eq!(
        outcome.outcome,
        Outcome::Degraded {
            failed: vec!["h2".into()]
        }
    );
    assert_eq!(outcome.succeeded, ["h1", "h3"]);
    let failed = host_failed(&world, &req.deploy_id, "h2").expect("h2 failed");
    assert_eq!(
        (failed.step, failed.cause),
        (Step::PullImage, FailureCause::StepFailed)
    );

    let world = World::with(
        "{max_failures: 1, max_parallel: 1}",
        [
            Behaviour::Fails(SimFailure::Pull),
            Behaviour::Fails(SimFailure::Pull),
            Behaviour::Healthy,
        ],
    );
    let (_, result) = world.deploy("v1").await;
    let outcome = result.expect("deploy runs").outcome;
    assert!(
        matches!(outcome.outcome, Outcome::Failed { .. }),
        "{outcome:?}"
    );
    assert!(
        outcome.succeeded.is_empty(),
        "h3 never started: {outcome:?}"
    );
}

/// `max_failures: 50%` of four hosts allows two failures, not three.
#[tokio::test(start_paused = true)]
async fn max_failures_as_a_percentage() {
    let hosts = ["h1", "h2", "h3", "h4"];
    for (failing, degraded) in [(2, true), (3, false)] {
        let world = World::new(&hosts, "{max_failures: 50%, max_parallel: 1}");
        for (i, h) in hosts.iter().enumerate() {
            let behaviour = if i < failing {
                Behaviour::Fails(SimFailure::Pull)
            } else {
                Behaviour::Healthy
            };
            world.executor(h, behaviour);
        }
        let (_, result) = world.deploy("v1").await;
        let outcome = result.expect("deploy runs").outcome.outcome;
        assert_eq!(
            matches!(outcome, Outcome::Degraded { .. }),
            degraded,
            "{failing} failures: {outcome:?}"
        );
    }
}

/// A host whose executor dies after starting the container (its heartbeats stop) is failed
/// within three missed beats, long before `step_timeout`, at the step it had reached (the
/// proxy switch), as a lost executor; one that beats but never answers (hung) is failed by
/// `step_timeout` at its first step.
#[tokio::test(start_paused = true)]
async fn silent_hosts_fail_at_the_step_they_reached() {
    let world = World::with(
        "{step_timeout: 300, max_failures: 2}",
        [
            Behaviour::Healthy,
            Behaviour::DiesAfter(2),
            Behaviour::Silent,
        ],
    );
    let (req, result) = world.deploy("v1").await;
    let outcome = result.expect("deploy runs").outcome;
    assert_eq!(outcome.succeeded, ["h1"]);
    let died = host_failed(&world, &req.deploy_id, "h2").expect("h2 failed");
    assert_eq!(
        (died.step, died.cause),
        (Step::SwitchProxy, FailureCause::ExecutorLost)
    );
    assert!(
        died.error.contains("stopped sending heartbeats"),
        "{}",
        died.error
    );
    let events = world.events(&req.deploy_id);
    let at = |host: &str| {
        events
            .iter()
            .find(|e| e.host.as_deref() == Some(host) && matches!(e.event, Event::HostFailed(_)))
            .map(|e| e.at)
            .expect("failed")
    };
    let silent = host_failed(&world, &req.deploy_id, "h3").expect("h3 failed");
    assert_eq!(
        (silent.step, silent.cause),
        (Step::PullImage, FailureCause::TimedOut)
    );
    assert!(silent.error.contains("300s"), "{}", silent.error);
    assert!(
        at("h2") <= at("h3"),
        "the dead executor is noticed before the timeout"
    );
}

/// A host that was never enrolled stops the deploy before any job is sent (its secrets would
/// have no key to be sealed to, its reports no key to verify), naming the host and how to
/// enrol it; a heartbeat from it changes nothing.
#[tokio::test(start_paused = true)]
async fn an_unenrolled_host_is_named() {
    let world = World::new(&HOSTS, "{}");
    world.executor("h1", Behaviour::Healthy);
    world.executor("h2", Behaviour::Healthy);
    world.transport.beat(flotilla_protocol::wire::Heartbeat {
        host: "h3".into(),
        executor_version: "forged".into(),
        docker_version: "forged".into(),
        containers: vec![],
        at: flotilla_events::Timestamp::now(),
        period_ms: 5000,
    });
    let (req, result) = world.deploy("v1").await;
    let err = result.expect_err("h3 is not enrolled");
    assert!(
        matches!(
            &err,
            ProcedureError::Engine(flotilla_scheduler::engine::EngineError::NotEnrolled(e))
                if e.hosts == ["h3"]
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("flotilla server enroll"), "{err}");
    assert!(world.transport.published().is_empty());
    let story = world.story(&req.deploy_id);
    assert_eq!(story.last(), Some(&"DeployFailed"), "{story:?}");
}

/// A host without any executor (no heartbeat) stops the deploy before any job is sent, naming
/// the host; the log says how the deploy ended and the lock is free again.
#[tokio::test(start_paused = true)]
async fn a_host_without_executor_is_named() {
    let world = World::new(&HOSTS, "{}");
    world.executor("h1", Behaviour::Healthy);
    world.executor("h2", Behaviour::Healthy);
    // h3 was enrolled once, but its executor is not running.
    world.enrol(
        "h3",
        &flotilla_protocol::sealing::HostKey::generate(),
        &flotilla_protocol::identity::ReportSigner::generate(),
    );
    let (req, result) = world.deploy("v1").await;
    let err = result.expect_err("no heartbeat from h3");
    assert!(
        matches!(
            &err,
            ProcedureError::Engine(flotilla_scheduler::engine::EngineError::Transport(
                TransportError::HostsSilent { hosts, .. }
            )) if hosts == &["h3"]
        ),
        "{err:?}"
    );
    assert!(world.transport.published().is_empty());
    let story = world.story(&req.deploy_id);
    assert_eq!(story.last(), Some(&"DeployFailed"), "{story:?}");
    assert!(world.transport.lock_holder("app").is_none());
}

/// A refused job is recorded as a refusal at the step the host had reached, not as a pull
/// failure.
#[tokio::test(start_paused = true)]
async fn a_refused_job_is_a_refusal() {
    let world = World::with(
        "{max_failures: 1}",
        [Behaviour::Healthy, Behaviour::Refuses, Behaviour::Healthy],
    );
    let (req, result) = world.deploy("v1").await;
    assert!(matches!(
        result.expect("deploy runs").outcome.outcome,
        Outcome::Degraded { .. }
    ));
    let refused = host_failed(&world, &req.deploy_id, "h2").expect("h2 failed");
    assert_eq!(refused.cause, FailureCause::Refused);
    assert_eq!(refused.step, Step::PullImage);
    assert!(
        refused.error.contains("Stale") && refused.error.contains("newest job"),
        "{}",
        refused.error
    );
}

/// Every report delivered twice (a redelivery after a lost ack) is recorded once.
#[tokio::test(start_paused = true)]
async fn redelivered_reports_are_recorded_once() {
    let world = World::with(
        "{}",
        [Behaviour::Repeats, Behaviour::Repeats, Behaviour::Repeats],
    );
    let (req, result) = world.deploy("v1").await;
    assert_eq!(
        result.expect("deploy runs").outcome.outcome,
        Outcome::Succeeded
    );
    for name in [
        "ImagePulled",
        "ContainerStarted",
        "ProxySwitched",
        "HostSucceeded",
    ] {
        assert_eq!(world.count(&req.deploy_id, name), all(1), "{name}");
    }
}

/// The scheduler dies after each event in turn (the procedure dropped mid-flight, its lock
/// left behind); `resume` then finishes the deploy with every host's steps recorded exactly
/// once and one `DeployCompleted`.
#[tokio::test(start_paused = true)]
async fn resume_after_a_crash_at_every_point_repeats_nothing() {
    quiet_injected_crashes();
    // How many events a whole healthy deploy of three hosts records.
    let total = {
        let world = World::new(&HOSTS, "{max_parallel: 1}");
        for h in HOSTS {
            world.executor(h, Behaviour::Healthy);
        }
        let (req, _) = world.deploy("v1").await;
        world.events(&req.deploy_id).len()
    };
    for crash_at in 1..total {
        let world = World::new(&HOSTS, "{max_parallel: 1}");
        for h in HOSTS {
            world.executor(h, Behaviour::Healthy);
        }
        let req = world.deploy_request("v1");
        // The crash: right after event `crash_at` is durable, the procedure stops where it is
        // (its future is dropped mid-poll, as a killed process stops).
        let mut seen = 0;
        let mut watch = |_: &flotilla_events::Envelope| {
            seen += 1;
            if seen == crash_at {
                std::panic::panic_any(InjectedCrash);
            }
        };
        let never = CancellationToken::new();
        let ctx = world.context();
        let run = std::panic::AssertUnwindSafe(procedure::run(&ctx, &req, &mut watch, &never))
            .catch_unwind()
            .await;
        assert!(
            run.is_err(),
            "crash point {crash_at} of {total} not reached"
        );
        settle().await;
        if world.story(&req.deploy_id).contains(&"DeployCompleted") {
            // Died after recording the end: there is nothing left to resume.
            assert!(matches!(
                plans::resume_plan(&world.config, &world.log, req.deploy_id.as_str()),
                Err(plans::PlanError::AlreadyCompleted(_))
            ));
            continue;
        }
        let resume = world.resume_request(&req.deploy_id);
        let finished = world.run(&resume).await.expect("resume runs");
        assert_eq!(
            finished.outcome.outcome,
            Outcome::Succeeded,
            "crash at {crash_at}"
        );
        let id = &req.deploy_id;
        for name in [
            "ImagePulled",
            "ContainerStarted",
            "ProxySwitched",
            "HostSucceeded",
        ] {
            assert_eq!(world.count(id, name), all(1), "{name}, crash at {crash_at}");
        }
        let completed = world
            .story(id)
            .iter()
            .filter(|t| **t == "DeployCompleted")
            .count();
        assert_eq!(completed, 1, "crash at {crash_at}");
    }
}

/// What the crash test's watcher panics with; not reported as a panic.
struct InjectedCrash;

/// Keeps the default panic report for every panic but the injected crashes.
fn quiet_injected_crashes() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<InjectedCrash>().is_none() {
                default(info);
            }
        }));
    });
}

/// A deploy killed mid-rollout (one host done) whose lock then expired: the resume takes
/// the lock afresh and finishes the deploy, every host's steps recorded once, the story
/// ending with its own `LockAcquired`, `DeployCompleted` and `LockReleased`.
#[tokio::test(start_paused = true)]
async fn resume_after_the_lock_expired_takes_it_again_and_finishes() {
    quiet_injected_crashes();
    let world = World::new(&HOSTS, "{max_parallel: 1}");
    for h in HOSTS {
        world.executor(h, Behaviour::Healthy);
    }
    let req = world.deploy_request("v1");
    let mut succeeded = 0;
    let mut watch = |e: &flotilla_events::Envelope| {
        if matches!(e.event, flotilla_events::Event::HostSucceeded(_)) {
            succeeded += 1;
            std::panic::panic_any(InjectedCrash);
        }
    };
    let never = CancellationToken::new();
    let ctx = world.context();
    let run = std::panic::AssertUnwindSafe(procedure::run(&ctx, &req, &mut watch, &never))
        .catch_unwind()
        .await;
    assert!(run.is_err() && succeeded == 1, "killed after one host");
    settle().await;
    assert!(
        world.transport.lock_holder("app").is_some(),
        "lock left behind"
    );
    world.transport.expire_lock("app");

    let resume = world.resume_request(&req.deploy_id);
    let finished = world.run(&resume).await.expect("resume runs");
    assert_eq!(finished.outcome.outcome, Outcome::Succeeded);
    let id = &req.deploy_id;
    for name in [
        "ImagePulled",
        "ContainerStarted",
        "ProxySwitched",
        "HostSucceeded",
    ] {
        assert_eq!(world.count(id, name), all(1), "{name}");
    }
    let story = world.story(id);
    assert_eq!(
        story[story.len() - 4..],
        [
            "LockAcquired",
            "DeployStarted",
            "DeployCompleted",
            "LockReleased"
        ],
        "{story:?}"
    );
    assert!(
        world.transport.lock_holder("app").is_none(),
        "lock released"
    );
}

/// A cancel (Ctrl-C) stops dispatching: the running host finishes, the others never start,
/// `DeployCancelled` is recorded and the lock released; `resume` then finishes the deploy.
#[tokio::test(start_paused = true)]
async fn cancel_stops_dispatching_and_resume_continues() {
    let world = World::with(
        "{max_parallel: 1}",
        [Behaviour::Healthy, Behaviour::Healthy, Behaviour::Healthy],
    );
    let req = world.deploy_request("v1");
    let cancel = CancellationToken::new();
    let mut watch = |e: &flotilla_events::Envelope| {
        if matches!(e.event, Event::ImagePulled(_)) {
            cancel.cancel();
        }
    };
    let finished = procedure::run(&world.context(), &req, &mut watch, &cancel)
        .await
        .expect("deploy runs");
    assert!(finished.outcome.cancelled.is_some());
    assert_eq!(
        finished.outcome.succeeded,
        ["h1"],
        "the running host finished"
    );
    let sent: Vec<String> = world
        .transport
        .published()
        .into_iter()
        .map(|(h, _)| h)
        .collect();
    assert_eq!(sent, ["h1"], "no host started after the cancel");
    let story = world.story(&req.deploy_id);
    assert_eq!(
        &story[story.len() - 2..],
        ["DeployCancelled", "LockReleased"]
    );
    assert!(world.transport.lock_holder("app").is_none());

    let resume = world.resume_request(&req.deploy_id);
    let resumed = world.run(&resume).await.expect("resume runs");
    assert_eq!(resumed.outcome.outcome, Outcome::Succeeded);
    assert_eq!(resumed.outcome.already_done, ["h1"]);
    assert_eq!(world.count(&req.deploy_id, "HostSucceeded"), all(1));
    // History and rollback see the resumed deploy's final outcome, not the cancel.
    let projections = Projections::rebuild(&world.log).expect("fold");
    let target = ReleaseTarget::new("app", None);
    let release = projections
        .releases
        .last_good(&target)
        .expect("a good release");
    assert_eq!(release.deploy_id, req.deploy_id);
    assert_eq!(release.outcome, ReleaseOutcome::Completed);
    // Every dispatch had its own job id (JetStream drops a repeated id as a duplicate).
    let ids: Vec<String> = world
        .transport
        .published()
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    let mut distinct = ids.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), ids.len(), "{ids:?}");
}

/// A failed deploy cannot be resumed once a newer deploy of the service ran: that would roll
/// hosts back to the old version behind the newer deploy's back.
#[tokio::test(start_paused = true)]
async fn a_superseded_deploy_is_not_resumed() {
    let world = World::new(&HOSTS, "{max_parallel: 1}");
    world.executor("h1", Behaviour::Healthy);
    world.executor(
        "h2",
        Behaviour::Fails(SimFailure::UnhealthyVersion("v1".into())),
    );
    world.executor("h3", Behaviour::Healthy);
    let (old, result) = world.deploy("v1").await;
    assert!(matches!(
        result.expect("v1 runs").outcome.outcome,
        Outcome::Failed { .. }
    ));
    let (newer, result) = world.deploy("v2").await;
    assert_eq!(result.expect("v2 runs").outcome.outcome, Outcome::Succeeded);
    match plans::resume_plan(&world.config, &world.log, old.deploy_id.as_str()) {
        Err(plans::PlanError::Superseded {
            newer: n, version, ..
        }) => {
            assert_eq!(n, newer.deploy_id.to_string());
            assert_eq!(version, "v2");
        }
        other => panic!("expected a refusal: {other:?}"),
    }
}

/// `auto_rollback: true`: v2 never gets healthy on h2, so every host that started v2 goes
/// back to v1 by the digest v1 ran, in a rollback deploy of its own.
#[tokio::test(start_paused = true)]
async fn auto_rollback_returns_touched_hosts_to_the_last_good_release() {
    let world = World::new(&HOSTS, "{auto_rollback: true, max_failures: 1}");
    world.executor("h1", Behaviour::Healthy);
    world.executor(
        "h2",
        Behaviour::Fails(SimFailure::UnhealthyVersion("v2".into())),
    );
    world.executor("h3", Behaviour::Healthy);
    let (_, first) = world.deploy("v1").await;
    assert_eq!(first.expect("v1").outcome.outcome, Outcome::Succeeded);
    let (_, second) = world.deploy("v2").await;
    let finished = second.expect("v2 runs");
    assert!(matches!(finished.outcome.outcome, Outcome::Degraded { .. }));
    let rolled = finished.rolled_back.expect("rolled back");
    assert_eq!(rolled.version, "v1");
    assert_eq!(rolled.outcome.outcome, Outcome::Succeeded);
    let mut back = rolled.outcome.succeeded.clone();
    back.sort();
    assert_eq!(back, HOSTS);
    let pulled: Vec<String> = world
        .events(&rolled.deploy_id)
        .into_iter()
        .filter_map(|e| match e.event {
            Event::ImagePulled(p) => Some(p.image),
            _ => None,
        })
        .collect();
    assert_eq!(pulled.len(), 3);
    assert!(
        pulled.iter().all(|i| i.contains("@sha256:")),
        "by digest: {pulled:?}"
    );
    let kinds: Vec<DeployKind> = world
        .events(&rolled.deploy_id)
        .into_iter()
        .filter_map(|e| match e.event {
            Event::DeployRequested(r) => Some(r.kind),
            _ => None,
        })
        .collect();
    assert_eq!(kinds, [DeployKind::Rollback]);
}

/// A deploy lock held by someone else refuses a deploy at once, naming the holder, and the
/// refused deploy leaves nothing in the log; with `--lock-wait` it waits for the release.
#[tokio::test(start_paused = true)]
async fn lock_contention() {
    let world = World::with(
        "{}",
        [Behaviour::Healthy, Behaviour::Healthy, Behaviour::Healthy],
    );
    let alice = LockInfo {
        holder: "alice".into(),
        message: "maintenance".into(),
        acquired_at: "2026-11-30T00:00:00Z".into(),
        machine: "laptop".into(),
        version: None,
        deploy_id: None,
        expires_at_ms: None,
    };
    let held = world
        .transport
        .acquire_lock("app", &alice, None)
        .await
        .expect("alice takes the lock");
    let (req, result) = world.deploy("v1").await;
    match result {
        Err(ProcedureError::Lock(LockError::Held { info, .. })) => assert_eq!(info.holder, "alice"),
        other => panic!("expected the lock to be held: {other:?}"),
    }
    assert!(
        world.events(&req.deploy_id).is_empty(),
        "a refused deploy records nothing"
    );

    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        held.release().await
    });
    let mut ctx = world.context();
    ctx.lock_wait = Some(Duration::from_secs(30));
    let req = world.deploy_request("v1");
    let finished = procedure::run(&ctx, &req, &mut |_| {}, &CancellationToken::new())
        .await
        .expect("waited for the lock");
    assert_eq!(finished.outcome.outcome, Outcome::Succeeded);
    release.await.expect("release task").expect("released");
}

/// Resuming a failed deploy uses the exact digest it pulled, not the tag (which may have
/// moved), and only the deploy's own hosts.
#[tokio::test(start_paused = true)]
async fn resume_targets_the_exact_digest() {
    let world = World::with(
        "{max_parallel: 1}",
        [
            Behaviour::Healthy,
            Behaviour::Fails(SimFailure::Unhealthy),
            Behaviour::Healthy,
        ],
    );
    let mut req = world.deploy_request("v1");
    req.plan.hosts.retain(|h| h.host != "h3");
    world.run(&req).await.expect("deploy runs");
    let (plan, _) =
        plans::resume_plan(&world.config, &world.log, req.deploy_id.as_str()).expect("plan");
    assert!(
        plan.release.image.contains("@sha256:"),
        "{}",
        plan.release.image
    );
    let hosts: Vec<&str> = plan.hosts.iter().map(|h| h.host.as_str()).collect();
    assert_eq!(hosts, ["h1", "h2"]);
    assert!(matches!(
        plans::resume_plan(&world.config, &world.log, DeployId::new().as_str()),
        Err(plans::PlanError::UnknownDeploy(_))
    ));
}

/// A host whose executor never took its job is failed at `step_timeout`; its job is revoked
/// when the deploy ends, so the host, coming back later, never switches to the version the
/// log says it does not run; the deploy's report consumer is deleted all the same.
#[tokio::test(start_paused = true)]
async fn a_failed_hosts_waiting_job_is_revoked() {
    let world = World::with(
        "{step_timeout: 30, max_failures: 1}",
        [Behaviour::Healthy, Behaviour::Offline, Behaviour::Healthy],
    );
    let (req, result) = world.deploy("v1").await;
    assert!(matches!(
        result.expect("deploy runs").outcome.outcome,
        Outcome::Degraded { .. }
    ));
    let failed = host_failed(&world, &req.deploy_id, "h2").expect("h2 failed");
    assert_eq!(failed.cause, FailureCause::TimedOut);
    assert!(
        world.transport.published().iter().any(|(h, _)| h == "h2"),
        "h2 was sent a job"
    );
    assert_eq!(world.transport.waiting_jobs("h2"), 0, "its job is revoked");
    assert_eq!(
        world.transport.forgotten(),
        [req.deploy_id.to_string()],
        "the failed deploy's report consumer is deleted"
    );
}

/// Forged reports: while a deploy runs in which h2's pull fails, reports claiming h2
/// succeeded (unsigned, signed by a stranger's key, signed by another enrolled host's key) and
/// an `ImagePulled` with an attacker's digest for h1, and a refusal of bytes the scheduler
/// never signed, are injected on the deploy's subjects both before the deploy subscribes and
/// while it runs. None is recorded: h2 fails at its pull, h1 and h3 keep the digest they
/// really pulled, and the next rollback target is not the attacker's image.
#[tokio::test(start_paused = true)]
async fn forged_reports_are_not_recorded() {
    use flotilla_events::NewEvent;
    use flotilla_events::event::{HostSucceeded, ImagePulled};
    use flotilla_protocol::identity::ReportSigner;
    use flotilla_protocol::wire::{JobEvent, Refusal, RefusalReason, Report, SignedReport};
    const EVIL: &str = "sha256:e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0";

    let world = World::new(&HOSTS, "{max_failures: 1}");
    world.executor("h1", Behaviour::Healthy);
    world.executor("h2", Behaviour::Fails(SimFailure::Pull));
    world.executor("h3", Behaviour::Healthy);
    let req = world.deploy_request("v1");
    let stranger = ReportSigner::generate();
    let forgeries = {
        let id = req.deploy_id.clone();
        let event = move |host: &str, e: flotilla_events::Event| {
            Report::Event(JobEvent {
                job_id: format!("{id}-forged"),
                step: None,
                event: NewEvent::new(id.clone(), "executor", e).on_host(host),
            })
        };
        let pulled = ImagePulled {
            image: "registry.test:5000/app:v1".into(),
            digest: EVIL.into(),
            bytes: 1,
            duration_ms: 1,
        };
        let refusal = Report::Refused(Refusal {
            job_id: "copied".into(),
            deploy_id: req.deploy_id.to_string(),
            host: "h1".into(),
            reason: RefusalReason::Unsigned,
            detail: "job is not signed".into(),
            at: flotilla_events::Timestamp::now(),
        });
        let succeeded = event("h2", HostSucceeded {}.into());
        let unsigned = {
            let report = flotilla_protocol::wire::encode(&succeeded).unwrap();
            SignedReport {
                report,
                signature: vec![],
            }
        };
        vec![
            ("h2", unsigned),
            ("h2", harness::sign(&stranger, &succeeded)),
            ("h1", harness::sign(&stranger, &event("h1", pulled.into()))),
            ("h1", harness::sign(&stranger, &refusal)),
        ]
    };
    let inject = |forgeries: &[(&str, SignedReport)]| {
        for (host, signed) in forgeries {
            let bytes = flotilla_protocol::wire::encode(signed).unwrap();
            world
                .transport
                .report_bytes(req.deploy_id.as_str(), host, bytes);
        }
    };
    // Before the deploy subscribes: they are waiting when it starts.
    inject(&forgeries);
    // And while it runs: as soon as the first host reports.
    let mut tail = flotilla_events::EventLog::subscribe(&world.log);
    let run = world.run(&req);
    tokio::pin!(run);
    let result = loop {
        tokio::select! {
            r = &mut run => break r,
            e = tail.recv() => {
                if e.is_ok_and(|e| matches!(e.event, Event::ImagePulled(_))) {
                    inject(&forgeries);
                }
            }
        }
    };
    let outcome = result.expect("the deploy runs").outcome;
    assert_eq!(outcome.failed, ["h2"]);
    let failed = host_failed(&world, &req.deploy_id, "h2").expect("h2 failed");
    assert_eq!(
        (failed.step, failed.cause),
        (Step::PullImage, FailureCause::StepFailed)
    );
    let events = world.events(&req.deploy_id);
    let digests: Vec<&str> = events
        .iter()
        .filter_map(|e| match &e.event {
            Event::ImagePulled(p) => Some(p.digest.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(digests.len(), 2, "one pull each for h1 and h3: {digests:?}");
    assert!(!digests.contains(&EVIL), "{digests:?}");
    assert!(
        !events
            .iter()
            .any(|e| e.host.as_deref() == Some("h2") && matches!(e.event, Event::HostSucceeded(_))),
        "a forged success was recorded"
    );
    let projections = Projections::rebuild(&world.log).unwrap();
    let text = format!("{:?}", projections.releases);
    assert!(
        !text.contains(EVIL),
        "the attacker's digest is a rollback target"
    );
}
