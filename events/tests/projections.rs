//! Given events, when folded, then the state a user asks about: which host
//! failed where, the last good release and rollback target with exact
//! digests, and what each host runs.
#![allow(clippy::unwrap_used)]

use flotilla_events::event::{ContainerStarted, HostSucceeded, ImagePulled, PlannedHost};
use flotilla_events::projection::{DeployStatus, HostStatus, Outcome};
use flotilla_events::sample::Story;
use flotilla_events::{
    DeployId, Envelope, NewEvent, Projection, Projections, ReleaseTarget, Step, event,
};

fn fold(events: &[NewEvent]) -> Projections {
    let mut state = Projections::default();
    for (i, e) in events.iter().cloned().enumerate() {
        state.apply(&e.into_envelope(i as u64 + 1));
    }
    state
}

fn deploy(
    id: &str,
    version: &str,
    previous: Option<&str>,
    failing: Option<&str>,
    first_id: u128,
) -> Vec<NewEvent> {
    let mut story = Story::new(id, version, 3);
    story.previous = previous.map(Into::into);
    story.failing_host = failing.map(Into::into);
    story.first_id = first_id;
    story.start =
        flotilla_events::Timestamp::from_unix_ms(1_795_000_000_000 + first_id as i64 * 1000);
    story.events()
}

const D1: &str = "01D00000000000000000000001";
const D2: &str = "01D00000000000000000000002";
const D3: &str = "01D00000000000000000000003";

/// A failed deploy says which host failed, at which step and why, how far
/// the others got, and that it rolled back.
#[test]
fn failed_deploy_names_host_step_and_error() {
    let mut events = deploy(D1, "v1", None, None, 1);
    events.extend(deploy(D2, "v2", Some("v1"), Some("web-2"), 1000));
    let state = fold(&events);
    let d2 = state.deploys.get(&DeployId::from(D2)).unwrap();
    assert_eq!(
        d2.status,
        DeployStatus::Failed {
            reason: "web-2 failed its health check".into()
        }
    );
    assert_eq!(d2.rolled_back_to.as_deref(), Some("v1"));
    let web1 = &d2.hosts["web-1"];
    assert_eq!(web1.status, HostStatus::Succeeded);
    assert_eq!(web1.step, Some(Step::StopOldContainer));
    assert!(web1.duration_ms().unwrap() > 0);
    let web2 = &d2.hosts["web-2"];
    assert_eq!(
        web2.status,
        HostStatus::Failed {
            step: Step::AwaitHealthy,
            error: "unhealthy after 30s".into()
        }
    );
    // web-3 was planned but never reached: it is listed as pending.
    assert_eq!(d2.hosts["web-3"].status, HostStatus::Pending);
    assert_eq!(d2.hosts["web-3"].roles, vec!["web".to_owned()]);
    assert_eq!(d2.performer.as_deref(), Some("alice@laptop"));
}

/// The last good release is the newest one that completed on every host; a
/// failed deploy after it does not replace it, and the rollback target is it,
/// with the exact image digest per role.
#[test]
fn last_good_release_and_rollback_target() {
    let mut events = deploy(D1, "v1", None, None, 1);
    events.extend(deploy(D2, "v2", Some("v1"), None, 1000));
    let target = ReleaseTarget::new("app", None);

    let state = fold(&events);
    let good = state.releases.last_good(&target).unwrap();
    assert_eq!(good.version, "v2");
    assert_eq!(good.outcome, Outcome::Completed);
    assert_eq!(good.images["web"].digest, format!("sha256:{:0>64}", "v2"));
    assert_eq!(good.config_digest, "sha256:c0nf19");
    // Nothing failed since v2: rolling back means going to v1.
    let back = state.releases.rollback_target(&target, None).unwrap();
    assert_eq!(back.version, "v1");
    assert_eq!(back.images["web"].digest, format!("sha256:{:0>64}", "v1"));

    events.extend(deploy(D3, "v3", Some("v2"), Some("web-3"), 2000));
    let state = fold(&events);
    let releases: Vec<&str> = state
        .releases
        .of(&target)
        .map(|r| r.version.as_str())
        .collect();
    assert_eq!(releases, ["v1", "v2", "v3"]);
    assert_eq!(state.releases.last_good(&target).unwrap().version, "v2");
    // v3 failed: rolling back means going to the last good release, v2.
    assert_eq!(
        state
            .releases
            .rollback_target(&target, None)
            .unwrap()
            .version,
        "v2"
    );
    assert_eq!(
        state
            .releases
            .rollback_target(&target, Some("v1"))
            .unwrap()
            .version,
        "v1"
    );
    assert!(
        state
            .releases
            .rollback_target(&target, Some("v3"))
            .is_none()
    );
    assert!(
        state
            .releases
            .last_good(&ReleaseTarget::new("app", Some("staging")))
            .is_none()
    );
}

/// A deploy that reports completion while a planned host never succeeded is
/// recorded as partial and is not a rollback target.
#[test]
fn partial_deploy_is_not_good() {
    let id = DeployId::from(D1);
    let request = event::DeployRequested {
        kind: event::DeployKind::Deploy,
        service: "app".into(),
        destination: Some("production".into()),
        version: "v9".into(),
        config_digest: "sha256:1".into(),
        hosts: ["a", "b"]
            .map(|h| PlannedHost {
                host: h.into(),
                roles: vec!["web".into(), "jobs".into()],
            })
            .to_vec(),
    };
    let on = |host: &str, e: event::Event| NewEvent::new(id.clone(), "bob", e).on_host(host);
    let events = vec![
        NewEvent::new(id.clone(), "bob", request),
        on(
            "a",
            ImagePulled {
                image: "app:v9".into(),
                digest: "sha256:aaa".into(),
                bytes: 1,
                duration_ms: 1,
            }
            .into(),
        ),
        on(
            "a",
            ContainerStarted {
                name: "app-web-production-v9".into(),
                container_id: "c1".into(),
                version: "v9".into(),
                role: "web".into(),
            }
            .into(),
        ),
        on("a", HostSucceeded {}.into()),
        NewEvent::new(id.clone(), "bob", event::DeployCompleted {}),
    ];
    let state = fold(&events);
    let target = ReleaseTarget::new("app", Some("production"));
    let release = state.releases.of(&target).next().unwrap();
    assert_eq!(
        release.outcome,
        Outcome::Partial {
            missing: vec!["b".into()]
        }
    );
    assert_eq!(release.images["web"].digest, "sha256:aaa");
    assert!(!release.is_good());
    assert!(state.releases.last_good(&target).is_none());
}

/// After a good deploy and a failed one, every host runs exactly the last
/// good version's container and the proxy points at it; executor versions
/// are known.
#[test]
fn fleet_state_shows_what_each_host_runs() {
    let mut events = deploy(D1, "v1", None, None, 1);
    events.extend(deploy(D2, "v2", Some("v1"), None, 1000));
    events.extend(deploy(D3, "v3", Some("v2"), Some("web-1"), 2000));
    let state = fold(&events);
    for host in ["web-1", "web-2", "web-3"] {
        let runs = state.fleet.host(host).unwrap();
        let names: Vec<&str> = runs.containers.keys().map(String::as_str).collect();
        assert_eq!(names, ["app-web-v2"], "{host}");
        let container = &runs.containers["app-web-v2"];
        assert_eq!(container.version, "v2");
        assert_eq!(
            container.digest.as_deref(),
            Some(format!("sha256:{:0>64}", "v2").as_str())
        );
        assert_eq!(runs.live["app"], "app-web-v2");
        assert_eq!(runs.executor.as_ref().unwrap().docker_version, "20.10.24");
    }
}

/// Envelopes round-trip through JSON unchanged: what `flotilla events --json`
/// prints can be read back.
#[test]
fn envelope_json_round_trip() {
    for (i, e) in flotilla_events::sample::every_event_type()
        .into_iter()
        .enumerate()
    {
        let envelope = e.into_envelope(i as u64 + 1);
        let json = serde_json::to_string(&envelope).unwrap();
        let back: Envelope = serde_json::from_str(&json).unwrap();
        assert_eq!(back, envelope, "{json}");
    }
}

/// An app operation's events: started on `hosts`, each host's outcome, finished.
fn operation(id: &str, op: event::Operation, hosts: &[&str], failed: &[&str]) -> Vec<NewEvent> {
    let id = DeployId::from(id);
    let mut events = vec![NewEvent::new(
        id.clone(),
        "alice@laptop",
        event::OperationStarted {
            operation: op.clone(),
            service: "app".into(),
            destination: None,
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
        },
    )];
    for host in hosts {
        let outcome: event::Event = if failed.contains(host) {
            event::OperationFailed {
                operation: op.clone(),
                reason: "no such container".into(),
            }
            .into()
        } else {
            event::OperationSucceeded {
                operation: op.clone(),
            }
            .into()
        };
        events.push(NewEvent::new(id.clone(), "scheduler", outcome).on_host(*host));
    }
    events.push(NewEvent::new(
        id,
        "alice@laptop",
        event::OperationFinished {
            operation: op,
            failed: failed.iter().map(|h| h.to_string()).collect(),
        },
    ));
    events
}

const OP1: &str = "01D00000000000000000000011";
const OP2: &str = "01D00000000000000000000012";
const OP3: &str = "01D00000000000000000000013";

/// After `app stop` on every host of the last release nothing runs (rollback and history
/// know it), and the stop reads as a finished operation on its hosts; a stop on some hosts
/// only, or one that failed somewhere, leaves the release running; `app start` or a new
/// deploy runs the app again.
#[test]
fn app_stop_means_nothing_runs_until_started_again() {
    let target = ReleaseTarget::new("app", None);
    let all = ["web-1", "web-2", "web-3"];
    let mut events = deploy(D1, "v1", None, None, 1);
    events.extend(operation(OP1, event::Operation::AppStop, &all[..2], &[]));
    let state = fold(&events);
    assert_eq!(state.releases.running(&target).unwrap().version, "v1");
    let op = state.deploys.get(&DeployId::from(OP1)).unwrap();
    assert_eq!(op.status, DeployStatus::Completed);
    assert_eq!(op.hosts.len(), 2);

    events.extend(operation(OP2, event::Operation::AppStop, &all, &["web-3"]));
    let state = fold(&events);
    assert!(state.releases.stopped(&target).is_none());
    let op = state.deploys.get(&DeployId::from(OP2)).unwrap();
    assert!(matches!(op.status, DeployStatus::Failed { .. }), "{op:?}");

    events.extend(operation(OP3, event::Operation::AppStop, &all, &[]));
    let state = fold(&events);
    assert!(state.releases.running(&target).is_none());
    let stopped = state.releases.stopped(&target).unwrap();
    assert_eq!(stopped.deploy_id, DeployId::from(OP3));
    // The release itself stays good: it is still what `app start` or a rollback can run.
    assert!(state.releases.last_good(&target).unwrap().is_good());

    let start = event::Operation::AppStart { version: None };
    events.extend(operation("01D00000000000000000000014", start, &all, &[]));
    assert_eq!(
        fold(&events).releases.running(&target).unwrap().version,
        "v1"
    );
    events.extend(operation(
        "01D00000000000000000000015",
        event::Operation::AppRemove,
        &all,
        &[],
    ));
    assert!(fold(&events).releases.running(&target).is_none());
    events.extend(deploy(D2, "v2", Some("v1"), None, 1000));
    assert_eq!(
        fold(&events).releases.running(&target).unwrap().version,
        "v2"
    );
}
