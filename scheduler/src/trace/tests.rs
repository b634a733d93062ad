use super::*;
use flotilla_events::sample::Story;
use flotilla_events::{NewEvent, Seq};

fn envelopes(events: Vec<NewEvent>) -> Vec<Envelope> {
    events
        .into_iter()
        .enumerate()
        .map(|(i, e)| e.into_envelope(i as Seq + 1))
        .collect()
}

fn by_name<'a>(spans: &'a [Span], name: &str, host: Option<&str>) -> Vec<&'a Span> {
    spans
        .iter()
        .filter(|s| s.name == name && (host.is_none() || s.attr("flotilla.host") == host))
        .collect()
}

const ID: &str = "01JDEPLOY0000000000000000A";

/// A two-host deploy with one host failing its health check is one trace: the deploy's
/// root (failed, with the reason), a span per host under it, a span per step under each
/// host, in order, back to back, timed by the events, with the attributes the issue names.
#[test]
fn a_deploy_is_one_trace_of_hosts_and_steps() {
    let mut story = Story::new(ID, "v2", 2);
    story.previous = Some("v1".into());
    story.failing_host = Some("web-2".into());
    let events = envelopes(story.events());
    let spans = spans(ID, &events);
    let trace = TraceId::for_deploy(ID);
    assert!(spans.iter().all(|s| s.trace_id == trace));

    let roots: Vec<&Span> = spans.iter().filter(|s| s.parent.is_none()).collect();
    assert_eq!(roots.len(), 1);
    let root = roots[0];
    assert_eq!(root.name, "deploy");
    assert_eq!(root.span_id, root_span(&trace));
    assert_eq!(root.attr("flotilla.outcome"), Some("failed"));
    assert_eq!(
        root.attr("flotilla.error"),
        Some("web-2 failed its health check")
    );
    assert_eq!(root.attr("flotilla.service"), Some("app"));
    assert_eq!(root.attr("flotilla.version"), Some("v2"));
    let at = |i: usize| ms_to_nanos(events[i].at.unix_ms());
    assert_eq!(root.start_unix_nanos, at(0));
    let failed_at = events
        .iter()
        .position(|e| e.type_name() == "DeployFailed")
        .unwrap();
    assert_eq!(root.end_unix_nanos, at(failed_at));

    let hosts = by_name(&spans, "host", None);
    assert_eq!(hosts.len(), 2);
    for h in &hosts {
        assert_eq!(h.parent, Some(root.span_id));
        assert_eq!(h.attr("flotilla.role"), Some("web"));
        assert_eq!(
            h.attr("flotilla.image.digest"),
            Some(format!("sha256:{:0>64}", "v2").as_str())
        );
    }
    let ok = by_name(&spans, "host", Some("web-1"))[0];
    assert_eq!(ok.status, Status::Ok);
    let bad = by_name(&spans, "host", Some("web-2"))[0];
    assert_eq!(bad.attr("flotilla.outcome"), Some("failed"));
    assert_eq!(bad.attr("flotilla.step"), Some("await_healthy"));
    assert_eq!(bad.attr("flotilla.failure.cause"), Some("step_failed"));
    assert_eq!(bad.status, Status::Error("unhealthy after 30s".into()));

    // web-1's steps: in order, back to back, the first starting at its pull's own start.
    let steps: Vec<&Span> = spans
        .iter()
        .filter(|s| s.parent == Some(ok.span_id))
        .collect();
    let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "pull_image",
            "start_container",
            "await_healthy",
            "switch_proxy",
            "stop_old_container"
        ]
    );
    let pulled = events
        .iter()
        .position(|e| e.type_name() == "ImagePulled")
        .unwrap();
    assert_eq!(steps[0].end_unix_nanos, at(pulled));
    assert_eq!(steps[0].start_unix_nanos, at(pulled) - 900 * 1_000_000);
    assert_eq!(ok.start_unix_nanos, steps[0].start_unix_nanos);
    for pair in steps.windows(2) {
        assert_eq!(pair[0].end_unix_nanos, pair[1].start_unix_nanos);
    }
    assert!(
        steps
            .iter()
            .all(|s| s.attr("flotilla.host") == Some("web-1")
                && s.attr("flotilla.role") == Some("web")
                && s.status == Status::Ok)
    );
    assert_eq!(
        steps[0].attr("flotilla.image.digest"),
        Some(format!("sha256:{:0>64}", "v2").as_str())
    );

    // web-2's health step failed, once, and its clean-up still hangs under its host.
    let bad_steps: Vec<&Span> = spans
        .iter()
        .filter(|s| s.parent == Some(bad.span_id))
        .collect();
    let failed: Vec<&&Span> = bad_steps
        .iter()
        .filter(|s| matches!(s.status, Status::Error(_)))
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].name, "await_healthy");
    assert_eq!(
        failed[0].attr("flotilla.error"),
        Some("unhealthy after 30s")
    );
    assert!(bad_steps.iter().any(|s| s.name == "stop_old_container"));

    // The pre-deploy hook, with its own duration.
    let hook = by_name(&spans, "hook pre-deploy", None)[0];
    assert_eq!(hook.parent, Some(root.span_id));
    assert_eq!(hook.end_unix_nanos - hook.start_unix_nanos, 120 * 1_000_000);
}

/// Replaying the same events gives the same spans and ids, whether fed at once or one at a
/// time as a live deploy sees them, and another deploy's events change nothing.
#[test]
fn live_and_replay_agree() {
    let events = envelopes(Story::new(ID, "v1", 3).events());
    let replayed = spans(ID, &events);
    let mut fold = TraceFold::new(ID);
    let mut live = Vec::new();
    let other = envelopes(Story::new("01JDEPLOY0000000000000000B", "v9", 1).events());
    for (i, e) in events.iter().enumerate() {
        if let Some(o) = other.get(i) {
            assert!(fold.apply(o).is_empty());
        }
        live.extend(fold.apply(e));
    }
    assert_eq!(live, replayed);
    // 1 deploy + 3 hosts + 4 steps each + 1 hook.
    assert_eq!(replayed.len(), 1 + 3 + 3 * 4 + 1);
    let ids: std::collections::BTreeSet<_> = replayed.iter().map(|s| s.span_id).collect();
    assert_eq!(ids.len(), replayed.len(), "span ids are unique");
}

/// A deploy still running has no root span yet, and no open host span: only what closed.
#[test]
fn open_spans_are_not_sent() {
    let events = envelopes(Story::new(ID, "v1", 1).events());
    let upto = events
        .iter()
        .position(|e| e.type_name() == "ContainerStarted")
        .unwrap();
    let spans = spans(ID, &events[..=upto]);
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["hook pre-deploy", "pull_image", "start_container"]);
}

/// A deploy that failed and was resumed to success is one trace whose root ends with the
/// resumed run's outcome; each run has its own host span.
#[test]
fn a_resumed_deploy_keeps_one_root_and_a_host_span_per_run() {
    let mut story = Story::new(ID, "v1", 1);
    story.failing_host = Some("web-1".into());
    let mut events = envelopes(story.events());
    let resumed = envelopes(Story::new(ID, "v1", 1).events());
    // The resume: a new run (DeployStarted) through to DeployCompleted, later in time.
    let offset = 60_000;
    let started = resumed
        .iter()
        .position(|e| e.type_name() == "DeployStarted")
        .unwrap();
    for mut e in resumed.into_iter().skip(started) {
        if e.type_name() == "LockReleased" {
            continue;
        }
        e.at = Timestamp::from_unix_ms(e.at.unix_ms() + offset);
        events.push(e);
    }
    let spans = spans(ID, &events);
    let roots: Vec<&Span> = spans.iter().filter(|s| s.parent.is_none()).collect();
    assert_eq!(roots.len(), 1);
    assert_eq!(roots[0].status, Status::Ok);
    let hosts = by_name(&spans, "host", Some("web-1"));
    assert_eq!(hosts.len(), 2);
    assert_ne!(hosts[0].span_id, hosts[1].span_id);
    assert!(matches!(hosts[0].status, Status::Error(_)));
    assert_eq!(hosts[1].status, Status::Ok);
}
