//! `app maintenance` / `app live` on every host, under load: the executors put each host's
//! proxy in maintenance and take it out again, and no client sees anything but the app or
//! the maintenance page.

use crate::project::Project;
use crate::support::{fleet, http_get};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Clients per host sending requests back to back while the commands run.
const CLIENTS_PER_HOST: usize = 2;

/// What one client saw.
#[derive(Debug, Default)]
struct Seen {
    /// 200 with the app's version.
    app: usize,
    /// 503 with the maintenance message.
    maintenance: usize,
    /// Anything else: an error, another status, another body, or a 503 for a request sent
    /// after `app live` returned.
    failed: Vec<String>,
}

/// A client sending `GET /version` to `addr` until `stop`; `live` says `app live` returned,
/// after which only the app may answer.
fn client(addr: SocketAddr, stop: Arc<AtomicBool>, live: Arc<AtomicBool>) -> Seen {
    let mut seen = Seen::default();
    while !stop.load(Ordering::SeqCst) {
        let after_live = live.load(Ordering::SeqCst);
        match http_get(addr, "/version") {
            Ok((200, body)) if body.trim() == "v1" => seen.app += 1,
            Ok((503, body)) if body.trim() == "Upgrading the database" && !after_live => {
                seen.maintenance += 1
            }
            other => seen
                .failed
                .push(format!("{addr}: {other:?} (after live: {after_live})")),
        }
    }
    seen
}

/// With two hosts serving under load: `app maintenance --message` makes every host's proxy
/// answer 503 with the message (each host checked after the command returns), `app live`
/// makes every host serve the app again, and across both commands no request failed: each
/// got the app or the maintenance page, and none sent after `app live` returned got the page.
/// Both are recorded as operations on both hosts.
#[test]
fn maintenance_on_every_host_then_live_without_failed_requests() {
    let fleet = fleet(2);
    let project = Project::new(&fleet, "");
    project.flotilla_ok(&["deploy", "--version", "v1"], &[("APP_VERSION", "v1")]);
    let addrs: Vec<SocketAddr> = fleet
        .hosts
        .iter()
        .map(|h| SocketAddr::from((h.addr, 80)))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let live = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = addrs
        .iter()
        .flat_map(|a| std::iter::repeat_n(*a, CLIENTS_PER_HOST))
        .map(|addr| {
            let (stop, live) = (stop.clone(), live.clone());
            std::thread::spawn(move || client(addr, stop, live))
        })
        .collect();

    project.flotilla_ok(
        &["app", "maintenance", "--message", "Upgrading the database"],
        &[],
    );
    for addr in &addrs {
        let (status, body) = http_get(*addr, "/").unwrap();
        assert_eq!(
            (status, body.trim()),
            (503, "Upgrading the database"),
            "{addr}"
        );
    }
    project.flotilla_ok(&["app", "live"], &[]);
    live.store(true, Ordering::SeqCst);
    for addr in &addrs {
        let (status, body) = http_get(*addr, "/version").unwrap();
        assert_eq!((status, body.trim()), (200, "v1"), "{addr}");
    }
    // Let the clients send some requests after `live` too.
    let after = Arc::new(AtomicUsize::new(0));
    while after.fetch_add(1, Ordering::SeqCst) < 20 {
        let (status, _) = http_get(addrs[0], "/version").unwrap();
        assert_eq!(status, 200);
    }
    stop.store(true, Ordering::SeqCst);
    let seen: Vec<Seen> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let failed: Vec<&String> = seen.iter().flat_map(|s| &s.failed).collect();
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    let app: usize = seen.iter().map(|s| s.app).sum();
    let maintenance: usize = seen.iter().map(|s| s.maintenance).sum();
    assert!(
        app > 0 && maintenance > 0,
        "app {app}, maintenance {maintenance}"
    );

    let audit = project.flotilla_ok(&["audit", "--json"], &[]);
    let mut hosts: Vec<String> = fleet.hosts.iter().map(|h| h.addr.to_string()).collect();
    hosts.sort();
    let ops: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["kind"] == "app maintenance" || e["kind"] == "app live")
        .collect();
    assert_eq!(ops.len(), 2, "{audit}");
    for op in ops {
        assert_eq!(op["outcome"], "completed", "{audit}");
        // In the order the hosts reported.
        let mut succeeded: Vec<String> = serde_json::from_value(op["succeeded"].clone()).unwrap();
        succeeded.sort();
        assert_eq!(succeeded, hosts, "{audit}");
    }
}
