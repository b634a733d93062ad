//! Kamal's everyday commands on the real fleet (`flotilla app ...`), checked as a user checks
//! them: the app's own output from every host, commands run in the app's image with their exit
//! status passed back, parseable `--json`.

use crate::project::{APP_SECRET, Project};
use crate::support::fleet;
use flotilla_e2e::fleet::Fleet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// The ssh: section that points Flotilla at the fleet's OpenSSH config (key, known_hosts).
fn ssh_section(fleet: &Fleet) -> String {
    format!("ssh:\n  config:\n    - {}\n", fleet.ssh_config().display())
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

    // logs -f follows: a restart of the container writes a new start-up line, which arrives.
    let mut follow = Command::new(&project.flotilla)
        .args(["app", "logs", "-f", "-T", "-n", "0", "-h", &hosts[0]])
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
    // The follower is attached once `docker logs` runs on the host; restart until it sees it.
    let mut seen = false;
    for _ in 0..FOLLOW_ATTEMPTS {
        let restarted = fleet
            .host_docker(&fleet.hosts[0])
            .args(["restart", "testapp-web-v1"])
            .output()
            .unwrap();
        assert!(restarted.status.success(), "{restarted:?}");
        if let Ok(line) = rx.recv_timeout(FOLLOW_WAIT) {
            assert!(line.contains("testapp v1 listening"), "{line}");
            seen = true;
            break;
        }
    }
    follow.kill().unwrap();
    let _ = follow.wait();
    assert!(seen, "app logs -f showed no new line");

    for out in [&logs, &details, &version, &exec_out, &text] {
        assert!(!out.contains(APP_SECRET), "secret in output:\n{out}");
    }
}

/// How many times the follow test restarts the container: the follower may attach after the
/// first restart's line was written (`-n 0` shows nothing older).
const FOLLOW_ATTEMPTS: usize = 5;
/// How long one restart's line may take to arrive through SSH on a loaded machine.
const FOLLOW_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
