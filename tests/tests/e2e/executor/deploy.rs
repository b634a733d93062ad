//! Deploys, replacements, accessories, refusals, health failures and secrets on three hosts.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use flotilla_e2e::testapp;
use flotilla_events::{Event, Timestamp};
use flotilla_protocol::wire::{self, *};

use super::harness::*;
use crate::support::http_get;

/// On three real hosts: v1 boots through the proxy (events per step, `GET /version` through
/// each host's proxy answers v1, Kamal names, labels and env on the container); an accessory
/// boots with its directory, file, volume, port, command, logging, memory and extra hosts,
/// and is removed with them; a worker that crashes at start (printing the secret as it dies)
/// fails its Docker-state health wait with its exit code and where its log is, never the log;
/// v2 replaces v1 (v1 stopped, kept by prune as a protected rollback target); the same job
/// delivered again yields one container and the same events; expired, wrong-host and stale
/// (replayed) jobs are refused, unsigned and garbage messages dropped without a report; a
/// never-healthy version leaves v2 serving and reports `HealthFailed` without the app's log;
/// the secret is in the container's env but never in NATS traffic, the executor's logs or the
/// container's command line.
#[test]
fn executor_deploys_replaces_refuses_and_keeps_secrets() {
    runtime().block_on(async {
        let h = Harness::up(3).await;
        let bin = testapp::build_static_binary().unwrap();
        let v1 = testapp::build_and_push(&h.fleet, &bin, "testapp", "v1", "").unwrap();
        let v2 = testapp::build_and_push(&h.fleet, &bin, "testapp", "v2", "").unwrap();
        let bad = testapp::build_and_push(&h.fleet, &bin, "testapp", "bad", "ENV APP_MODE=unhealthy").unwrap();

        // v1 everywhere.
        let jobs: Vec<Job> = h.agents.iter().map(|a| deploy_job(a, &v1, "v1", 20_000)).collect();
        for (a, job) in h.agents.iter().zip(&jobs) {
            h.publish(&a.host, h.sign(job), &job.id).await;
        }
        for (a, job) in h.agents.iter().zip(&jobs) {
            let events = h.finished(&job.id).await;
            assert_eq!(
                types(&events),
                ["ImagePulled", "ContainerStarted", "HealthPassed", "ProxySwitched", "HostSucceeded"],
                "{}",
                h.logs()
            );
            let Event::ImagePulled(p) = &events[0].event.event else { unreachable!() };
            assert!(p.digest.starts_with("sha256:"), "{p:?}");
            assert_eq!(events[0].event.host.as_deref(), Some(a.host.addr.to_string().as_str()));
            assert_eq!(version_via_proxy(&a.host), "v1");
            let inspect = h.docker(
                &a.host,
                &["inspect", "testapp-web-v1", "--format", "{{.State.Running}} {{index .Config.Labels \"service\"}} {{index .Config.Labels \"role\"}} {{json .Config.Env}} {{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}"],
            );
            assert!(inspect.starts_with("true testapp web "), "{inspect}");
            for env in ["KAMAL_CONTAINER_NAME=testapp-web-v1", "KAMAL_VERSION=v1", &format!("KAMAL_HOST={}", a.host.addr), "RAILS_ENV=production", &format!("SECRET_TOKEN={SECRET}")] {
                assert!(inspect.contains(env), "{env} in {inspect}");
            }
            assert!(inspect.ends_with(" kamal"), "{inspect}");
        }

        // An accessory on the second host and a worker that crashes on the third, at once.
        let (b, c) = (&h.agents[1], &h.agents[2]);
        let data = b.dir.join("db-data");
        let boot = simple_job(b, vec![JobStep::BootAccessory(BootAccessory {
            service: "testapp".into(),
            name: "db".into(),
            config: ContainerConfig {
                image: v1.clone(),
                env: vec![("APP_VERSION".into(), "db-1".into())],
                volumes: vec![format!("{}:/data", data.display())],
                publish: vec!["8081:80".into()],
                cmd: Some(vec!["--accessory".into()]),
                log_driver: Some("json-file".into()),
                log_options: vec![("max-size".into(), "10m".into())],
                memory_bytes: Some(64 << 20),
                extra_hosts: vec!["db.internal:10.9.9.9".into()],
                ..Default::default()
            },
            directories: vec![data.display().to_string()],
            files: vec![AccessoryFile {
                path: data.join("conf/db.conf").display().to_string(),
                contents: b"max_connections=10\n".to_vec(),
                mode: 0o640,
            }],
        })]);
        h.publish(&b.host, h.sign(&boot), &boot.id).await;
        let worker = simple_job(c, vec![
            JobStep::StartContainer(StartContainer {
                service: "testapp".into(),
                role: "worker".into(),
                destination: None,
                version: "v1".into(),
                config: ContainerConfig {
                    image: v1.clone(),
                    env: vec![
                        ("APP_MODE".into(), "exit".into()),
                        ("APP_DUMP_SECRET".into(), "1".into()),
                    ],
                    // The crashing app prints it: its log must stay on the host.
                    secret_env: vec![(
                        "APP_SECRET".into(),
                        flotilla_protocol::sealing::seal(&c.sealing_key, SECRET).unwrap(),
                    )],
                    ..Default::default()
                },
            }),
            JobStep::AwaitHealthy(AwaitHealthy {
                container: "testapp-worker-v1".into(),
                readiness_delay_ms: 2_000,
                timeout_ms: 15_000,
                interval_ms: 100,
            }),
        ]);
        h.publish(&c.host, h.sign(&worker), &worker.id).await;
        let booted = h.finished(&boot.id).await;
        assert_eq!(types(&booted), ["AccessoryBooted", "HostSucceeded"], "{}", h.logs());
        let Event::AccessoryBooted(ab) = &booted[0].event.event else { unreachable!() };
        assert!(ab.digest.as_deref().is_some_and(|d| d.starts_with("sha256:")), "{ab:?}");
        let (status, body) = http_get(SocketAddr::from((b.host.addr, 8081)), "/version").unwrap();
        assert_eq!((status, body.trim()), (200, "db-1"));
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(data.join("conf/db.conf")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o640);
        let mounts = h.docker(&b.host, &["inspect", "testapp-db", "--format", "{{index .Config.Labels \"service\"}} {{range .Mounts}}{{.Destination}}{{end}}"]);
        assert_eq!(mounts, "testapp-db /data");
        let options = h.docker(
            &b.host,
            &[
                "inspect",
                "testapp-db",
                "--format",
                "{{json .Config.Cmd}} {{.HostConfig.LogConfig.Type}} {{index .HostConfig.LogConfig.Config \"max-size\"}} {{.HostConfig.Memory}} {{json .HostConfig.ExtraHosts}} {{.HostConfig.RestartPolicy.Name}} {{.HostConfig.NetworkMode}}",
            ],
        );
        assert_eq!(
            options,
            r#"["--accessory"] json-file 10m 67108864 ["db.internal:10.9.9.9"] unless-stopped kamal"#
        );
        let crashed = h.finished(&worker.id).await;
        assert_eq!(types(&crashed), ["ContainerStarted", "HealthFailed", "HostFailed"], "{}", h.logs());
        let Event::HealthFailed(f) = &crashed[1].event.event else { unreachable!() };
        // How it ended and where its log is; never the log (it printed the secret).
        assert!(f.error.contains("exited with code 3") && f.error.contains("flotilla app logs"), "{f:?}");
        assert!(!f.error.contains("APP_MODE=exit") && !f.error.contains(SECRET), "{f:?}");
        let logs = h.fleet.host_docker(&c.host).args(["logs", "testapp-worker-v1"]).output().unwrap();
        let on_host = String::from_utf8_lossy(&logs.stderr);
        assert!(on_host.contains("exiting at start"), "the log stays on the host: {on_host}");
        let Event::HostFailed(hf) = &crashed[2].event.event else { unreachable!() };
        assert_eq!(hf.step, flotilla_events::Step::AwaitHealthy);
        let running = h.docker(&c.host, &["ps", "--filter", "label=service=testapp", "--format", "{{.Names}}"]);
        assert_eq!(running, "testapp-web-v1", "the crashing worker is stopped, web untouched");

        let remove = simple_job(b, vec![JobStep::RemoveAccessory(RemoveAccessory {
            service: "testapp".into(),
            name: "db".into(),
            paths: vec![data.display().to_string()],
        })]);
        h.publish(&b.host, h.sign(&remove), &remove.id).await;
        assert_eq!(types(&h.finished(&remove.id).await), ["AccessoryRemoved", "HostSucceeded"]);
        assert_eq!(h.docker(&b.host, &["ps", "-a", "--filter", "name=^testapp-db$", "--format", "{{.Names}}"]), "");
        assert!(!data.exists(), "accessory directory removed");

        // v2 replaces v1 on the first host.
        let a = &h.agents[0];
        let mut job2 = deploy_job(a, &v2, "v2", 20_000);
        // Keep nothing stopped, except v1 which the scheduler protects as the rollback target.
        job2.steps[4] = JobStep::Prune(Prune {
            service: "testapp".into(),
            retain: 0,
            protected: vec!["testapp-web-v1".into()],
        });
        h.publish(&a.host, h.sign(&job2), &job2.id).await;
        let events2 = h.finished(&job2.id).await;
        assert_eq!(
            types(&events2),
            ["ImagePulled", "ContainerStarted", "HealthPassed", "ProxySwitched", "OldContainerStopped", "HostSucceeded"],
            "{}",
            h.logs()
        );
        assert_eq!(
            events2[3].event.event,
            Event::ProxySwitched(flotilla_events::event::ProxySwitched { from: Some("testapp-web-v1".into()), to: "testapp-web-v2".into() })
        );
        assert_eq!(version_via_proxy(&a.host), "v2");
        let states = h.docker(&a.host, &["ps", "-a", "--filter", "label=service=testapp", "--format", "{{.Names}} {{.State}}"]);
        let mut states: Vec<&str> = states.lines().collect();
        states.sort();
        assert_eq!(states, ["testapp-web-v1 exited", "testapp-web-v2 running"]);

        // The same job delivered again (a new message, so JetStream's dedup does not hide it).
        let before = h.events_of(&job2.id).len();
        h.publish(&a.host, h.sign(&job2), &format!("{}-again", job2.id)).await;
        let deadline = Instant::now() + WAIT;
        while h.events_of(&job2.id).len() < 2 * before {
            assert!(Instant::now() < deadline, "second delivery not reported\n{}", h.logs());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let all = h.events_of(&job2.id);
        assert_eq!(all[before..], all[..before], "same events, same ids");
        let names = h.docker(&a.host, &["ps", "-a", "--filter", "label=service=testapp", "--format", "{{.Names}}"]);
        assert_eq!(names.lines().filter(|n| *n == "testapp-web-v2").count(), 1);
        assert_eq!(names.lines().count(), 2);

        // Untrusted jobs: garbage is dropped (the executor keeps serving), the rest refused.
        h.publish(&a.host, b"\x07not a job at all".to_vec(), "garbage-1").await;
        let mut unsigned = deploy_job(a, &v1, "v1", 20_000);
        unsigned.id = format!("{}-unsigned", unsigned.id);
        let payload = wire::encode(&SignedJob { job: wire::encode(&unsigned).unwrap(), signature: vec![] }).unwrap();
        h.publish(&a.host, payload, &unsigned.id).await;
        let mut expired = deploy_job(a, &v1, "v1", 20_000);
        expired.expires_at = Timestamp::from_unix_ms(Timestamp::now().unix_ms() - 1000);
        h.publish(&a.host, h.sign(&expired), &expired.id).await;
        let other = deploy_job(&h.agents[1], &v1, "v1", 20_000);
        h.publish(&a.host, h.sign(&other), &other.id).await;
        // A job the scheduler did sign, but older than the newest this host applied: a
        // captured job replayed later.
        let mut stale = deploy_job(a, &v1, "v1", 20_000);
        stale.id = format!("{}-stale", stale.id);
        stale.generation = 1;
        h.publish(&a.host, h.sign(&stale), &stale.id).await;
        assert_eq!(h.refusal(&expired.id).await.reason, RefusalReason::Expired);
        let wrong = h.refusal(&other.id).await;
        assert_eq!(wrong.reason, RefusalReason::WrongHost);
        assert_eq!(wrong.host, a.host.addr.to_string());
        assert_eq!(h.refusal(&stale.id).await.reason, RefusalReason::Stale);
        // Jobs are taken one at a time, in order: the unsigned one was handled before these.
        // Its ids are whatever the sender wrote, so it is never reported (it could fail a
        // real deploy), only logged.
        assert!(h.events_of(&unsigned.id).is_empty());
        assert!(
            !h.reports.lock().unwrap().iter().any(|r| matches!(r, Report::Refused(x) if x.job_id == unsigned.id)),
            "an unsigned job was reported"
        );
        assert!(a.log().contains("a message the scheduler did not sign"), "{}", a.log());
        assert!(a.log().contains("terminating a message that is not a job"), "{}", a.log());
        assert_eq!(version_via_proxy(&a.host), "v2", "refused jobs changed nothing");

        // A version that never becomes healthy: v2 keeps serving, the failure says why.
        let job_bad = deploy_job(a, &bad, "bad", 3_000);
        h.publish(&a.host, h.sign(&job_bad), &job_bad.id).await;
        let events_bad = h.finished(&job_bad.id).await;
        assert_eq!(types(&events_bad), ["ImagePulled", "ContainerStarted", "HealthFailed", "HostFailed"], "{}", h.logs());
        let Event::HealthFailed(f) = &events_bad[2].event.event else { unreachable!() };
        assert!(!f.error.contains("testapp bad listening"), "no app log lines in {f:?}");
        assert!(f.error.contains("flotilla app logs"), "where the log is, in {f:?}");
        let Event::HostFailed(hf) = &events_bad[3].event.event else { unreachable!() };
        assert_eq!(hf.step, flotilla_events::Step::SwitchProxy);
        assert_eq!(version_via_proxy(&a.host), "v2");
        let running = h.docker(&a.host, &["ps", "--filter", "label=service=testapp", "--format", "{{.Names}}"]);
        assert_eq!(running, "testapp-web-v2");

        // Prune without protection: the stopped v1 and bad containers go, and their images
        // with them; the running v2 stays.
        let prune = simple_job(a, vec![JobStep::Prune(Prune {
            service: "testapp".into(),
            retain: 0,
            protected: vec![],
        })]);
        h.publish(&a.host, h.sign(&prune), &prune.id).await;
        assert_eq!(types(&h.finished(&prune.id).await), ["HostSucceeded"]);
        let left = h.docker(&a.host, &["ps", "-a", "--filter", "label=service=testapp", "--format", "{{.Names}}"]);
        assert_eq!(left, "testapp-web-v2");
        let images = h.docker(&a.host, &["images", "--filter", "reference=*/testapp", "--format", "{{.Tag}}"]);
        let mut tags: Vec<&str> = images.lines().collect();
        tags.sort();
        assert_eq!(tags, ["v2"], "images of pruned containers removed");

        // The secret: never in NATS traffic, executor logs, or any container's command line.
        let traffic = h.traffic.lock().unwrap().clone();
        assert!(!traffic.is_empty());
        assert!(!traffic.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()), "secret seen on NATS");
        for a in &h.agents {
            assert!(!a.log().contains(SECRET), "secret in the executor log on {}", a.host.name);
            assert!(a.log().contains("job finished"), "{}", a.log());
            let ids = h.docker(&a.host, &["ps", "-aq"]);
            for id in ids.lines() {
                let cmdline = h.docker(&a.host, &["inspect", id, "--format", "{{json .Path}} {{json .Args}} {{json .Config.Cmd}} {{json .Config.Entrypoint}}"]);
                assert!(!cmdline.contains(SECRET), "secret on a command line: {cmdline}");
            }
        }
    });
}
