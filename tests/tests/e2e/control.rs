//! The control plane on the fleet: `flotilla setup` boots `flotilla scheduler run` as a
//! container on the control host, which owns the one event log; the CLI
//! (`x-flotilla.scheduler: {mode: service}`) asks it over NATS and follows its events. A
//! second project directory with no log of its own sees the same history and rolls back to
//! the exact digest; a CLI killed mid-rollout leaves the deploy running, and `flotilla
//! replay ID --follow` reattaches to it.

use crate::support::{fleet, http_get, ssh_ok};
use flotilla_e2e::control::SERVICE_METRICS_PORT;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::Stdio;

/// The project's extra settings: deploys run in the service.
const SERVICE_MODE: &str = "  scheduler:\n    mode: service\n";

/// The registry password in the bare project's secrets: never in the service's output.
const REGISTRY_SECRET: &str = "unused-by-this-registry";

/// The control plane as a user gets it: from bare hosts, `flotilla setup` in service mode
/// boots the scheduler service as a container (`flotilla-scheduler`, restart policy, its log
/// in a state directory on the control host), pins its key in `.flotilla/service.pub` (the
/// key on the host, read over SSH), records the enrolments in the service's log (no local
/// log), and its deploy runs there with the project's hooks run by the CLI. A second
/// checkout holding only the config, the secrets and the operators' NATS key reads the
/// history while a deploy runs, follows that deploy to the end after its CLI was SIGKILLed,
/// and rolls back to v1's exact digest. Running bootstrap again changes nothing.
#[test]
fn setup_boots_the_service_and_a_second_checkout_shares_its_history() {
    use crate::setup::{BareProject, containers};
    let fleet = fleet(2);
    let (h1, h2) = (&fleet.hosts[0], &fleet.hosts[1]);
    let project = BareProject::with_extra(&fleet, &[h1, h2], SERVICE_MODE);
    let hooks = project.root().join(".kamal/hooks");
    std::fs::create_dir_all(&hooks).unwrap();
    let hook_log = project.root().join("hooks.log");
    for name in ["pre-deploy", "pre-app-boot", "post-app-boot", "post-deploy"] {
        let path = hooks.join(name);
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\necho \"{name} $KAMAL_VERSION\" >> {}\n",
                hook_log.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    project.flotilla_ok(&["setup", "--version", "v1"], &[("APP_VERSION", "v1")]);
    for h in [h1, h2] {
        assert_eq!(crate::setup::version_of(h), "v1");
    }
    let names: Vec<String> = containers(&fleet, h1)
        .iter()
        .map(|l| l.split_whitespace().next().unwrap().to_owned())
        .collect();
    assert!(
        names.contains(&"/flotilla-scheduler".to_owned()),
        "{names:?}"
    );
    assert_eq!(
        ssh_ok(
            &fleet,
            h1,
            "docker inspect -f '{{.HostConfig.RestartPolicy.Name}}' flotilla-scheduler; \
             cat /var/lib/flotilla/scheduler/service.pub; test -d /var/lib/flotilla/scheduler/events && echo log"
        ),
        format!(
            "unless-stopped\n{}log",
            std::fs::read_to_string(project.root().join(".flotilla/service.pub")).unwrap()
        ),
        "the service key pinned is the one on the control host"
    );
    assert!(
        !project.root().join(".flotilla/events").exists(),
        "no local log in service mode"
    );
    assert_eq!(
        std::fs::read_to_string(&hook_log).unwrap(),
        "pre-deploy v1\npre-app-boot v1\npost-app-boot v1\npost-deploy v1\n",
        "the hooks ran on this machine, in Kamal's order"
    );
    let v1_digest = {
        let history = project.flotilla_ok(&["history", "--json"], &[]);
        history
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|r| r["version"] == "v1")
            .map(|r| r["images"]["web"]["digest"].as_str().unwrap().to_owned())
            .unwrap_or_else(|| panic!("v1 in the history:\n{history}"))
    };

    // A second checkout: config, secrets, the operators' NATS key (a CI secret) and the CA
    // NATS's certificate must chain to (public: committed with the config), nothing else.
    let other = tempfile::tempdir().unwrap();
    for file in [
        "config/deploy.yml",
        ".kamal/secrets",
        ".flotilla/nats-operator.nk",
        ".flotilla/nats-ca.pem",
    ] {
        let to = other.path().join(file);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(project.root().join(file), to).unwrap();
    }

    // v2 from the first checkout; its CLI SIGKILLed once the deploy holds the lock.
    let mut cli = std::process::Command::new(&project.flotilla)
        .args(["deploy", "--version", "v2", "--json"])
        .current_dir(project.root())
        .env("APP_VERSION", "v2")
        .env("NO_COLOR", "1")
        .env("DOCKER_HOST", project.builder())
        .env("DOCKER_CONFIG", project.root().join(".docker"))
        .env_remove("FLOTILLA_NATS_URL")
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
    // History while the deploy writes the log.
    let history = project.flotilla_in(other.path(), &["history", "--json"], &[]);
    assert!(history.status.success(), "{history:?}");
    assert!(
        String::from_utf8_lossy(&history.stdout).contains(&v1_digest),
        "history during a deploy: {history:?}"
    );
    cli.kill().unwrap();
    cli.wait().unwrap();
    let followed = project.flotilla_in(other.path(), &["replay", &deploy_id, "--follow"], &[]);
    assert!(
        followed.status.success(),
        "replay --follow: {}",
        String::from_utf8_lossy(&followed.stderr)
    );
    for h in [h1, h2] {
        assert_eq!(crate::setup::version_of(h), "v2");
    }

    let rolled = project.flotilla_in(other.path(), &["rollback"], &[]);
    assert!(
        rolled.status.success(),
        "rollback from the second checkout: {}",
        String::from_utf8_lossy(&rolled.stderr)
    );
    for h in [h1, h2] {
        assert_eq!(crate::setup::version_of(h), "v1");
    }
    let history = project.flotilla_ok(&["history", "--json"], &[]);
    let last = history
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .next_back()
        .unwrap();
    assert_eq!(last["kind"], "rollback");
    assert_eq!(last["images"]["web"]["digest"], v1_digest.as_str());
    assert!(!other.path().join(".flotilla/events").exists());
    // Between deploys the service serves the metrics of all of them: v1, v2, the rollback.
    let metrics = SocketAddr::from((h1.addr, SERVICE_METRICS_PORT));
    let (status, body) = http_get(metrics, "/metrics").unwrap();
    assert_eq!(status, 200);
    let deploys: f64 = body
        .lines()
        .filter(|l| l.starts_with("flotilla_deploys_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(deploys, 3.0, "{body}");
    let service_log = ssh_ok(&fleet, h1, "docker logs flotilla-scheduler 2>&1");
    assert!(
        service_log.contains("flotilla: scheduler service on"),
        "{service_log}"
    );
    assert!(!service_log.contains(REGISTRY_SECRET));

    // Bootstrap again: every host current (the service, its keys and NATS's users included).
    let out = project.flotilla_ok(&["server", "bootstrap", "--json"], &[]);
    assert!(!out.contains(r#""done":"#), "a step ran: {out}");
    assert!(out.contains(r#""enrolled":false"#), "{out}");
}
