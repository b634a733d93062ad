//! `flotilla deploy`, `rollback`, `history` and `replay` on the real 3-host fleet, as a Kamal
//! user runs them: zero failed requests while versions change, every step in the event log,
//! rollbacks by exact digest.

use crate::load;
use crate::project::{APP_SECRET, Project};
use crate::support::{fleet, http_get};
use flotilla_e2e::fleet::Fleet;
use flotilla_e2e::testapp;
use flotilla_events::{Event, EventLog, SledLog};
use std::net::SocketAddr;

pub(crate) fn version_of(addr: SocketAddr) -> String {
    match http_get(addr, "/version") {
        Ok((200, body)) => body.trim().to_owned(),
        other => panic!("GET {addr}/version: {other:?}"),
    }
}

pub(crate) fn web(fleet: &Fleet) -> Vec<SocketAddr> {
    fleet
        .hosts
        .iter()
        .map(|h| SocketAddr::from((h.addr, 80)))
        .collect()
}

pub(crate) fn running(fleet: &Fleet, host: &flotilla_e2e::fleet::Host) -> Vec<String> {
    let out = fleet
        .host_docker(host)
        .args([
            "ps",
            "--filter",
            "label=service=testapp",
            "--format",
            "{{.Names}}",
        ])
        .output()
        .unwrap();
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    names.sort();
    names
}

/// Deploy v1, then v2 under continuous load (zero failed requests, every host serves v2
/// through its proxy, the old container is stopped, the log holds each host's steps in
/// order), then roll back after v1's tag was pushed again with other content: the hosts run
/// v1's original digest, again with zero failed requests, and history lists all three.
#[test]
fn deploy_v1_then_v2_then_roll_back_by_digest() {
    let fleet = fleet(3);
    let project = Project::new(&fleet, "");
    project.flotilla_ok(&["deploy", "--version", "v1"], &[("APP_VERSION", "v1")]);
    for addr in web(&fleet) {
        assert_eq!(version_of(addr), "v1");
    }

    let load = load::start(&web(&fleet), 4);
    let out = project.flotilla_ok(
        &["deploy", "--version", "v2", "--json"],
        &[("APP_VERSION", "v2")],
    );
    let stats = load.stop();
    assert!(
        stats.failed.is_empty(),
        "failed requests during v2 deploy: {:?}",
        &stats.failed[..stats.failed.len().min(5)]
    );
    assert!(stats.ok > 50, "load ran: {} requests", stats.ok);
    assert!(!out.contains(APP_SECRET), "secret in --json output");
    for (host, addr) in fleet.hosts.iter().zip(web(&fleet)) {
        assert_eq!(version_of(addr), "v2", "{}", host.name);
        assert_eq!(
            running(&fleet, host),
            ["testapp-web-v2"],
            "only v2 runs on {}",
            host.name
        );
    }

    // Someone pushes other content under the v1 tag; a rollback must not pick it up.
    testapp::build_and_push(
        &fleet,
        &testapp::build_static_binary().unwrap(),
        "testapp",
        "v1",
        "ENV APP_VERSION=v1-moved",
    )
    .unwrap();
    let load = load::start(&web(&fleet), 4);
    project.flotilla_ok(&["rollback"], &[]);
    let stats = load.stop();
    assert!(
        stats.failed.is_empty(),
        "failed requests during rollback: {:?}",
        &stats.failed[..stats.failed.len().min(5)]
    );
    for addr in web(&fleet) {
        assert_eq!(
            version_of(addr),
            "v1",
            "the original v1 digest, not the moved tag"
        );
    }

    let history = project.flotilla_ok(&["history", "--json"], &[]);
    let releases: Vec<serde_json::Value> = history
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary: Vec<(String, String, String)> = releases
        .iter()
        .map(|r| {
            (
                r["kind"].as_str().unwrap().to_owned(),
                r["version"].as_str().unwrap().to_owned(),
                r["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("deploy".into(), "v1".into(), "completed".into()),
            ("deploy".into(), "v2".into(), "completed".into()),
            ("rollback".into(), "v1".into(), "completed".into())
        ]
    );
    assert!(releases.iter().all(|r| {
        r["images"]["web"]["digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    }));
    assert_eq!(
        releases[0]["images"]["web"]["digest"],
        releases[2]["images"]["web"]["digest"]
    );

    // The log: for the v2 deploy, each host's steps in order.
    let all: Vec<_> = {
        // Opened and closed here: the log has one user at a time, and the CLI needs it next.
        let log = SledLog::open(project.root().join(".flotilla/events")).unwrap();
        log.read_all().unwrap().map(Result::unwrap).collect()
    };
    let v2 = releases[1]["deploy_id"].as_str().unwrap();
    for host in &fleet.hosts {
        let kinds: Vec<&str> = all
            .iter()
            .filter(|e| {
                e.deploy_id.as_str() == v2 && e.host.as_deref() == Some(&host.addr.to_string())
            })
            .map(|e| e.type_name())
            .collect();
        assert_eq!(
            kinds,
            [
                "ImagePulled",
                "ContainerStarted",
                "HealthPassed",
                "ProxySwitched",
                "OldContainerStopped",
                "HostSucceeded"
            ],
            "events of {}",
            host.name
        );
    }
    assert!(
        all.iter()
            .any(|e| matches!(&e.event, Event::LockAcquired(_)))
    );
    let dump = project.flotilla_ok(&["events", "--json"], &[]);
    assert!(!dump.contains(APP_SECRET), "secret in the event log");
    let replay = project.flotilla_ok(&["replay", v2], &[]);
    assert!(
        replay.contains("ProxySwitched") && replay.contains(&fleet.hosts[0].addr.to_string()),
        "{replay}"
    );
}

pub(crate) fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A version that never turns healthy on one host: without `auto_rollback` the deploy fails
/// (exit 1), names the host and the step, and every host keeps serving a version (the bad
/// host the old one) with zero failed requests; with `auto_rollback` every host returns to
/// the last good release, again with zero failed requests.
#[test]
fn unhealthy_host_fails_the_deploy_and_auto_rollback_restores_the_last_good_release() {
    let fleet = fleet(3);
    let project = Project::new(&fleet, "");
    let bad = fleet.hosts.last().unwrap().clone();
    project.flotilla_ok(&["deploy", "--version", "v2"], &[("APP_VERSION", "v2")]);

    let load = load::start(&web(&fleet), 3);
    let failing = [
        ("APP_VERSION", "v3"),
        ("LAST_HOST_MODE", "unhealthy"),
        ("DEPLOY_TIMEOUT", "5"),
    ];
    let out = project.flotilla(&["deploy", "--version", "v3"], &failing);
    let stats = load.stop();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&bad.addr.to_string()) && err.contains("SwitchProxy"),
        "names host and step: {err}"
    );
    assert!(
        err.contains("--resume") && err.contains("flotilla rollback"),
        "says what to do next: {err}"
    );
    assert!(
        stats.failed.is_empty(),
        "failed requests: {:?}",
        &stats.failed[..stats.failed.len().min(5)]
    );
    for (host, addr) in fleet.hosts.iter().zip(web(&fleet)) {
        let expected = if host.addr == bad.addr { "v2" } else { "v3" };
        assert_eq!(
            version_of(addr),
            expected,
            "{} still serves a version",
            host.name
        );
    }

    let load = load::start(&web(&fleet), 3);
    let with_rollback = [
        ("APP_VERSION", "v4"),
        ("LAST_HOST_MODE", "unhealthy"),
        ("DEPLOY_TIMEOUT", "5"),
        ("AUTO_ROLLBACK", "true"),
    ];
    let out = project.flotilla(&["deploy", "--version", "v4"], &with_rollback);
    let stats = load.stop();
    assert_eq!(
        out.status.code(),
        Some(1),
        "the deploy itself failed: {}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("auto_rollback: 3 host(s) back on v2"),
        "{}",
        stderr(&out)
    );
    assert!(
        stats.failed.is_empty(),
        "failed requests: {:?}",
        &stats.failed[..stats.failed.len().min(5)]
    );
    for (host, addr) in fleet.hosts.iter().zip(web(&fleet)) {
        assert_eq!(
            version_of(addr),
            "v2",
            "{} is back on the last good release",
            host.name
        );
        assert_eq!(
            running(&fleet, host),
            ["testapp-web-v2"],
            "nothing else runs on {}",
            host.name
        );
    }
}

/// The events of the newest deploy, per host, from `flotilla events --json`.
fn newest_deploy_hosts(project: &Project) -> std::collections::BTreeMap<String, Vec<String>> {
    let dump = project.flotilla_ok(&["events", "--json"], &[]);
    let events: Vec<serde_json::Value> = dump
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let newest = events.last().unwrap()["deploy_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut by_host = std::collections::BTreeMap::<String, Vec<String>>::new();
    for e in events.iter().filter(|e| e["deploy_id"] == newest.as_str()) {
        if let Some(h) = e["host"].as_str() {
            by_host.entry(h.to_owned()).or_default().push(
                e["event"]
                    .as_object()
                    .and_then(|o| o.keys().next().cloned())
                    .unwrap_or_default(),
            );
        }
    }
    by_host
}

/// `canary`: when the canary host fails, no other host starts. `max_failures`: hosts keep
/// starting while failures stay within the budget, and stop once it is exceeded.
#[test]
fn canary_and_max_failures_stop_the_rollout_where_they_should() {
    let fleet = fleet(3);
    let project = Project::new(&fleet, "");
    project.flotilla_ok(&["deploy", "--version", "v1"], &[("APP_VERSION", "v1")]);
    let (h1, h2, h3) = (
        fleet.hosts[0].addr.to_string(),
        fleet.hosts[1].addr.to_string(),
        fleet.hosts[2].addr.to_string(),
    );

    let bad = [
        ("APP_VERSION", "v2"),
        ("APP_MODE", "unhealthy"),
        ("LAST_HOST_MODE", "unhealthy"),
        ("DEPLOY_TIMEOUT", "3"),
    ];
    let out = project.flotilla(
        &["deploy", "--version", "v2"],
        &[bad.as_slice(), &[("CANARY", "1")]].concat(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("canary"), "{}", stderr(&out));
    let hosts = newest_deploy_hosts(&project);
    assert_eq!(
        hosts.keys().collect::<Vec<_>>(),
        [&h1],
        "only the canary host did anything: {hosts:?}"
    );
    assert!(hosts[&h1].contains(&"HostFailed".to_owned()));

    let out = project.flotilla(
        &["deploy", "--version", "v3"],
        &[
            bad.as_slice(),
            &[
                ("APP_VERSION", "v3"),
                ("MAX_PARALLEL", "1"),
                ("MAX_FAILURES", "1"),
            ],
        ]
        .concat(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("max_failures"), "{}", stderr(&out));
    let hosts = newest_deploy_hosts(&project);
    assert!(
        hosts[&h1].contains(&"HostFailed".to_owned())
            && hosts[&h2].contains(&"HostFailed".to_owned()),
        "{hosts:?}"
    );
    assert!(
        !hosts.contains_key(&h3),
        "the third host never started: {hosts:?}"
    );
    for addr in web(&fleet) {
        assert_eq!(version_of(addr), "v1", "every host still serves v1");
    }
}

/// The scheduler is killed with SIGKILL mid-rollout; `flotilla replay ID --resume` finishes
/// the deploy: the host that had finished repeats no step (its events are unchanged), every
/// host ends on v2 with exactly one container, and the log says the deploy completed.
#[test]
fn killed_scheduler_is_resumed_without_repeating_finished_hosts() {
    use std::io::BufRead;
    let fleet = fleet(3);
    let project = Project::new(&fleet, "");
    project.flotilla_ok(&["deploy", "--version", "v1"], &[("APP_VERSION", "v1")]);

    let mut child = deploy_v2_one_host_at_a_time(&project, &fleet, std::process::Stdio::null());
    let mut deploy_id = String::new();
    let mut finished_host = String::new();
    for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
        let e: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        deploy_id = e["deploy_id"].as_str().unwrap().to_owned();
        if e["event"].get("HostSucceeded").is_some() {
            finished_host = e["host"].as_str().unwrap().to_owned();
            child.kill().unwrap(); // SIGKILL, mid-rollout: the other hosts are not done
            break;
        }
    }
    child.wait().unwrap();
    assert!(
        !finished_host.is_empty(),
        "the deploy got as far as one finished host"
    );
    let before = newest_deploy_hosts(&project);

    project.flotilla_ok(&["replay", &deploy_id, "--resume"], &[]);
    let after = newest_deploy_hosts(&project);
    assert_eq!(
        after[&finished_host], before[&finished_host],
        "no step repeated on {finished_host}"
    );
    for (host, addr) in fleet.hosts.iter().zip(web(&fleet)) {
        assert_eq!(version_of(addr), "v2");
        assert_eq!(
            running(&fleet, host),
            ["testapp-web-v2"],
            "one container on {}",
            host.name
        );
        assert!(after[&host.addr.to_string()].contains(&"HostSucceeded".to_owned()));
    }
    let replay = project.flotilla_ok(&["replay", &deploy_id, "--json"], &[]);
    assert!(
        replay.lines().last().unwrap().contains("LockReleased"),
        "{replay}"
    );
    assert!(
        replay.contains("DeployCompleted"),
        "the resumed deploy completed"
    );
}

/// SIGTERM (as Ctrl-C) mid-rollout cancels the deploy: no host starts after it, the host that
/// was running finishes, every host still serves a version, the log ends with
/// `DeployCancelled` and `LockReleased`, the exit code is 1 with the resume command; then
/// `flotilla replay ID --resume` finishes the rollout.
#[test]
fn sigterm_cancels_the_deploy_and_resume_continues_it() {
    use std::io::BufRead;
    let fleet = fleet(3);
    let project = Project::new(&fleet, "");
    project.flotilla_ok(&["deploy", "--version", "v1"], &[("APP_VERSION", "v1")]);

    let mut child = deploy_v2_one_host_at_a_time(&project, &fleet, std::process::Stdio::piped());
    let mut deploy_id = String::new();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        let e: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        deploy_id = e["deploy_id"].as_str().unwrap().to_owned();
        if e["event"].get("ContainerStarted").is_some() {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
            break;
        }
    }
    // Drain what it still reports, so it is never blocked on a full pipe.
    for _ in lines {}
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "a cancelled deploy exits 1");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cancel") && err.contains("--resume"), "{err}");

    let replay = project.flotilla_ok(&["replay", &deploy_id, "--json"], &[]);
    let types: Vec<String> = replay
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|e| e["event"].as_object()?.keys().next().cloned())
        .collect();
    let tail: Vec<&str> = types
        .iter()
        .rev()
        .take(2)
        .rev()
        .map(String::as_str)
        .collect();
    assert_eq!(tail, ["DeployCancelled", "LockReleased"], "{types:?}");
    assert_eq!(
        types.iter().filter(|t| *t == "HostSucceeded").count(),
        1,
        "only the running host finished: {types:?}"
    );
    for addr in web(&fleet) {
        let v = version_of(addr);
        assert!(v == "v1" || v == "v2", "{addr} serves {v}");
    }
    let status = project.flotilla_ok(&["lock", "status"], &[]);
    assert!(status.contains("no lock"), "{status}");

    project.flotilla_ok(&["replay", &deploy_id, "--resume"], &[]);
    for (host, addr) in fleet.hosts.iter().zip(web(&fleet)) {
        assert_eq!(version_of(addr), "v2");
        assert_eq!(
            running(&fleet, host),
            ["testapp-web-v2"],
            "on {}",
            host.name
        );
    }
}

/// `flotilla deploy --version v2 --json` one host at a time, in the background, its events on
/// a pipe: the start of the tests that stop a deploy midway.
pub(crate) fn deploy_v2_one_host_at_a_time(
    project: &Project,
    fleet: &Fleet,
    stderr: std::process::Stdio,
) -> std::process::Child {
    std::process::Command::new(&project.flotilla)
        .args(["deploy", "--version", "v2", "--json"])
        .current_dir(project.root())
        .env("DOCKER_HOST", fleet.builder_docker_host())
        .env("DOCKER_CONFIG", project.root().join(".docker"))
        .envs([("APP_VERSION", "v2"), ("MAX_PARALLEL", "1")])
        .stdout(std::process::Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap()
}

/// Two deploys at once: the second is refused while the first holds the lock, naming the
/// holder; with `--lock-wait` it waits, then runs.
#[test]
fn concurrent_deploys_wait_for_or_refuse_the_lock() {
    let fleet = fleet(1);
    let project = Project::new(&fleet, "");
    project.flotilla_ok(&["lock", "acquire", "-m", "maintenance window"], &[]);
    let status = project.flotilla_ok(&["lock", "status"], &[]);
    assert!(status.contains("maintenance window"), "{status}");
    let out = project.flotilla(&["deploy", "--version", "v1"], &[("APP_VERSION", "v1")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("held by") && stderr(&out).contains("--lock-wait"),
        "{}",
        stderr(&out)
    );

    // Release the lock while a deploy is waiting for it.
    let mut waiting = std::process::Command::new(&project.flotilla)
        .args(["deploy", "--version", "v1", "--lock-wait", "120", "-q"])
        .current_dir(project.root())
        .env("DOCKER_HOST", fleet.builder_docker_host())
        .env("DOCKER_CONFIG", project.root().join(".docker"))
        .env("APP_VERSION", "v1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Release the lock once the deploy says it is waiting for it.
    let mut err = std::io::BufReader::new(waiting.stderr.take().unwrap());
    let mut said = String::new();
    while !said.contains("waiting up to 120s for the deploy lock held by") {
        said.clear();
        let n = std::io::BufRead::read_line(&mut err, &mut said).unwrap();
        assert!(
            n > 0,
            "the second deploy ended without waiting for the lock"
        );
    }
    project.flotilla_ok(&["lock", "release"], &[]);
    let status = waiting.wait().unwrap();
    assert!(
        status.success(),
        "the waiting deploy ran once the lock was released"
    );
    assert_eq!(version_of(web(&fleet)[0]), "v1");
}

/// `-d staging` deploys side by side with production on the same hosts: each destination
/// has its own containers and proxy service (staging answers for its host name), and a
/// production deploy leaves staging's container running.
#[test]
fn destinations_deploy_side_by_side_on_the_same_hosts() {
    use crate::support::http_get_host;
    let fleet = fleet(2);
    let project = Project::new(&fleet, "");
    std::fs::write(
        project.root().join("config/deploy.staging.yml"),
        "proxy:\n  host: staging.test\n",
    )
    .unwrap();
    std::fs::copy(
        project.root().join(".kamal/secrets"),
        project.root().join(".kamal/secrets.staging"),
    )
    .unwrap();
    project.flotilla_ok(&["deploy", "--version", "p1"], &[("APP_VERSION", "p1")]);
    project.flotilla_ok(
        &["deploy", "-d", "staging", "--version", "s1"],
        &[("APP_VERSION", "s1")],
    );
    project.flotilla_ok(&["deploy", "--version", "p2"], &[("APP_VERSION", "p2")]);
    for (host, addr) in fleet.hosts.iter().zip(web(&fleet)) {
        assert_eq!(version_of(addr), "p2", "production on {}", host.name);
        let staging = http_get_host(addr, "staging.test", "/version").unwrap();
        assert_eq!(
            staging,
            (200, "s1\n".to_owned()),
            "staging on {}",
            host.name
        );
        assert_eq!(
            running(&fleet, host),
            ["testapp-web-p2", "testapp-web-staging-s1"],
            "both destinations run on {}",
            host.name
        );
    }
    let history = project.flotilla_ok(&["history", "-d", "staging", "--json"], &[]);
    assert_eq!(
        history.lines().count(),
        1,
        "staging has its own history: {history}"
    );
}

/// Kamal's hooks run with their `KAMAL_*` variables around a deploy; a failing `pre-deploy`
/// hook stops the deploy before any host is touched, shows the hook's output and exits 1.
#[test]
fn hooks_run_and_a_failing_hook_stops_the_deploy() {
    use std::os::unix::fs::PermissionsExt;
    let fleet = fleet(1);
    let project = Project::new(&fleet, "");
    let hooks = project.root().join(".kamal/hooks");
    std::fs::create_dir_all(&hooks).unwrap();
    let record = project.root().join("hooks.log");
    for name in [
        "pre-connect",
        "pre-build",
        "pre-deploy",
        "pre-app-boot",
        "post-app-boot",
        "post-deploy",
    ] {
        let body = format!(
            "#!/bin/sh\necho \"{name} $KAMAL_VERSION $KAMAL_HOSTS $KAMAL_COMMAND ${{KAMAL_RUNTIME:-}}\" >> {}\n\
             if [ -n \"$FAIL_HOOK\" ] && [ \"$FAIL_HOOK\" = {name} ]; then echo 'migrations pending' >&2; exit 7; fi\n",
            record.display()
        );
        std::fs::write(hooks.join(name), body).unwrap();
        std::fs::set_permissions(hooks.join(name), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let host = fleet.hosts[0].addr.to_string();
    project.flotilla_ok(&["deploy", "--version", "v1"], &[("APP_VERSION", "v1")]);
    let log = std::fs::read_to_string(&record).unwrap();
    let names: Vec<&str> = log.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(
        names,
        [
            "pre-connect",
            "pre-build",
            "pre-deploy",
            "pre-app-boot",
            "post-app-boot",
            "post-deploy"
        ]
    );
    assert!(
        log.contains(&format!("pre-deploy v1 {host} deploy")),
        "{log}"
    );
    let runtime = log.lines().last().unwrap().split(' ').nth(4).unwrap();
    assert!(
        runtime.parse::<u64>().is_ok(),
        "post-deploy gets KAMAL_RUNTIME: {log}"
    );

    let out = project.flotilla(
        &["deploy", "--version", "v2"],
        &[("APP_VERSION", "v2"), ("FAIL_HOOK", "pre-deploy")],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("hook pre-deploy failed with exit code 7")
            && err.contains("migrations pending"),
        "{err}"
    );
    assert_eq!(version_of(web(&fleet)[0]), "v1", "no host was touched");
    let hosts = newest_deploy_hosts(&project);
    assert!(
        hosts.is_empty(),
        "no host events for the stopped deploy: {hosts:?}"
    );
}

/// `step_timeout`: a host that reports nothing for that long is failed, and the deploy says
/// which. Here the last host's new container answers healthy only after 60 s, well within the
/// deploy timeout: without the step timeout the deploy would succeed.
#[test]
fn silent_host_fails_after_step_timeout() {
    let fleet = fleet(2);
    let project = Project::new(&fleet, "");
    project.flotilla_ok(&["deploy", "--version", "v1"], &[("APP_VERSION", "v1")]);
    let slow = [
        ("APP_VERSION", "v2"),
        ("LAST_HOST_MODE", "healthy-after:60"),
        ("DEPLOY_TIMEOUT", "120"),
        ("STEP_TIMEOUT", "5"),
    ];
    let out = project.flotilla(&["deploy", "--version", "v2"], &slow);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    let last = fleet.hosts[1].addr.to_string();
    assert!(err.contains(&last) && err.contains("step_timeout"), "{err}");
}
