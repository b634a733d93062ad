//! App operations other than a rollout (`app stop|start|remove`, `app stale_containers
//! --stop`, `prune containers|images|all`) run by the hosts' executors through the same procedure as a deploy, and recorded as what they are.

use crate::harness::{Behaviour, World};
use crate::{HOSTS, all};
use flotilla_events::event::Operation;
use flotilla_events::projection::{Projections, ReleaseTarget};
use flotilla_events::{DeployId, Event, EventLog as _};
use flotilla_scheduler::procedure::plans::{self, Narrow};
use flotilla_scheduler::procedure::{self, Finished, OperationRequest, ProcedureError};
use tokio_util::sync::CancellationToken;

impl World {
    /// Plans `operation` from the log and runs it to its end.
    async fn operate(&self, operation: Operation) -> (DeployId, Result<Finished, ProcedureError>) {
        let plan = plans::operation_plan(
            &self.config,
            &self.log,
            &operation,
            &Narrow::default(),
            &Default::default(),
        )
        .expect("plan");
        let req = OperationRequest {
            plan,
            operation,
            deploy_id: DeployId::new(),
        };
        let result = procedure::operate(
            &self.context(),
            &req,
            &mut |_| {},
            &CancellationToken::new(),
        )
        .await;
        (req.deploy_id, result)
    }

    fn running(&self) -> Option<String> {
        let projections = Projections::rebuild(&self.log).expect("fold");
        let release = projections
            .releases
            .running(&ReleaseTarget::new("app", None));
        release.map(|r| r.version.clone())
    }
}

/// `app stop` runs on every host's executor under the deploy lock and is recorded as a stop:
/// started with its hosts, each host's stopped container and verdict, finished; afterwards the
/// log knows nothing runs, and a rollback would say it starts from nothing. `app start` starts
/// the newest release's containers again, and the log knows v2 runs.
#[tokio::test(start_paused = true)]
async fn stop_and_start_are_run_by_the_executors_and_recorded() {
    let world = World::with(
        "{}",
        [Behaviour::Healthy, Behaviour::Healthy, Behaviour::Healthy],
    );
    world.deploy("v1").await.1.expect("v1");
    world.deploy("v2").await.1.expect("v2");
    assert_eq!(world.running().as_deref(), Some("v2"));

    let (id, stopped) = world.operate(Operation::AppStop).await;
    let stopped = stopped.expect("stop runs");
    assert_eq!(stopped.outcome.failed, Vec::<String>::new());
    assert_eq!(world.count(&id, "OldContainerStopped"), all(1));
    assert_eq!(world.count(&id, "HostSucceeded"), all(1));
    assert_eq!(world.count(&id, "OperationSucceeded"), all(1));
    assert_eq!(
        world.story(&id),
        [
            "OperationStarted",
            "LockAcquired",
            "OperationFinished",
            "LockReleased"
        ]
    );
    let started = world.events(&id);
    match &started[0].event {
        Event::OperationStarted(o) => {
            assert_eq!(o.operation, Operation::AppStop);
            assert_eq!(o.hosts, HOSTS);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        world.transport.lock_holder("app").is_none(),
        "lock released"
    );
    assert_eq!(world.running(), None, "nothing runs after app stop");
    let (_, rollback) =
        plans::rollback_plan(&world.config, &world.log, None, &Narrow::default()).expect("plan");
    assert_eq!(rollback.from_version, None);
    assert_eq!(rollback.to_version, "v1");

    let (id, started) = world.operate(Operation::AppStart { version: None }).await;
    started.expect("start runs");
    let names: Vec<String> = world
        .events(&id)
        .iter()
        .filter_map(|e| match &e.event {
            Event::ContainerStarted(c) => Some(c.name.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(names, ["app-web-v2"; 3]);
    assert_eq!(world.running().as_deref(), Some("v2"));
}

/// Starting a version no host has fails on every host with the executor's reason, recorded
/// as the start's failure on each host; the lock is released all the same.
#[tokio::test(start_paused = true)]
async fn a_start_of_a_missing_version_fails_with_the_reason() {
    let world = World::with(
        "{}",
        [Behaviour::Healthy, Behaviour::Healthy, Behaviour::Healthy],
    );
    world.deploy("v1").await.1.expect("v1");
    let op = Operation::AppStart {
        version: Some("v9".into()),
    };
    let (id, finished) = world.operate(op).await;
    let finished = finished.expect("runs to its end");
    assert_eq!(finished.outcome.failed, HOSTS);
    let reasons: Vec<String> = world
        .events(&id)
        .iter()
        .filter_map(|e| match &e.event {
            Event::OperationFailed(f) => Some(f.reason.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(reasons.len(), 3);
    assert!(
        reasons
            .iter()
            .all(|r| r.contains("no container app-web-v9")),
        "{reasons:?}"
    );
    match &world.events(&id).last().expect("events").event {
        Event::LockReleased(_) => {}
        other => panic!("{other:?}"),
    }
    assert!(
        world.transport.lock_holder("app").is_none(),
        "lock released"
    );
    // A failed stop elsewhere does not count as stopped; v1 still runs.
    assert_eq!(world.running().as_deref(), Some("v1"));
}

/// `prune containers` and `app remove` are planned for the executors too: the prune keeps the
/// running release, and after a remove nothing runs; both are refused while the deploy lock
/// is held by someone else, with nothing recorded.
#[tokio::test(start_paused = true)]
async fn prune_and_remove_run_on_the_executors() {
    let world = World::with(
        "{}",
        [Behaviour::Healthy, Behaviour::Healthy, Behaviour::Healthy],
    );
    for v in ["v1", "v2", "v3"] {
        world.deploy(v).await.1.expect("deploy");
    }
    let prune = Operation::Prune {
        containers: true,
        images: false,
        retain: 0,
    };
    let (id, pruned) = world.operate(prune.clone()).await;
    pruned.expect("prune runs");
    assert_eq!(world.count(&id, "OperationSucceeded"), all(1));
    assert_eq!(world.running().as_deref(), Some("v3"));

    let (id, removed) = world.operate(Operation::AppRemove).await;
    removed.expect("remove runs");
    assert_eq!(world.count(&id, "OldContainerStopped"), all(1));
    assert_eq!(world.running(), None);

    let before = world.log.last_seq();
    let key = flotilla_scheduler::transport::lock::lock_key("app", None);
    let info = flotilla_scheduler::transport::lock::LockInfo {
        holder: "someone".into(),
        message: "db migration".into(),
        acquired_at: "now".into(),
        machine: "laptop".into(),
        version: None,
        deploy_id: None,
        expires_at_ms: None,
    };
    use flotilla_scheduler::transport::Transport as _;
    let _held = world
        .transport
        .acquire_lock(&key, &info, None)
        .await
        .expect("lock");
    let (_, refused) = world.operate(prune).await;
    assert!(
        matches!(refused, Err(ProcedureError::Lock(_))),
        "{refused:?}"
    );
    assert_eq!(
        world.log.last_seq(),
        before,
        "a refused operation records nothing"
    );
}

/// `app maintenance` and `app live` are steps of the hosts' executors on their own proxies:
/// recorded as themselves on every host; before anything was deployed the proxies have no
/// such service and each host's failure says so.
#[tokio::test(start_paused = true)]
async fn maintenance_and_live_run_on_each_hosts_proxy() {
    let world = World::with(
        "{}",
        [Behaviour::Healthy, Behaviour::Healthy, Behaviour::Healthy],
    );
    let maintenance = Operation::AppMaintenance {
        message: Some("Back at ten".into()),
    };
    let (id, early) = world.operate(maintenance.clone()).await;
    assert_eq!(early.expect("runs").outcome.failed, HOSTS);
    let reasons: Vec<String> = world
        .events(&id)
        .iter()
        .filter_map(|e| match &e.event {
            Event::OperationFailed(f) => Some(f.reason.clone()),
            _ => None,
        })
        .collect();
    assert!(
        reasons.iter().all(|r| r.contains("no service app-web")),
        "{reasons:?}"
    );

    world.deploy("v1").await.1.expect("v1");
    let (id, on) = world.operate(maintenance).await;
    assert!(on.expect("runs").outcome.failed.is_empty());
    assert_eq!(world.count(&id, "OperationSucceeded"), all(1));
    let (id, live) = world.operate(Operation::AppLive).await;
    assert!(live.expect("runs").outcome.failed.is_empty());
    assert_eq!(world.count(&id, "OperationSucceeded"), all(1));
    assert_eq!(world.running().as_deref(), Some("v1"));
}

/// `prune all` and `prune images` run on every host's executor and are recorded as prunes
/// (started, each host's verdict, finished; no step of another kind), leaving the running
/// release; a prune the service could not plan never reaches a host.
#[tokio::test(start_paused = true)]
async fn prune_images_and_all_are_recorded_as_prunes() {
    let world = World::with(
        "{}",
        [Behaviour::Healthy, Behaviour::Healthy, Behaviour::Healthy],
    );
    for v in ["v1", "v2"] {
        world.deploy(v).await.1.expect("deploy");
    }
    for (containers, images) in [(true, true), (false, true)] {
        let prune = Operation::Prune {
            containers,
            images,
            retain: 0,
        };
        let (id, pruned) = world.operate(prune.clone()).await;
        let pruned = pruned.expect("prune runs");
        assert_eq!(pruned.outcome.failed, Vec::<String>::new());
        assert_eq!(world.count(&id, "OperationSucceeded"), all(1));
        assert_eq!(
            world.story(&id),
            [
                "OperationStarted",
                "LockAcquired",
                "OperationFinished",
                "LockReleased"
            ]
        );
        match &world.events(&id)[0].event {
            Event::OperationStarted(o) => assert_eq!(o.operation, prune),
            other => panic!("{other:?}"),
        }
        assert_eq!(world.running().as_deref(), Some("v2"));
    }
}

/// The images a prune keeps are the rollback target's, by digest and tag, and the last good
/// release's: a rollback after `prune images` pulls nothing it had.
#[tokio::test(start_paused = true)]
async fn prune_images_keeps_the_rollback_targets_image() {
    let world = World::with(
        "{}",
        [Behaviour::Healthy, Behaviour::Healthy, Behaviour::Healthy],
    );
    for v in ["v1", "v2"] {
        world.deploy(v).await.1.expect("deploy");
    }
    let prune = Operation::Prune {
        containers: false,
        images: true,
        retain: 0,
    };
    let plan = plans::operation_plan(
        &world.config,
        &world.log,
        &prune,
        &Narrow::default(),
        &Default::default(),
    )
    .expect("plan");
    let protected = match &plan.hosts[0].steps[..] {
        [flotilla_deploy::plan::Step::PruneImages { protected }] => protected.clone(),
        other => panic!("{other:?}"),
    };
    let repository = world.config.repository();
    assert!(
        protected.contains(&format!("{repository}:v1")),
        "{protected:?}"
    );
    assert!(
        protected.contains(&format!("{repository}:v2")),
        "{protected:?}"
    );
    assert!(
        protected
            .iter()
            .any(|p| p.starts_with(&format!("{repository}@sha256:"))),
        "{protected:?}"
    );
}

/// `app stale_containers --stop` stops, on each host, the running containers of versions
/// other than the one the log says the host runs, recorded as what happened (each stopped
/// container); with nothing running by the log it is refused before reaching a host.
#[tokio::test(start_paused = true)]
async fn stale_containers_stop_keeps_each_hosts_release() {
    let world = World::with(
        "{}",
        [Behaviour::Healthy, Behaviour::Healthy, Behaviour::Healthy],
    );
    for v in ["v1", "v2"] {
        world.deploy(v).await.1.expect("deploy");
    }
    // v1 started again beside v2: stale on every host.
    let (_, started) = world
        .operate(Operation::AppStart {
            version: Some("v1".into()),
        })
        .await;
    started.expect("start runs");
    let (id, stopped) = world.operate(Operation::StaleContainersStop).await;
    stopped.expect("stop stale runs");
    let names: Vec<String> = world
        .events(&id)
        .iter()
        .filter_map(|e| match &e.event {
            Event::OldContainerStopped(c) => Some(c.name.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(names, ["app-web-v1"; 3]);
    assert_eq!(world.count(&id, "OperationSucceeded"), all(1));

    world.operate(Operation::AppStop).await.1.expect("stop");
    let refused = plans::operation_plan(
        &world.config,
        &world.log,
        &Operation::StaleContainersStop,
        &Narrow::default(),
        &Default::default(),
    );
    assert!(
        matches!(refused, Err(plans::PlanError::NothingRunning(_))),
        "{refused:?}"
    );
}

/// `accessory reboot db` is run by the executors of db's hosts (not the app's third host)
/// under the deploy lock and recorded as the accessory operation it is: each host's
/// `AccessoryBooted` and verdict, then finished. A `boot` after it finds the container on
/// each host and leaves it (Kamal's skip: no `AccessoryBooted`), and still succeeds.
#[tokio::test(start_paused = true)]
async fn accessory_reboot_is_run_by_the_executors_and_recorded() {
    use flotilla_deploy::config::{LoadOptions, load};
    use flotilla_events::event::AccessoryAction;
    let mut world = World::with(
        "{}",
        [Behaviour::Healthy, Behaviour::Healthy, Behaviour::Healthy],
    );
    let path = world.root.join("config/deploy.yml");
    let mut yaml = std::fs::read_to_string(&path).expect("deploy.yml");
    yaml.push_str(
        "accessories:\n  db:\n    image: registry.test:5000/db:1\n    hosts: [h1, h2]\n    \
         volumes:\n      - app-db:/var/lib/db\n",
    );
    std::fs::write(&path, yaml).expect("deploy.yml");
    world.config = load(&LoadOptions {
        root: world.root.clone(),
        config_file: "config/deploy.yml".into(),
        destination: None,
        env: std::collections::BTreeMap::new(),
    })
    .expect("config");
    let accessory = |action| Operation::Accessory {
        name: "db".into(),
        action,
    };
    let two = |n| {
        ["h1", "h2"]
            .iter()
            .map(|h| ((*h).to_owned(), n))
            .collect::<std::collections::BTreeMap<_, _>>()
    };

    let (id, rebooted) = world.operate(accessory(AccessoryAction::Reboot)).await;
    let rebooted = rebooted.expect("reboot runs");
    assert_eq!(rebooted.outcome.failed, Vec::<String>::new());
    assert_eq!(world.count(&id, "AccessoryBooted"), two(1));
    assert_eq!(world.count(&id, "OperationSucceeded"), two(1));
    assert_eq!(
        world.story(&id),
        [
            "OperationStarted",
            "LockAcquired",
            "OperationFinished",
            "LockReleased"
        ]
    );
    match &world.events(&id)[0].event {
        Event::OperationStarted(o) => {
            assert_eq!(o.operation, accessory(AccessoryAction::Reboot));
            assert_eq!(o.hosts, ["h1", "h2"]);
        }
        other => panic!("{other:?}"),
    }

    let (id, booted) = world.operate(accessory(AccessoryAction::Boot)).await;
    booted.expect("boot runs");
    assert_eq!(world.count(&id, "AccessoryBooted"), Default::default());
    assert_eq!(world.count(&id, "OperationSucceeded"), two(1));
}
