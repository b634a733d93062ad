//! A fleet in one process: the scheduler's procedure over the in-memory transport and the
//! memory log, and one simulated executor per host running the real executor's job runner
//! (`flotilla_executor::job::run_job`) against the simulated Docker engine and proxy.

use flotilla_deploy::Config;
use flotilla_deploy::config::{LoadOptions, load};
use flotilla_events::event::HostEnrolled;
use flotilla_events::{DeployId, Envelope, Event, EventLog, MemoryLog, Timestamp};
use flotilla_executor::job::{Sink, SinkError, run_job};
use flotilla_executor::runtime::sim::{SimConfig, SimFailure, SimRuntime};
use flotilla_executor::steps::Executor;
use flotilla_protocol::identity::ReportSigner;
use flotilla_protocol::sealing::HostKey;
use flotilla_protocol::signing::{Admission, JobSigner, JobVerifier};
use flotilla_protocol::wire::{self, Heartbeat, Refusal, RefusalReason, Report, SignedReport};
use flotilla_scheduler::procedure::plans::{self, Narrow};
use flotilla_scheduler::procedure::{self, Context, Finished, ProcedureError, Request};
use flotilla_scheduler::transport::memory::MemoryTransport;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How a simulated host behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    /// Runs every job to the end.
    Healthy,
    /// Runs jobs, but this step always fails.
    Fails(SimFailure),
    /// Beats, takes jobs and never answers (a hung executor: alive, stuck).
    Silent,
    /// Refuses every job (as a host that applied a newer job refuses an older one).
    Refuses,
    /// Publishes every report twice (a redelivery).
    Repeats,
    /// Beats but takes no job (its executor is stuck before the queue, or offline with its
    /// heartbeat still kept): its jobs wait on the queue.
    Offline,
    /// Dies (stops reporting and beating, for good) after this many reports.
    DiesAfter(usize),
}

/// The project, the log, the transport and the scheduler's key.
pub struct World {
    _dir: tempfile::TempDir,
    pub root: std::path::PathBuf,
    pub config: Config,
    pub log: MemoryLog,
    pub transport: MemoryTransport,
    pub signer: JobSigner,
    /// How long each simulated step takes (zero unless a test needs a rollout that lasts).
    pub latency: Duration,
}

/// The secret every host's app gets; it must never appear in an event or a report.
pub const APP_SECRET: &str = "s3cret-in-process-7d1e";

impl World {
    /// A project with `hosts` in role `web` and `x-flotilla.rollout` set to `rollout` (YAML
    /// flow mapping, e.g. `{max_failures: 1}`).
    pub fn new(hosts: &[&str], rollout: &str) -> World {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().to_owned();
        let hosts_yaml: String = hosts.iter().map(|h| format!("      - {h}\n")).collect();
        let yaml = format!(
            "service: app\nimage: app\nservers:\n  web:\n    hosts:\n{hosts_yaml}\
             proxy:\n  app_port: 80\nregistry:\n  server: registry.test:5000\n  username: u\n  \
             password:\n    - REGISTRY_PASSWORD\nenv:\n  secret:\n    - APP_SECRET\n\
             x-flotilla:\n  rollout: {rollout}\n"
        );
        std::fs::create_dir_all(root.join("config")).expect("config dir");
        std::fs::create_dir_all(root.join(".kamal")).expect(".kamal dir");
        std::fs::write(root.join("config/deploy.yml"), yaml).expect("deploy.yml");
        std::fs::write(
            root.join(".kamal/secrets"),
            format!("REGISTRY_PASSWORD=pw-in-process\nAPP_SECRET={APP_SECRET}\n"),
        )
        .expect("secrets");
        let config = load(&LoadOptions {
            root: root.clone(),
            config_file: "config/deploy.yml".into(),
            destination: None,
            env: BTreeMap::new(),
        })
        .unwrap_or_else(|e| panic!("config: {e}"));
        World {
            _dir: dir,
            root,
            config,
            log: MemoryLog::new(),
            transport: MemoryTransport::new(),
            signer: JobSigner::generate(),
            latency: Duration::ZERO,
        }
    }

    /// Hosts `h1`, `h2`, `h3` with these executors, and `x-flotilla.rollout` set to `rollout`.
    pub fn with(rollout: &str, behaviours: [Behaviour; 3]) -> World {
        let hosts = ["h1", "h2", "h3"];
        let world = World::new(&hosts, rollout);
        for (host, behaviour) in hosts.into_iter().zip(behaviours) {
            world.executor(host, behaviour);
        }
        world
    }

    /// [`World::with`], each simulated step taking `latency`: a rollout that lasts long
    /// enough to be interrupted.
    #[allow(dead_code)] // used by the control suite (tests/control), which shares this file
    pub fn with_latency(rollout: &str, behaviours: [Behaviour; 3], latency: Duration) -> World {
        let hosts = ["h1", "h2", "h3"];
        let mut world = World::new(&hosts, rollout);
        world.latency = latency;
        for (host, behaviour) in hosts.into_iter().zip(behaviours) {
            world.executor(host, behaviour);
        }
        world
    }

    /// Records `host`'s keys in the log as `flotilla setup` does over SSH (`HostEnrolled`).
    pub fn enrol(&self, host: &str, sealing: &HostKey, signing: &ReportSigner) {
        let enrolled = HostEnrolled {
            ssh_host_key: format!("SHA256:sim-{host}"),
            sealing_key: sealing.public_key_base64(),
            signing_key: signing.public_key_base64(),
            nats_key: format!("Usim-{host}"),
            replaces: None,
        };
        self.log
            .append(flotilla_scheduler::enrolment::event(
                host, "tester", enrolled,
            ))
            .expect("enrolment recorded");
    }

    /// Starts a simulated executor on `host`, enrolled: it beats at once, then takes its jobs.
    pub fn executor(&self, host: &str, behaviour: Behaviour) {
        let sim = SimConfig {
            latency: self.latency,
            pull_latency: self.latency,
            fail: match &behaviour {
                Behaviour::Fails(f) => Some(f.clone()),
                _ => None,
            },
            ..Default::default()
        };
        let executor = Executor::new(
            SimRuntime::new(sim.clone()),
            SimRuntime::new(sim),
            HostKey::generate(),
            host,
        );
        let signer = Arc::new(ReportSigner::generate());
        self.enrol(host, executor.host_key(), &signer);
        let heartbeat = Heartbeat {
            host: host.to_owned(),
            executor_version: "sim".into(),
            docker_version: "sim".into(),
            containers: Vec::new(),
            at: Timestamp::now(),
            period_ms: u64::try_from(BEAT_EVERY.as_millis()).unwrap_or(u64::MAX),
        };
        // The first beat now, so a deploy finds the host at once; then one every period
        // until the executor dies.
        self.transport.beat(heartbeat.clone());
        let dead = Arc::new(AtomicBool::new(false));
        tokio::spawn(beat(self.transport.clone(), heartbeat, dead.clone()));
        if behaviour == Behaviour::Offline {
            return;
        }
        let Some(jobs) = self.transport.jobs(host) else {
            panic!("a second executor for {host}");
        };
        let verifier = JobVerifier::new(&self.signer.public_key_base64(), host).expect("verifier");
        let transport = self.transport.clone();
        tokio::spawn(serve(
            transport, executor, signer, verifier, jobs, behaviour, dead,
        ));
    }

    /// The procedure's context over this world.
    pub fn context(&self) -> Context<'_, MemoryTransport> {
        Context {
            config: &self.config,
            root: &self.root,
            log: &self.log,
            transport: &self.transport,
            signer: &self.signer,
            actor: "tester".into(),
            machine: "test".into(),
            skip_hooks: false,
            lock_wait: None,
            heartbeat_wait: procedure::HEARTBEAT_WAIT,
            notices: &|_| {},
            stored: None,
        }
    }

    /// `deploy VERSION` of the image already pushed, as the CLI asks for it.
    pub fn deploy_request(&self, version: &str) -> Request {
        let plan =
            plans::deploy_plan(&self.config, &self.log, version, &Narrow::default()).expect("plan");
        Request {
            plan,
            kind: flotilla_events::event::DeployKind::Deploy,
            deploy_id: DeployId::new(),
            resume: false,
            preamble: Vec::new(),
            command: "deploy",
        }
    }

    /// `replay ID --resume`, as the CLI asks for it.
    pub fn resume_request(&self, id: &DeployId) -> Request {
        let (plan, kind) =
            plans::resume_plan(&self.config, &self.log, id.as_str()).expect("resume plan");
        Request {
            plan,
            kind,
            deploy_id: id.clone(),
            resume: true,
            preamble: Vec::new(),
            command: "resume",
        }
    }

    /// Runs `req` to its end.
    pub async fn run(&self, req: &Request) -> Result<Finished, ProcedureError> {
        procedure::run(&self.context(), req, &mut |_| {}, &CancellationToken::new()).await
    }

    /// Deploys `version` to its end.
    pub async fn deploy(&self, version: &str) -> (Request, Result<Finished, ProcedureError>) {
        let req = self.deploy_request(version);
        let result = self.run(&req).await;
        (req, result)
    }

    /// Every event of deploy `id`, in log order.
    pub fn events(&self, id: &DeployId) -> Vec<Envelope> {
        self.log.read_deploy(id).expect("read log")
    }

    /// How many events of type `name` each host has in deploy `id`.
    pub fn count(&self, id: &DeployId, name: &str) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for e in self.events(id) {
            if e.type_name() == name
                && let Some(h) = e.host
            {
                *counts.entry(h).or_insert(0) += 1;
            }
        }
        counts
    }

    /// The event types of deploy `id` without a host, in order (the deploy's own story).
    pub fn story(&self, id: &DeployId) -> Vec<&'static str> {
        self.events(id)
            .iter()
            .filter(|e| e.host.is_none())
            .map(Envelope::type_name)
            .collect()
    }
}

/// How often a simulated executor beats (the real one's default).
const BEAT_EVERY: Duration = Duration::from_secs(5);

/// Beats every [`BEAT_EVERY`] until the executor is dead.
async fn beat(transport: MemoryTransport, heartbeat: Heartbeat, dead: Arc<AtomicBool>) {
    let mut tick = tokio::time::interval(BEAT_EVERY);
    tick.tick().await;
    loop {
        tick.tick().await;
        if dead.load(Ordering::SeqCst) {
            return;
        }
        transport.beat(Heartbeat {
            at: Timestamp::now(),
            ..heartbeat.clone()
        });
    }
}

/// One simulated executor: verify each job, then run it (or misbehave as told).
async fn serve(
    transport: MemoryTransport,
    executor: Executor<SimRuntime, SimRuntime>,
    signer: Arc<ReportSigner>,
    verifier: JobVerifier,
    mut jobs: flotilla_scheduler::transport::memory::JobQueue,
    behaviour: Behaviour,
    dead: Arc<AtomicBool>,
) {
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    let sent = Arc::new(AtomicUsize::new(0));
    while let Some(payload) = jobs.recv().await {
        let job = match verifier.admit(&payload, Timestamp::now()) {
            Admission::Accept(job) => job,
            Admission::Refuse(_) | Admission::Garbage(_) => continue,
        };
        let host = executor.host().to_owned();
        match behaviour {
            Behaviour::Silent => continue,
            Behaviour::Refuses => {
                let refusal = Refusal {
                    job_id: job.id.clone(),
                    deploy_id: job.deploy_id.to_string(),
                    host: host.clone(),
                    reason: RefusalReason::Stale,
                    detail: "older than the newest job this host applied".into(),
                    at: Timestamp::now(),
                };
                let signed = sign(&signer, &Report::Refused(refusal));
                let _ = transport.report(job.deploy_id.as_str(), &host, &signed);
                continue;
            }
            _ => {}
        }
        let sink = MemorySink {
            signer: signer.clone(),
            transport: transport.clone(),
            deploy: job.deploy_id.to_string(),
            host,
            behaviour: behaviour.clone(),
            sent: sent.clone(),
        };
        if run_job(&executor, &job, &sink, &stop).await.is_err() {
            // The executor died: no more reports or heartbeats, ever.
            dead.store(true, Ordering::SeqCst);
            return;
        }
    }
}

/// A report signed with `signer`, as an executor publishes it.
pub fn sign(signer: &ReportSigner, report: &Report) -> SignedReport {
    let report = wire::encode(report).expect("a report encodes");
    SignedReport {
        signature: signer.sign(&report),
        report,
    }
}

/// Reports into the in-memory transport, signed, as the executor's JetStream sink does.
struct MemorySink {
    signer: Arc<ReportSigner>,
    transport: MemoryTransport,
    deploy: String,
    host: String,
    behaviour: Behaviour,
    sent: Arc<AtomicUsize>,
}

impl Sink for MemorySink {
    async fn report(&self, report: &Report) -> Result<(), SinkError> {
        if let Behaviour::DiesAfter(n) = self.behaviour
            && self.sent.fetch_add(1, Ordering::SeqCst) >= n
        {
            return Err(SinkError("the executor died".into()));
        }
        let signed = sign(&self.signer, report);
        self.transport
            .report(&self.deploy, &self.host, &signed)
            .map_err(|e| SinkError(e.into()))?;
        if self.behaviour == Behaviour::Repeats {
            // Past the stream's dedup: the scheduler sees the same report twice, as after a
            // redelivery, and must keep one copy.
            let bytes = wire::encode(&signed).map_err(|e| SinkError(e.into()))?;
            self.transport.report_bytes(&self.deploy, &self.host, bytes);
        }
        Ok(())
    }
}

/// The `HostFailed` of `host` in deploy `id`.
pub fn host_failed(
    world: &World,
    id: &DeployId,
    host: &str,
) -> Option<flotilla_events::event::HostFailed> {
    world.events(id).into_iter().find_map(|e| match e.event {
        Event::HostFailed(f) if e.host.as_deref() == Some(host) => Some(f),
        _ => None,
    })
}
