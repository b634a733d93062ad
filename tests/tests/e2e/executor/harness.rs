//! The executor tests' harness: hosts set up the user's way (`flotilla server bootstrap`: the
//! proxy and the executor as containers, NATS on the first host, each executor enrolled),
//! then the test in the scheduler's place: it signs jobs with the project's scheduler key,
//! publishes them on the NATS bootstrap booted (with the operators' key, over TLS pinned to
//! the project's CA) and records every report and every byte of traffic.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flotilla_e2e::fleet::{Fleet, Host};
use flotilla_events::{DeployId, Timestamp};
use flotilla_protocol::sealing::seal;
use flotilla_protocol::signing::JobSigner;
use flotilla_protocol::subjects;
use flotilla_protocol::wire::{self, *};
use futures::StreamExt as _;

use crate::setup::BareProject;
use crate::support::{assert_success, fleet, http_get};

pub(super) const SECRET: &str = "flt-secret-7d1c0e55a9b3";
pub(super) const WAIT: Duration = Duration::from_secs(120);

/// One host's agents (the `flotilla-proxy` and `flotilla-executor` containers bootstrap
/// started) as the tests address them.
pub(super) struct HostAgents {
    pub(super) host: Host,
    /// A directory of the fleet's (every host sees it at the same path) for this host's
    /// accessory files.
    pub(super) dir: PathBuf,
    /// The executor's sealing key, as enrolment read it.
    pub(super) sealing_key: String,
}

impl HostAgents {
    /// The executor's log: `docker logs flotilla-executor` (every run of the container).
    pub(super) fn log(&self) -> String {
        let out = docker(&self.host, &["logs", "flotilla-executor"]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// The executor container SIGKILLed, as a crash would; it stays down (a killed
    /// container is not restarted by its policy) until [`HostAgents::start_executor`].
    /// Returns its exit code.
    pub(super) fn kill_executor(&self) -> String {
        docker_ok(&self.host, &["kill", "flotilla-executor"]);
        self.executor_exit_code()
    }

    /// The executor stopped as `docker stop` does (SIGTERM, then its stop timeout); returns
    /// its exit code.
    pub(super) fn stop_executor(&self) -> String {
        docker_ok(&self.host, &["stop", "flotilla-executor"]);
        self.executor_exit_code()
    }

    pub(super) fn start_executor(&self) {
        docker_ok(&self.host, &["start", "flotilla-executor"]);
    }

    fn executor_exit_code(&self) -> String {
        let out = docker(
            &self.host,
            &["inspect", "-f", "{{.State.ExitCode}}", "flotilla-executor"],
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

/// `docker ARGS` against the host's engine, from outside the host.
fn docker(host: &Host, args: &[&str]) -> Output {
    std::process::Command::new("docker")
        .env(
            "DOCKER_HOST",
            format!("unix://{}", host.docker_socket.display()),
        )
        .args(args)
        .output()
        .unwrap()
}

fn docker_ok(host: &Host, args: &[&str]) {
    assert_success(
        &docker(host, args),
        &format!("docker {args:?} on {}", host.name),
    );
}

/// The test's side of NATS: a publisher and everything executors report.
pub(super) struct Harness {
    pub(super) fleet: Fleet,
    /// The project the hosts were bootstrapped from (its scheduler key signs the jobs), kept
    /// for as long as the hosts are: a failing test can be rerun from it by hand.
    _project: BareProject,
    pub(super) signer: JobSigner,
    pub(super) agents: Vec<HostAgents>,
    /// Connected with the operators' key: every subject.
    pub(super) client: async_nats::Client,
    pub(super) js: async_nats::jetstream::Context,
    pub(super) reports: Arc<Mutex<Vec<Report>>>,
    pub(super) traffic: Arc<Mutex<Vec<u8>>>,
}

impl Harness {
    pub(super) async fn up(hosts: u8) -> Harness {
        let fleet = fleet(hosts);
        let all: Vec<&Host> = fleet.hosts.iter().collect();
        let project = BareProject::new(&fleet, &all);
        project.flotilla_ok(&["server", "bootstrap", "-q"], &[]);
        let dot = project.root().join(".flotilla");
        let signer = JobSigner::from_base64(
            std::fs::read_to_string(dot.join("scheduler.key"))
                .unwrap()
                .trim(),
        )
        .unwrap();
        let seed = std::fs::read_to_string(dot.join("nats-operator.nk")).unwrap();
        let client = async_nats::ConnectOptions::new()
            .nkey(seed.trim().to_owned())
            .add_root_certificates(dot.join("nats-ca.pem"))
            .require_tls(true)
            .connect(format!("nats://{}:4222", fleet.hosts[0].addr))
            .await
            .expect("the NATS bootstrap booted admits the operators' key");
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
        let agents = fleet
            .hosts
            .iter()
            .map(|host| host_agents(&fleet, &project, host))
            .collect();
        Harness {
            fleet,
            _project: project,
            signer,
            agents,
            client,
            js,
            reports,
            traffic,
        }
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

/// The host's agents as bootstrap left them; the sealing key is read from the executor's
/// identity (what enrolment reads over SSH), through the host's state as the root namespace
/// sees it.
fn host_agents(fleet: &Fleet, project: &BareProject, host: &Host) -> HostAgents {
    let dir = fleet.dir().join(format!("files-{}", host.name));
    std::fs::create_dir_all(&dir).unwrap();
    let out = std::process::Command::new(&project.flotilla)
        .args(["executor", "key", "--state-dir"])
        .arg(host.flotilla_state.join("executor"))
        .output()
        .unwrap();
    assert_success(&out, "flotilla executor key");
    HostAgents {
        host: host.clone(),
        dir,
        sealing_key: String::from_utf8_lossy(&out.stdout).trim().to_owned(),
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

pub(super) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
