//! The control plane with three control hosts, on the fleet: `flotilla setup` boots NATS as
//! a three-node cluster (routes over TLS, R3 streams and buckets) and a scheduler instance
//! on each control host, which elect a leader through the lease bucket. Mid-rollout, one
//! NATS node is killed, then the leader's host is cut off; each time the deploy completes,
//! with no step repeated, no event lost and no request to the app failed.

use crate::load;
use crate::setup::BareProject;
use crate::support::fleet;
use flotilla_e2e::fleet::{Fleet, Host, wait_until};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Load clients per app host while a control host fails.
const CLIENTS_PER_HOST: usize = 2;

/// How long the app takes to answer its health check once started: the faults fire when the
/// CLI shows the first `ContainerStarted`, and the CLI may show it late (about 2 s here, about
/// 11 s once in a CI rehearsal's load); without this wait the rollout could be over by then (a
/// host takes well under a second), and nothing would be left mid-rollout to resume.
const HEALTHY_AFTER_SECS: u32 = 8;

/// How long a restarted NATS node may take to rejoin the cluster and catch its replicas up.
const REJOIN: Duration = Duration::from_secs(60);

/// The events each app host records once per deploy: a step repeated after a failover
/// would record one twice (event ids are deterministic, so only a second run of a step
/// with a new outcome could), a lost one not at all.
const ONCE_PER_HOST: [&str; 6] = [
    "ImagePulled",
    "ContainerStarted",
    "HealthPassed",
    "ProxySwitched",
    "OldContainerStopped",
    "HostSucceeded",
];

/// A NATS client of the operators (the project's nkey and CA), to every control host.
async fn operators_nats(project: &BareProject, controls: &[&Host]) -> async_nats::Client {
    let seed = std::fs::read_to_string(project.root().join(".flotilla/nats-operator.nk")).unwrap();
    let urls: Vec<String> = controls
        .iter()
        .map(|h| format!("nats://{}:4222", h.addr))
        .collect();
    async_nats::ConnectOptions::new()
        .nkey(seed.trim().to_owned())
        .add_root_certificates(project.root().join(".flotilla/nats-ca.pem"))
        .require_tls(true)
        .connect(urls)
        .await
        .unwrap()
}

/// The control host whose scheduler instance holds the leader lease.
fn leader<'a>(
    rt: &tokio::runtime::Runtime,
    fleet: &Fleet,
    nats: &async_nats::Client,
    controls: &[&'a Host],
) -> &'a Host {
    let holder = rt.block_on(async {
        let js = async_nats::jetstream::new(nats.clone());
        let kv = js
            .get_key_value(flotilla_protocol::subjects::LEADER_BUCKET)
            .await
            .unwrap();
        let entry = kv
            .get(flotilla_protocol::subjects::LEADER_KEY)
            .await
            .unwrap()
            .expect("a leader holds the lease");
        String::from_utf8_lossy(&entry).into_owned()
    });
    let hostname = |h: &Host| {
        let out = fleet
            .host_docker(h)
            .args([
                "inspect",
                "-f",
                "{{.Config.Hostname}}",
                "flotilla-scheduler",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    controls
        .iter()
        .copied()
        .find(|h| hostname(h) == holder)
        .unwrap_or_else(|| panic!("no control host runs the lease holder {holder}"))
}

/// `stream`'s replica count, and how many of its replicas are current besides its leader's
/// copy; `None` while NATS does not answer (the client moving to another node).
async fn replication(nats: &async_nats::Client, stream: &str) -> Option<(usize, usize)> {
    let js = async_nats::jetstream::new(nats.clone());
    let info = js.get_stream(stream).await.ok()?.info().await.ok()?.clone();
    let current = info
        .cluster
        .map(|c| c.replicas.iter().filter(|r| r.current).count())
        .unwrap_or(0);
    Some((info.config.num_replicas, current))
}

/// `flotilla deploy --version VERSION --json` from the project, its events on stdout.
fn deploy(project: &BareProject, version: &str) -> std::process::Child {
    std::process::Command::new(&project.flotilla)
        .args(["deploy", "--version", version, "--json"])
        .current_dir(project.root())
        .env("APP_VERSION", version)
        .env("NO_COLOR", "1")
        .env("DOCKER_HOST", project.builder())
        .env("DOCKER_CONFIG", project.root().join(".docker"))
        .env_remove("FLOTILLA_NATS_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The type name of a JSON event.
fn kind(e: &serde_json::Value) -> String {
    e["event"]
        .as_object()
        .and_then(|o| o.keys().next().cloned())
        .unwrap_or_default()
}

/// What identifies an event in `--json` output: its host, time and body.
fn identity(e: &serde_json::Value) -> String {
    format!("{} {} {}", e["host"], e["at"], e["event"])
}

/// Runs a deploy of `version`, calling `fault` once at the first `ContainerStarted` (the
/// first app host mid-step, the other not started: mid-rollout); returns the deploy's id,
/// the events the CLI showed before the fault, how long after the fault it showed the
/// next event (`None`: none), and its output (stdout: what it printed after the fault).
fn deploy_with_fault(
    project: &BareProject,
    version: &str,
    fault: impl FnOnce(),
) -> (
    String,
    Vec<serde_json::Value>,
    Option<Duration>,
    std::process::Output,
) {
    let mut child = deploy(project, version);
    let mut id = String::new();
    let mut before = Vec::new();
    let mut fault = Some(fault);
    let mut faulted_at: Option<Instant> = None;
    let mut resumed_after = None;
    // What the CLI printed after the fault, kept as the output's stdout (for diagnosis).
    let mut after = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if faulted_at.is_some() {
            after.extend_from_slice(line.as_bytes());
            after.push(b'\n');
        }
        let Ok(e) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if let Some(d) = e["deploy_id"].as_str() {
            id = d.to_owned();
        }
        match faulted_at {
            None => {
                before.push(e.clone());
                if kind(&e) == "ContainerStarted"
                    && let Some(f) = fault.take()
                {
                    faulted_at = Some(Instant::now());
                    f();
                }
            }
            Some(t) if resumed_after.is_none() => resumed_after = Some(t.elapsed()),
            Some(_) => {}
        }
    }
    let mut out = child.wait_with_output().unwrap();
    out.stdout = after;
    assert!(faulted_at.is_some(), "the deploy started a container");
    (id, before, resumed_after, out)
}

/// Every event of deploy `id` in the log, from `flotilla replay ID --json`; `diag` says
/// what the schedulers logged when replay fails.
fn logged(project: &BareProject, id: &str, diag: &dyn Fn() -> String) -> Vec<serde_json::Value> {
    let out = project.flotilla(&["replay", id, "--json"], &[]);
    assert!(
        out.status.success(),
        "replay {id}: {}\nthe schedulers:\n{}",
        stderr(&out),
        diag()
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|e: &serde_json::Value| !kind(e).is_empty())
        .collect()
}

/// The deploy completed once on every app host: each per-host step recorded exactly once,
/// no host failed, the deploy ends completed with its lock released; every event the CLI
/// showed before the fault is in the log, in the same order; every app host serves
/// `version`.
fn assert_completed_once(
    project: &BareProject,
    web: &[&Host],
    id: &str,
    before: &[serde_json::Value],
    version: &str,
    diag: &dyn Fn() -> String,
) {
    let events = logged(project, id, diag);
    let mut hosts = BTreeMap::<String, Vec<String>>::new();
    let mut deploy = Vec::new();
    for e in &events {
        match e["host"].as_str() {
            Some(h) => hosts.entry(h.to_owned()).or_default().push(kind(e)),
            None => deploy.push(kind(e)),
        }
    }
    for h in web {
        let mine = &hosts[&h.addr.to_string()];
        for once in ONCE_PER_HOST {
            let n = mine.iter().filter(|k| *k == once).count();
            assert_eq!(n, 1, "{} {once}: {mine:?}", h.name);
        }
        assert!(!mine.iter().any(|k| k == "HostFailed"), "{mine:?}");
        assert_eq!(crate::setup::version_of(h), version, "{}", h.name);
    }
    assert_eq!(
        deploy.iter().rev().take(2).rev().collect::<Vec<_>>(),
        ["DeployCompleted", "LockReleased"],
        "{deploy:?}"
    );
    let all: Vec<String> = events.iter().map(identity).collect();
    let mut at = 0;
    for e in before {
        let want = identity(e);
        match all[at..].iter().position(|l| *l == want) {
            Some(i) => at += i + 1,
            None => panic!("{want} shown before the fault is not in the log (in order)"),
        }
    }
}

/// The last lines each control host's scheduler instance logged, for failure messages.
fn scheduler_logs(fleet: &Fleet, controls: &[&Host]) -> String {
    controls
        .iter()
        .map(|h| {
            let out = fleet
                .host_docker(h)
                .args(["logs", "--tail", "80", "flotilla-scheduler"])
                .output()
                .unwrap();
            format!("{}:\n{}", h.name, String::from_utf8_lossy(&out.stderr))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// When `host`'s scheduler instance last logged a line containing `needle` (its own
/// timestamp, which starts the line).
fn logged_at(fleet: &Fleet, host: &Host, needle: &str) -> Option<flotilla_events::Timestamp> {
    let out = fleet
        .host_docker(host)
        .args(["logs", "flotilla-scheduler"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains(needle))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .next_back()
}

/// The scheduler's log on `host` from the last line containing `needle`, at most `lines`
/// lines: where a takeover's seconds went.
fn log_from(fleet: &Fleet, host: &Host, needle: &str, lines: usize) -> String {
    let out = fleet
        .host_docker(host)
        .args(["logs", "flotilla-scheduler"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    let all: Vec<&str> = text.lines().collect();
    let from = all.iter().rposition(|l| l.contains(needle)).unwrap_or(0);
    all[from..]
        .iter()
        .take(lines)
        .copied()
        .collect::<Vec<_>>()
        .join("\n")
}

/// Seconds from `from` to `to`.
fn secs(from: flotilla_events::Timestamp, to: flotilla_events::Timestamp) -> f64 {
    to.millis_since(from) as f64 / 1000.0
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Three control hosts (not serving the app) and two app hosts: setup makes NATS a
/// cluster with every stream and bucket on three replicas, and runs a scheduler instance on
/// each control host, one of which leads. Then, under load on the app hosts:
/// - one NATS node (not the leader's) SIGKILLed mid-rollout: the deploy completes (exit 0)
///   with each step once and nothing lost; the node, started again, catches up;
/// - the leader's host cut off mid-rollout (its link down, its NATS and scheduler
///   SIGKILLed): another instance takes the lease and resumes the rollout from the log; the
///   CLI that asked rides the failover out and exits 0, each step ran once, every event it
///   showed before the cut is in the log, and not one request to the app failed.
#[test]
fn three_control_hosts_survive_a_lost_nats_node_and_a_lost_leader() {
    let fleet = fleet(5);
    let controls: Vec<&Host> = fleet.hosts[..3].iter().collect();
    let web: Vec<&Host> = fleet.hosts[3..].iter().collect();
    let control_list: String = controls
        .iter()
        .map(|h| format!("    - {}\n", h.addr))
        .collect();
    let project = BareProject::with_extra(
        &fleet,
        &web,
        &format!(
            "  scheduler:\n    mode: service\n  rollout:\n    max_parallel: 1\n  control:\n{control_list}\
             env:\n  clear:\n    APP_MODE: healthy-after:{HEALTHY_AFTER_SECS}\n"
        ),
    );
    project.flotilla_ok(&["setup", "--version", "v1"], &[("APP_VERSION", "v1")]);
    for h in &web {
        assert_eq!(crate::setup::version_of(h), "v1");
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let nats = rt.block_on(operators_nats(&project, &controls));
    for stream in [
        flotilla_protocol::control::LOG_STREAM,
        flotilla_protocol::subjects::JOBS_STREAM,
        flotilla_protocol::subjects::EVENTS_STREAM,
        "KV_flotilla-leader",
    ] {
        assert_eq!(
            rt.block_on(replication(&nats, stream)).unwrap().0,
            3,
            "{stream} is replicated on every control host"
        );
    }
    for h in &controls {
        let running = crate::support::ssh_ok(
            &fleet,
            h,
            "docker inspect -f '{{.State.Running}}' flotilla-nats flotilla-scheduler",
        );
        assert_eq!(running, "true\ntrue", "{}", h.name);
    }
    let web_addrs: Vec<SocketAddr> = web.iter().map(|h| SocketAddr::from((h.addr, 80))).collect();

    // One NATS node lost mid-rollout: a standby's, so the leader keeps its lease.
    let first = leader(&rt, &fleet, &nats, &controls);
    let node = *controls.iter().find(|h| h.addr != first.addr).unwrap();
    let load = load::start(&web_addrs, CLIENTS_PER_HOST);
    let (id, before, _, out) = deploy_with_fault(&project, "v2", || {
        let killed = fleet
            .host_docker(node)
            .args(["kill", "flotilla-nats"])
            .output()
            .unwrap();
        assert!(killed.status.success(), "{killed:?}");
    });
    assert!(out.status.success(), "{}", stderr(&out));
    assert_completed_once(&project, &web, &id, &before, "v2", &|| {
        scheduler_logs(&fleet, &controls)
    });
    let stats = load.stop();
    assert!(stats.failed.is_empty(), "{:?}", stats.failed);
    let started = fleet
        .host_docker(node)
        .args(["start", "flotilla-nats"])
        .output()
        .unwrap();
    assert!(started.status.success(), "{started:?}");
    assert!(
        wait_until(REJOIN, || {
            rt.block_on(replication(&nats, flotilla_protocol::control::LOG_STREAM))
                .is_some_and(|(_, current)| current == 2)
        }),
        "the restarted node caught FLOTILLA_LOG up"
    );
    eprintln!(
        "NATS node on {} killed mid-rollout: deploy completed, {} requests served, 0 failed",
        node.name, stats.ok
    );

    // The leader's host lost mid-rollout.
    let lost = leader(&rt, &fleet, &nats, &controls);
    let load = load::start(&web_addrs, CLIENTS_PER_HOST);
    let mut cut_at = None;
    let (id, before, resumed_after, out) = deploy_with_fault(&project, "v3", || {
        cut_at = Some(flotilla_events::Timestamp::now());
        fleet.cut_link(lost).unwrap();
        let killed = fleet
            .host_docker(lost)
            .args(["kill", "flotilla-nats", "flotilla-scheduler"])
            .output()
            .unwrap();
        assert!(killed.status.success(), "{killed:?}");
    });
    let standing: Vec<&Host> = controls
        .iter()
        .copied()
        .filter(|h| h.addr != lost.addr)
        .collect();
    // Every control host's (the lost one's too: its Docker is reached without its link), and
    // what the CLI showed after the cut.
    let logs = || {
        format!(
            "{}\nthe deploy's output after the cut:\n{}",
            scheduler_logs(&fleet, &controls),
            String::from_utf8_lossy(&out.stdout)
        )
    };
    assert!(
        out.status.success(),
        "{}\n{}\nthe standing schedulers:\n{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out),
        logs()
    );
    let resumed_after = resumed_after.expect("the CLI showed an event after the cut");
    let stats = load.stop();
    assert!(stats.failed.is_empty(), "{:?}", stats.failed);
    assert_completed_once(&project, &web, &id, &before, "v3", &logs);
    let nats = rt.block_on(operators_nats(&project, &standing));
    let now = leader(&rt, &fleet, &nats, &standing);
    assert_ne!(now.addr, lost.addr);
    let cut_at = cut_at.unwrap();
    let led = logged_at(&fleet, now, "leading: catching up").expect("the new leader says so");
    let resumed = logged_at(&fleet, now, "resumed an interrupted rollout")
        .expect("the new leader resumed the rollout");
    eprintln!(
        "leader on {} cut off mid-rollout: new leader on {} took the lease {:.1}s after the \
         cut and resumed the rollout {:.1}s after it; the CLI showed the next event {:.1}s \
         after it; {} requests served, 0 failed",
        lost.name,
        now.name,
        secs(cut_at, led),
        secs(cut_at, resumed),
        resumed_after.as_secs_f64(),
        stats.ok
    );
    eprintln!(
        "the new leader's log from the takeover:\n{}",
        log_from(&fleet, now, "leading: catching up", 30)
    );
}
