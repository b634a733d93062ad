use super::*;
use flotilla_events::sample::Story;
use flotilla_events::{MemoryLog, NewEvent};
use std::sync::Arc;

/// Appends `events` to `log` and shows each to `metrics` the way the engine's watch does.
fn live(log: &MemoryLog, metrics: &Metrics, events: Vec<NewEvent>) {
    for event in events {
        let seq = log.append(event.clone()).unwrap().seq();
        metrics.observe(&event.into_envelope(seq));
    }
}

fn text(m: &Metrics) -> String {
    String::from_utf8(m.render()).unwrap()
}

/// The value of the sample whose line starts with `series` (name and labels as rendered).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// A finished two-host deploy shows as one succeeded deploy with its duration, both hosts
/// succeeded, one duration per host for each step, and every appended event by type.
#[test]
fn a_successful_deploy_counts_outcome_steps_hosts_and_events() {
    let log = MemoryLog::new();
    let m = Metrics::new();
    let story = Story::new("01JDEPLOY0000000000000000A", "v1", 2);
    let events = story.events();
    let total = events.len();
    live(&log, &m, events);
    let t = text(&m);
    let labels = r#"{destination="",kind="deploy",outcome="succeeded",service="app"}"#;
    assert_eq!(
        value(&t, &format!("flotilla_deploys_total{labels}")),
        Some(1.0),
        "{t}"
    );
    assert_eq!(
        value(
            &t,
            &format!("flotilla_deploy_duration_seconds_count{labels}")
        ),
        Some(1.0)
    );
    let hosts = |state: &str| {
        value(
            &t,
            &format!(r#"flotilla_hosts{{destination="",service="app",state="{state}"}}"#),
        )
    };
    assert_eq!(hosts("succeeded"), Some(2.0), "{t}");
    assert_eq!(hosts("pending"), Some(0.0));
    assert_eq!(hosts("running"), Some(0.0));
    assert_eq!(hosts("failed"), Some(0.0));
    for step in [
        "pull_image",
        "start_container",
        "await_healthy",
        "switch_proxy",
    ] {
        let series = format!(r#"flotilla_step_duration_seconds_count{{step="{step}"}}"#);
        assert_eq!(value(&t, &series), Some(2.0), "{series} in {t}");
    }
    // The pull reports its own duration (900 ms in the story); later steps are 10 ms apart.
    assert_eq!(
        value(
            &t,
            r#"flotilla_step_duration_seconds_sum{step="pull_image"}"#
        ),
        Some(1.8)
    );
    assert_eq!(
        value(
            &t,
            r#"flotilla_events_appended_total{type="HostSucceeded"}"#
        ),
        Some(2.0)
    );
    let appended: f64 = t
        .lines()
        .filter(|l| l.starts_with("flotilla_events_appended_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(appended as usize, total);
    assert_eq!(value(&t, "flotilla_event_log_position"), Some(total as f64));
    assert_eq!(value(&t, "flotilla_events_redelivered_total"), Some(0.0));
}

/// A scheduler that restarts on the same log reports exactly what the one before it did:
/// the metrics are a fold of the log.
#[test]
fn rebuilt_from_the_log_equals_the_live_fold() {
    let log = MemoryLog::new();
    let m = Metrics::new();
    live(
        &log,
        &m,
        Story::new("01JDEPLOY0000000000000000A", "v1", 3).events(),
    );
    let mut failing = Story::new("01JDEPLOY0000000000000000B", "v2", 3);
    failing.previous = Some("v1".into());
    failing.failing_host = Some("web-2".into());
    failing.first_id = 1_000;
    failing.start = Timestamp::from_unix_ms(1_795_000_100_000);
    live(&log, &m, failing.events());
    let rebuilt = Metrics::rebuild(&log).unwrap();
    assert_eq!(text(&rebuilt), text(&m));
    let t = text(&rebuilt);
    assert_eq!(
        value(
            &t,
            r#"flotilla_deploys_total{destination="",kind="deploy",outcome="failed",service="app"}"#
        ),
        Some(1.0),
        "{t}"
    );
    assert_eq!(
        value(
            &t,
            r#"flotilla_hosts{destination="",service="app",state="failed"}"#
        ),
        Some(1.0),
        "{t}"
    );
}

/// A report delivered again (a redelivered job re-reports its steps with the same event ids;
/// the log stores it once) counts as redelivered and nowhere else.
#[test]
fn a_redelivered_report_counts_once() {
    let log = MemoryLog::new();
    let m = Metrics::new();
    let events = Story::new("01JDEPLOY0000000000000000A", "v1", 1).events();
    let pulled = events
        .iter()
        .find(|e| matches!(e.event, Event::ImagePulled(_)))
        .unwrap()
        .clone();
    live(&log, &m, events);
    let before = text(&m);
    live(&log, &m, vec![pulled]);
    let after = text(&m);
    assert_eq!(
        value(&after, "flotilla_events_redelivered_total"),
        Some(1.0)
    );
    assert_eq!(
        value(
            &after,
            r#"flotilla_events_appended_total{type="ImagePulled"}"#
        ),
        value(
            &before,
            r#"flotilla_events_appended_total{type="ImagePulled"}"#
        )
    );
}

/// The hosts gauge shows the latest deploy of a service: a new request puts every host back
/// to pending, and a host moves to running with its first step.
#[test]
fn hosts_follow_the_latest_deploy() {
    let log = MemoryLog::new();
    let m = Metrics::new();
    live(
        &log,
        &m,
        Story::new("01JDEPLOY0000000000000000A", "v1", 2).events(),
    );
    let mut next = Story::new("01JDEPLOY0000000000000000B", "v2", 2);
    next.first_id = 1_000;
    let events = next.events();
    let upto_first_pull = events
        .iter()
        .position(|e| matches!(e.event, Event::ImagePulled(_)))
        .unwrap();
    live(&log, &m, events[..=upto_first_pull].to_vec());
    let t = text(&m);
    let hosts = |state: &str| {
        value(
            &t,
            &format!(r#"flotilla_hosts{{destination="",service="app",state="{state}"}}"#),
        )
    };
    assert_eq!(hosts("succeeded"), Some(0.0), "{t}");
    assert_eq!(hosts("running"), Some(1.0), "{t}");
    assert_eq!(hosts("pending"), Some(1.0), "{t}");
}

/// Every query on the Grafana dashboard uses a metric the scheduler exports, so no panel stays
/// empty for a misspelt name, and every scheduler metric has a panel. The proxies' and the
/// executors' metrics (`flotilla_proxy_*`, `flotilla_executor_*`) live in crates the scheduler
/// does not depend on: the dashboard end-to-end test evaluates those panels in Prometheus.
#[test]
fn the_dashboard_queries_only_exported_metrics() {
    let json: serde_json::Value = serde_json::from_str(include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../grafana/dashboards/flotilla.json"
    )))
    .unwrap();
    let names = Metrics::new().names();
    let mut titles = Vec::new();
    let mut used = std::collections::BTreeSet::new();
    for panel in json["panels"].as_array().unwrap() {
        titles.push(panel["title"].as_str().unwrap().to_owned());
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            let all: Vec<&str> = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("flotilla_"))
                .collect();
            assert!(!all.is_empty(), "{expr} uses no flotilla metric");
            let metrics = all.into_iter().filter(|m| {
                !m.starts_with("flotilla_proxy_") && !m.starts_with("flotilla_executor_")
            });
            for metric in metrics {
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| metric.strip_suffix(s))
                    .filter(|b| names.iter().any(|n| n == b))
                    .unwrap_or(metric);
                assert!(
                    names.iter().any(|n| n == base),
                    "panel {:?} queries {metric}, which the scheduler does not export ({names:?})",
                    panel["title"]
                );
                used.insert(base.to_owned());
            }
        }
    }
    for wanted in [
        DEPLOYS,
        DEPLOY_DURATION,
        STEP_DURATION,
        HOSTS,
        EVENTS,
        REDELIVERED,
    ] {
        assert!(used.contains(wanted), "no panel shows {wanted}: {titles:?}");
    }
}

/// `GET /metrics` answers with the text exposition of the current fold; other paths are 404.
#[tokio::test]
async fn serves_metrics_over_http() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let log = MemoryLog::new();
    let m = Arc::new(Metrics::new());
    live(
        &log,
        &m,
        Story::new("01JDEPLOY0000000000000000A", "v1", 1).events(),
    );
    let server = serve("127.0.0.1:0", m.clone()).await.unwrap();
    let addr = server.addr();
    let get = |path: &'static str| async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    };
    let ok = get("/metrics").await;
    assert!(ok.starts_with("HTTP/1.0 200"), "{ok}");
    assert!(ok.contains("text/plain; version=0.0.4"), "{ok}");
    assert!(ok.contains(r#"flotilla_deploys_total{destination="",kind="deploy",outcome="succeeded",service="app"} 1"#), "{ok}");
    assert!(get("/").await.starts_with("HTTP/1.0 404"));
}

/// A listen address in use is a clear error naming it.
#[tokio::test]
async fn a_busy_address_is_an_error() {
    let first = serve("127.0.0.1:0", Arc::new(Metrics::new()))
        .await
        .unwrap();
    let busy = first.addr().to_string();
    let err = serve(&busy, Arc::new(Metrics::new())).await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("metrics: cannot listen on {busy}")),
        "{err}"
    );
}

/// A scheduler run with `x-flotilla.metrics.listen` serves what the log already holds before
/// its first event, then counts its own events; without the setting it serves nothing.
#[tokio::test]
async fn a_run_serves_the_log_so_far_then_its_own_events() {
    let log = MemoryLog::new();
    for e in Story::new("01JDEPLOY0000000000000000A", "v1", 1).events() {
        log.append(e).unwrap();
    }
    assert_eq!(Live::start(None, &log, None).await.unwrap().addr(), None);
    let live = Live::start(Some("127.0.0.1:0"), &log, None).await.unwrap();
    let addr = live.addr().unwrap();
    let mut next = Story::new("01JDEPLOY0000000000000000B", "v2", 1);
    next.first_id = 1_000;
    for event in next.events() {
        let seq = log.append(event.clone()).unwrap().seq();
        live.observe(&event.into_envelope(seq));
    }
    let body = scrape(addr).await;
    assert_eq!(value(&body, SUCCEEDED), Some(2.0), "{body}");
}

const SUCCEEDED: &str =
    r#"flotilla_deploys_total{destination="",kind="deploy",outcome="succeeded",service="app"}"#;

/// `GET /metrics` from `addr`, from a blocking thread (the server runs on this runtime).
async fn scrape(addr: std::net::SocketAddr) -> String {
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
    .await
    .unwrap()
}

fn story(id: &str, version: &str, first_id: u128) -> Vec<NewEvent> {
    let mut s = Story::new(id, version, 1);
    s.first_id = first_id;
    s.events()
}

/// `flotilla metrics serve` reports the log's deploys without keeping the log: a deploy can
/// open it between scrapes, and its events show at the next scrape.
#[tokio::test]
async fn standby_folds_the_log_and_leaves_it_free() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events");
    {
        let log = flotilla_events::SledLog::open(&path).unwrap();
        log.append_batch(story("01JDEPLOY0000000000000000A", "v1", 1))
            .unwrap();
    }
    let server = serve_standby("127.0.0.1:0", &path).await.unwrap();
    let body = scrape(server.addr()).await;
    assert_eq!(value(&body, SUCCEEDED), Some(1.0), "{body}");
    {
        let log = flotilla_events::SledLog::open(&path).expect("the standby leaves the log free");
        log.append_batch(story("01JDEPLOY0000000000000000B", "v2", 1_000))
            .unwrap();
    }
    let body = scrape(server.addr()).await;
    assert_eq!(value(&body, SUCCEEDED), Some(2.0), "{body}");
}

/// While a deploy holds the log, `flotilla metrics serve` answers scrapes with the deploy's
/// live metrics (the deploy serves them on a loopback port it hands off, since the standby
/// has the configured address); when the deploy ends, the standby folds the log itself and the
/// counts carry on.
#[tokio::test]
async fn standby_forwards_to_a_running_deploy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events");
    let standby = serve_standby("127.0.0.1:0", &path).await.unwrap();
    let listen = standby.addr().to_string();
    let log = flotilla_events::SledLog::open(&path).unwrap();
    log.append_batch(story("01JDEPLOY0000000000000000A", "v1", 1))
        .unwrap();
    let live = Live::start(Some(&listen), &log, Some(&path)).await.unwrap();
    assert_ne!(live.addr(), Some(standby.addr()));
    assert!(handoff_path(&path).exists());
    let events = story("01JDEPLOY0000000000000000B", "v2", 1_000);
    let requested = events[0].clone();
    let seq = log.append(requested.clone()).unwrap().seq();
    live.observe(&requested.into_envelope(seq));
    let body = scrape(standby.addr()).await;
    assert_eq!(value(&body, SUCCEEDED), Some(1.0), "{body}");
    let pending = r#"flotilla_hosts{destination="",service="app",state="pending"}"#;
    assert_eq!(
        value(&body, pending),
        Some(1.0),
        "live: v2's host is pending\n{body}"
    );
    for event in events[1..].iter().cloned() {
        let seq = log.append(event.clone()).unwrap().seq();
        live.observe(&event.into_envelope(seq));
    }
    drop(live);
    assert!(!handoff_path(&path).exists());
    drop(log);
    let body = scrape(standby.addr()).await;
    assert_eq!(value(&body, SUCCEEDED), Some(2.0), "{body}");
    assert_eq!(value(&body, pending), Some(0.0), "{body}");
}
