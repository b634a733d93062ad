//! The Grafana dashboard proven against Prometheus: a real Prometheus scrapes the scheduler,
//! every host's proxy and every host's executor (with the shipped `grafana/prometheus.yml`)
//! through a good deploy, a failed deploy with auto-rollback and a rollback, under traffic;
//! then every panel's queries and the deploy annotations are evaluated through Prometheus's
//! HTTP API over the test's time window, and each must return data of the panel's shape. The
//! alert rules are checked and unit-tested with `promtool`.

use crate::load;
use crate::metrics::{Prometheus, Standby, encode, free_port, http_get};
use crate::project::Project;
use crate::support::fleet;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};

/// The step of range queries, as Grafana would pick for a short window (seconds).
const STEP_SECS: u64 = 2;

fn grafana_dir() -> std::path::PathBuf {
    flotilla_e2e::testapp::workspace_root().join("grafana")
}

fn promtool() -> &'static str {
    ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or_else(|| panic!("promtool not found: install the Debian package `prometheus`"))
}

/// The shipped alert rules are valid (`promtool check rules`) and fire as their unit tests
/// say on synthetic series (`promtool test rules`): a failed deploy, a host silent during a
/// rollout, a rollout stuck past its timeout and a 5xx rise after a switch.
#[test]
fn alert_rules_pass_promtool() {
    for args in [
        vec!["check", "rules", "alerts.yml"],
        vec!["test", "rules", "alerts.test.yml"],
    ] {
        let out = Command::new(promtool())
            .args(&args)
            .current_dir(grafana_dir())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let rules = std::fs::read_to_string(grafana_dir().join("alerts.yml")).unwrap();
    for alert in [
        "FlotillaDeployFailed",
        "FlotillaHostSilentDuringRollout",
        "FlotillaRolloutStuck",
        "Flotilla5xxAfterSwitch",
    ] {
        assert!(rules.contains(&format!("alert: {alert}")), "{alert}");
    }
}

/// Grafana's published dashboard schema as JSON Schema (`scripts/lib.sh`'s
/// `ensure_grafana_schema` makes it from the `@grafana/schema` npm package), with the one
/// place Grafana keeps open made open: an annotation's `target` is the data source's query
/// (Grafana's own comment on `AnnotationTarget`: "this should be a regular DataQuery"; the
/// Prometheus data source keeps `expr`, `step` and the formats there).
fn grafana_dashboard_schema() -> jsonschema::Validator {
    let path = flotilla_e2e::testapp::target_dir().join("grafana-schema/dashboard.schema.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: run `bash -c 'source scripts/lib.sh; ensure_grafana_schema'` \
             (scripts/test does) to install Grafana's dashboard schema",
            path.display()
        )
    });
    let mut schema: serde_json::Value = serde_json::from_str(&text).unwrap();
    let target = &mut schema["definitions"]["AnnotationTarget"];
    assert_eq!(
        target["additionalProperties"], false,
        "the schema's AnnotationTarget changed shape: revisit this test"
    );
    target["additionalProperties"] = serde_json::Value::Bool(true);
    jsonschema::validator_for(&schema).unwrap()
}

/// Every error `validator` finds in `dashboard`, one per line with its JSON path.
fn schema_errors(validator: &jsonschema::Validator, dashboard: &serde_json::Value) -> Vec<String> {
    validator
        .iter_errors(dashboard)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

/// Every shipped dashboard is valid against Grafana's published dashboard schema (the
/// `Dashboard` type of `@grafana/schema`, strict about unknown keys), so Grafana imports it
/// as written; and the check is live: the same dashboard with a misspelt key, a tooltip mode
/// Grafana does not have and a panel without its type is rejected on each.
#[test]
fn dashboards_match_grafanas_published_schema() {
    let validator = grafana_dashboard_schema();
    let dir = grafana_dir().join("dashboards");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let dashboard: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let errors = schema_errors(&validator, &dashboard);
        assert!(
            errors.is_empty(),
            "{} is not a valid Grafana dashboard:\n{}",
            path.display(),
            errors.join("\n")
        );
        checked += 1;
    }
    assert!(checked > 0, "no dashboard in {}", dir.display());

    let good: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("flotilla.json")).unwrap()).unwrap();
    let mut misspelt = good.clone();
    misspelt["refersh"] = "5s".into();
    let mut tooltip = good.clone();
    tooltip["graphTooltip"] = 7.into();
    let mut untyped = good;
    untyped["panels"][0].as_object_mut().unwrap().remove("type");
    for (what, broken, path) in [
        ("a misspelt key", misspelt, ""),
        ("graphTooltip 7", tooltip, "/graphTooltip"),
        ("a panel without its type", untyped, "/panels/0"),
    ] {
        let errors = schema_errors(&validator, &broken);
        assert!(
            errors.iter().any(|e| e.starts_with(&format!("{path}: "))),
            "{what} was not rejected at {path:?}: {errors:?}"
        );
    }
}

/// A query as Grafana would send it: the dashboard's variables filled in.
fn expand(expr: &str, service: &str, range_secs: u64) -> String {
    // Grafana's $__rate_interval: max(step + scrape interval, 4 x scrape interval).
    let scrape = crate::metrics::SCRAPE_INTERVAL_SECS;
    let rate = (STEP_SECS + scrape).max(4 * scrape);
    expr.replace("${service}", service)
        .replace("$service", service)
        .replace("$__rate_interval", &format!("{rate}s"))
        .replace("$__range", &format!("{range_secs}s"))
        .replace("$__interval", &format!("{STEP_SECS}s"))
}

/// Runs `path` on the Prometheus API and returns `data`.
fn api(prometheus: &Prometheus, path: &str) -> serde_json::Value {
    let (status, body) = http_get(prometheus.addr, path).unwrap();
    assert_eq!(status, 200, "{path}: {body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    json["data"].clone()
}

/// The `{{label}}`s a legend names.
fn legend_labels(legend: &str) -> Vec<String> {
    legend
        .split("{{")
        .skip(1)
        .filter_map(|s| s.split_once("}}").map(|(l, _)| l.trim().to_owned()))
        .collect()
}

/// Evaluates one query the way its panel runs it (instant at `end`, or a range over
/// `start..end`) and checks the shape: at least one series, each with the labels its legend
/// shows and a value. Returns the series' label sets.
fn evaluate(
    prometheus: &Prometheus,
    what: &str,
    expr: &str,
    legend: &str,
    instant: bool,
    (start, end): (u64, u64),
) -> Vec<serde_json::Map<String, serde_json::Value>> {
    let q = encode(&expand(expr, "testapp", end - start));
    let data = if instant {
        api(prometheus, &format!("/api/v1/query?query={q}&time={end}"))
    } else {
        api(
            prometheus,
            &format!("/api/v1/query_range?query={q}&start={start}&end={end}&step={STEP_SECS}"),
        )
    };
    let want_type = if instant { "vector" } else { "matrix" };
    assert_eq!(data["resultType"], want_type, "{what}: {expr}");
    let result = data["result"].as_array().unwrap();
    assert!(
        !result.is_empty(),
        "panel {what:?} shows nothing: {expr}\nprometheus log:\n{}",
        prometheus.log()
    );
    let labels = legend_labels(legend);
    result
        .iter()
        .map(|series| {
            let metric = series["metric"].as_object().unwrap().clone();
            for l in &labels {
                assert!(
                    metric.contains_key(l),
                    "{what}: series {metric:?} lacks {l} for legend {legend}"
                );
            }
            let has_value = if instant {
                series["value"][1].is_string()
            } else {
                !series["values"].as_array().unwrap().is_empty()
            };
            assert!(has_value, "{what}: {series}");
            metric
        })
        .collect()
}

/// Through a good deploy, a failed deploy that rolls itself back and a `flotilla rollback`
/// on two hosts under traffic, Prometheus scraping the control host and every host with the
/// shipped config has data for every panel of `grafana/dashboards/flotilla.json` over that
/// window (a panel that would show nothing fails), in the shape the panel plots (its legend's
/// labels on every series); deploys by outcome show both outcomes, steps by host show both
/// hosts, requests show the versions served, and the deploy annotations include the rollback.
#[test]
fn every_dashboard_panel_has_data_through_deploys_a_failure_and_a_rollback() {
    let fleet = fleet(2);
    let metrics = free_port();
    let project = Project::new(&fleet, &format!("  metrics:\n    listen: {metrics}\n"));
    let hosts: Vec<IpAddr> = fleet.hosts.iter().map(|h| IpAddr::V4(h.addr)).collect();
    let log = std::fs::File::create(project.root().join("metrics-serve.log")).unwrap();
    let _standby = Standby(
        Command::new(&project.flotilla)
            .args(["metrics", "serve"])
            .current_dir(project.root())
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let prometheus = Prometheus::start(metrics, &hosts);
    let start = now();

    project.flotilla_ok(&["deploy", "--version", "v1"], &[("APP_VERSION", "v1")]);
    let web: Vec<SocketAddr> = hosts.iter().map(|h| SocketAddr::new(*h, 80)).collect();
    let traffic = load::start(&web, 2);
    project.flotilla_ok(&["deploy", "--version", "v2"], &[("APP_VERSION", "v2")]);
    let failing = [
        ("APP_VERSION", "v3"),
        ("LAST_HOST_MODE", "unhealthy"),
        ("DEPLOY_TIMEOUT", "5"),
        ("AUTO_ROLLBACK", "true"),
    ];
    let out = project.flotilla(&["deploy", "--version", "v3"], &failing);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    project.flotilla_ok(&["rollback", "v1"], &[]);
    // deploy v1, v2, v3 (failed), v3's auto-rollback, the rollback: five outcomes, and the
    // executors' last steps, scraped.
    prometheus.wait_until(
        "five deploy outcomes and every host's steps scraped",
        || {
            prometheus.query(r#"sum(flotilla_deploys_total{service="testapp"})"#) == Some(5.0)
                && prometheus.query("count(count by (host) (flotilla_executor_steps_total))")
                    == Some(hosts.len() as f64)
        },
    );
    let _ = traffic.stop();
    let end = now() + 1;

    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(grafana_dir().join("dashboards/flotilla.json")).unwrap(),
    )
    .unwrap();
    let mut by_title = std::collections::BTreeMap::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().unwrap();
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title} has no query");
        let mut series = Vec::new();
        for t in targets {
            series.extend(evaluate(
                &prometheus,
                title,
                t["expr"].as_str().unwrap(),
                t["legendFormat"].as_str().unwrap_or(""),
                t["instant"].as_bool().unwrap_or(false),
                (start, end),
            ));
        }
        by_title.insert(title.to_owned(), series);
    }
    let values = |title: &str, label: &str| -> std::collections::BTreeSet<String> {
        by_title[title]
            .iter()
            .filter_map(|m| m.get(label)?.as_str().map(str::to_owned))
            .collect()
    };
    let outcomes = values("Deploys by outcome", "outcome");
    assert!(
        outcomes.contains("succeeded") && outcomes.contains("failed"),
        "{outcomes:?}"
    );
    let stepped: Vec<String> = values("Steps by host", "host").into_iter().collect();
    let mut expected: Vec<String> = fleet.hosts.iter().map(|h| h.addr.to_string()).collect();
    expected.sort();
    assert_eq!(stepped, expected);
    let versions = values("Requests per second by service and version", "version");
    assert!(versions.len() >= 2, "{versions:?}");

    let annotations = dashboard["annotations"]["list"].as_array().unwrap();
    let deploys = annotations
        .iter()
        .find(|a| a["name"] == "Deploys")
        .expect("a Deploys annotation");
    let marks = evaluate(
        &prometheus,
        "annotation Deploys",
        deploys["target"]["expr"].as_str().unwrap(),
        deploys["target"]["titleFormat"].as_str().unwrap(),
        false,
        (start, end),
    );
    let kinds: std::collections::BTreeSet<&str> = marks
        .iter()
        .filter_map(|m| m.get("kind")?.as_str())
        .collect();
    assert!(
        kinds.contains("deploy") && kinds.contains("rollback"),
        "{kinds:?}"
    );
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
