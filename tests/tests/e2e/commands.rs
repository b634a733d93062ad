//! Kamal's everyday commands on the real fleet (`flotilla app ...`), checked as a user checks
//! them: the app's own output from every host, commands run in the app's image with their exit
//! status passed back, parseable `--json`.

use crate::project::{APP_SECRET, Project};
use crate::support::{fleet, http_get};
use flotilla_e2e::fleet::Fleet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// The project's own `ssh:` section already points Flotilla at the fleet's OpenSSH config
/// (see `project.rs`): nothing to add.
fn ssh_section(_fleet: &Fleet) -> String {
    String::new()
}

/// Each host's section of Kamal's `App Host: HOST` output.
fn by_host(out: &str, host: &str) -> String {
    let marker = format!("App Host: {host}\n");
    let Some(start) = out.find(&marker) else {
        panic!("no section for {host} in:\n{out}")
    };
    let rest = &out[start + marker.len()..];
    rest.split("App Host: ")
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// After a deploy: `app logs` shows the app's start-up line from every host; `app details
/// --json` and `app version` report the deployed container on each; `app exec` runs in the
/// app's image with the role's env and secret (from a 0600 env file, never on a command line),
/// passes on the command's exit status and names the failing hosts; `--reuse` runs in the
/// running container; `-i` runs through a real pseudo-terminal and returns the exit status;
/// `app logs -f` shows lines as the app writes them. No output carries the secret.
#[test]
fn app_logs_details_version_and_exec() {
    let fleet = fleet(2);
    let project = Project::new(&fleet, &ssh_section(&fleet));
    project.flotilla_ok(&["deploy", "--version", "v1"], &[("APP_VERSION", "v1")]);
    let hosts: Vec<String> = fleet.hosts.iter().map(|h| h.addr.to_string()).collect();

    let logs = project.flotilla_ok(&["app", "logs"], &[]);
    for host in &hosts {
        let section = by_host(&logs, host);
        assert!(
            section.contains("testapp v1 listening on 0.0.0.0:80"),
            "{host}'s log:\n{logs}"
        );
    }
    let grep = project.flotilla_ok(&["app", "logs", "--grep", "no-such-line"], &[]);
    assert!(
        by_host(&grep, &hosts[0]).contains("Nothing found"),
        "{grep}"
    );

    let details = project.flotilla_ok(&["app", "details", "--json"], &[]);
    let lines: Vec<serde_json::Value> = details
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), hosts.len(), "{details}");
    for (line, host) in lines.iter().zip(&hosts) {
        assert_eq!(line["host"], host.as_str());
        assert!(
            line["stdout"].as_str().unwrap().contains("testapp-web-v1"),
            "{details}"
        );
    }
    let version = project.flotilla_ok(&["app", "version"], &[]);
    for host in &hosts {
        assert_eq!(by_host(&version, host).trim(), "v1", "{version}");
    }

    // A new container of the app's image, with the role's clear and secret env.
    let secret = format!("APP_SECRET={APP_SECRET}");
    let ok = project.flotilla(
        &["app", "exec", "has-env", "APP_MODE=healthy", &secret],
        &[],
    );
    let exec_out = String::from_utf8_lossy(&ok.stdout).into_owned();
    assert!(
        ok.status.success(),
        "{exec_out}\n{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    for host in &hosts {
        assert!(
            by_host(&exec_out, host).contains("APP_SECRET: as expected"),
            "{exec_out}"
        );
    }
    // The command's exit status comes back, and the error names every host it failed on.
    let failed = project.flotilla(&["app", "exec", "--env", "APP_MODE=exit", "run"], &[]);
    assert_eq!(failed.status.code(), Some(3), "{failed:?}");
    let err = String::from_utf8_lossy(&failed.stderr);
    for host in &hosts {
        assert!(err.contains(host.as_str()), "{err}");
    }
    // --reuse: the running container itself (its KAMAL_CONTAINER_NAME is the deployed one).
    let reuse = project.flotilla_ok(
        &[
            "app",
            "exec",
            "--reuse",
            "-p",
            "/app",
            "has-env",
            "KAMAL_CONTAINER_NAME=testapp-web-v1",
        ],
        &[],
    );
    assert!(
        reuse.contains("KAMAL_CONTAINER_NAME: as expected"),
        "{reuse}"
    );
    assert!(
        !reuse.contains(&hosts[1]),
        "-p runs on the primary host only:\n{reuse}"
    );

    // -i through a real pseudo-terminal (util-linux `script`), exit status passed back.
    let interactive = Command::new("script")
        .args(["-qec"])
        .arg(format!(
            "{} app exec -i --env APP_MODE=exit run",
            project.flotilla.display()
        ))
        .arg("/dev/null")
        .current_dir(project.root())
        .env_remove("KAMAL_DESTINATION")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&interactive.stdout).into_owned();
    assert_eq!(interactive.status.code(), Some(3), "{text}");
    assert!(text.contains("APP_MODE=exit, exiting at start"), "{text}");

    // logs -f follows: once it shows the last line, a line the app writes afterwards arrives.
    let mut follow = Command::new(&project.flotilla)
        .args(["app", "logs", "-f", "-T", "-n", "1", "-h", &hosts[0]])
        .current_dir(project.root())
        .env_remove("KAMAL_DESTINATION")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = rx.recv_timeout(FOLLOW_WAIT);
    let asked = http_get(
        std::net::SocketAddr::from((fleet.hosts[0].addr, 80)),
        "/log?followed-line",
    );
    let second = rx.recv_timeout(FOLLOW_WAIT);
    follow.kill().unwrap();
    let _ = follow.wait();
    assert!(matches!(asked, Ok((200, _))), "{asked:?}");
    let first = first.expect("app logs -f shows the last line");
    assert!(first.contains("testapp v1 listening"), "{first}");
    let second = second.expect("app logs -f shows the line written after it started");
    assert_eq!(second, "testapp log: followed-line");

    for out in [&logs, &details, &version, &exec_out, &text] {
        assert!(!out.contains(APP_SECRET), "secret in output:\n{out}");
    }
}

/// How long a log line may take to arrive through SSH on a loaded machine.
const FOLLOW_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Names of the service's containers on `host` with this Docker status, newest first.
fn containers(fleet: &Fleet, host: &flotilla_e2e::fleet::Host, status: &str) -> Vec<String> {
    let out = fleet
        .host_docker(host)
        .args([
            "ps",
            "-a",
            "--filter",
            "label=service=testapp",
            "--filter",
            &format!("status={status}"),
            "--format",
            "{{.Names}}",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// After three deploys: `app stop` and `app start` stop and start the running container, and
/// `app boot` after a stop serves the current version again; an
/// older version running again is reported by `app stale_containers` and stopped by `--stop`;
/// an app container's log is capped at Kamal's default `max-size=10m`;
/// `prune containers --retain 1` keeps only the newest stopped container (and the running one);
/// while someone holds the deploy lock, `prune` refuses and says who holds it; `app
/// maintenance --message` makes the proxy answer 503 with the message and `app live` serves
/// the app again without failed requests; `build pull` pulls a version's image on the host;
/// `prune images` removes the image no container uses and keeps the rollback target's;
/// `audit --json` lists each deploy with its actor,
/// version, hosts and outcome, and each of these state-changing commands as what it was
/// (`app stop`, `prune containers --retain 1`, ...) with its hosts and outcome.
#[test]
fn app_stop_start_prune_lock_and_audit() {
    let fleet = fleet(1);
    let project = Project::new(&fleet, &ssh_section(&fleet));
    for v in ["v1", "v2", "v3"] {
        project.flotilla_ok(&["deploy", "--version", v], &[("APP_VERSION", v)]);
    }
    let host = &fleet.hosts[0];
    assert_eq!(containers(&fleet, host, "running"), ["testapp-web-v3"]);
    // The config sets no logging: Kamal's default caps the engine's default (json-file) log.
    let log = fleet
        .host_docker(host)
        .args([
            "inspect",
            "testapp-web-v3",
            "--format",
            "{{.HostConfig.LogConfig.Type}} {{index .HostConfig.LogConfig.Config \"max-size\"}}",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&log.stdout).trim(), "json-file 10m");
    assert_eq!(
        containers(&fleet, host, "exited"),
        ["testapp-web-v2", "testapp-web-v1"]
    );

    project.flotilla_ok(&["app", "stop"], &[]);
    assert!(containers(&fleet, host, "running").is_empty());
    // The stop ran on the host's executor, so the host's own report is in the log, and
    // history lists it beside the releases.
    let history = project.flotilla_ok(&["history", "--json"], &[]);
    let last: serde_json::Value = serde_json::from_str(history.lines().last().unwrap()).unwrap();
    assert_eq!(
        (&last["kind"], &last["operation"], &last["outcome"]),
        (
            &serde_json::json!("app stop"),
            &serde_json::json!(true),
            &serde_json::json!("completed")
        ),
        "{history}"
    );
    let replay = project.flotilla_ok(&["replay", last["deploy_id"].as_str().unwrap()], &[]);
    assert!(replay.contains("OldContainerStopped"), "{replay}");
    project.flotilla_ok(&["app", "start"], &[]);
    assert_eq!(containers(&fleet, host, "running"), ["testapp-web-v3"]);
    // `app boot` after a stop: the scheduler rolls the current version out again.
    project.flotilla_ok(&["app", "stop"], &[]);
    project.flotilla_ok(&["app", "boot"], &[]);
    assert_eq!(containers(&fleet, host, "running"), ["testapp-web-v3"]);
    assert_eq!(
        http_get(std::net::SocketAddr::from((host.addr, 80)), "/version")
            .unwrap()
            .1
            .trim(),
        "v3"
    );

    // An older version started again by hand is stale: reported, then stopped with --stop.
    crate::support::ssh_ok(&fleet, host, "docker start testapp-web-v2");
    let stale = project.flotilla_ok(&["app", "stale_containers"], &[]);
    assert!(
        stale.contains("Detected stale container for role web with version v2"),
        "{stale}"
    );
    project.flotilla_ok(&["app", "stale_containers", "--stop"], &[]);
    assert_eq!(containers(&fleet, host, "running"), ["testapp-web-v3"]);

    project.flotilla_ok(&["lock", "acquire", "-m", "db migration"], &[]);
    let refused = project.flotilla(&["prune", "containers", "--retain", "1"], &[]);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("the deploy lock is taken") && err.contains("db migration"),
        "{err}"
    );
    assert_eq!(
        containers(&fleet, host, "exited").len(),
        2,
        "nothing pruned"
    );
    project.flotilla_ok(&["lock", "release"], &[]);

    project.flotilla_ok(&["prune", "containers", "--retain", "1"], &[]);
    assert_eq!(containers(&fleet, host, "exited"), ["testapp-web-v2"]);
    assert_eq!(containers(&fleet, host, "running"), ["testapp-web-v3"]);

    // Maintenance: the host's proxy answers 503 with the message, then forwards again.
    let web = std::net::SocketAddr::from((host.addr, 80));
    project.flotilla_ok(&["app", "maintenance", "--message", "Back at ten"], &[]);
    let (status, body) = http_get(web, "/").unwrap();
    assert_eq!((status, body.trim()), (503, "Back at ten"));
    project.flotilla_ok(&["app", "live"], &[]);
    for _ in 0..LIVE_REQUESTS {
        let (status, body) = http_get(web, "/version").unwrap();
        assert_eq!((status, body.trim()), (200, "v3"));
    }

    // The pushed image of an earlier version is pulled on the host again after it is removed.
    let image = format!("{}/testapp:v1", fleet.registry());
    crate::support::ssh_ok(
        &fleet,
        host,
        &format!("docker image rm -f {image} >/dev/null"),
    );
    project.flotilla_ok(&["build", "pull", "--version", "v1"], &[]);
    crate::support::ssh_ok(
        &fleet,
        host,
        &format!("docker image inspect {image} >/dev/null"),
    );
    let details = project.flotilla_ok(&["build", "details", "--version", "v1"], &[]);
    assert!(details.contains(&format!("Tags: {image}")), "{details}");

    // `prune images` on the host's executor: v1's image, which no container uses, goes; the
    // running v3's and the rollback target v2's stay.
    project.flotilla_ok(&["prune", "images"], &[]);
    let tags = fleet
        .host_docker(host)
        .args([
            "images",
            "--filter",
            "label=service=testapp",
            "--format",
            "{{.Tag}}",
        ])
        .output()
        .unwrap();
    let mut tags: Vec<String> = String::from_utf8_lossy(&tags.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    tags.sort();
    assert_eq!(tags, ["v2", "v3"]);

    let audit = project.flotilla_ok(&["audit", "--json"], &[]);
    let all: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // First, the enrolment of the host (who trusted its keys, when), then the deploys and,
    // between them, each state-changing command as itself (a refused one is not there).
    let kinds: Vec<&str> = all.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "enroll",
            "deploy",
            "deploy",
            "deploy",
            "app stop",
            "app start",
            "app stop",
            "deploy",
            "app stale_containers --stop",
            "prune containers --retain 1",
            "app maintenance",
            "app live",
            "prune images",
        ],
        "{audit}"
    );
    assert_eq!(all[0]["outcome"], "enrolled", "{audit}");
    assert_eq!(all[0]["hosts"], serde_json::json!([host.addr.to_string()]));
    let deploys: Vec<&serde_json::Value> = all.iter().filter(|e| e["kind"] == "deploy").collect();
    let versions: Vec<&str> = deploys
        .iter()
        .map(|e| e["version"].as_str().unwrap())
        .collect();
    // The three deploys, then `app boot`'s redeploy of v3.
    assert_eq!(versions, ["v1", "v2", "v3", "v3"], "{audit}");
    let hosts = serde_json::json!([host.addr.to_string()]);
    for e in &all[1..] {
        assert_eq!(e["outcome"], "completed", "{audit}");
        assert_eq!(e["hosts"], hosts, "{audit}");
        assert!(!e["actor"].as_str().unwrap().is_empty(), "{audit}");
    }
    for e in all
        .iter()
        .filter(|e| e["kind"] != "deploy" && e["kind"] != "enroll")
    {
        assert_eq!(e["succeeded"], hosts, "{audit}");
    }
}

/// `accessory boot` runs the accessory with its `directories:` made and its `files:` uploaded
/// (the `.erb` one rendered with the accessory's env), its secret env in place, and `details`
/// lists it beside the app; a second boot
/// skips the host; `reboot` keeps what is in its directory; `remove` needs `-y`, then removes
/// the container and its files from the host.
#[test]
fn accessory_boot_reboot_remove() {
    let fleet = fleet(1);
    let host = &fleet.hosts[0];
    // Accessory files live under the SSH user's home, which the fleet's hosts share with this
    // machine: a name per fleet slot keeps concurrent fleets apart.
    let service = format!("e2e-db-s{}", fleet.slot());
    let extra = format!(
        "{ssh}accessories:\n  db:\n    service: {service}\n    image: {registry}/testapp:v1\n    \
         host: {addr}\n    env:\n      clear:\n        DB_NAME: flotilla\n      secret:\n        \
         - APP_SECRET\n    files:\n      - config/db.conf.erb:/etc/db.conf\n    directories:\n      \
         - data:/data\n",
        ssh = ssh_section(&fleet),
        registry = fleet.registry(),
        addr = host.addr,
    );
    let project = Project::new(&fleet, &extra);
    std::fs::write(
        project.root().join("config/db.conf.erb"),
        "name=<%= ENV[\"DB_NAME\"] %>\n",
    )
    .unwrap();
    // The image the accessory runs is the app's, pushed by a deploy.
    project.flotilla_ok(&["deploy", "--version", "v1"], &[("APP_VERSION", "v1")]);

    project.flotilla_ok(&["accessory", "boot", "db"], &[]);
    let sh = |cmd: &str| crate::support::ssh_ok(&fleet, host, cmd);
    assert_eq!(sh(&format!("cat {service}/etc/db.conf")), "name=flotilla");
    assert_eq!(sh(&format!("stat -c %a {service}/etc/db.conf")), "755");
    let mounts = sh(&format!(
        "docker inspect {service} --format '{{{{range .Mounts}}}}{{{{.Destination}}}} {{{{end}}}}'"
    ));
    assert!(
        mounts.contains("/data") && mounts.contains("/etc/db.conf"),
        "{mounts}"
    );
    assert_eq!(
        sh(&format!(
            "docker inspect {service} --format '{{{{.State.Status}}}}'"
        )),
        "running"
    );
    let secret = format!("APP_SECRET={APP_SECRET}");
    let env = project.flotilla_ok(
        &[
            "accessory",
            "exec",
            "db",
            "--reuse",
            "/app",
            "has-env",
            "DB_NAME=flotilla",
            &secret,
        ],
        &[],
    );
    assert!(env.contains("APP_SECRET: as expected"), "{env}");
    let details = project.flotilla_ok(&["accessory", "details", "db", "--json"], &[]);
    let line: serde_json::Value = serde_json::from_str(details.trim()).unwrap();
    assert!(
        line["stdout"].as_str().unwrap().contains(&service),
        "{details}"
    );

    let all = project.flotilla_ok(&["details"], &[]);
    assert!(
        all.contains(&format!("App Host: {}", host.addr))
            && all.contains(&format!("Accessory db Host: {}", host.addr))
            && all.contains("testapp-web-v1")
            && all.contains(&service),
        "{all}"
    );

    let again = project.flotilla(&["accessory", "boot", "db"], &[]);
    assert!(again.status.success(), "{again:?}");
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("a container already exists"),
        "{again:?}"
    );

    sh(&format!("echo kept > {service}/data/marker"));
    let before = sh(&format!("docker inspect {service} --format '{{{{.Id}}}}'"));
    project.flotilla_ok(&["accessory", "reboot", "db"], &[]);
    let after = sh(&format!("docker inspect {service} --format '{{{{.Id}}}}'"));
    assert_ne!(before, after, "reboot made a new container");
    assert_eq!(sh(&format!("cat {service}/data/marker")), "kept");

    let unconfirmed = project.flotilla(&["accessory", "remove", "db"], &[]);
    assert_eq!(unconfirmed.status.code(), Some(64), "{unconfirmed:?}");
    project.flotilla_ok(&["accessory", "remove", "db", "-y"], &[]);
    assert_eq!(
        sh(&format!(
            "docker ps -a -q --filter label=service={service} | wc -l; test -e {service} && echo left || echo gone"
        )),
        "0\ngone"
    );
}

/// Requests that must all succeed once the app is live again.
const LIVE_REQUESTS: usize = 20;

mod accessory;
mod maintenance;
mod proxy;
mod service;
