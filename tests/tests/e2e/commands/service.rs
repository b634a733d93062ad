//! App and accessory operations in service mode: the scheduler service plans, runs and
//! records them, so the one shared history has them (no local log is written).

use crate::setup::BareProject;
use crate::support::{fleet, ssh_ok};

/// Deploys run in the service (`x-flotilla.scheduler.mode: service`).
const SERVICE_MODE: &str = "  scheduler:\n    mode: service\n";

/// `flotilla setup` in service mode boots the accessory before the deploy; then: `app stop` stops the app on every host through the
/// service and its executors, and the service's log has it (`history` and `audit` read it
/// there: the stop with both hosts succeeded); `app start` runs the release again; `prune all`
/// is run and recorded by the service the same way, the running release kept; `accessory
/// reboot db` is run by db's host's executor (a new container, its `.erb` file rendered here
/// and written there) and recorded by the service (`audit`, `history`); no local event log
/// was made.
#[test]
fn app_stop_and_start_are_recorded_by_the_service() {
    let fleet = fleet(2);
    let (h1, h2) = (&fleet.hosts[0], &fleet.hosts[1]);
    // Accessory files live under the SSH user's home, which the fleet's hosts share with this
    // machine: a name per fleet slot keeps concurrent fleets apart.
    let db = format!("e2e-svcdb-s{}", fleet.slot());
    // An image already in the registry: setup boots accessories before it builds the app,
    // as Kamal's does (the static nats-server stands in for a database).
    let image = flotilla_e2e::bare::push_nats_image(&fleet).unwrap();
    let extra = format!(
        "{SERVICE_MODE}accessories:\n  db:\n    service: {db}\n    image: {image}\n    \
         host: {addr}\n    env:\n      clear:\n        DB_NAME: flotilla\n    files:\n      \
         - config/db.conf.erb:/etc/db.conf\n    options:\n      shm-size: 128m\n",
        addr = h1.addr,
    );
    let project = BareProject::with_extra(&fleet, &[h1, h2], &extra);
    std::fs::write(
        project.root().join("config/db.conf.erb"),
        "name=<%= ENV[\"DB_NAME\"] %>\n",
    )
    .unwrap();
    project.flotilla_ok(&["setup", "--version", "v1"], &[("APP_VERSION", "v1")]);
    assert_eq!(
        ssh_ok(
            &fleet,
            h1,
            &format!("docker inspect {db} --format '{{{{.State.Running}}}}'"),
        ),
        "true",
        "setup booted the accessory, as Kamal's does"
    );
    let running = |host| {
        ssh_ok(
            &fleet,
            host,
            "docker ps --filter label=service=testapp --format '{{.Names}}'",
        )
    };

    project.flotilla_ok(&["app", "stop"], &[]);
    for h in [h1, h2] {
        assert_eq!(running(h), "", "{}", h.addr);
    }
    let history = project.flotilla_ok(&["history", "--json"], &[]);
    let last: serde_json::Value = serde_json::from_str(history.lines().last().unwrap()).unwrap();
    assert_eq!(
        (&last["kind"], &last["outcome"]),
        (
            &serde_json::json!("app stop"),
            &serde_json::json!("completed")
        ),
        "{history}"
    );
    let audit = project.flotilla_ok(&["audit", "--json"], &[]);
    let stop: serde_json::Value = audit
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["kind"] == "app stop")
        .unwrap_or_else(|| panic!("no app stop in {audit}"));
    let mut succeeded: Vec<String> = serde_json::from_value(stop["succeeded"].clone()).unwrap();
    succeeded.sort();
    let mut hosts = vec![h1.addr.to_string(), h2.addr.to_string()];
    hosts.sort();
    assert_eq!(succeeded, hosts, "{audit}");

    project.flotilla_ok(&["app", "start"], &[]);
    for h in [h1, h2] {
        assert_eq!(running(h), "testapp-web-v1", "{}", h.addr);
    }

    // `prune all` runs on the executors too and the service records it with both hosts; the
    // running release keeps its container and image.
    project.flotilla_ok(&["prune", "all"], &[]);
    for h in [h1, h2] {
        assert_eq!(running(h), "testapp-web-v1", "{}", h.addr);
    }
    let audit = project.flotilla_ok(&["audit", "--json"], &[]);
    let prune: serde_json::Value = audit
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["kind"] == "prune all")
        .unwrap_or_else(|| panic!("no prune all in {audit}"));
    assert_eq!(prune["outcome"], "completed", "{audit}");
    let mut succeeded: Vec<String> = serde_json::from_value(prune["succeeded"].clone()).unwrap();
    succeeded.sort();
    assert_eq!(succeeded, hosts, "{audit}");

    project.flotilla_ok(&["accessory", "boot", "db"], &[]);
    let id = || {
        ssh_ok(
            &fleet,
            h1,
            &format!("docker inspect {db} --format '{{{{.Id}}}}'"),
        )
    };
    let before = id();
    project.flotilla_ok(&["accessory", "reboot", "db"], &[]);
    assert_ne!(id(), before, "reboot made a new container");
    assert_eq!(
        ssh_ok(
            &fleet,
            h1,
            &format!("docker inspect {db} --format '{{{{.HostConfig.ShmSize}}}}'"),
        ),
        (128u64 << 20).to_string(),
        "the accessory's `options: shm-size` is applied"
    );
    assert_eq!(
        ssh_ok(&fleet, h1, &format!("cat {db}/etc/db.conf")),
        "name=flotilla"
    );
    let audit = project.flotilla_ok(&["audit", "--json"], &[]);
    let reboot: serde_json::Value = audit
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["kind"] == "accessory reboot db")
        .unwrap_or_else(|| panic!("no accessory reboot in {audit}"));
    assert_eq!(reboot["outcome"], "completed", "{audit}");
    assert_eq!(
        reboot["succeeded"],
        serde_json::json!([h1.addr.to_string()]),
        "{audit}"
    );
    let history = project.flotilla_ok(&["history", "--json"], &[]);
    let last: serde_json::Value = serde_json::from_str(history.lines().last().unwrap()).unwrap();
    assert_eq!(last["kind"], "accessory reboot db", "{history}");
    project.flotilla_ok(&["accessory", "remove", "db", "-y"], &[]);
    assert_eq!(
        ssh_ok(
            &fleet,
            h1,
            &format!("test -e {db} && echo left || echo gone")
        ),
        "gone"
    );
    assert!(
        !project.root().join(".flotilla/events").exists(),
        "no local log in service mode"
    );
}
