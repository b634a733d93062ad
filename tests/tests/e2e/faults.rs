//! Faults injected into rollouts on the real fleet under continuous HTTP load, as an operator
//! meets them. Each case asserts the deploy's outcome, exit code and message, the failed
//! requests (zero unless a host's engine or link is down), exactly one serving app
//! container per host afterwards, and a log that tells the story once. The cases share one
//! fleet and one project, in order, each starting from the state the last one left.

use crate::deploy::{deploy_v2_one_host_at_a_time, running, stderr, version_of, web};
use crate::load;
use crate::project::Project;
use crate::support::fleet;
use crate::support::http_get;
use flotilla_e2e::fleet::{Fleet, wait_until};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::net::SocketAddr;
use std::time::Duration;

/// Clients per host address while a fault is injected.
const CLIENTS_PER_HOST: usize = 2;

/// Each host's event types in deploy `id`, in log order, from `flotilla replay ID --json`;
/// and the deploy's own events (no host) likewise.
fn events_of(project: &Project, id: &str) -> (BTreeMap<String, Vec<String>>, Vec<String>) {
    let replay = project.flotilla_ok(&["replay", id, "--json"], &[]);
    let mut hosts = BTreeMap::<String, Vec<String>>::new();
    let mut deploy = Vec::new();
    for line in replay.lines() {
        let Ok(e) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let Some(kind) = e["event"]
            .as_object()
            .and_then(|o| o.keys().next().cloned())
        else {
            continue;
        };
        match e["host"].as_str() {
            Some(h) => hosts.entry(h.to_owned()).or_default().push(kind),
            None => deploy.push(kind),
        }
    }
    (hosts, deploy)
}

/// Every host serves `version` from exactly one running app container.
fn one_container_each(fleet: &Fleet, version: &str) {
    for (host, addr) in fleet.hosts.iter().zip(web(fleet)) {
        assert_eq!(version_of(addr), version, "{} serves {version}", host.name);
        assert_eq!(
            running(fleet, host),
            [format!("testapp-web-{version}")],
            "one app container on {}",
            host.name
        );
    }
}

/// How long a restarted engine may take to serve again: dockerd's start, the old
/// container's restart by its policy, on a loaded machine.
const ENGINE_BACK_LIMIT: Duration = Duration::from_secs(90);

/// The faults, in order, on one fleet and project (v1 deployed first).
#[test]
fn faults_on_one_fleet_under_load() {
    let fleet = fleet(3);
    let project = Project::new(&fleet, "");
    project.flotilla_ok(&["deploy", "--version", "v1"], &[("APP_VERSION", "v1")]);
    killed_deploy_is_shown_interrupted_named_by_the_lock_and_resumed(&fleet, &project);
    stopped_engine_fails_its_host_as_unreachable_and_leaves_one_container(&fleet, &project);
    executor_killed_mid_step_briefly_then_for_good(&fleet, &project);
    nats_killed_mid_rollout_and_restarted(&fleet, &project);
    registry_down_during_pulls(&fleet, &project);
    link_cut_for_20s_mid_rollout(&fleet, &project);
    killed_deploy_is_not_resumed_after_a_newer_deploy(&fleet, &project);
    two_deploys_at_once_from_one_directory_and_from_two(&fleet, &project);
}

/// `flotilla deploy --version VERSION --json` in the background with `env`, its events on a
/// pipe.
fn deploy_json(
    project: &Project,
    fleet: &Fleet,
    version: &str,
    env: &[(&str, &str)],
) -> std::process::Child {
    std::process::Command::new(&project.flotilla)
        .args(["deploy", "--version", version, "--json"])
        .current_dir(project.root())
        .env("DOCKER_HOST", fleet.builder_docker_host())
        .env("APP_VERSION", version)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Reads `child`'s JSON events to the end, calling `on` with each; returns its output.
fn follow(
    mut child: std::process::Child,
    mut on: impl FnMut(&serde_json::Value),
) -> std::process::Output {
    for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
        on(&serde_json::from_str(&line.unwrap()).unwrap());
    }
    child.wait_with_output().unwrap()
}

/// How long after `t` event `e` happened, by its own time (the events are read late while
/// the test is busy injecting the fault).
fn since(t: Option<flotilla_events::Timestamp>, e: &serde_json::Value) -> Duration {
    let at: flotilla_events::Timestamp = e["at"].as_str().unwrap().parse().unwrap();
    let t = t.unwrap_or(at);
    Duration::from_millis(u64::try_from(at.millis_since(t)).unwrap_or(0))
}

/// The type name of a JSON event.
fn kind(e: &serde_json::Value) -> String {
    e["event"]
        .as_object()
        .and_then(|o| o.keys().next().cloned())
        .unwrap_or_default()
}

/// The deploy process SIGKILLed mid-rollout (one host done, the others not): `history`
/// shows it as interrupted, never running, with the resume command; a new deploy is
/// refused (exit 1) by its lock with a message naming the dead deploy as interrupted and
/// the resume command, without waiting for the lock to expire; `flotilla replay ID
/// --resume` then finishes it at once: every host serves v2 from one container, each host
/// has one `HostSucceeded`, the log ends with `DeployCompleted` and `LockReleased`, and
/// not one request failed throughout.
fn killed_deploy_is_shown_interrupted_named_by_the_lock_and_resumed(
    fleet: &Fleet,
    project: &Project,
) {
    let load = load::start(&web(fleet), CLIENTS_PER_HOST);

    let mut child = deploy_v2_one_host_at_a_time(project, fleet, std::process::Stdio::null());
    let mut deploy_id = String::new();
    let mut killed = false;
    for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
        let e: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        deploy_id = e["deploy_id"].as_str().unwrap().to_owned();
        if e["event"].get("HostSucceeded").is_some() {
            child.kill().unwrap(); // SIGKILL: no cancel, no lock release
            killed = true;
            break;
        }
    }
    child.wait().unwrap();
    assert!(killed, "the deploy got as far as one finished host");

    let history = project.flotilla(&["history"], &[]);
    let listed = String::from_utf8_lossy(&history.stdout);
    let row = listed
        .lines()
        .find(|l| l.starts_with(&deploy_id))
        .unwrap_or_else(|| panic!("{deploy_id} in {listed}"));
    assert!(row.contains("interrupted"), "{row}");
    let resume = format!("flotilla replay {deploy_id} --resume");
    assert!(stderr(&history).contains(&resume), "{}", stderr(&history));

    let refused = project.flotilla(&["deploy", "--version", "v3"], &[("APP_VERSION", "v3")]);
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    let said = stderr(&refused);
    assert!(
        said.contains(&format!("held by deploy {deploy_id}"))
            && said.contains("interrupted")
            && said.contains(&resume),
        "{said}"
    );

    project.flotilla_ok(&["replay", &deploy_id, "--resume"], &[]);
    let stats = load.stop();
    assert!(stats.ok > 0);
    assert!(
        stats.failed.is_empty(),
        "failed requests: {:?}",
        stats.failed
    );
    one_container_each(fleet, "v2");
    let (hosts, deploy) = events_of(project, &deploy_id);
    for host in &fleet.hosts {
        let events = &hosts[&host.addr.to_string()];
        assert_eq!(
            events.iter().filter(|e| *e == "HostSucceeded").count(),
            1,
            "{}: {events:?}",
            host.name
        );
        assert!(!events.contains(&"HostFailed".to_owned()), "{events:?}");
    }
    assert_eq!(
        deploy.iter().rev().take(2).rev().collect::<Vec<_>>(),
        ["DeployCompleted", "LockReleased"],
        "{deploy:?}"
    );
    let history = project.flotilla_ok(&["history"], &[]);
    let row = history
        .lines()
        .find(|l| l.starts_with(&deploy_id))
        .unwrap_or_default();
    assert!(row.contains("completed"), "{history}");
}

/// A host's dockerd stopped mid-rollout (v2 to v3, the host's new container still waiting
/// to be healthy) and started again: the deploy fails (exit 1) on that host alone, as
/// "docker engine unreachable" with cause `EngineUnreachable` at the step it reached, never
/// as a failed health check (no `HealthFailed`); the other hosts serve v3. When the engine
/// is back the host runs its one old container: the new one, which could not be stopped,
/// does not come back beside it; the next deploy serves v3 everywhere from one container
/// per host. Requests fail only on that host.
///
/// Its old container comes back (at its old address or a new one); the host serves again
/// without a deploy, and again once the container is moved to a new address on the network
/// (the executor points the proxy at it).
fn stopped_engine_fails_its_host_as_unreachable_and_leaves_one_container(
    fleet: &Fleet,
    project: &Project,
) {
    let last = fleet.hosts.last().unwrap();
    let last_web = SocketAddr::from((last.addr, 80));
    let load = load::start(&web(fleet), CLIENTS_PER_HOST);
    let mut child = std::process::Command::new(&project.flotilla)
        .args(["deploy", "--version", "v3", "--json"])
        .current_dir(project.root())
        .env("DOCKER_HOST", fleet.builder_docker_host())
        // The last host's v3 is never healthy, so its switch waits while its engine stops.
        .envs([("APP_VERSION", "v3"), ("LAST_HOST_MODE", "unhealthy")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stopped = false;
    let mut stopped_at = None;
    let mut detected_after = Duration::ZERO;
    let mut failure = serde_json::Value::Null;
    let mut last_host_events = Vec::new();
    for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
        let e: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        if e["host"].as_str() != Some(&last.addr.to_string()) {
            continue;
        }
        let kind = e["event"]
            .as_object()
            .and_then(|o| o.keys().next().cloned());
        last_host_events.push(kind.clone().unwrap_or_default());
        if kind.as_deref() == Some("ContainerStarted") && !stopped {
            stopped_at = Some(flotilla_events::Timestamp::now());
            fleet.stop_docker(last).unwrap();
            stopped = true;
        }
        if let Some(f) = e["event"].get("HostFailed") {
            failure = f.clone();
            detected_after = since(stopped_at, &e);
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(stopped, "the last host started its container");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let said = stderr(&out);
    assert!(
        said.contains(&last.addr.to_string()) && said.contains("docker engine unreachable"),
        "{said}"
    );
    assert_eq!(failure["cause"], "EngineUnreachable", "{failure}");
    assert!(
        !last_host_events.contains(&"HealthFailed".to_owned()),
        "{last_host_events:?}"
    );

    let engine_started = std::time::Instant::now();
    fleet.start_docker(last).unwrap();
    let back = wait_until(ENGINE_BACK_LIMIT, || {
        running(fleet, last) == ["testapp-web-v2"]
    });
    assert!(
        back,
        "once its engine is back {} runs its old container alone:\n{}",
        last.name,
        containers_of(fleet, last)
    );
    // dockerd gives the restarted container a new address: the executor points the proxy
    // there, and the host serves again without a deploy.
    let served_again = wait_until(
        ENGINE_BACK_LIMIT,
        || matches!(http_get(last_web, "/version"), Ok((200, v)) if v.trim() == "v2"),
    );
    let back_after = engine_started.elapsed();
    assert!(
        served_again,
        "{} serves v2 again at its container's new address:\n{}",
        last.name,
        containers_of(fleet, last)
    );
    // dockerd may also give the container its old address back. Moving it on the network
    // while another container takes that address (what a restart meets when the address
    // went to someone else meanwhile) makes the new address certain.
    let before = address_of(fleet, last, "testapp-web-v2");
    let image = format!("{}/testapp:v2", fleet.registry());
    let docker = |args: &[&str]| {
        let out = fleet.host_docker(last).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    docker(&["network", "disconnect", "kamal", "testapp-web-v2"]);
    docker(&[
        "run",
        "-d",
        "--name",
        "squatter",
        "--network",
        "kamal",
        "--label",
        "service=squatter",
        &image,
    ]);
    docker(&["network", "connect", "kamal", "testapp-web-v2"]);
    docker(&["rm", "-f", "squatter"]);
    let after = address_of(fleet, last, "testapp-web-v2");
    assert_ne!(after, before, "the container moved on the kamal network");
    let moved_at = std::time::Instant::now();
    let served_again = wait_until(
        ENGINE_BACK_LIMIT,
        || matches!(http_get(last_web, "/version"), Ok((200, v)) if v.trim() == "v2"),
    );
    let repointed_after = moved_at.elapsed();
    assert!(
        served_again,
        "{} serves v2 again at its container's new address {after} (was {before})",
        last.name
    );
    project.flotilla_ok(&["deploy", "--version", "v3"], &[("APP_VERSION", "v3")]);
    let stats = load.stop();
    let elsewhere: Vec<&String> = stats
        .failed
        .iter()
        .filter(|f| !f.starts_with(&last_web.to_string()))
        .collect();
    assert!(
        elsewhere.is_empty(),
        "failed requests on hosts whose engine ran: {elsewhere:?}"
    );
    one_container_each(fleet, "v3");
    eprintln!(
        "engine stopped on {}: failed as unreachable {:.1}s after dockerd was told to stop, \
         served again {:.1}s after dockerd was started again and {:.1}s after its container \
         moved; {} requests failed there, {} served",
        last.name,
        detected_after.as_secs_f64(),
        back_after.as_secs_f64(),
        repointed_after.as_secs_f64(),
        stats.failed.len(),
        stats.ok
    );
}

/// The address of container `name` on `host`'s kamal network.
fn address_of(fleet: &Fleet, host: &flotilla_e2e::fleet::Host, name: &str) -> String {
    let out = fleet
        .host_docker(host)
        .args([
            "inspect",
            "-f",
            "{{(index .NetworkSettings.Networks \"kamal\").IPAddress}}",
            name,
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Every container on `host` with its state, restart policy and address, for a failure's
/// message.
fn containers_of(fleet: &Fleet, host: &flotilla_e2e::fleet::Host) -> String {
    let ids = fleet
        .host_docker(host)
        .args(["ps", "-aq"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let mut inspect = fleet.host_docker(host);
    inspect.args([
        "inspect",
        "-f",
        "{{.Name}} {{.State.Status}} {{.HostConfig.RestartPolicy.Name}} \
         {{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
    ]);
    inspect.args(ids.split_whitespace());
    inspect
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
        })
        .unwrap_or_default()
}

/// An executor (its container) SIGKILLed mid-job (its host's container started, the switch
/// under way).
/// Briefly (started again at once): the job is delivered again and rerun, the deploy
/// succeeds (exit 0) with one `HostSucceeded` and no `HostFailed` per host. For good: the
/// scheduler notices the missing heartbeats within seconds and fails that host as
/// `ExecutorLost` at the step it reached (exit 1, the host named); with the executor back,
/// `flotilla replay ID --resume` finishes the deploy. Afterwards one container per host
/// serves the new version, and no request failed throughout.
fn executor_killed_mid_step_briefly_then_for_good(fleet: &Fleet, project: &Project) {
    let load = load::start(&web(fleet), CLIENTS_PER_HOST);
    let first = fleet.hosts[0].addr.to_string();

    let mut deploy_id = String::new();
    let mut killed = false;
    let child = deploy_json(project, fleet, "v4", &[]);
    let out = follow(child, |e| {
        deploy_id = e["deploy_id"].as_str().unwrap_or_default().to_owned();
        if !killed && e["host"].as_str() == Some(&first) && kind(e) == "ContainerStarted" {
            project.kill_executor(&fleet.hosts[0]);
            project.start_executor(&fleet.hosts[0]);
            killed = true;
        }
    });
    assert!(killed, "the first host started its container");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (hosts, _) = events_of(project, &deploy_id);
    for (host, events) in &hosts {
        assert_eq!(
            events.iter().filter(|e| *e == "HostSucceeded").count(),
            1,
            "{host}: {events:?}"
        );
        assert!(
            !events.contains(&"HostFailed".to_owned()),
            "{host}: {events:?}"
        );
    }
    one_container_each(fleet, "v4");

    let mut killed_at = None;
    let mut lost = serde_json::Value::Null;
    let mut detected_after = Duration::ZERO;
    let child = deploy_json(project, fleet, "v5", &[]);
    let out = follow(child, |e| {
        deploy_id = e["deploy_id"].as_str().unwrap_or_default().to_owned();
        if killed_at.is_none()
            && e["host"].as_str() == Some(&first)
            && kind(e) == "ContainerStarted"
        {
            project.kill_executor(&fleet.hosts[0]);
            killed_at = Some(flotilla_events::Timestamp::now());
        }
        if e["host"].as_str() == Some(&first) && kind(e) == "HostFailed" {
            lost = e["event"]["HostFailed"].clone();
            detected_after = since(killed_at, e);
        }
    });
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains(&first), "{}", stderr(&out));
    assert_eq!(lost["cause"], "ExecutorLost", "{lost}");
    project.start_executor(&fleet.hosts[0]);
    project.flotilla_ok(&["replay", &deploy_id, "--resume"], &[]);
    let stats = load.stop();
    assert!(
        stats.failed.is_empty(),
        "failed requests: {:?}",
        stats.failed
    );
    one_container_each(fleet, "v5");
    eprintln!(
        "executor killed for good on {first}: failed as lost {:.1}s after the kill, at {}; \
         {} requests served, none failed",
        detected_after.as_secs_f64(),
        lost["step"],
        stats.ok
    );
}

/// NATS (its container on the control host) SIGKILLed mid-rollout (one host at a time, the
/// first host done) and started again on its store, then stopped cleanly (SIGTERM) and started again once the second host is
/// done: the deploy carries on and succeeds (exit 0), each host once `HostSucceeded` and
/// never `HostFailed`, one container per host serves the new version, and no request
/// failed (the proxies serve without NATS).
fn nats_killed_mid_rollout_and_restarted(fleet: &Fleet, project: &Project) {
    let load = load::start(&web(fleet), CLIENTS_PER_HOST);
    let mut deploy_id = String::new();
    let mut killed = false;
    let mut stopped = false;
    let child = deploy_json(project, fleet, "v6", &[("MAX_PARALLEL", "1")]);
    let out = follow(child, |e| {
        deploy_id = e["deploy_id"].as_str().unwrap_or_default().to_owned();
        if kind(e) != "HostSucceeded" {
            return;
        }
        if !killed {
            project.kill_nats();
            project.start_nats();
            killed = true;
        } else if !stopped {
            project.stop_nats();
            project.start_nats();
            stopped = true;
        }
    });
    assert!(
        killed && stopped,
        "NATS was killed after the first host and stopped after the second"
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (hosts, deploy) = events_of(project, &deploy_id);
    for host in &fleet.hosts {
        let events = &hosts[&host.addr.to_string()];
        assert_eq!(
            events.iter().filter(|e| *e == "HostSucceeded").count(),
            1,
            "{}: {events:?}",
            host.name
        );
        assert!(!events.contains(&"HostFailed".to_owned()), "{events:?}");
    }
    assert!(deploy.contains(&"DeployCompleted".to_owned()), "{deploy:?}");
    let stats = load.stop();
    assert!(
        stats.failed.is_empty(),
        "failed requests: {:?}",
        stats.failed
    );
    one_container_each(fleet, "v6");
}

/// The registry stopped once the image is pushed, while hosts pull it one at a time: the
/// deploy fails (exit 1) with `HostFailed` at `PullImage` naming the image, every host
/// keeps serving from one container (the old version where the pull failed), and no
/// request failed; with the registry back, the same deploy succeeds everywhere.
fn registry_down_during_pulls(fleet: &Fleet, project: &Project) {
    let load = load::start(&web(fleet), CLIENTS_PER_HOST);
    let mut stopped = false;
    let mut pull_failures = Vec::new();
    let child = deploy_json(project, fleet, "v7", &[("MAX_PARALLEL", "1")]);
    let out = follow(child, |e| {
        if !stopped && kind(e) == "ImagePushed" {
            fleet.stop_registry().unwrap();
            stopped = true;
        }
        // Hosts that never started may be failed too (the deploy stopped); those that ran
        // failed at their pull.
        if kind(e) == "HostFailed" && e["event"]["HostFailed"]["cause"] == "StepFailed" {
            pull_failures.push(e["event"]["HostFailed"].clone());
        }
    });
    assert!(stopped, "the image was pushed");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(!pull_failures.is_empty());
    for f in &pull_failures {
        assert_eq!(f["step"], "PullImage", "{f}");
        assert!(
            f["error"]
                .as_str()
                .unwrap_or_default()
                .contains("testapp:v7"),
            "{f}"
        );
    }
    for (host, addr) in fleet.hosts.iter().zip(web(fleet)) {
        let v = version_of(addr);
        assert!(v == "v6" || v == "v7", "{} serves {v}", host.name);
        assert_eq!(
            running(fleet, host),
            [format!("testapp-web-{v}")],
            "one container on {}",
            host.name
        );
    }
    fleet.start_registry().unwrap();
    project.flotilla_ok(&["deploy", "--version", "v7"], &[("APP_VERSION", "v7")]);
    let stats = load.stop();
    assert!(
        stats.failed.is_empty(),
        "failed requests: {:?}",
        stats.failed
    );
    one_container_each(fleet, "v7");
}

/// How long a host's link stays cut: longer than the least silence after which the
/// scheduler counts an executor as lost (15 s), as a rebooting switch would be.
const LINK_CUT: Duration = Duration::from_secs(20);

/// A host's link cut for 20 s mid-rollout (cut as its new container is reported started),
/// then restored. The executor carries on alone (its steps need no network) but its
/// reports and heartbeats stop: the deploy fails (exit 1) on that host alone, as
/// `ExecutorLost` within seconds of the cut, naming the host, while the other hosts
/// succeed. With the link back, `flotilla replay ID --resume` records the reports the host
/// could not send and finishes it: one container per host serves the new version, and the
/// host's log tells one story (one switch, at most one old container stopped, its
/// `HostFailed` before the one `HostSucceeded` that ends it). Requests fail only on that host, while
/// its link is down.
fn link_cut_for_20s_mid_rollout(fleet: &Fleet, project: &Project) {
    let last = fleet.hosts.last().unwrap();
    let last_addr = last.addr.to_string();
    let last_web = SocketAddr::from((last.addr, 80));
    let load = load::start(&web(fleet), CLIENTS_PER_HOST);
    let mut deploy_id = String::new();
    let mut cut_at = None;
    let mut lost = serde_json::Value::Null;
    let mut detected_after = Duration::ZERO;
    let child = deploy_json(project, fleet, "v8", &[]);
    let out = std::thread::scope(|scope| {
        follow(child, |e| {
            deploy_id = e["deploy_id"].as_str().unwrap_or_default().to_owned();
            if e["host"].as_str() != Some(&last_addr) {
                return;
            }
            if cut_at.is_none() && kind(e) == "ContainerStarted" {
                fleet.cut_link(last).unwrap();
                cut_at = Some(flotilla_events::Timestamp::now());
                scope.spawn(|| {
                    std::thread::sleep(LINK_CUT);
                    fleet.restore_link(last).unwrap();
                });
            }
            if kind(e) == "HostFailed" {
                lost = e["event"]["HostFailed"].clone();
                detected_after = since(cut_at, e);
            }
        })
    });
    assert!(cut_at.is_some(), "the last host started its container");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let said = stderr(&out);
    assert!(
        said.contains(&last_addr) && said.contains("stopped sending heartbeats"),
        "{said}"
    );
    assert!(said.contains("2 host(s) succeeded, 1 failed"), "{said}");
    assert_eq!(lost["cause"], "ExecutorLost", "{lost}");

    project.flotilla_ok(&["replay", &deploy_id, "--resume"], &[]);
    let stats = load.stop();
    let elsewhere: Vec<&String> = stats
        .failed
        .iter()
        .filter(|f| !f.starts_with(&last_web.to_string()))
        .collect();
    assert!(
        elsewhere.is_empty(),
        "failed requests on hosts whose link was up: {elsewhere:?}"
    );
    one_container_each(fleet, "v8");
    let (hosts, deploy) = events_of(project, &deploy_id);
    let count = |events: &[String], kind: &str| events.iter().filter(|e| *e == kind).count();
    for host in &fleet.hosts {
        let events = &hosts[&host.addr.to_string()];
        for once in ["ProxySwitched", "HostSucceeded"] {
            assert_eq!(count(events, once), 1, "{} {once}: {events:?}", host.name);
        }
        // The cut host may have stopped its old container while cut off: that report is
        // recorded if it reached NATS before the resume drained the deploy's reports, and
        // the resume's rerun of the stop finds nothing left to stop.
        assert!(
            count(events, "OldContainerStopped") <= 1,
            "{}: {events:?}",
            host.name
        );
        assert_eq!(
            events.last().map(String::as_str),
            Some("HostSucceeded"),
            "{}: {events:?}",
            host.name
        );
        let failed = usize::from(host.addr == last.addr);
        assert_eq!(
            count(events, "HostFailed"),
            failed,
            "{}: {events:?}",
            host.name
        );
    }
    assert_eq!(
        deploy.iter().rev().take(2).rev().collect::<Vec<_>>(),
        ["DeployCompleted", "LockReleased"],
        "{deploy:?}"
    );
    eprintln!(
        "link cut for {}s on {}: failed as lost {:.1}s after the cut, at {}; {} requests failed \
         there, {} served",
        LINK_CUT.as_secs(),
        last.name,
        detected_after.as_secs_f64(),
        lost["step"],
        stats.failed.len(),
        stats.ok
    );
}

/// The deploy process SIGKILLed mid-rollout (one host done), its lock released by hand and
/// a newer deploy run: `flotilla replay ID --resume` of the killed deploy is refused (exit
/// 64), saying it was superseded by the newer deploy and its version, and changes nothing:
/// every host still serves the newer version from one container, the killed deploy's log
/// has no outcome appended, and no request failed.
fn killed_deploy_is_not_resumed_after_a_newer_deploy(fleet: &Fleet, project: &Project) {
    let load = load::start(&web(fleet), CLIENTS_PER_HOST);
    let mut child = deploy_json(project, fleet, "v9", &[("MAX_PARALLEL", "1")]);
    let mut killed_id = String::new();
    for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
        let e: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        killed_id = e["deploy_id"].as_str().unwrap().to_owned();
        if kind(&e) == "HostSucceeded" {
            child.kill().unwrap(); // SIGKILL: no outcome, the lock left behind
            break;
        }
    }
    child.wait().unwrap();
    project.flotilla_ok(&["lock", "release"], &[]);
    project.flotilla_ok(&["deploy", "--version", "v10"], &[("APP_VERSION", "v10")]);
    let (_, before) = events_of(project, &killed_id);

    let refused = project.flotilla(&["replay", &killed_id, "--resume"], &[]);
    // 64: nothing can be rolled out for that deploy (a plan error), not a failed rollout.
    assert_eq!(refused.status.code(), Some(64), "{}", stderr(&refused));
    let said = stderr(&refused);
    assert!(
        said.contains(&format!("deploy {killed_id} was superseded by deploy"))
            && said.contains("(v10)"),
        "{said}"
    );
    let stats = load.stop();
    assert!(
        stats.failed.is_empty(),
        "failed requests: {:?}",
        stats.failed
    );
    one_container_each(fleet, "v10");
    let (_, after) = events_of(project, &killed_id);
    assert_eq!(after, before, "the refused resume appended nothing");
}

/// Two deploys at once. From one directory: the second finds the event log held by the
/// first and fails within seconds (exit 1) naming the log, the process holding it and
/// `--lock-wait`; with `--lock-wait` it waits for the first to finish, then runs. From two
/// directories (two checkouts, each with its own log): the second is refused (exit 1) by
/// the deploy lock, naming the running deploy. The first deploy is not disturbed, the waiting one succeeds,
/// every host ends serving its version from one container, and no request failed.
fn two_deploys_at_once_from_one_directory_and_from_two(fleet: &Fleet, project: &Project) {
    let load = load::start(&web(fleet), CLIENTS_PER_HOST);
    let other = tempfile::tempdir().unwrap();
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(project.root().join("."))
        .arg(other.path())
        .status()
        .unwrap();
    assert!(copied.success(), "the project copied to a second checkout");

    // The last host's new container turns healthy only after a while: the first deploy
    // is still running while the others are tried.
    let mut first = deploy_json(
        project,
        fleet,
        "v11",
        &[("LAST_HOST_MODE", "healthy-after:12")],
    );
    let mut first_id = String::new();
    let mut events = std::io::BufReader::new(first.stdout.take().unwrap()).lines();
    for line in events.by_ref() {
        let e: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        first_id = e["deploy_id"].as_str().unwrap().to_owned();
        if kind(&e) == "DeployStarted" {
            break;
        }
    }

    let same_dir = project.flotilla(&["deploy", "--version", "v12"], &[("APP_VERSION", "v12")]);
    assert_eq!(same_dir.status.code(), Some(1), "{}", stderr(&same_dir));
    let said = stderr(&same_dir);
    assert!(
        said.contains("cannot open the event log")
            && said.contains("is in use by pid")
            && said.contains("deploy --version v11")
            && said.contains("--lock-wait"),
        "{said}"
    );

    let other_dir = std::process::Command::new(&project.flotilla)
        .args(["deploy", "--version", "v12"])
        .current_dir(other.path())
        .env("DOCKER_HOST", fleet.builder_docker_host())
        .env("NO_COLOR", "1")
        .env("APP_VERSION", "v12")
        .output()
        .unwrap();
    assert_eq!(other_dir.status.code(), Some(1), "{}", stderr(&other_dir));
    let said = stderr(&other_dir);
    assert!(
        said.contains("the deploy lock is taken")
            && said.contains(&format!("deploy {first_id} holds it")),
        "{said}"
    );

    let waiting = std::process::Command::new(&project.flotilla)
        .args(["deploy", "--version", "v12", "--lock-wait", "120"])
        .current_dir(project.root())
        .env("DOCKER_HOST", fleet.builder_docker_host())
        .env("NO_COLOR", "1")
        .env("APP_VERSION", "v12")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    events.for_each(drop);
    let first = first.wait_with_output().unwrap();
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let waited = waiting.wait_with_output().unwrap();
    assert_eq!(waited.status.code(), Some(0), "{}", stderr(&waited));

    let stats = load.stop();
    assert!(
        stats.failed.is_empty(),
        "failed requests: {:?}",
        stats.failed
    );
    one_container_each(fleet, "v12");
    let history = project.flotilla_ok(&["history"], &[]);
    let row = history
        .lines()
        .find(|l| l.starts_with(&first_id))
        .unwrap_or_default();
    assert!(row.contains("completed"), "{history}");
}
