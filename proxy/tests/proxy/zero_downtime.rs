//! The zero-downtime proof: real test-app processes behind the proxy, real load.

use std::time::{Duration, Instant};

use flotilla_proxy::admin::{AdminError, ErrorKind};

use crate::load::{Load, failures, versions};
use crate::support::{App, Proxy, deploy, get, heavy, http_client};

/// Switching v1 to v2 under continuous load from 32 keep-alive clients fails no request;
/// a slow request begun on v1 completes with 200 before the deploy reports success
/// (the old target was drained); every request begun after the switch answers v2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_under_load_is_zero_downtime() {
    let _heavy = heavy().await;
    let v1 = App::start("v1", "healthy");
    let v2 = App::start("v2", "healthy");
    let proxy = Proxy::start().await;
    proxy
        .admin
        .deploy(deploy("web", "app.test", &v1.addr, "v1"))
        .await
        .unwrap();

    let addr = proxy.http;
    let slow_started = Instant::now();
    let slow =
        tokio::spawn(async move { get(&http_client(), addr, "app.test", "/slow?ms=1500").await });
    // The slow request is on v1 once the proxy counts it in flight.
    let deadline = Instant::now() + Duration::from_secs(5);
    while proxy.admin.list().await.unwrap()[0].in_flight == 0 {
        assert!(
            Instant::now() < deadline,
            "slow request never reached the proxy"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let load = Load::start(proxy.http, "app.test", 32);
    load.progress(300).await;
    let deployed = proxy
        .admin
        .deploy(deploy("web", "app.test", &v2.addr, "v2"))
        .await
        .unwrap();
    let switched = Instant::now();
    load.progress(300).await;
    let samples = load.stop().await;

    assert_eq!(deployed.from.as_deref(), Some(v1.addr.as_str()));
    assert_eq!(deployed.drain_cancelled, 0);
    assert_eq!(
        failures(&samples),
        Vec::<String>::new(),
        "of {} requests",
        samples.len()
    );
    let after: Vec<_> = versions(samples.iter().filter(|s| s.started > switched));
    assert!(
        after.len() >= 300,
        "only {} requests after the switch",
        after.len()
    );
    assert!(
        after.iter().all(|v| v == "v2"),
        "after the switch: {:?}",
        after.iter().filter(|v| *v != "v2").collect::<Vec<_>>()
    );
    assert!(
        versions(&samples).iter().any(|v| v == "v1"),
        "load never saw v1"
    );

    let slow = slow.await.unwrap().unwrap();
    assert_eq!(
        (slow.status, slow.body.trim()),
        (200, "slow 1500ms from v1")
    );
    // The app answers the slow request 1500ms after it arrived, so a deploy that waited
    // for the old target to drain cannot have returned earlier than that.
    let waited = switched - slow_started;
    assert!(
        waited >= Duration::from_millis(1500),
        "deploy returned after {waited:?}, before the drain"
    );
}

/// A switch to a target that never becomes healthy fails within the deploy timeout with
/// the last health response, while v1 keeps serving every request under load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_healthy_target_leaves_v1_serving() {
    let _heavy = heavy().await;
    let v1 = App::start("v1", "healthy");
    let sick = App::start("v3", "unhealthy");
    let proxy = Proxy::start().await;
    proxy
        .admin
        .deploy(deploy("web", "app.test", &v1.addr, "v1"))
        .await
        .unwrap();

    let load = Load::start(proxy.http, "app.test", 24);
    load.progress(100).await;
    let mut request = deploy("web", "app.test", &sick.addr, "v3");
    request.deploy_timeout_ms = 2_000;
    request.health.interval_ms = 200;
    let began = Instant::now();
    let refused = proxy.admin.deploy(request).await.unwrap_err();
    let took = began.elapsed();
    load.progress(100).await;
    let samples = load.stop().await;

    match &refused {
        AdminError::Refused { kind, message } => {
            assert_eq!(*kind, ErrorKind::Unhealthy);
            // The last check's answer: the app's 503, or a timeout when a loaded machine
            // made the app slower than the health check's limit.
            assert!(
                message.contains("routing unchanged")
                    && (message.contains("503") || message.contains("timed out")),
                "{message}"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Bounded by its timeout, not hanging: the margin absorbs a loaded machine, the point is
    // that the refusal comes at all.
    const GIVES_UP_WITHIN: Duration = Duration::from_secs(12);
    assert!(
        took < GIVES_UP_WITHIN,
        "deploy took {took:?} with a 2s timeout"
    );
    assert_eq!(failures(&samples), Vec::<String>::new());
    assert!(versions(&samples).iter().all(|v| v == "v1"));
    assert_eq!(proxy.admin.list().await.unwrap()[0].spec.target, v1.addr);
}

/// A proxy restarted on the same state file serves the saved routes at once, before any
/// deploy: a restart does not take the apps offline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_restores_routes() {
    let v1 = App::start("v1", "healthy");
    let mut first = Proxy::start().await;
    first
        .admin
        .deploy(deploy("web", "app.test", &v1.addr, "v1"))
        .await
        .unwrap();
    first
        .admin
        .maintenance("web", Some("upgrading".into()))
        .await
        .unwrap();
    first.admin.live("web").await.unwrap();
    first.stop().await;

    let config = first.config.clone();
    let second = Proxy::start_with(config, first.dir).await;
    assert_eq!(second.running.as_ref().unwrap().restored, 1);
    let got = get(&http_client(), second.http, "app.test", "/version")
        .await
        .unwrap();
    assert_eq!((got.status, got.body.trim()), (200, "v1"));
    let listed = second.admin.list().await.unwrap();
    assert_eq!(listed[0].spec.version.as_deref(), Some("v1"));
    assert_eq!(listed[0].maintenance, None);
}

/// A request still running on the old target at the drain deadline is cancelled: its client
/// gets a 502 marked by the proxy, and the deploy reports it instead of waiting on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_deadline_cancels_stragglers() {
    let v1 = App::start("v1", "healthy");
    let v2 = App::start("v2", "healthy");
    let proxy = Proxy::start().await;
    proxy
        .admin
        .deploy(deploy("web", "app.test", &v1.addr, "v1"))
        .await
        .unwrap();
    let addr = proxy.http;
    let slow =
        tokio::spawn(async move { get(&http_client(), addr, "app.test", "/slow?ms=5000").await });
    let deadline = Instant::now() + Duration::from_secs(5);
    while proxy.admin.list().await.unwrap()[0].in_flight == 0 {
        assert!(
            Instant::now() < deadline,
            "slow request never reached the proxy"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut request = deploy("web", "app.test", &v2.addr, "v2");
    request.drain_timeout_ms = 300;
    let began = Instant::now();
    let deployed = proxy.admin.deploy(request).await.unwrap();
    assert_eq!(deployed.drain_cancelled, 1);
    assert!(
        began.elapsed() < Duration::from_secs(4),
        "deploy waited {:?}",
        began.elapsed()
    );
    let got = slow.await.unwrap().unwrap();
    assert_eq!(got.status, 502);
    assert_eq!(got.headers["x-flotilla-proxy"], "drained");
}

/// A proxy started with a listeners socket takes its predecessor's listening sockets over
/// instead of binding (its own address could not even be bound): same port, same accept
/// queues, so stopping the old proxy afterwards resets nothing queued, and the port keeps
/// answering, now from the successor. A proxy with nobody to take from binds as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn successor_takes_the_listening_sockets_over() {
    let dir = tempfile::tempdir().unwrap();
    let listeners = dir.path().join("listeners.sock");
    let mut first = crate::support::config(dir.path());
    first.listeners_socket = Some(listeners.clone());
    let old = flotilla_proxy::start(first).await.unwrap();

    let next_dir = tempfile::tempdir().unwrap();
    let mut second = crate::support::config(next_dir.path());
    second.listeners_socket = Some(listeners.clone());
    // TEST-NET-1: not an address of this machine, so binding it would fail.
    second.http = "192.0.2.1:80".parse().unwrap();
    let new = flotilla_proxy::start(second).await.unwrap();
    assert_eq!(new.http_addr, old.http_addr);

    old.shutdown().await;
    let client = http_client();
    let got = get(&client, new.http_addr, "nobody.example", "/")
        .await
        .unwrap();
    assert_eq!(
        got.headers
            .get("x-flotilla-proxy")
            .map(|v| v.to_str().unwrap().to_owned()),
        Some("no-route".to_owned()),
        "answered by the successor"
    );
    new.shutdown().await;
}
