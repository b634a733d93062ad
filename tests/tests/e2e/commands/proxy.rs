//! `flotilla proxy boot|reboot|start|stop|restart|details|logs|remove` on hosts `flotilla
//! setup` made, with `proxy.run` in the config.

use crate::setup::BareProject;
use crate::support::{fleet, http_get, ssh_ok};
use flotilla_e2e::fleet::{Fleet, Host, wait_until};
use std::net::SocketAddr;
use std::time::Duration;

/// How long a started or booted proxy may take to serve again: it binds, restores its saved
/// routes (no health gate: they were live) on a loaded machine.
const SERVING_AGAIN: Duration = Duration::from_secs(30);

/// The metrics port `proxy.run` asks for.
const METRICS_PORT: u16 = 9395;

/// Each host's section of Kamal's `Proxy Host: HOST` output.
fn section(out: &str, host: &Host) -> String {
    let marker = format!("Proxy Host: {}\n", host.addr);
    let Some(start) = out.find(&marker) else {
        panic!("no section for {} in:\n{out}", host.addr)
    };
    let rest = &out[start + marker.len()..];
    rest.split("Proxy Host: ")
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn proxy_id(fleet: &Fleet, host: &Host) -> String {
    ssh_ok(fleet, host, "docker inspect -f '{{.Id}}' flotilla-proxy")
}

fn log_max_size(fleet: &Fleet, host: &Host) -> String {
    ssh_ok(
        fleet,
        host,
        "docker inspect -f '{{index .HostConfig.LogConfig.Config \"max-size\"}}' flotilla-proxy",
    )
}

fn serves_v1(host: &Host) -> bool {
    matches!(http_get(SocketAddr::from((host.addr, 80)), "/version"), Ok((200, body)) if body.trim() == "v1")
}

/// Writes the project's config/deploy.yml: `base` with this `proxy.run`.
fn set_proxy_run(project: &BareProject, base: &str, log_max_size: &str) {
    let path = project.root().join("config/deploy.yml");
    let with = base.replacen(
        "proxy:\n",
        &format!(
            "proxy:\n  run:\n    metrics_port: {METRICS_PORT}\n    log_max_size: {log_max_size}\n"
        ),
        1,
    );
    std::fs::write(&path, with).unwrap();
}

/// On hosts `flotilla setup` made with `proxy.run` set: the proxy runs with its metrics port
/// and log cap; `proxy details` shows the `flotilla-proxy` container on every host and
/// `proxy logs` its start; `proxy reboot`, after `proxy.run` changed, replaces the container
/// on every host under continuous load with no failed request (the new one takes the old
/// one's listening sockets) and with the new settings; `proxy stop` stops one host serving
/// while the other goes on, `proxy start` serves it again; `proxy remove` takes the
/// container away and `proxy boot` brings it back serving the app from its saved routes.
#[test]
fn proxy_details_logs_reboot_stop_start_remove_boot() {
    let fleet = fleet(2);
    let (h1, h2) = (&fleet.hosts[0], &fleet.hosts[1]);
    let project = BareProject::new(&fleet, &[h1, h2]);
    let base = std::fs::read_to_string(project.root().join("config/deploy.yml")).unwrap();
    set_proxy_run(&project, &base, "20m");
    project.flotilla_ok(&["setup", "--version", "v1"], &[("APP_VERSION", "v1")]);
    for h in [h1, h2] {
        assert!(
            serves_v1(h),
            "{:?}\n{}",
            http_get(SocketAddr::from((h.addr, 80)), "/version"),
            ssh_ok(
                &fleet,
                h,
                "docker ps -a; docker logs flotilla-proxy 2>&1 | tail -20"
            )
        );
        assert_eq!(log_max_size(&fleet, h), "20m");
        let metrics = http_get(SocketAddr::from((h.addr, METRICS_PORT)), "/metrics");
        assert!(matches!(metrics, Ok((200, _))), "{metrics:?}");
    }

    let details = project.flotilla_ok(&["proxy", "details"], &[]);
    let logs = project.flotilla_ok(&["proxy", "logs"], &[]);
    for h in [h1, h2] {
        assert!(section(&details, h).contains("flotilla-proxy"), "{details}");
        assert!(section(&logs, h).contains("proxy started"), "{logs}");
    }
    let grep = project.flotilla_ok(&["proxy", "logs", "--grep", "no-such-line"], &[]);
    assert!(section(&grep, h1).contains("Nothing found"), "{grep}");

    // Reboot with a changed proxy.run, under load on both hosts.
    set_proxy_run(&project, &base, "30m");
    let before = [proxy_id(&fleet, h1), proxy_id(&fleet, h2)];
    let addrs = [
        SocketAddr::from((h1.addr, 80)),
        SocketAddr::from((h2.addr, 80)),
    ];
    let load = crate::load::start(&addrs, 4);
    project.flotilla_ok(&["proxy", "reboot"], &[]);
    let stats = load.stop();
    let total = stats.ok + stats.failed.len();
    eprintln!(
        "proxy reboot under load: {} of {total} requests failed",
        stats.failed.len()
    );
    assert!(stats.ok > 0);
    assert!(
        stats.failed.is_empty(),
        "{} of {total} requests failed during the reboot: {:?}",
        stats.failed.len(),
        &stats.failed[..stats.failed.len().min(5)]
    );
    for (h, old) in [h1, h2].into_iter().zip(before) {
        assert_ne!(proxy_id(&fleet, h), old);
        assert_eq!(log_max_size(&fleet, h), "30m");
        let logs = ssh_ok(&fleet, h, "docker logs flotilla-proxy 2>&1");
        assert!(
            logs.contains("took the listening sockets over"),
            "the new proxy bound its own sockets instead: {logs}"
        );
    }
    // Nothing changed since: a boot leaves the running proxies alone.
    let ids = [proxy_id(&fleet, h1), proxy_id(&fleet, h2)];
    project.flotilla_ok(&["proxy", "boot"], &[]);
    assert_eq!([proxy_id(&fleet, h1), proxy_id(&fleet, h2)], ids);

    // Stop one host's proxy: it no longer answers, the other host still serves.
    let h1_name = h1.addr.to_string();
    project.flotilla_ok(&["proxy", "stop", "-h", &h1_name], &[]);
    assert!(http_get(addrs[0], "/version").is_err());
    assert!(serves_v1(h2));
    project.flotilla_ok(&["proxy", "start", "-h", &h1_name], &[]);
    assert!(wait_until(SERVING_AGAIN, || serves_v1(h1)));

    // Remove takes the container away on every host; boot brings it back, serving.
    project.flotilla_ok(&["proxy", "remove"], &[]);
    for h in [h1, h2] {
        assert_eq!(
            ssh_ok(&fleet, h, "docker ps -aq --filter name=^flotilla-proxy$"),
            ""
        );
        assert!(http_get(SocketAddr::from((h.addr, 80)), "/version").is_err());
    }
    project.flotilla_ok(&["proxy", "boot"], &[]);
    for h in [h1, h2] {
        assert!(wait_until(SERVING_AGAIN, || serves_v1(h)));
        assert_eq!(log_max_size(&fleet, h), "30m");
    }
}

/// Deploys run in the service (`x-flotilla.scheduler.mode: service`).
const SERVICE_MODE: &str = "  scheduler:\n    mode: service\n";

/// In service mode, `flotilla proxy reboot` after `proxy.run` changed is run by each host's
/// executor and recorded by the service: under continuous load on both hosts no request
/// fails (the new proxy takes the old one's listening sockets), every host runs a new proxy
/// container with the new settings, and `history` and `audit` (read from the service's log)
/// show the reboot completed with both hosts succeeded; `proxy reboot --rolling` replaces
/// each host's proxy again and is recorded as itself; no local event log is written.
#[test]
fn proxy_reboot_in_service_mode_is_run_by_the_executors_and_recorded() {
    let fleet = fleet(2);
    let (h1, h2) = (&fleet.hosts[0], &fleet.hosts[1]);
    let project = BareProject::with_extra(&fleet, &[h1, h2], SERVICE_MODE);
    let base = std::fs::read_to_string(project.root().join("config/deploy.yml")).unwrap();
    set_proxy_run(&project, &base, "20m");
    project.flotilla_ok(&["setup", "--version", "v1"], &[("APP_VERSION", "v1")]);
    for h in [h1, h2] {
        assert!(serves_v1(h), "{}", h.addr);
        assert_eq!(log_max_size(&fleet, h), "20m");
    }

    set_proxy_run(&project, &base, "30m");
    let before = [proxy_id(&fleet, h1), proxy_id(&fleet, h2)];
    let addrs = [
        SocketAddr::from((h1.addr, 80)),
        SocketAddr::from((h2.addr, 80)),
    ];
    let load = crate::load::start(&addrs, 4);
    project.flotilla_ok(&["proxy", "reboot"], &[]);
    let stats = load.stop();
    let total = stats.ok + stats.failed.len();
    eprintln!(
        "proxy reboot (service mode) under load: {} of {total} requests failed",
        stats.failed.len()
    );
    assert!(stats.ok > 0);
    assert!(
        stats.failed.is_empty(),
        "{} of {total} requests failed during the reboot: {:?}",
        stats.failed.len(),
        &stats.failed[..stats.failed.len().min(5)]
    );
    for (h, old) in [h1, h2].into_iter().zip(before) {
        assert_ne!(
            proxy_id(&fleet, h),
            old,
            "{}: a new proxy container",
            h.addr
        );
        assert_eq!(log_max_size(&fleet, h), "30m");
        assert_eq!(
            ssh_ok(
                &fleet,
                h,
                "docker ps -aq --filter name=^flotilla-proxy-next$"
            ),
            "",
            "no successor left over"
        );
        let logs = ssh_ok(&fleet, h, "docker logs flotilla-proxy 2>&1");
        assert!(
            logs.contains("took the listening sockets over"),
            "the new proxy bound its own sockets instead: {logs}"
        );
        assert!(serves_v1(h));
    }

    let history = project.flotilla_ok(&["history", "--json"], &[]);
    let last: serde_json::Value = serde_json::from_str(history.lines().last().unwrap()).unwrap();
    assert_eq!(
        (&last["kind"], &last["outcome"]),
        (
            &serde_json::json!("proxy reboot"),
            &serde_json::json!("completed")
        ),
        "{history}"
    );
    let audit = project.flotilla_ok(&["audit", "--json"], &[]);
    let reboot: serde_json::Value = audit
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["kind"] == "proxy reboot")
        .unwrap_or_else(|| panic!("no proxy reboot in {audit}"));
    assert_eq!(reboot["outcome"], "completed", "{audit}");
    let mut succeeded: Vec<String> = serde_json::from_value(reboot["succeeded"].clone()).unwrap();
    succeeded.sort();
    let mut hosts = vec![h1.addr.to_string(), h2.addr.to_string()];
    hosts.sort();
    assert_eq!(succeeded, hosts, "{audit}");

    // `--rolling`: one host at a time, recorded as itself; each host gets a new proxy again.
    let before = [proxy_id(&fleet, h1), proxy_id(&fleet, h2)];
    project.flotilla_ok(&["proxy", "reboot", "--rolling"], &[]);
    for (h, old) in [h1, h2].into_iter().zip(before) {
        assert_ne!(proxy_id(&fleet, h), old, "{}: rebooted again", h.addr);
        assert!(serves_v1(h));
    }
    let history = project.flotilla_ok(&["history", "--json"], &[]);
    let last: serde_json::Value = serde_json::from_str(history.lines().last().unwrap()).unwrap();
    assert_eq!(
        (&last["kind"], &last["outcome"]),
        (
            &serde_json::json!("proxy reboot --rolling"),
            &serde_json::json!("completed")
        ),
        "{history}"
    );
    assert!(
        !project.root().join(".flotilla/events").exists(),
        "no local log in service mode"
    );
}
