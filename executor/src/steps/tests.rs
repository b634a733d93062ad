//! Step logic against the simulated runtime: idempotency, Kamal names and env, reporting.
//! The real behaviour against Docker is proved by the end-to-end tests on the fleet.
#![allow(clippy::unwrap_used)]

use std::sync::Mutex;

use flotilla_events::{DeployId, Event, Timestamp};
use tokio::sync::watch;

use super::*;
use crate::job::{JobOutcome, Sink, SinkError, run_job};
use crate::runtime::sim::{SimConfig, SimRuntime};
use flotilla_protocol::sealing::seal;
use flotilla_protocol::wire::*;

fn executor() -> Executor<SimRuntime, SimRuntime> {
    let config = SimConfig {
        latency: std::time::Duration::ZERO,
        pull_latency: std::time::Duration::ZERO,
        failure_rate: 0.0,
        ..Default::default()
    };
    Executor::new(
        SimRuntime::new(config.clone()),
        SimRuntime::new(config),
        HostKey::generate(),
        "10.0.0.5",
    )
}

fn start_step(ex: &Executor<SimRuntime, SimRuntime>, version: &str) -> StartContainer {
    StartContainer {
        service: "app".into(),
        role: "web".into(),
        destination: None,
        version: version.into(),
        config: ContainerConfig {
            image: format!("r/app:{version}"),
            env: vec![("MODE".into(), "prod".into())],
            secret_env: vec![(
                "DB_PASSWORD".into(),
                seal(&ex.host_key().public_key_base64(), "hunter2").unwrap(),
            )],
            ..Default::default()
        },
    }
}

fn job(steps: Vec<JobStep>) -> Job {
    Job {
        id: "01JOBTEST".into(),
        deploy_id: DeployId::from("01DEPLOY"),
        host: "10.0.0.5".into(),
        issued_at: Timestamp::now(),
        expires_at: Timestamp::from_unix_ms(Timestamp::now().unix_ms() + 60_000),
        generation: 1,
        scope: "app".into(),
        steps,
    }
}

#[derive(Default)]
struct VecSink(Mutex<Vec<Report>>);

impl Sink for VecSink {
    async fn report(&self, report: &Report) -> Result<(), SinkError> {
        self.0.lock().unwrap().push(report.clone());
        Ok(())
    }
}

fn types(reports: &[Report]) -> Vec<&'static str> {
    reports
        .iter()
        .map(|r| match r {
            Report::Event(e) => e.event.event.type_name(),
            Report::Refused(_) => "Refused",
        })
        .collect()
}

/// Starting the same version twice (a redelivered job) leaves one container and reports
/// the same container id; the container has Kamal's name, labels and `KAMAL_*` env.
#[tokio::test]
async fn start_is_idempotent_with_kamal_names() {
    let ex = executor();
    let step = JobStep::StartContainer(start_step(&ex, "v1"));
    let first = ex.run_step(&step).await.unwrap();
    let second = ex.run_step(&step).await.unwrap();
    assert_eq!(first, second);
    let all = ex.runtime.list(&[], true).await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].name, "app-web-v1");
    assert_eq!(
        all[0].labels.get("service").map(String::as_str),
        Some("app")
    );
    assert_eq!(all[0].labels.get("role").map(String::as_str), Some("web"));
    assert!(
        matches!(&first[0], Event::ContainerStarted(c) if c.name == "app-web-v1" && c.version == "v1")
    );
}

/// A secret sealed to another host fails the step with a message naming the variable, and
/// the value itself appears nowhere in the error.
#[tokio::test]
async fn secret_for_another_host_fails_the_step() {
    let ex = executor();
    let mut step = start_step(&ex, "v1");
    step.config.secret_env = vec![(
        "DB_PASSWORD".into(),
        seal(&HostKey::generate().public_key_base64(), "hunter2").unwrap(),
    )];
    let failed = ex
        .run_step(&JobStep::StartContainer(step))
        .await
        .unwrap_err();
    assert!(failed.error.contains("DB_PASSWORD"), "{}", failed.error);
    assert!(!failed.error.contains("hunter2"));
}

/// The steps of a deploy job of `v`: pull, start, switch, stop the old version.
fn deploy_steps(ex: &Executor<SimRuntime, SimRuntime>, v: &str) -> Vec<JobStep> {
    vec![
        JobStep::PullImage(PullImage {
            image: format!("r/app:{v}"),
            auth: None,
        }),
        JobStep::StartContainer(start_step(ex, v)),
        JobStep::SwitchProxy(SwitchProxy {
            proxy_service: "app-web".into(),
            container: format!("app-web-{v}"),
            version: v.into(),
            app_port: 80,
            hosts: vec![],
            path_prefix: None,
            health_path: "/up".into(),
            health_interval_ms: 100,
            health_timeout_ms: 1000,
            deploy_timeout_ms: 5000,
            drain_timeout_ms: 1000,
        }),
        JobStep::StopOldContainers(StopOldContainers {
            service: "app".into(),
            role: "web".into(),
            destination: None,
            keep: format!("app-web-{v}"),
            stop_timeout_s: 1,
        }),
    ]
}

/// A full v1 job reports each step's event then `HostSucceeded`; v2 replaces v1 (v1 stopped);
/// a rerun of the v2 job reports the same event ids; prune keeps protected containers.
#[tokio::test]
async fn deploy_jobs_report_each_step_and_replace_the_old_version() {
    let ex = executor();
    let (_tx, stop) = watch::channel(false);
    let sink = VecSink::default();
    let v1 = job(deploy_steps(&ex, "v1"));
    assert!(matches!(
        run_job(&ex, &v1, &sink, &stop).await.unwrap(),
        JobOutcome::Finished(_)
    ));
    let mut v2 = job(deploy_steps(&ex, "v2"));
    v2.id = "01JOBV2".into();
    let JobOutcome::Finished(reports) =
        run_job(&ex, &v2, &VecSink::default(), &stop).await.unwrap()
    else {
        panic!("v2 interrupted")
    };
    assert_eq!(
        types(&reports),
        [
            "ImagePulled",
            "ContainerStarted",
            "HealthPassed",
            "ProxySwitched",
            "OldContainerStopped",
            "HostSucceeded"
        ]
    );
    let Report::Event(switched) = &reports[3] else {
        panic!()
    };
    assert_eq!(
        switched.event.event,
        Event::ProxySwitched(flotilla_events::event::ProxySwitched {
            from: Some("app-web-v1".into()),
            to: "app-web-v2".into()
        })
    );
    let running: Vec<String> = ex
        .runtime
        .list(&[], false)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(running, ["app-web-v2"]);

    let JobOutcome::Finished(again) = run_job(&ex, &v2, &VecSink::default(), &stop).await.unwrap()
    else {
        panic!("rerun interrupted")
    };
    let ids = |r: &[Report]| -> Vec<String> {
        r.iter()
            .filter_map(|r| match r {
                Report::Event(e) => Some(e.event.id.to_string()),
                _ => None,
            })
            .collect()
    };
    assert_eq!(ids(&again)[..2], ids(&reports)[..2]);
    assert_eq!(
        ex.runtime.list(&[], true).await.unwrap().len(),
        2,
        "no second container"
    );

    let prune = JobStep::Prune(Prune {
        service: "app".into(),
        retain: 0,
        protected: vec!["app-web-v1".into()],
    });
    ex.run_step(&prune).await.unwrap();
    assert_eq!(
        ex.runtime.list(&[], true).await.unwrap().len(),
        2,
        "protected v1 kept"
    );
    let prune = JobStep::Prune(Prune {
        service: "app".into(),
        retain: 0,
        protected: vec![],
    });
    ex.run_step(&prune).await.unwrap();
    assert_eq!(
        ex.runtime.list(&[], true).await.unwrap().len(),
        1,
        "stopped v1 pruned"
    );
}

/// Fails the first publish of each report of one event type (a NATS node dying with it),
/// records every publish that succeeds.
struct FlakySink {
    fail_once: &'static str,
    failed: Mutex<Vec<String>>,
    published: VecSink,
}

impl Sink for FlakySink {
    async fn report(&self, report: &Report) -> Result<(), SinkError> {
        if let Report::Event(e) = report {
            let id = e.event.id.to_string();
            let mut failed = self.failed.lock().unwrap();
            if e.event.event.type_name() == self.fail_once && !failed.contains(&id) {
                failed.push(id);
                return Err(SinkError("no responders: the node is gone".into()));
            }
        }
        self.published.report(report).await
    }
}

/// A stop whose report is lost in flight (the NATS node it went to died) is still recorded:
/// the report is published again rather than the job handed back, where the rerun would find
/// the old container stopped already and report nothing.
#[tokio::test]
async fn a_report_that_fails_once_is_published_again_not_lost() {
    let ex = executor();
    let (_tx, stop) = watch::channel(false);
    run_job(
        &ex,
        &job(deploy_steps(&ex, "v1")),
        &VecSink::default(),
        &stop,
    )
    .await
    .unwrap();
    let mut v2 = job(deploy_steps(&ex, "v2"));
    v2.id = "01JOBV2".into();
    let sink = FlakySink {
        fail_once: "OldContainerStopped",
        failed: Mutex::default(),
        published: VecSink::default(),
    };
    let JobOutcome::Finished(reports) = run_job(&ex, &v2, &sink, &stop).await.unwrap() else {
        panic!("v2 interrupted")
    };
    assert_eq!(sink.failed.lock().unwrap().len(), 1, "one publish failed");
    let published = sink.published.0.lock().unwrap().clone();
    assert_eq!(
        types(&published),
        [
            "ImagePulled",
            "ContainerStarted",
            "HealthPassed",
            "ProxySwitched",
            "OldContainerStopped",
            "HostSucceeded"
        ],
        "every event published exactly once"
    );
    assert_eq!(types(&reports), types(&published));
}

/// A failing step ends the job with `HostFailed` naming the step and Docker's error; on
/// shutdown before a step, the job is handed back untouched.
#[tokio::test]
async fn failure_and_shutdown() {
    let ex = executor();
    let (tx, stop) = watch::channel(false);
    let j = job(vec![JobStep::StartExisting(ContainerRef {
        container: "missing".into(),
    })]);
    let JobOutcome::Finished(reports) = run_job(&ex, &j, &VecSink::default(), &stop).await.unwrap()
    else {
        panic!()
    };
    let Report::Event(last) = reports.last().unwrap() else {
        panic!()
    };
    assert!(
        matches!(&last.event.event, Event::HostFailed(f) if f.step == flotilla_events::Step::StartContainer && f.error.contains("no container missing"))
    );
    tx.send(true).unwrap();
    assert!(matches!(
        run_job(&ex, &j, &VecSink::default(), &stop).await.unwrap(),
        JobOutcome::Interrupted
    ));
}

/// Event ids are stable per job, step and index, and distinct across them.
#[test]
fn event_ids_are_deterministic() {
    let j = job(vec![]);
    assert_eq!(event_id(&j, Some(0), 0), event_id(&j, Some(0), 0));
    assert_ne!(event_id(&j, Some(0), 0), event_id(&j, Some(0), 1));
    assert_ne!(event_id(&j, Some(0), 0), event_id(&j, Some(1), 0));
    assert_ne!(event_id(&j, Some(0), 0), event_id(&j, None, 0));
    let mut other = j.clone();
    other.id = "01OTHER".into();
    assert_ne!(event_id(&j, Some(0), 0), event_id(&other, Some(0), 0));
}

/// The simulated runtime carries a thousand hosts' jobs in one process, and its failure rate
/// turns into `HostFailed` events carrying the simulated error (what fleet benchmarks use).
#[tokio::test]
async fn simulated_fleet_runs_and_fails_on_demand() {
    let config = SimConfig {
        latency: std::time::Duration::from_millis(1),
        pull_latency: std::time::Duration::from_millis(5),
        failure_rate: 0.0,
        ..Default::default()
    };
    let hosts: Vec<_> = (0..1000)
        .map(|i| {
            Executor::new(
                SimRuntime::new(config.clone()),
                SimRuntime::new(config.clone()),
                HostKey::generate(),
                format!("10.1.{}.{}", i / 250, i % 250),
            )
        })
        .collect();
    let (_tx, stop) = watch::channel(false);
    let runs = hosts.iter().map(|ex| {
        let stop = stop.clone();
        async move {
            let j = job(vec![
                JobStep::PullImage(PullImage {
                    image: "r/app:v1".into(),
                    auth: None,
                }),
                JobStep::StartContainer(start_step(ex, "v1")),
            ]);
            run_job(ex, &j, &VecSink::default(), &stop).await.unwrap()
        }
    });
    let outcomes = futures::future::join_all(runs).await;
    assert!(outcomes.iter().all(
        |o| matches!(o, JobOutcome::Finished(r) if types(r).last() == Some(&"HostSucceeded"))
    ));

    let failing = Executor::new(
        SimRuntime::new(SimConfig {
            failure_rate: 1.0,
            ..config.clone()
        }),
        SimRuntime::new(config),
        HostKey::generate(),
        "10.0.0.9",
    );
    let j = job(vec![JobStep::PullImage(PullImage {
        image: "r/app:v1".into(),
        auth: None,
    })]);
    let JobOutcome::Finished(reports) = run_job(&failing, &j, &VecSink::default(), &stop)
        .await
        .unwrap()
    else {
        panic!()
    };
    let Report::Event(last) = reports.last().unwrap() else {
        panic!()
    };
    assert!(
        matches!(&last.event.event, Event::HostFailed(f) if f.error.contains("simulated failure"))
    );
}

/// A switch run again after it was done (a redelivered job, an executor restarted mid-job)
/// reports the same `ProxySwitched v1 -> v2` as the first run, whether or not the old
/// container was stopped in between, never `none -> v2`.
#[tokio::test]
async fn a_redelivered_switch_reports_the_container_it_replaced() {
    let ex = executor();
    let switch = |v: &str| {
        JobStep::SwitchProxy(SwitchProxy {
            proxy_service: "app-web".into(),
            container: format!("app-web-{v}"),
            version: v.into(),
            app_port: 80,
            hosts: vec![],
            path_prefix: None,
            health_path: "/up".into(),
            health_interval_ms: 100,
            health_timeout_ms: 1000,
            deploy_timeout_ms: 5000,
            drain_timeout_ms: 1000,
        })
    };
    for v in ["v1", "v2"] {
        ex.run_step(&JobStep::StartContainer(start_step(&ex, v)))
            .await
            .unwrap();
    }
    ex.run_step(&switch("v1")).await.unwrap();
    let first = ex.run_step(&switch("v2")).await.unwrap();
    let expected = Event::ProxySwitched(flotilla_events::event::ProxySwitched {
        from: Some("app-web-v1".into()),
        to: "app-web-v2".into(),
    });
    assert_eq!(first[1], expected);
    assert_eq!(ex.run_step(&switch("v2")).await.unwrap()[1], expected);
    ex.run_step(&JobStep::StopOldContainers(StopOldContainers {
        service: "app".into(),
        role: "web".into(),
        destination: None,
        keep: "app-web-v2".into(),
        stop_timeout_s: 1,
    }))
    .await
    .unwrap();
    assert_eq!(ex.run_step(&switch("v2")).await.unwrap()[1], expected);
}

/// dockerd stopped while a new version waits to be healthy: the step fails as "docker
/// engine unreachable" (cause `EngineUnreachable`, no `HealthFailed` verdict on the version),
/// and when dockerd starts again only the old, proven container comes back: the new one,
/// which could not be stopped, does not serve beside it.
#[tokio::test]
async fn a_stopped_engine_is_not_a_failed_health_check_and_its_new_container_stays_down() {
    let ex = executor();
    let healthy = |v: &str| {
        JobStep::AwaitHealthy(AwaitHealthy {
            container: format!("app-web-{v}"),
            readiness_delay_ms: 0,
            timeout_ms: 1000,
            interval_ms: 10,
        })
    };
    ex.run_step(&JobStep::StartContainer(start_step(&ex, "v1")))
        .await
        .unwrap();
    ex.run_step(&healthy("v1")).await.unwrap();
    ex.run_step(&JobStep::StartContainer(start_step(&ex, "v2")))
        .await
        .unwrap();

    ex.runtime.stop_engine();
    let failed = ex.run_step(&healthy("v2")).await.unwrap_err();
    assert_eq!(failed.cause, FailureCause::EngineUnreachable);
    assert!(failed.events.is_empty(), "{:?}", failed.events);
    assert!(
        failed.error.starts_with("docker engine unreachable"),
        "{}",
        failed.error
    );

    ex.runtime.start_engine();
    let running: Vec<String> = ex
        .runtime
        .list(&[], false)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(running, ["app-web-v1"]);
}

/// A step that fails while the engine answers keeps its own failure (`StepFailed`).
#[tokio::test]
async fn a_step_failing_with_the_engine_up_keeps_its_cause() {
    let ex = executor();
    let failed = ex
        .run_step(&JobStep::StopContainer(StopContainer {
            container: "app-web-v9".into(),
            stop_timeout_s: 1,
        }))
        .await
        .unwrap_err();
    assert_eq!(failed.cause, FailureCause::StepFailed);
    assert!(
        failed.error.contains("no container app-web-v9"),
        "{}",
        failed.error
    );
}

/// A proxy whose health wait outlasts the test; the engine stops as the wait begins.
struct WaitingProxy(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Proxy for WaitingProxy {
    async fn deploy(
        &self,
        _request: flotilla_proxy::admin::DeployRequest,
    ) -> Result<flotilla_proxy::admin::Deployed, crate::runtime::ProxyError> {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        std::future::pending().await
    }

    async fn target(&self, _service: &str) -> Result<Option<String>, crate::runtime::ProxyError> {
        Ok(None)
    }

    async fn services(
        &self,
    ) -> Result<Vec<flotilla_proxy::admin::ServiceStatus>, crate::runtime::ProxyError> {
        Ok(Vec::new())
    }
}

/// dockerd stopped while the proxy waits for the new container to be healthy: the switch
/// fails within seconds as "docker engine unreachable", not at the end of `deploy_timeout`
/// (here ten minutes) as an unhealthy container.
#[tokio::test(start_paused = true)]
async fn a_switch_waiting_on_the_proxy_notices_a_stopped_engine_in_seconds() {
    let runtime = SimRuntime::new(SimConfig {
        latency: std::time::Duration::ZERO,
        pull_latency: std::time::Duration::ZERO,
        failure_rate: 0.0,
        ..Default::default()
    });
    let proxy = WaitingProxy(runtime.engine_down_flag());
    let ex = Executor::new(runtime, proxy, HostKey::generate(), "10.0.0.5");
    let start = StartContainer {
        service: "app".into(),
        role: "web".into(),
        destination: None,
        version: "v2".into(),
        config: ContainerConfig {
            image: "r/app:v2".into(),
            ..Default::default()
        },
    };
    ex.run_step(&JobStep::StartContainer(start)).await.unwrap();
    let began = tokio::time::Instant::now();
    let failed = ex
        .run_step(&JobStep::SwitchProxy(SwitchProxy {
            proxy_service: "app-web".into(),
            container: "app-web-v2".into(),
            version: "v2".into(),
            app_port: 80,
            hosts: vec![],
            path_prefix: None,
            health_path: "/up".into(),
            health_interval_ms: 100,
            health_timeout_ms: 1000,
            deploy_timeout_ms: 600_000,
            drain_timeout_ms: 1000,
        }))
        .await
        .unwrap_err();
    assert_eq!(
        failed.cause,
        FailureCause::EngineUnreachable,
        "{}",
        failed.error
    );
    assert!(failed.error.contains("abandoned"), "{}", failed.error);
    assert!(
        began.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        began.elapsed()
    );
}

/// The values scrubbed from reports are the job's secret env and registry password; the
/// registry username (sealed in transit) is not one of them, since it is often the service's
/// own name, which container names in events must keep.
#[test]
fn job_secrets_are_the_secret_values_only() {
    let ex = executor();
    let key = ex.host_key().public_key_base64();
    let mut start = start_step(&ex, "v1");
    start.config.secret_env.push((
        "SECRET_KEY_BASE".into(),
        seal(&key, "sk-base-0123456789").unwrap(),
    ));
    let pull = JobStep::PullImage(flotilla_protocol::wire::PullImage {
        image: "r/app:v1".into(),
        auth: Some(flotilla_protocol::wire::RegistryAuth {
            server: "r".into(),
            username: seal(&key, "app").unwrap(),
            password: seal(&key, "registry-pw-123").unwrap(),
        }),
    });
    let secrets = ex.job_secrets(&job(vec![pull, JobStep::StartContainer(start)]));
    let mut names: Vec<&str> = secrets.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["DB_PASSWORD", "SECRET_KEY_BASE", "registry password"]
    );
}

/// An executor run in a container (host `/` bound at its host root) writes an accessory's
/// directories and files on the host, where Docker binds them from, and removes them there;
/// errors name the host path.
#[tokio::test]
async fn accessory_files_go_to_the_host_through_the_host_root() {
    use flotilla_protocol::wire::{AccessoryFile, BootAccessory, RemoveAccessory};
    let root = tempfile::tempdir().unwrap();
    let ex = executor().with_host_root(root.path());
    let boot = BootAccessory {
        service: "app".into(),
        name: "db".into(),
        config: ContainerConfig {
            image: "r/db:1".into(),
            ..Default::default()
        },
        directories: vec!["/srv/app-db/data".into()],
        files: vec![AccessoryFile {
            path: "/srv/app-db/conf/db.conf".into(),
            contents: b"max_connections=10\n".to_vec(),
            mode: 0o640,
        }],
    };
    ex.run_step(&JobStep::BootAccessory(boot)).await.unwrap();
    assert!(root.path().join("srv/app-db/data").is_dir());
    assert_eq!(
        std::fs::read(root.path().join("srv/app-db/conf/db.conf")).unwrap(),
        b"max_connections=10\n"
    );
    let remove = RemoveAccessory {
        service: "app".into(),
        name: "db".into(),
        paths: vec!["/srv/app-db".into()],
    };
    ex.run_step(&JobStep::RemoveAccessory(remove))
        .await
        .unwrap();
    assert!(!root.path().join("srv").join("app-db").exists());
    assert!(root.path().join("srv").is_dir(), "only the named path goes");
}

/// Kamal's `accessory boot` leaves a host whose accessory container exists as it is (no
/// `AccessoryBooted`, the same container); `reboot` replaces it with a new one; the files,
/// sealed to the host, are opened and written there.
#[tokio::test]
async fn sealed_accessory_boot_keeps_an_existing_container_and_reboot_replaces_it() {
    use flotilla_protocol::sealing::seal_bytes;
    let root = tempfile::tempdir().unwrap();
    let ex = executor().with_host_root(root.path());
    let key = ex.host_key().public_key_base64();
    let boot = |existing| {
        JobStep::BootSealedAccessory(BootSealedAccessory {
            name: "db".into(),
            container: "app-db".into(),
            config: ContainerConfig {
                image: "r/db:1".into(),
                ..Default::default()
            },
            auth: None,
            directories: vec!["/root/app-db/data".into()],
            files: vec![SealedFile {
                path: "/root/app-db/etc/db.conf".into(),
                contents: seal_bytes(&key, b"password=hunter2\n").unwrap(),
                mode: 0o600,
            }],
            existing,
            shm_size_bytes: None,
            restart: None,
            network: None,
            nano_cpus: None,
            user: None,
            hostname: None,
        })
    };
    let booted = ex.run_step(&boot(ExistingAccessory::Keep)).await.unwrap();
    assert!(matches!(booted.as_slice(), [Event::AccessoryBooted(a)] if a.name == "db"));
    assert!(root.path().join("root/app-db/data").is_dir());
    assert_eq!(
        std::fs::read(root.path().join("root/app-db/etc/db.conf")).unwrap(),
        b"password=hunter2\n"
    );
    let first = ex.runtime.inspect("app-db").await.unwrap().unwrap().id;
    ex.runtime.stop("app-db", 1).await.unwrap();

    let again = ex.run_step(&boot(ExistingAccessory::Keep)).await.unwrap();
    assert!(again.is_empty(), "{again:?}");
    let kept = ex.runtime.inspect("app-db").await.unwrap().unwrap();
    assert_eq!(kept.id, first);
    assert!(
        !kept.running,
        "boot leaves a stopped accessory stopped, as Kamal's does"
    );

    let rebooted = ex
        .run_step(&boot(ExistingAccessory::Replace { stop_timeout_s: 1 }))
        .await
        .unwrap();
    assert!(matches!(rebooted.as_slice(), [Event::AccessoryBooted(_)]));
    let new = ex.runtime.inspect("app-db").await.unwrap().unwrap();
    assert!(new.running);
    assert_ne!(new.id, first, "reboot made a new container");
}

/// `accessory remove`'s image step removes the image once no container uses it, and while
/// another container (here an app on the same image) still does, keeps it and says why
/// (`ImageKept`): the step succeeds either way, so the operation does not fail.
#[tokio::test]
async fn remove_image_keeps_an_image_another_container_uses() {
    let ex = executor();
    let step = JobStep::RemoveImage(ImageRef {
        image: "r/db:1".into(),
    });
    let other = StartContainer {
        config: ContainerConfig {
            image: "r/db:1".into(),
            ..Default::default()
        },
        ..start_step(&ex, "v1")
    };
    ex.run_step(&JobStep::StartContainer(other.clone()))
        .await
        .unwrap();
    let kept = ex.run_step(&step).await.unwrap();
    let [Event::ImageKept(k)] = kept.as_slice() else {
        panic!("{kept:?}")
    };
    assert_eq!(k.image, "r/db:1");
    assert!(k.reason.contains("is using"), "{}", k.reason);
    assert!(step.finished_by(&kept[0]), "a kept image ends the step");

    ex.runtime.remove(&other.container_name()).await.unwrap();
    let removed = ex.run_step(&step).await.unwrap();
    assert!(
        matches!(removed.as_slice(), [Event::ImageRemoved(r)] if r.image == "r/db:1"),
        "{removed:?}"
    );
}

/// Creates a running agent container `name` of `image` with `labels`, as setup leaves it.
async fn agent(ex: &Executor<SimRuntime, SimRuntime>, name: &str, image: &str, run: Option<&str>) {
    let labels = run
        .map(|l| {
            (
                flotilla_protocol::proxy_run::RUN_LABEL.to_owned(),
                l.to_owned(),
            )
        })
        .into_iter()
        .collect();
    let spec = crate::runtime::CreateSpec {
        name: name.into(),
        image: image.into(),
        labels,
        ..Default::default()
    };
    ex.runtime.create(&spec).await.unwrap();
    ex.runtime.start(name).await.unwrap();
}

fn replace(run: flotilla_protocol::proxy_run::ProxyRun, boot: bool) -> JobStep {
    JobStep::ReplaceProxy(ReplaceProxy { run, boot })
}

/// `proxy boot` on a host whose proxy was removed brings one up from the agents' image (the
/// executor's), with the settings in its label, on the host's network; a second `boot` leaves
/// the current proxy alone, and a stopped one with the same settings is started as it is.
#[tokio::test]
async fn proxy_boot_brings_up_a_missing_proxy_and_leaves_a_current_one() {
    let ex = executor();
    agent(&ex, "flotilla-executor", "flotilla:abc", None).await;
    let run = flotilla_protocol::proxy_run::ProxyRun::default();
    assert!(
        ex.run_step(&replace(run.clone(), true))
            .await
            .unwrap()
            .is_empty()
    );
    let proxy = ex.runtime.inspect("flotilla-proxy").await.unwrap().unwrap();
    assert!(proxy.running);
    assert_eq!(proxy.image, "flotilla:abc");
    assert_eq!(
        proxy.labels.get(flotilla_protocol::proxy_run::RUN_LABEL),
        Some(&run.label())
    );
    ex.run_step(&replace(run.clone(), true)).await.unwrap();
    let again = ex.runtime.inspect("flotilla-proxy").await.unwrap().unwrap();
    assert_eq!(again.id, proxy.id);
    ex.runtime.stop("flotilla-proxy", 1).await.unwrap();
    ex.run_step(&replace(run, true)).await.unwrap();
    let started = ex.runtime.inspect("flotilla-proxy").await.unwrap().unwrap();
    assert_eq!(started.id, proxy.id);
    assert!(started.running);
}

/// `proxy reboot` with the ports unchanged starts the successor beside the running proxy,
/// waits until it has taken the admin socket, then retires the old one: a new container
/// under the usual name, no successor left over.
#[tokio::test]
async fn proxy_reboot_hands_over_once_the_new_proxy_serves() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("proxy.sock");
    std::fs::write(&socket, b"old").unwrap();
    let ex = std::sync::Arc::new(executor().with_proxy_socket(&socket));
    let run = flotilla_protocol::proxy_run::ProxyRun::default();
    agent(&ex, "flotilla-proxy", "flotilla:abc", Some(&run.label())).await;
    let old = ex.runtime.inspect("flotilla-proxy").await.unwrap().unwrap();
    // The successor's part: once it runs, it replaces the admin socket.
    let successor = {
        let ex = ex.clone();
        let socket = socket.clone();
        tokio::spawn(async move {
            while ex
                .runtime
                .inspect("flotilla-proxy-next")
                .await
                .unwrap()
                .is_none_or(|c| !c.running)
            {
                tokio::task::yield_now().await;
            }
            // Made beside it and moved over, as a new file takes the path.
            let made = socket.with_extension("new");
            std::fs::write(&made, b"new").unwrap();
            std::fs::rename(&made, &socket).unwrap();
        })
    };
    ex.run_step(&replace(run.clone(), false)).await.unwrap();
    successor.await.unwrap();
    let new = ex.runtime.inspect("flotilla-proxy").await.unwrap().unwrap();
    assert_ne!(new.id, old.id);
    assert!(new.running);
    assert_eq!(new.image, "flotilla:abc");
    assert!(
        ex.runtime
            .inspect("flotilla-proxy-next")
            .await
            .unwrap()
            .is_none()
    );
}

/// A successor that never takes the admin socket is removed and the step fails saying the
/// old proxy still serves; the old proxy is untouched.
#[tokio::test(start_paused = true)]
async fn proxy_reboot_keeps_the_old_proxy_when_the_new_one_never_serves() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("proxy.sock");
    std::fs::write(&socket, b"old").unwrap();
    let ex = executor().with_proxy_socket(&socket);
    let run = flotilla_protocol::proxy_run::ProxyRun::default();
    agent(&ex, "flotilla-proxy", "flotilla:abc", Some(&run.label())).await;
    let old = ex.runtime.inspect("flotilla-proxy").await.unwrap().unwrap();
    let failed = ex.run_step(&replace(run, false)).await.unwrap_err();
    assert!(
        failed.error.contains("the old one still serves"),
        "{}",
        failed.error
    );
    let kept = ex.runtime.inspect("flotilla-proxy").await.unwrap().unwrap();
    assert_eq!(kept.id, old.id);
    assert!(kept.running);
    assert!(
        ex.runtime
            .inspect("flotilla-proxy-next")
            .await
            .unwrap()
            .is_none()
    );
}

/// New ports cannot be handed over: the old proxy is stopped and a new one binds them.
#[tokio::test]
async fn proxy_reboot_on_new_ports_replaces_the_proxy() {
    let ex = executor();
    let old_run = flotilla_protocol::proxy_run::ProxyRun::default();
    agent(
        &ex,
        "flotilla-proxy",
        "flotilla:abc",
        Some(&old_run.label()),
    )
    .await;
    let old = ex.runtime.inspect("flotilla-proxy").await.unwrap().unwrap();
    let run = flotilla_protocol::proxy_run::ProxyRun {
        http: "8080".into(),
        ..Default::default()
    };
    ex.run_step(&replace(run.clone(), false)).await.unwrap();
    let new = ex.runtime.inspect("flotilla-proxy").await.unwrap().unwrap();
    assert_ne!(new.id, old.id);
    assert!(new.running);
    assert_eq!(
        new.labels.get(flotilla_protocol::proxy_run::RUN_LABEL),
        Some(&run.label())
    );
}
