//! The local fleet is real: each host has its own address, Docker engine, SSH server and
//! filesystem view; images flow through the fleet registry; `down` leaves nothing behind.

use crate::support::{assert_success, fleet, fleet_bin, http_get, ssh_ok};
use flotilla_e2e::fleet::{BASE_DIR, Fleet, Proc, leftovers};
use flotilla_e2e::testapp;
use std::collections::HashSet;
use std::io::BufRead;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Over SSH to each host's own address, `docker info` shows that host's own engine (distinct
/// engine ids, each the same engine the host's socket serves), its own hostname, and its own
/// `/var/lib/docker`; the test app pulled from the fleet registry runs on every host and
/// answers `GET /version` at the host's address; `down` leaves no namespace, interface, mount,
/// process or directory behind.
#[test]
fn three_real_hosts_serve_the_test_app_and_down_removes_everything() {
    let fleet = fleet(3);
    let image = testapp::build_and_push(
        &fleet,
        &testapp::build_static_binary().unwrap(),
        "testapp",
        "v1",
        "",
    )
    .unwrap();

    let mut ids = HashSet::new();
    for host in &fleet.hosts {
        let info = ssh_ok(
            &fleet,
            host,
            "hostname; docker info --format '{{.ID}}|{{.DockerRootDir}}'; ip -4 -o addr show eth0",
        );
        let lines: Vec<&str> = info.lines().collect();
        assert_eq!(lines[0], host.name, "hostname over ssh");
        let (id, root) = lines[1].split_once('|').unwrap();
        assert_eq!(root, "/var/lib/docker");
        assert!(
            lines[2].contains(&format!("{}/24", host.addr)),
            "{}",
            lines[2]
        );
        // The engine behind the host's socket in the root namespace is the one SSH reaches.
        let direct = fleet
            .host_docker(host)
            .args(["info", "--format", "{{.ID}}"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&direct.stdout).trim(), id);
        assert!(
            ids.insert(id.to_owned()),
            "engine id {id} seen on two hosts"
        );

        // A file written to /var/lib/docker over SSH lands in this host's data directory only.
        ssh_ok(
            &fleet,
            host,
            &format!("echo {} > /var/lib/docker/marker", host.name),
        );
        let marker = fleet.dir().join(&host.name).join("docker-data/marker");
        assert_eq!(std::fs::read_to_string(marker).unwrap().trim(), host.name);

        ssh_ok(
            &fleet,
            host,
            &format!("docker run -d --name app -p 8080:80 {image}"),
        );
    }
    assert_eq!(ids.len(), 3);

    for host in &fleet.hosts {
        let addr = SocketAddr::from((host.addr, 8080));
        let answer = wait_for_http(addr, "/version");
        assert_eq!(
            answer,
            (200, "v1\n".to_owned()),
            "GET /version on {}",
            host.name
        );
    }

    let slot = fleet.slot();
    let dir = fleet.dir();
    let procs = recorded_procs(&fleet);
    assert_eq!(
        procs.len(),
        3 * 2 + 1 + 1,
        "dockerd+sshd per host, the builder's dockerd, the registry"
    );
    fleet.down().unwrap();
    assert_eq!(leftovers(slot), Vec::<String>::new());
    assert!(!dir.exists());
    for p in procs {
        assert!(!p.alive(), "process {} still running after down", p.pid);
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&dir.display().to_string()),
        "mount left under {}",
        dir.display()
    );
    assert!(
        !std::path::Path::new(&format!("/var/run/netns/flt{slot}h1")).exists(),
        "namespace left"
    );
}

/// Two fleets at once get distinct slots, subnets and names, and both work; the registry of
/// each is reachable from its hosts.
#[test]
fn two_fleets_do_not_collide() {
    let a = fleet(1);
    let b = fleet(1);
    assert_ne!(a.slot(), b.slot());
    assert_ne!(a.hosts[0].addr, b.hosts[0].addr);
    assert_ne!(a.registry(), b.registry());
    for f in [&a, &b] {
        let host = &f.hosts[0];
        // From inside the host: its registry answers.
        let reg = f.registry();
        let probe = format!(
            "exec 3<>/dev/tcp/{}/{} && printf 'GET /v2/ HTTP/1.0\\r\\n\\r\\n' >&3 && head -1 <&3",
            reg.split(':').next().unwrap(),
            5000
        );
        let out = f
            .on_host(host)
            .args(["bash", "-c", &probe])
            .output()
            .unwrap();
        assert_success(&out, "registry probe from the host");
        assert!(String::from_utf8_lossy(&out.stdout).contains("200"));
    }
}

/// A fleet left behind by a run that crashed (its owner killed with SIGKILL) is recognised
/// and removed by the next `up`.
#[test]
fn up_removes_a_fleet_left_by_a_crashed_run() {
    let mut holder = fleet_bin()
        .args(["up", "1", "--hold"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = holder.stdout.take().unwrap();
    let mut slot_dir = None;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("fleet ") {
            slot_dir = rest.split(" in ").nth(1).map(str::to_owned);
        }
        if line == "holding" {
            break;
        }
    }
    let slot_dir = slot_dir.expect("holder printed its fleet directory");
    let slot: u8 = slot_dir.rsplit("/s").next().unwrap().parse().unwrap();
    assert!(!leftovers(slot).is_empty());
    holder.kill().unwrap();
    holder.wait().unwrap();

    let fresh = fleet(1);
    // The stale fleet is gone, unless the fresh one reused its (now clean) slot.
    if fresh.slot() != slot {
        // Another test's `up` may be removing it at this moment too: allow it to finish.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !leftovers(slot).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(leftovers(slot), Vec::<String>::new());
    }
    assert!(fresh.ssh(&fresh.hosts[0], "true").unwrap().status.success());
}

/// A failure part-way through `up` removes what was already made and says what failed.
#[test]
fn failed_up_leaves_nothing_behind() {
    let before = slots_in_use();
    let out = fleet_bin()
        .args(["up", "2", "--name", "failing"])
        .env("FLOTILLA_FLEET_FAIL_BEFORE_ENGINES", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("flotilla-fleet: error:") && err.contains("engines"),
        "{err}"
    );
    // Another test may have started a fleet meanwhile; the failed one must not be among them.
    for slot in slots_in_use().difference(&before) {
        let state =
            std::fs::read_to_string(format!("{BASE_DIR}/s{slot}/fleet.json")).unwrap_or_default();
        assert!(
            !state.contains("\"failing\""),
            "failed fleet left in slot {slot}"
        );
    }
}

/// Run as an unprivileged user, `up` refuses in one line saying what is needed.
#[test]
fn up_needs_root_and_says_so() {
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_flotilla-fleet"))
        .args(["up", "1", "--name", "nobody"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs root"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

fn slots_in_use() -> HashSet<u8> {
    (0..50).filter(|&s| !leftovers(s).is_empty()).collect()
}

fn recorded_procs(fleet: &Fleet) -> Vec<Proc> {
    let text = std::fs::read_to_string(fleet.dir().join("fleet.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut procs = Vec::new();
    let mut push = |p: &serde_json::Value| {
        if let (Some(pid), Some(start)) = (p["pid"].as_i64(), p["start"].as_u64()) {
            procs.push(Proc {
                pid: pid as i32,
                start,
            });
        }
    };
    push(&v["registry"]);
    for m in v["machines"].as_array().unwrap() {
        push(&m["dockerd"]);
        push(&m["sshd"]);
    }
    procs
}

/// Polls an HTTP endpoint until it answers (a container takes a moment to bind its port).
fn wait_for_http(addr: SocketAddr, path: &str) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match http_get(addr, path) {
            Ok(answer) => return answer,
            Err(e) if Instant::now() > deadline => panic!("{addr}{path} never answered: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}
