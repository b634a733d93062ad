//! The executor tests' harness: a fleet with a proxy and an executor on every host, a signer
//! for jobs, and a NATS subscriber that records every report and every byte of traffic.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flotilla_e2e::fleet::{Fleet, Host};
use flotilla_e2e::testapp;
use flotilla_events::{DeployId, Timestamp};
use flotilla_protocol::sealing::seal;
use flotilla_protocol::signing::JobSigner;
use flotilla_protocol::subjects;
use flotilla_protocol::wire::{self, *};
use futures::StreamExt as _;

use crate::support::{assert_success, fleet, http_get};

pub(super) const SECRET: &str = "flt-secret-7d1c0e55a9b3";
pub(super) const WAIT: Duration = Duration::from_secs(120);

/// One host's executor and proxy, started inside the host's namespaces.
pub(super) struct HostAgents {
    pub(super) host: Host,
    pub(super) dir: PathBuf,
    pub(super) executor: Option<Child>,
    pub(super) proxy: Child,
    pub(super) sealing_key: String,
}

impl HostAgents {
    pub(super) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("executor.log")).unwrap_or_default()
    }
}

/// The test's side of NATS: a publisher and everything executors report.
pub(super) struct Harness {
    pub(super) fleet: Fleet,
    pub(super) flotilla: PathBuf,
    pub(super) signer: JobSigner,
    pub(super) agents: Vec<HostAgents>,
    pub(super) js: async_nats::jetstream::Context,
    pub(super) reports: Arc<Mutex<Vec<Report>>>,
    pub(super) traffic: Arc<Mutex<Vec<u8>>>,
}

pub(super) fn flotilla_binary() -> PathBuf {
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
    pub(super) async fn up(hosts: u8) -> Harness {
        let fleet = fleet(hosts);
        let flotilla = flotilla_binary();
        let client = async_nats::connect(fleet.nats_url())
            .await
            .expect("nats reachable");
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
        // As the scheduler does: each host's job consumer (an executor makes none).
        let jobs = js.get_stream(subjects::JOBS_STREAM).await.unwrap();
        for host in &fleet.hosts {
            let spec = subjects::job_consumer_spec(&host.addr.to_string());
            let _: async_nats::jetstream::consumer::PullConsumer = jobs
                .get_or_create_consumer(
                    &subjects::job_consumer(&host.addr.to_string()),
                    flotilla_protocol::nats::consumer_config(&spec),
                )
                .await
                .unwrap();
        }
        let reports = Arc::new(Mutex::new(Vec::new()));
        let traffic = Arc::new(Mutex::new(Vec::new()));
        let mut evt = client
            .subscribe(format!("{}.>", subjects::EVENT_PREFIX))
            .await
            .unwrap();
        let r = reports.clone();
        tokio::spawn(async move {
            while let Some(m) = evt.next().await {
                // Reports travel signed; the scheduler's admission checks the signature, this
                // test only reads what was reported.
                let report = wire::decode::<wire::SignedReport>(&m.payload)
                    .and_then(|signed| wire::decode::<Report>(&signed.report));
                match report {
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

    pub(super) fn start_agents(&self, host: &Host) -> HostAgents {
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

    pub(super) fn start_executor(&self, agents: &mut HostAgents) {
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

    pub(super) fn on_host(&self, host: &Host) -> std::process::Command {
        use std::os::unix::process::CommandExt as _;
        let mut c = self.fleet.on_host(host);
        c.arg(&self.flotilla).stdin(Stdio::null()).process_group(0);
        c
    }

    pub(super) fn sign(&self, job: &Job) -> Vec<u8> {
        self.signer.sign(job).unwrap()
    }

    pub(super) async fn publish(&self, host: &Host, payload: Vec<u8>, msg_id: &str) {
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
    pub(super) async fn finished(&self, job_id: &str) -> Vec<JobEvent> {
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

    pub(super) fn events_of(&self, job_id: &str) -> Vec<JobEvent> {
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

    pub(super) async fn refusal(&self, job_id: &str) -> Refusal {
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

    pub(super) fn logs(&self) -> String {
        self.agents
            .iter()
            .map(|a| format!("--- executor on {}:\n{}", a.host.name, a.log()))
            .collect()
    }

    pub(super) fn docker(&self, host: &Host, args: &[&str]) -> String {
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
pub(super) fn deploy_job(
    agents: &HostAgents,
    image: &str,
    version: &str,
    deploy_timeout_ms: u64,
) -> Job {
    let host = agents.host.addr.to_string();
    let container = container_name("testapp", "web", None, version);
    let now = Timestamp::now();
    Job {
        id: DeployId::new().to_string(),
        deploy_id: DeployId::from(format!("deploy-{version}")),
        host,
        issued_at: now,
        expires_at: Timestamp::from_unix_ms(now.unix_ms() + 600_000),
        generation: u64::try_from(now.unix_ms()).unwrap(),
        scope: "testapp".into(),
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
pub(super) fn simple_job(agents: &HostAgents, steps: Vec<JobStep>) -> Job {
    let now = Timestamp::now();
    Job {
        id: DeployId::new().to_string(),
        deploy_id: DeployId::from("accessories"),
        host: agents.host.addr.to_string(),
        issued_at: now,
        expires_at: Timestamp::from_unix_ms(now.unix_ms() + 600_000),
        generation: u64::try_from(now.unix_ms()).unwrap(),
        scope: "testapp".into(),
        steps,
    }
}

pub(super) fn types(events: &[JobEvent]) -> Vec<&'static str> {
    events.iter().map(|e| e.event.event.type_name()).collect()
}

pub(super) fn version_via_proxy(host: &Host) -> String {
    let (status, body) =
        http_get(SocketAddr::from((host.addr, 80)), "/version").expect("proxy answers");
    assert_eq!(
        status, 200,
        "GET /version through the proxy on {}: {body}",
        host.name
    );
    body.trim().to_owned()
}

pub(super) fn terminate(child: &Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
}

/// How long the executor's effects (containers, files) may take to show.
const EFFECT_WAIT: Duration = Duration::from_secs(30);

pub(super) fn wait_until(what: &str, ok: impl FnMut() -> bool) {
    assert!(
        flotilla_e2e::fleet::wait_until(EFFECT_WAIT, ok),
        "timed out waiting for {what}"
    );
}

pub(super) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
