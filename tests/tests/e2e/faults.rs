//! Faults injected into rollouts on the real fleet under continuous HTTP load, as an operator
//! meets them. Each case asserts the deploy's outcome, exit code and message, the failed
//! requests (zero unless a host's engine or link is down), exactly one serving app
//! container per host afterwards, and a log that tells the story once. The cases share one
//! fleet and one project, in order, each starting from the state the last one left.

use crate::deploy::{deploy_v2_one_host_at_a_time, running, stderr, version_of, web};
use crate::load;
use crate::project::Project;
use crate::support::fleet;
use std::collections::BTreeMap;
use std::io::BufRead;

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
fn one_container_each(fleet: &flotilla_e2e::fleet::Fleet, version: &str) {
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

/// The deploy process SIGKILLed mid-rollout (one host done, the others not): `history`
/// shows it as interrupted, never running, with the resume command; a new deploy is
/// refused (exit 1) by its lock with a message naming the dead deploy as interrupted and
/// the resume command, without waiting for the lock to expire; `flotilla replay ID
/// --resume` then finishes it at once: every host serves v2 from one container, each host
/// has one `HostSucceeded`, the log ends with `DeployCompleted` and `LockReleased`, and
/// not one request failed throughout.
#[test]
fn killed_deploy_is_shown_interrupted_named_by_the_lock_and_resumed() {
    let fleet = fleet(3);
    let project = Project::new(&fleet, "");
    project.flotilla_ok(&["deploy", "--version", "v1"], &[("APP_VERSION", "v1")]);
    let load = load::start(&web(&fleet), CLIENTS_PER_HOST);

    let mut child = deploy_v2_one_host_at_a_time(&project, &fleet, std::process::Stdio::null());
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
    one_container_each(&fleet, "v2");
    let (hosts, deploy) = events_of(&project, &deploy_id);
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
