//! The control plane on the fleet: `flotilla scheduler run` on the first host owns the one
//! event log; the CLI (`x-flotilla.scheduler: {mode: service}`) asks it over NATS and
//! follows its events. A second project directory with no log of its own sees the same
//! history and rolls back to the exact digest; a CLI killed mid-rollout leaves the deploy
//! running, and `flotilla replay ID --follow` reattaches to it.

use crate::project::{APP_SECRET, Project};
use crate::support::{fleet, http_get};
use flotilla_e2e::control::{SERVICE_METRICS_PORT, SchedulerService};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;

/// The project's extra settings: deploys run in the service.
const SERVICE_MODE: &str = "  scheduler:\n    mode: service\n";

fn version_of(addr: SocketAddr) -> String {
    match http_get(addr, "/version") {
        Ok((200, body)) => body.trim().to_owned(),
        other => panic!("GET {addr}/version: {other:?}"),
    }
}

/// The service's state as `flotilla setup` will lay it: the scheduler key the executors were
/// enrolled with and the log holding their enrolment (recorded by `flotilla server enroll`
/// in the project's log, which the service continues).
fn service_state(project: &Project) -> std::path::PathBuf {
    let state = project.root().join("control-state");
    std::fs::create_dir_all(&state).unwrap();
    let flotilla = project.root().join(".flotilla");
    std::fs::copy(flotilla.join("scheduler.key"), state.join("scheduler.key")).unwrap();
    copy_dir(&flotilla.join("events"), &state.join("events"));
    state
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A second checkout of the project: its config and secrets, no `.flotilla` (no log, no keys).
fn second_checkout(project: &Project) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    std::fs::create_dir_all(dir.path().join(".kamal")).unwrap();
    for file in ["config/deploy.yml", ".kamal/secrets"] {
        std::fs::copy(project.root().join(file), dir.path().join(file)).unwrap();
    }
    dir
}

fn flotilla_in(project: &Project, dir: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(&project.flotilla)
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("KAMAL_DESTINATION")
        .output()
        .unwrap()
}

/// Deploys run in the service: v1 and v2 deployed from one directory are in the history a
/// second, empty checkout reads; that checkout rolls back to v1's exact digest; a CLI
/// SIGKILLed mid-rollout of v3 leaves the deploy running to the end, `replay --follow`
/// reattaches and exits 0, and the hosts serve v3. The service answers `/metrics` between
/// deploys with every deploy counted. No secret shows in any output.
#[test]
fn deploys_run_in_the_service_and_history_is_shared() {
    let fleet = fleet(2);
    let project = Project::new(&fleet, SERVICE_MODE);
    let state = service_state(&project);
    let service = SchedulerService::start(&fleet, &fleet.hosts[0], &project.flotilla, &state);
    let web: Vec<SocketAddr> = fleet
        .hosts
        .iter()
        .map(|h| SocketAddr::from((h.addr, 80)))
        .collect();

    let out = project.flotilla_ok(&["deploy", "--version", "v1"], &[("APP_VERSION", "v1")]);
    assert!(!out.contains(APP_SECRET));
    project.flotilla_ok(&["deploy", "--version", "v2"], &[("APP_VERSION", "v2")]);
    for addr in &web {
        assert_eq!(version_of(*addr), "v2");
    }

    // A checkout with no log of its own: the service's history, v1's digest included.
    let other = second_checkout(&project);
    let history = flotilla_in(&project, other.path(), &["history", "--json"]);
    assert!(history.status.success(), "{history:?}\n{}", service.log());
    let history = String::from_utf8_lossy(&history.stdout).into_owned();
    let v1_digest = history
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["version"] == "v1" && r["kind"] == "deploy")
        .map(|r| r["images"]["web"]["digest"].as_str().unwrap().to_owned())
        .unwrap_or_else(|| panic!("v1 in the shared history:\n{history}"));
    let rolled = flotilla_in(&project, other.path(), &["rollback"]);
    assert!(
        rolled.status.success(),
        "rollback from the empty checkout: {}\n{}",
        String::from_utf8_lossy(&rolled.stderr),
        service.log()
    );
    for addr in &web {
        assert_eq!(version_of(*addr), "v1");
    }
    let history = project.flotilla_ok(&["history", "--json"], &[]);
    let last = history
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .next_back()
        .unwrap();
    assert_eq!(last["kind"], "rollback");
    assert_eq!(last["images"]["web"]["digest"], v1_digest.as_str());
    assert!(
        !other.path().join(".flotilla/events").exists(),
        "no local log"
    );
    // Between deploys the service still serves the metrics of all of them.
    let metrics = SocketAddr::from((fleet.hosts[0].addr, SERVICE_METRICS_PORT));
    let (status, body) = http_get(metrics, "/metrics").unwrap();
    assert_eq!(status, 200);
    let deploys: f64 = body
        .lines()
        .filter(|l| l.starts_with("flotilla_deploys_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(deploys, 3.0, "v1, v2 and the rollback:\n{body}");

    // The CLI killed mid-rollout: the deploy goes on in the service.
    let mut cli = std::process::Command::new(&project.flotilla)
        .args(["deploy", "--version", "v3", "--json"])
        .current_dir(project.root())
        .env("APP_VERSION", "v3")
        .env("NO_COLOR", "1")
        .env("DOCKER_HOST", fleet.builder_docker_host())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(cli.stdout.take().unwrap()).lines();
    let deploy_id = loop {
        let line = lines
            .next()
            .expect("the CLI printed the deploy's first event")
            .unwrap();
        let event: serde_json::Value = serde_json::from_str(&line).unwrap();
        if line.contains("LockAcquired") {
            break event["deploy_id"].as_str().unwrap().to_owned();
        }
    };
    cli.kill().unwrap();
    cli.wait().unwrap();
    let followed = flotilla_in(&project, other.path(), &["replay", &deploy_id, "--follow"]);
    assert!(
        followed.status.success(),
        "replay --follow: {}\n{}",
        String::from_utf8_lossy(&followed.stderr),
        service.log()
    );
    for addr in &web {
        assert_eq!(version_of(*addr), "v3");
    }
    assert!(!service.log().contains(APP_SECRET));
}
