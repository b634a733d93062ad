//! The scheduler service's `/metrics` scraped by a real Prometheus (Debian's `prometheus`)
//! between and during deploys, on a fleet booted by `flotilla setup` in service mode: one
//! address answered all the time, by the one process that owns the log.

use crate::metrics::Prometheus;
use crate::setup::{BareProject, version_of};
use crate::support::fleet;
use flotilla_e2e::control::SERVICE_METRICS_PORT;
use std::net::SocketAddr;
use std::time::Instant;

/// The project's extra settings: deploys run in the service.
const SERVICE_MODE: &str = "  scheduler:\n    mode: service\n";

/// v2's app answers `/up` with 503 for this many seconds (the test app's `healthy-after:N`):
/// the rollout waits on its health check that long, so Prometheus (scraping every second)
/// sees the deploy while it runs. Under `deploy_timeout` (20 s in the bare project).
const V2_UNHEALTHY_SECS: u64 = 12;

/// Scrapes Prometheus made while nothing ran before v2 starts, so the series are there before
/// the deploy: "between deploys" is measured, not assumed.
const SCRAPES_BEFORE: f64 = 3.0;

/// What Prometheus records of the scheduler service while it runs no deploy, then during a
/// deploy, then after it: every scrape of the one address succeeds (`up` is 1 in every sample
/// from the first scrape to the last, no gap); v1, deployed by `setup` before Prometheus
/// started, is counted from the log at the first scrape; while v2 waits for its health check
/// the deploy's series show it (its host `running`, its pull counted, its `DeployStarted`
/// among the events) before the CLI has returned; afterwards v2 is counted as succeeded; and
/// no counter went backwards in the whole window (`resets` is 0): the counters are folds of
/// the one log, not of a process that restarts per deploy. Proven through Prometheus's HTTP
/// API, as Grafana would read it.
#[test]
fn prometheus_scrapes_the_service_between_and_during_deploys_without_a_gap() {
    let fleet = fleet(1);
    let h1 = &fleet.hosts[0];
    let project = BareProject::with_extra(&fleet, &[h1], SERVICE_MODE);
    project.flotilla_ok(&["setup", "--version", "v1"], &[("APP_VERSION", "v1")]);
    assert_eq!(version_of(h1), "v1");

    let prometheus = Prometheus::start(SocketAddr::from((h1.addr, SERVICE_METRICS_PORT)), &[]);
    let started = Instant::now();
    let q = |promql: &str| prometheus.query(promql);
    let deploys =
        r#"sum(flotilla_deploys_total{service="testapp",kind="deploy",outcome="succeeded"})"#;
    let up = r#"up{job="flotilla-scheduler"}"#;
    // Between deploys: the service answers, and v1 (recorded before Prometheus ran) is there.
    prometheus.wait_until("a few scrapes of the idle service", || {
        q(&format!("count_over_time({up}[1m])")) >= Some(SCRAPES_BEFORE)
    });
    assert_eq!(q(up), Some(1.0));
    assert_eq!(q(deploys), Some(1.0), "v1, folded from the service's log");
    assert_eq!(
        q(r#"flotilla_hosts{service="testapp",state="running"}"#),
        Some(0.0)
    );

    // v2's app is slow to become healthy: the rollout lasts while Prometheus scrapes.
    let config = project.root().join("config/deploy.yml");
    let mut yaml = std::fs::read_to_string(&config).unwrap();
    yaml.push_str(&format!(
        "env:\n  clear:\n    APP_MODE: healthy-after:{V2_UNHEALTHY_SECS}\n"
    ));
    std::fs::write(&config, yaml).unwrap();
    std::thread::scope(|scope| {
        let deploy = scope
            .spawn(|| project.flotilla(&["deploy", "--version", "v2"], &[("APP_VERSION", "v2")]));
        prometheus.wait_until("v2's host counted as running", || {
            deploy.is_finished()
                || q(r#"flotilla_hosts{service="testapp",state="running"}"#) == Some(1.0)
        });
        assert!(
            !deploy.is_finished(),
            "v2 ended before Prometheus saw it run: {:?}",
            deploy.join().unwrap()
        );
        // During the rollout: the deploy's own series, from the same address as before.
        assert_eq!(
            q(r#"sum(flotilla_events_appended_total{type="DeployStarted"})"#),
            Some(2.0),
            "v1's and v2's"
        );
        assert_eq!(
            q(r#"flotilla_step_duration_seconds_count{step="pull_image"}"#),
            Some(2.0),
            "v2 pulled (and v1 before it) on the one host"
        );
        assert_eq!(q(deploys), Some(1.0), "v2 has no outcome yet");
        assert_eq!(q(up), Some(1.0));
        let out = deploy.join().unwrap();
        assert!(
            out.status.success(),
            "deploy v2: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    assert_eq!(version_of(h1), "v2");

    // Between deploys again: v2 counted, by the same process.
    prometheus.wait_until("v2 counted as succeeded", || q(deploys) == Some(2.0));
    prometheus.wait_until("v2's host counted as succeeded", || {
        q(r#"flotilla_hosts{service="testapp",state="succeeded"}"#) == Some(1.0)
    });
    // The whole window, from Prometheus's start (a range reaching before its first sample
    // covers every sample there is).
    let window = format!("{}s", started.elapsed().as_secs() + 1);
    assert_eq!(
        q(&format!("min_over_time({up}[{window}])")),
        Some(1.0),
        "a scrape failed\n{}",
        prometheus.log()
    );
    for counter in [
        "flotilla_deploys_total",
        "flotilla_events_appended_total",
        "flotilla_step_duration_seconds_count",
        "flotilla_deploy_duration_seconds_count",
    ] {
        assert_eq!(
            q(&format!("sum(resets({counter}[{window}]))")),
            Some(0.0),
            "{counter} went backwards"
        );
    }
    // The log position only grows too.
    assert_eq!(
        q(&format!("resets(flotilla_event_log_position[{window}])")),
        Some(0.0)
    );
}
