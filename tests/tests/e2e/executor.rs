//! The executor on real hosts: signed jobs published straight to NATS become Docker actions
//! on each host's own engine and a health-gated switch of the host's proxy, reported as
//! events; untrusted jobs are refused; secrets stay sealed; a killed executor finishes its
//! job after a restart.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flotilla_e2e::fleet::{Fleet, Host};
use flotilla_e2e::testapp;
use flotilla_events::{DeployId, Event, Timestamp};
use flotilla_executor::sealing::seal;
use flotilla_executor::signing::JobSigner;
use flotilla_executor::subjects;
use flotilla_executor::wire::{self, *};
use futures::StreamExt as _;

use crate::support::{assert_success, fleet, http_get};

const SECRET: &str = "flt-secret-7d1c0e55a9b3";
const WAIT: Duration = Duration::from_secs(120);

/// One host's executor and proxy, started inside the host's namespaces.
struct HostAgents {
    host: Host,
    dir: PathBuf,
    executor: Option<Child>,
    proxy: Child,
    sealing_key: String,
}

impl HostAgents {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("executor.log")).unwrap_or_default()
    }
}

/// The test's side of NATS: a publisher and everything executors report.
struct Harness {
    fleet: Fleet,
    flotilla: PathBuf,
    signer: JobSigner,
    agents: Vec<HostAgents>,
    js: async_nats::jetstream::Context,
    reports: Arc<Mutex<Vec<Report>>>,
    traffic: Arc<Mutex<Vec<u8>>>,
}

fn flotilla_binary() -> PathBuf {
    let root = testapp::workspace_root();
    let status =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(&root)
            .args(["build", "-q", "-p", "flotilla"])
            .status()
            .expect("cargo runs");
    assert!(status.success(), "cargo build -p flotilla failed");
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("debug/flotilla")
}

impl Harness {
    async fn up(hosts: u8) -> Harness {
        let fleet = fleet(hosts);
        let flotilla = flotilla_binary();
        let client = async_nats::connect(fleet.nats_url())
            .await
            .expect("nats reachable");
        let js = async_nats::jetstream::new(client.clone());
        js.get_or_create_stream(subjects::jobs_stream_config())
            .await
            .unwrap();
        js.get_or_create_stream(subjects::events_stream_config())
            .await
            .unwrap();
        let reports = Arc::new(Mutex::new(Vec::new()));
        let traffic = Arc::new(Mutex::new(Vec::new()));
        let mut evt = client
            .subscribe(format!("{}.>", subjects::EVENT_PREFIX))
            .await
            .unwrap();
        let r = reports.clone();
        tokio::spawn(async move {
            while let Some(m) = evt.next().await {
                match wire::decode::<Report>(&m.payload) {
                    Ok(report) => r.lock().unwrap().push(report),
                    Err(e) => panic!("undecodable report on {}: {e}", m.subject),
                }
            }
        });
        // Everything on the server, every subject: the secret must be in none of it.
        let mut all = client.subscribe(">").await.unwrap();
        let t = traffic.clone();
        tokio::spawn(async move {
            while let Some(m) = all.next().await {
                t.lock().unwrap().extend_from_slice(&m.payload);
            }
        });
        client.flush().await.unwrap();
        let mut harness = Harness {
            fleet,
            flotilla,
            signer: JobSigner::generate(),
            agents: Vec::new(),
            js,
            reports,
            traffic,
        };
        for host in harness.fleet.hosts.clone() {
            let agents = harness.start_agents(&host);
            harness.agents.push(agents);
        }
        harness
    }

    fn start_agents(&self, host: &Host) -> HostAgents {
        let dir = self.fleet.dir().join(format!("agents-{}", host.name));
        std::fs::create_dir_all(&dir).unwrap();
        let log = std::fs::File::create(dir.join("proxy.log")).unwrap();
        let proxy = self
            .on_host(host)
            .args([
                "proxy",
                "run",
                "--http-port",
                "80",
                "--https-port",
                "off",
                "--state-file",
            ])
            .arg(dir.join("proxy-state.json"))
            .arg("--admin-socket")
            .arg(dir.join("proxy.sock"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let out = std::process::Command::new(&self.flotilla)
            .args(["executor", "key", "--state-dir"])
            .arg(dir.join("state"))
            .output()
            .unwrap();
        assert_success(&out, "flotilla executor key");
        let sealing_key = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let mut agents = HostAgents {
            host: host.clone(),
            dir,
            executor: None,
            proxy,
            sealing_key,
        };
        self.start_executor(&mut agents);
        wait_until(&format!("proxy socket on {}", host.name), || {
            agents.dir.join("proxy.sock").exists()
        });
        agents
    }

    fn start_executor(&self, agents: &mut HostAgents) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(agents.dir.join("executor.log"))
            .unwrap();
        let child = self
            .on_host(&agents.host)
            .args([
                "executor",
                "run",
                "--host-id",
                &agents.host.addr.to_string(),
                "--nats",
                &self.fleet.nats_url(),
            ])
            .args([
                "--scheduler-key",
                &self.signer.public_key_base64(),
                "--heartbeat-secs",
                "1",
                "--state-dir",
            ])
            .arg(agents.dir.join("state"))
            .arg("--proxy-socket")
            .arg(agents.dir.join("proxy.sock"))
            .env("FLOTILLA_EXECUTOR_CONFIG", agents.dir.join("none.conf"))
            .env("NO_COLOR", "1")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        agents.executor = Some(child);
    }

    fn on_host(&self, host: &Host) -> std::process::Command {
        use std::os::unix::process::CommandExt as _;
        let mut c = self.fleet.on_host(host);
        c.arg(&self.flotilla).stdin(Stdio::null()).process_group(0);
        c
    }

    fn sign(&self, job: &Job) -> Vec<u8> {
        self.signer.sign(job).unwrap()
    }

    async fn publish(&self, host: &Host, payload: Vec<u8>, msg_id: &str) {
        let m = async_nats::jetstream::message::PublishMessage::build()
            .payload(payload.into())
            .message_id(msg_id);
        self.js
            .send_publish(subjects::job_subject(&host.addr.to_string()), m)
            .await
            .unwrap()
            .await
            .unwrap();
    }

    /// The events of `job_id` once its final event arrived.
    async fn finished(&self, job_id: &str) -> Vec<JobEvent> {
        let deadline = Instant::now() + WAIT;
        loop {
            let events = self.events_of(job_id);
            if events.iter().any(|e| e.step.is_none()) {
                return events;
            }
            if Instant::now() > deadline {
                panic!(
                    "job {job_id} never finished; events so far: {events:?}\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn events_of(&self, job_id: &str) -> Vec<JobEvent> {
        self.reports
            .lock()
            .unwrap()
            .iter()
            .filter_map(|r| match r {
                Report::Event(e) if e.job_id == job_id => Some(e.clone()),
                _ => None,
            })
            .collect()
    }

    async fn refusal(&self, job_id: &str) -> Refusal {
        let deadline = Instant::now() + WAIT;
        loop {
            let found = self.reports.lock().unwrap().iter().find_map(|r| match r {
                Report::Refused(r) if r.job_id == job_id => Some(r.clone()),
                _ => None,
            });
            if let Some(r) = found {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "no refusal of {job_id}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn logs(&self) -> String {
        self.agents
            .iter()
            .map(|a| format!("--- executor on {}:\n{}", a.host.name, a.log()))
            .collect()
    }

    fn docker(&self, host: &Host, args: &[&str]) -> String {
        let out = self.fleet.host_docker(host).args(args).output().unwrap();
        assert_success(&out, &format!("docker {args:?} on {}", host.name));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        for a in &mut self.agents {
            if let Some(mut e) = a.executor.take() {
                let _ = e.kill();
                let _ = e.wait();
            }
            let _ = a.proxy.kill();
            let _ = a.proxy.wait();
        }
    }
}

/// A deploy job for `version` of the test app on `agents`' host, Kamal-style: pull, start
/// with a sealed secret, switch the proxy after health checks, stop the old, prune.
fn deploy_job(agents: &HostAgents, image: &str, version: &str, deploy_timeout_ms: u64) -> Job {
    let host = agents.host.addr.to_string();
    let container = container_name("testapp", "web", None, version);
    let now = Timestamp::now();
    Job {
        id: DeployId::new().to_string(),
        deploy_id: DeployId::from(format!("deploy-{version}")),
        host,
        issued_at: now,
        expires_at: Timestamp::from_unix_ms(now.unix_ms() + 600_000),
        steps: vec![
            JobStep::PullImage(PullImage {
                image: image.to_owned(),
                auth: None,
            }),
            JobStep::StartContainer(StartContainer {
                service: "testapp".into(),
                role: "web".into(),
                destination: None,
                version: version.into(),
                config: ContainerConfig {
                    image: image.to_owned(),
                    env: vec![("RAILS_ENV".into(), "production".into())],
                    secret_env: vec![(
                        "SECRET_TOKEN".into(),
                        seal(&agents.sealing_key, SECRET).unwrap(),
                    )],
                    ..Default::default()
                },
            }),
            JobStep::SwitchProxy(SwitchProxy {
                proxy_service: "testapp-web".into(),
                container: container.clone(),
                version: version.into(),
                app_port: 80,
                hosts: vec![],
                path_prefix: None,
                health_path: "/up".into(),
                health_interval_ms: 200,
                health_timeout_ms: 1000,
                deploy_timeout_ms,
                drain_timeout_ms: 1000,
            }),
            JobStep::StopOldContainers(StopOldContainers {
                service: "testapp".into(),
                role: "web".into(),
                destination: None,
                keep: container,
                stop_timeout_s: 5,
            }),
            JobStep::Prune(Prune {
                service: "testapp".into(),
                retain: 3,
                protected: vec![],
            }),
        ],
    }
}

/// A job of `steps` for `agents`' host.
fn simple_job(agents: &HostAgents, steps: Vec<JobStep>) -> Job {
    let now = Timestamp::now();
    Job {
        id: DeployId::new().to_string(),
        deploy_id: DeployId::from("accessories"),
        host: agents.host.addr.to_string(),
        issued_at: now,
        expires_at: Timestamp::from_unix_ms(now.unix_ms() + 600_000),
        steps,
    }
}

fn types(events: &[JobEvent]) -> Vec<&'static str> {
    events.iter().map(|e| e.event.event.type_name()).collect()
}

fn version_via_proxy(host: &Host) -> String {
    let (status, body) =
        http_get(SocketAddr::from((host.addr, 80)), "/version").expect("proxy answers");
    assert_eq!(
        status, 200,
        "GET /version through the proxy on {}: {body}",
        host.name
    );
    body.trim().to_owned()
}

fn terminate(child: &Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
}

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// On three real hosts: v1 boots through the proxy (events per step, `GET /version` through
/// each host's proxy answers v1, Kamal names, labels and env on the container); an accessory
/// boots with its directory, file, volume, port, command, logging, memory and extra hosts,
/// and is removed with them; a worker that crashes at start fails its Docker-state health
/// wait with its own log lines; v2 replaces v1 (v1 stopped, kept by prune as a protected
/// rollback target); the same job delivered again yields one container and the same events;
/// unsigned, expired, wrong-host and garbage messages are refused or dropped without harm; a
/// never-healthy version leaves v2 serving and reports `HealthFailed` with the app's own last
/// log lines; the secret is in the container's env but never in NATS traffic, the executor's
/// logs or the container's command line.
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
                    env: vec![("APP_MODE".into(), "exit".into())],
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
        assert!(f.error.contains("exited with code 3") && f.error.contains("APP_MODE=exit, exiting at start"), "{f:?}");
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
        assert_eq!(h.refusal(&unsigned.id).await.reason, RefusalReason::Unsigned);
        assert_eq!(h.refusal(&expired.id).await.reason, RefusalReason::Expired);
        let wrong = h.refusal(&other.id).await;
        assert_eq!(wrong.reason, RefusalReason::WrongHost);
        assert_eq!(wrong.host, a.host.addr.to_string());
        assert!(a.log().contains("terminating a message that is not a job"), "{}", a.log());
        assert_eq!(version_via_proxy(&a.host), "v2", "refused jobs changed nothing");

        // A version that never becomes healthy: v2 keeps serving, the failure says why.
        let job_bad = deploy_job(a, &bad, "bad", 3_000);
        h.publish(&a.host, h.sign(&job_bad), &job_bad.id).await;
        let events_bad = h.finished(&job_bad.id).await;
        assert_eq!(types(&events_bad), ["ImagePulled", "ContainerStarted", "HealthFailed", "HostFailed"], "{}", h.logs());
        let Event::HealthFailed(f) = &events_bad[2].event.event else { unreachable!() };
        assert!(f.error.contains("testapp bad listening on 0.0.0.0:80 in mode Unhealthy"), "app log lines in {f:?}");
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
        let images = h.docker(&a.host, &["images", "--format", "{{.Tag}}"]);
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

/// An executor killed with SIGKILL in the middle of a step (waiting for a slow app to become
/// healthy) and started again finishes the job: one container, the job's events with the
/// same ids as before the crash, and the new version served through the proxy. Its heartbeats
/// name the host's containers and sealing key. SIGTERM mid-step lets the step finish, hands
/// the job back and exits cleanly; restarted, the executor finishes that job.
#[test]
fn executor_killed_mid_step_finishes_the_job_after_restart() {
    runtime().block_on(async {
        let mut h = Harness::up(1).await;
        let bin = testapp::build_static_binary().unwrap();
        let slow = testapp::build_and_push(
            &h.fleet,
            &bin,
            "testapp",
            "slow",
            "ENV APP_MODE=healthy-after:8",
        )
        .unwrap();
        let job = deploy_job(&h.agents[0], &slow, "slow", 60_000);
        h.publish(&h.agents[0].host, h.sign(&job), &job.id).await;

        let deadline = Instant::now() + WAIT;
        while !h
            .events_of(&job.id)
            .iter()
            .any(|e| e.event.event.type_name() == "ContainerStarted")
        {
            assert!(
                Instant::now() < deadline,
                "no ContainerStarted\n{}",
                h.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let first_started = h.events_of(&job.id)[1].event.id;
        let mut killed = h.agents[0].executor.take().unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(killed.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let status = killed.wait().unwrap();
        assert!(!status.success(), "killed, not exited");
        assert!(
            !h.events_of(&job.id).iter().any(|e| e.step.is_none()),
            "killed before it finished"
        );

        let mut agents = h.agents.remove(0);
        h.start_executor(&mut agents);
        h.agents.push(agents);
        let events = h.finished(&job.id).await;
        let last = events.last().unwrap();
        assert_eq!(
            last.event.event.type_name(),
            "HostSucceeded",
            "{events:?}\n{}",
            h.logs()
        );
        let started: HashSet<_> = events
            .iter()
            .filter(|e| e.event.event.type_name() == "ContainerStarted")
            .map(|e| e.event.id)
            .collect();
        assert_eq!(
            started,
            HashSet::from([first_started]),
            "the rerun reports the same event id"
        );
        let host = h.agents[0].host.clone();
        let names = h.docker(
            &host,
            &[
                "ps",
                "-a",
                "--filter",
                "label=service=testapp",
                "--format",
                "{{.Names}} {{.State}}",
            ],
        );
        assert_eq!(names, "testapp-web-slow running");
        assert_eq!(version_via_proxy(&host), "slow");

        // Heartbeats say who is there: versions, the managed containers and the sealing key.
        let client = async_nats::connect(h.fleet.nats_url()).await.unwrap();
        let mut beats = client
            .subscribe(subjects::heartbeat_subject(&host.addr.to_string()))
            .await
            .unwrap();
        let beat = tokio::time::timeout(Duration::from_secs(10), beats.next())
            .await
            .expect("a heartbeat within 10s")
            .unwrap();
        let beat: Heartbeat = wire::decode(&beat.payload).unwrap();
        assert_eq!(beat.host, host.addr.to_string());
        assert!(!beat.docker_version.is_empty());
        assert_eq!(beat.containers, ["testapp-web-slow"]);
        assert_eq!(beat.sealing_key, h.agents[0].sealing_key);

        // SIGTERM in the middle of a step: the step finishes (the switch to the slow app
        // completes), the job is handed back, the executor exits cleanly; restarted, it
        // finishes the job.
        let slow2 = testapp::build_and_push(
            &h.fleet,
            &bin,
            "testapp",
            "slow2",
            "ENV APP_MODE=healthy-after:6",
        )
        .unwrap();
        let job3 = deploy_job(&h.agents[0], &slow2, "slow2", 60_000);
        h.publish(&host, h.sign(&job3), &job3.id).await;
        let deadline = Instant::now() + WAIT;
        while !h
            .events_of(&job3.id)
            .iter()
            .any(|e| e.event.event.type_name() == "ContainerStarted")
        {
            assert!(
                Instant::now() < deadline,
                "no ContainerStarted\n{}",
                h.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut executor = h.agents[0].executor.take().unwrap();
        terminate(&executor);
        let status = executor.wait().unwrap();
        assert!(
            status.success(),
            "exit after SIGTERM: {status}\n{}",
            h.logs()
        );
        let log = h.agents[0].log();
        assert!(
            log.contains("job handed back before this step") && log.contains("executor stopped"),
            "{log}"
        );
        let so_far = types(&h.events_of(&job3.id));
        assert_eq!(
            so_far,
            [
                "ImagePulled",
                "ContainerStarted",
                "HealthPassed",
                "ProxySwitched"
            ],
            "the step in flight finished, no more"
        );
        assert_eq!(version_via_proxy(&host), "slow2");
        let mut agents = h.agents.remove(0);
        h.start_executor(&mut agents);
        h.agents.push(agents);
        let events = h.finished(&job3.id).await;
        assert_eq!(
            events.last().unwrap().event.event.type_name(),
            "HostSucceeded",
            "{}",
            h.logs()
        );
        assert!(events.iter().any(|e| e.event.event
            == Event::OldContainerStopped(flotilla_events::event::OldContainerStopped {
                name: "testapp-web-slow".into()
            })));
        let names = h.docker(
            &host,
            &[
                "ps",
                "--filter",
                "label=service=testapp",
                "--format",
                "{{.Names}}",
            ],
        );
        assert_eq!(names, "testapp-web-slow2");

        // SIGTERM between jobs: a clean exit.
        let mut executor = h.agents[0].executor.take().unwrap();
        terminate(&executor);
        let status = executor.wait().unwrap();
        assert!(
            status.success(),
            "exit after SIGTERM: {status}\n{}",
            h.logs()
        );
    });
}
