//! Fixture tests of the planner: one directory per case under `tests/fixtures/plan_*`, named
//! for what it holds; `plan.json` is the exact plan expected (set `UPDATE_EXPECT=1` to rewrite
//! it, then review the diff).
#![allow(clippy::unwrap_used)]

use flotilla_deploy::config::{LoadOptions, load};
use flotilla_deploy::plan::{Plan, PlanContext, Release, Step, plan};
use std::collections::BTreeMap;
use std::path::PathBuf;

mod builder;
mod commands;
mod engine_build;
mod operation;

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn plan_for(name: &str, destination: Option<&str>, context: &PlanContext) -> Plan {
    let opts = LoadOptions {
        destination: destination.map(str::to_owned),
        env: BTreeMap::from([("PATH".to_owned(), "/usr/bin:/bin".to_owned())]),
        ..LoadOptions::new(fixture(name))
    };
    let config = load(&opts).unwrap_or_else(|e| panic!("{name} loads:\n{e}"));
    let release = Release {
        version: "abc123".into(),
        image: format!("{}:abc123", config.repository()),
    };
    plan(&config, &release, context)
}

/// Compares the plan with the fixture's `plan.json` (or `plan.DEST.json`).
fn check(name: &str, destination: Option<&str>, context: &PlanContext) -> Plan {
    let plan = plan_for(name, destination, context);
    let file = fixture(name).join(match destination {
        Some(d) => format!("plan.{d}.json"),
        None => "plan.json".to_owned(),
    });
    let actual = serde_json::to_string_pretty(&plan).unwrap() + "\n";
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        std::fs::write(&file, &actual).unwrap();
    }
    let expected = std::fs::read_to_string(&file)
        .unwrap_or_else(|_| panic!("{} missing: run with UPDATE_EXPECT=1", file.display()));
    assert_eq!(
        actual,
        expected,
        "plan of {name} differs from {}",
        file.display()
    );
    plan
}

fn step_names(plan: &Plan, host: &str) -> Vec<String> {
    plan.host(host)
        .unwrap()
        .steps
        .iter()
        .map(Step::label)
        .collect()
}

/// One host, one proxied role: pull, start, switch the proxy, stop the old container, prune.
#[test]
fn single_host() {
    let plan = check("plan_single_host", None, &PlanContext::default());
    assert_eq!(
        step_names(&plan, "10.0.0.1"),
        [
            "pull image",
            "start web",
            "switch proxy web",
            "stop old web",
            "prune"
        ]
    );
    assert_eq!(plan.release.image, "registry.local:5000/app:abc123");
}

/// Roles on shared hosts: primary role first on each host; the job role is not proxied, so
/// it is gated on Docker health; tag env, role cmd and options, and secret names (never
/// values) land in the steps.
#[test]
fn roles_and_tags() {
    let plan = check("plan_roles_tags", None, &PlanContext::default());
    assert_eq!(
        step_names(&plan, "10.0.0.2"),
        [
            "pull image",
            "start web",
            "switch proxy web",
            "stop old web",
            "start job",
            "await healthy job",
            "stop old job",
            "prune"
        ]
    );
    assert!(!plan.host("10.0.0.3").unwrap().primary);
    let json = serde_json::to_string(&plan).unwrap();
    assert!(
        !json.contains("hunter2") && !json.contains("postgres://"),
        "no secret values"
    );
}

/// A destination merges its file and names containers and proxy services with it.
#[test]
fn destination() {
    let plan = check("plan_destination", Some("staging"), &PlanContext::default());
    assert_eq!(plan.hosts.len(), 2);
    match &plan.hosts[0].steps[1] {
        Step::StartContainer(s) => assert_eq!(s.container, "app-web-staging-abc123"),
        other => panic!("{other:?}"),
    }
}

/// Proxy settings (hosts, port, TLS, path prefix, health check, timeouts) reach the switch;
/// rollback targets reach the prune step as protected.
#[test]
fn proxy_settings_and_protected_containers() {
    let context = PlanContext {
        protected: vec!["api-api-old1".into()],
    };
    let plan = check("plan_proxy_settings", None, &context);
    assert_eq!(plan.hosts[0].roles, ["api", "worker"]);
}

/// `-h` and `-r` narrow a plan: only matching hosts, and only the matching roles' steps.
#[test]
fn host_and_role_filters() {
    let plan = plan_for("plan_roles_tags", None, &PlanContext::default());
    let jobs_only = plan.clone().filtered(&[], &["job".into()]);
    assert_eq!(
        jobs_only
            .hosts
            .iter()
            .map(|h| h.host.as_str())
            .collect::<Vec<_>>(),
        ["10.0.0.2", "10.0.0.3"]
    );
    assert_eq!(
        step_names(&jobs_only, "10.0.0.2"),
        [
            "pull image",
            "start job",
            "await healthy job",
            "stop old job",
            "prune"
        ]
    );
    let one = plan.filtered(&["10.0.0.*1".into()], &[]);
    assert_eq!(one.hosts.len(), 1);
    assert_eq!(one.hosts[0].host, "10.0.0.1");
}

/// Logging as Kamal applies it: a role's logging merged over the root's (driver replaced,
/// options added), and with no logging anywhere Docker's driver capped at `max-size=10m`.
#[test]
fn logging_merged_and_defaulted() {
    let log = |p: &Plan, host: &str| {
        p.host(host)
            .unwrap()
            .steps
            .iter()
            .find_map(|s| match s {
                Step::StartContainer(s) => Some((s.log_driver.clone(), s.log_options.clone())),
                _ => None,
            })
            .unwrap()
    };
    let p = plan_for("plan_logging", None, &PlanContext::default());
    let opts = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>()
    };
    assert_eq!(log(&p, "10.5.0.1"), (None, opts(&[("max-size", "50m")])));
    assert_eq!(
        log(&p, "10.5.0.2"),
        (
            Some("local".to_string()),
            opts(&[("max-size", "50m"), ("max-file", "3")])
        )
    );
    let p = plan_for("plan_single_host", None, &PlanContext::default());
    let host = p.hosts[0].host.clone();
    assert_eq!(log(&p, &host), (None, opts(&[("max-size", "10m")])));
}

/// Accessories get the root logging, defaulted like the app's (`Config::logging_for(None)`).
#[test]
fn accessory_logging_is_the_root_logging() {
    let opts = LoadOptions {
        env: BTreeMap::new(),
        ..LoadOptions::new(fixture("plan_logging"))
    };
    let config = load(&opts).unwrap();
    let (driver, options) = config.logging_for(None);
    assert_eq!(driver, None);
    assert_eq!(
        options,
        BTreeMap::from([("max-size".to_string(), "50m".to_string())])
    );
}
