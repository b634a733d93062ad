//! `flotilla deploy`, `rollback`, `history` and `replay` on the real 3-host fleet, as a Kamal
//! user runs them: zero failed requests while versions change, every step in the event log,
//! rollbacks by exact digest.

use crate::load;
use crate::project::{APP_SECRET, Project};
use crate::support::{fleet, http_get};
use flotilla_e2e::fleet::Fleet;
use flotilla_e2e::testapp;
use flotilla_events::{Event, EventLog, SledLog};
use std::net::SocketAddr;

fn version_of(addr: SocketAddr) -> String {
    match http_get(addr, "/version") {
        Ok((200, body)) => body.trim().to_owned(),
        other => panic!("GET {addr}/version: {other:?}"),
    }
}

fn web(fleet: &Fleet) -> Vec<SocketAddr> {
    fleet
        .hosts
        .iter()
        .map(|h| SocketAddr::from((h.addr, 80)))
        .collect()
}

fn running(fleet: &Fleet, host: &flotilla_e2e::fleet::Host) -> Vec<String> {
    let out = fleet
        .host_docker(host)
        .args([
            "ps",
            "--filter",
            "label=service=testapp",
            "--format",
            "{{.Names}}",
        ])
        .output()
        .unwrap();
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    names.sort();
    names
}

/// Deploy v1, then v2 under continuous load (zero failed requests, every host serves v2
/// through its proxy, the old container is stopped, the log holds each host's steps in
/// order), then roll back after v1's tag was pushed again with other content: the hosts run
/// v1's original digest, again with zero failed requests, and history lists all three.
#[test]
fn deploy_v1_then_v2_then_roll_back_by_digest() {
    let fleet = fleet(3);
    let project = Project::new(&fleet, "");
    project.flotilla_ok(&["deploy", "--version", "v1"], &[("APP_VERSION", "v1")]);
    for addr in web(&fleet) {
        assert_eq!(version_of(addr), "v1");
    }

    let load = load::start(&web(&fleet), 4);
    let out = project.flotilla_ok(
        &["deploy", "--version", "v2", "--json"],
        &[("APP_VERSION", "v2")],
    );
    let stats = load.stop();
    assert!(
        stats.failed.is_empty(),
        "failed requests during v2 deploy: {:?}",
        &stats.failed[..stats.failed.len().min(5)]
    );
    assert!(stats.ok > 50, "load ran: {} requests", stats.ok);
    assert!(!out.contains(APP_SECRET), "secret in --json output");
    for (host, addr) in fleet.hosts.iter().zip(web(&fleet)) {
        assert_eq!(version_of(addr), "v2", "{}", host.name);
        assert_eq!(
            running(&fleet, host),
            ["testapp-web-v2"],
            "only v2 runs on {}",
            host.name
        );
    }

    // Someone pushes other content under the v1 tag; a rollback must not pick it up.
    testapp::build_and_push(
        &fleet,
        &testapp::build_static_binary().unwrap(),
        "testapp",
        "v1",
        "ENV APP_VERSION=v1-moved",
    )
    .unwrap();
    let load = load::start(&web(&fleet), 4);
    project.flotilla_ok(&["rollback"], &[]);
    let stats = load.stop();
    assert!(
        stats.failed.is_empty(),
        "failed requests during rollback: {:?}",
        &stats.failed[..stats.failed.len().min(5)]
    );
    for addr in web(&fleet) {
        assert_eq!(
            version_of(addr),
            "v1",
            "the original v1 digest, not the moved tag"
        );
    }

    let history = project.flotilla_ok(&["history", "--json"], &[]);
    let releases: Vec<serde_json::Value> = history
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary: Vec<(String, String, String)> = releases
        .iter()
        .map(|r| {
            (
                r["kind"].as_str().unwrap().to_owned(),
                r["version"].as_str().unwrap().to_owned(),
                r["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("deploy".into(), "v1".into(), "completed".into()),
            ("deploy".into(), "v2".into(), "completed".into()),
            ("rollback".into(), "v1".into(), "completed".into())
        ]
    );
    assert!(releases.iter().all(|r| {
        r["images"]["web"]["digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    }));
    assert_eq!(
        releases[0]["images"]["web"]["digest"],
        releases[2]["images"]["web"]["digest"]
    );

    // The log: for the v2 deploy, each host's steps in order.
    let all: Vec<_> = {
        // Opened and closed here: the log has one user at a time, and the CLI needs it next.
        let log = SledLog::open(project.root().join(".flotilla/events")).unwrap();
        log.read_all().unwrap().map(Result::unwrap).collect()
    };
    let v2 = releases[1]["deploy_id"].as_str().unwrap();
    for host in &fleet.hosts {
        let kinds: Vec<&str> = all
            .iter()
            .filter(|e| {
                e.deploy_id.as_str() == v2 && e.host.as_deref() == Some(&host.addr.to_string())
            })
            .map(|e| e.type_name())
            .collect();
        assert_eq!(
            kinds,
            [
                "ImagePulled",
                "ContainerStarted",
                "HealthPassed",
                "ProxySwitched",
                "OldContainerStopped",
                "HostSucceeded"
            ],
            "events of {}",
            host.name
        );
    }
    assert!(
        all.iter()
            .any(|e| matches!(&e.event, Event::LockAcquired(_)))
    );
    let dump = project.flotilla_ok(&["events", "--json"], &[]);
    assert!(!dump.contains(APP_SECRET), "secret in the event log");
    let replay = project.flotilla_ok(&["replay", v2], &[]);
    assert!(
        replay.contains("ProxySwitched") && replay.contains(&fleet.hosts[0].addr.to_string()),
        "{replay}"
    );
}
