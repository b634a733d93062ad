//! Given/when/then tests of the rollout policy: which hosts start when, and when it stops.
#![allow(clippy::unwrap_used)]

use flotilla_scheduler::rollout::{Amount, Decision, HostStatus, Outcome, Policy, Rollout, Target};
use std::time::Duration;

fn targets(primary: &[&str], other: &[&str]) -> Vec<Target> {
    other
        .iter()
        .map(|h| Target {
            host: h.to_string(),
            primary: false,
        })
        .chain(primary.iter().map(|h| Target {
            host: h.to_string(),
            primary: true,
        }))
        .collect()
}

fn hosts(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

const T0: Duration = Duration::ZERO;
fn s(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// With no policy, primary-role hosts start first, the others once one primary is healthy,
/// and the rollout succeeds when every host has.
#[test]
fn primary_role_first_then_the_rest() {
    let mut r = Rollout::new(targets(&["web1", "web2"], &["job1"]), Policy::default());
    assert_eq!(r.decide(T0), Decision::Start(hosts(&["web1", "web2"])));
    assert_eq!(r.decide(T0), Decision::Wait);
    r.succeeded("web2", s(1));
    assert_eq!(r.decide(s(1)), Decision::Start(hosts(&["job1"])));
    r.succeeded("web1", s(2));
    r.succeeded("job1", s(3));
    assert_eq!(r.decide(s(3)), Decision::Done(Outcome::Succeeded));
}

/// `boot.limit` boots that many hosts at a time, and `boot.wait` passes between batches.
#[test]
fn boot_limit_and_wait_make_batches() {
    let policy = Policy {
        batch: Some(Amount::Count(2)),
        batch_wait: s(10),
        ..Policy::default()
    };
    let mut r = Rollout::new(targets(&["a", "b", "c", "d", "e"], &[]), policy);
    assert_eq!(r.decide(T0), Decision::Start(hosts(&["a", "b"])));
    r.succeeded("a", s(1));
    assert_eq!(r.decide(s(1)), Decision::Wait, "batch still running");
    r.succeeded("b", s(2));
    assert_eq!(r.decide(s(2)), Decision::WaitUntil(s(12)));
    assert_eq!(r.decide(s(12)), Decision::Start(hosts(&["c", "d"])));
    r.succeeded("c", s(13));
    r.succeeded("d", s(13));
    assert_eq!(r.decide(s(23)), Decision::Start(hosts(&["e"])));
    r.succeeded("e", s(24));
    assert_eq!(r.decide(s(24)), Decision::Done(Outcome::Succeeded));
}

/// A percentage limit rounds up: 30% of 5 hosts is 2 at a time.
#[test]
fn percent_limit_rounds_up() {
    assert_eq!(Amount::Percent(30).of(5), 2);
    assert_eq!(Amount::Percent(100).of(5), 5);
    assert_eq!(Amount::Percent(1).of(1000), 10);
}

/// Canary hosts go first; the rest start only after all of them succeed.
#[test]
fn canary_passes_then_the_rest_start() {
    let policy = Policy {
        canary: 1,
        ..Policy::default()
    };
    let mut r = Rollout::new(targets(&["a", "b", "c"], &[]), policy);
    assert_eq!(r.decide(T0), Decision::Start(hosts(&["a"])));
    assert_eq!(r.decide(T0), Decision::Wait);
    r.succeeded("a", s(5));
    assert_eq!(r.decide(s(5)), Decision::Start(hosts(&["b", "c"])));
}

/// A failed canary stops the rollout: no other host starts, and the outcome names it.
#[test]
fn failed_canary_stops_everything() {
    let policy = Policy {
        canary: 2,
        ..Policy::default()
    };
    let mut r = Rollout::new(targets(&["a", "b", "c", "d"], &[]), policy);
    assert_eq!(r.decide(T0), Decision::Start(hosts(&["a", "b"])));
    r.failed("a", s(1));
    assert_eq!(r.decide(s(1)), Decision::Wait, "b still running");
    r.succeeded("b", s(2));
    assert_eq!(
        r.decide(s(2)),
        Decision::Done(Outcome::Failed {
            reason: "a canary host failed".into(),
            failed: hosts(&["a"])
        })
    );
    assert_eq!(r.status("c"), Some(HostStatus::Skipped));
}

/// `max_parallel` caps hosts in flight; each finished host frees a place.
#[test]
fn max_parallel_caps_hosts_in_flight() {
    let policy = Policy {
        max_parallel: Some(2),
        ..Policy::default()
    };
    let mut r = Rollout::new(targets(&["a", "b", "c", "d"], &[]), policy);
    assert_eq!(r.decide(T0), Decision::Start(hosts(&["a", "b"])));
    r.succeeded("b", s(1));
    assert_eq!(r.decide(s(1)), Decision::Start(hosts(&["c"])));
    assert_eq!(r.decide(s(1)), Decision::Wait);
}

/// Kamal's default: any failure stops new hosts from starting; hosts in flight finish.
#[test]
fn any_failure_stops_by_default() {
    let policy = Policy {
        max_parallel: Some(2),
        ..Policy::default()
    };
    let mut r = Rollout::new(targets(&["a", "b", "c"], &[]), policy);
    assert_eq!(r.decide(T0), Decision::Start(hosts(&["a", "b"])));
    r.failed("a", s(1));
    assert_eq!(r.decide(s(1)), Decision::Wait);
    r.succeeded("b", s(2));
    match r.decide(s(2)) {
        Decision::Done(Outcome::Failed { failed, .. }) => assert_eq!(failed, hosts(&["a"])),
        other => panic!("expected failure, got {other:?}"),
    }
    assert_eq!(r.status("c"), Some(HostStatus::Skipped));
}

/// Within the failure budget the rollout goes on; past it, no new host starts.
#[test]
fn max_failures_is_a_budget() {
    let policy = Policy {
        max_parallel: Some(1),
        max_failures: Some(Amount::Count(1)),
        ..Policy::default()
    };
    let mut r = Rollout::new(targets(&["a", "b", "c", "d"], &[]), policy);
    assert_eq!(r.decide(T0), Decision::Start(hosts(&["a"])));
    r.failed("a", s(1));
    assert_eq!(
        r.decide(s(1)),
        Decision::Start(hosts(&["b"])),
        "one failure allowed"
    );
    r.failed("b", s(2));
    match r.decide(s(2)) {
        Decision::Done(Outcome::Failed { reason, failed }) => {
            assert!(reason.contains("max_failures"), "{reason}");
            assert_eq!(failed, hosts(&["a", "b"]));
        }
        other => panic!("expected failure, got {other:?}"),
    }
    assert_eq!(r.hosts_with(HostStatus::Skipped), hosts(&["c", "d"]));
}

/// A host silent past the step timeout counts as failed; progress resets its clock.
#[test]
fn silent_host_times_out() {
    let policy = Policy {
        step_timeout: Some(s(30)),
        max_failures: Some(Amount::Count(1)),
        ..Policy::default()
    };
    let mut r = Rollout::new(targets(&["a", "b"], &[]), policy);
    assert_eq!(r.decide(T0), Decision::Start(hosts(&["a", "b"])));
    r.progressed("a", s(20));
    assert_eq!(r.decide(s(31)), Decision::TimedOut(hosts(&["b"])));
    assert_eq!(r.status("b"), Some(HostStatus::Failed));
    assert_eq!(
        r.decide(s(31)),
        Decision::Wait,
        "a still within its timeout"
    );
    r.succeeded("a", s(40));
    assert_eq!(
        r.decide(s(40)),
        Decision::Done(Outcome::Degraded {
            failed: hosts(&["b"])
        }),
        "one failure is within budget: every host was tried"
    );
}
