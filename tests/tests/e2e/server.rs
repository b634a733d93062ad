//! `flotilla server exec` over SSH (russh) to the fleet's real OpenSSH servers.

use crate::project::Project;
use crate::support::fleet;

/// `flotilla server exec` runs a command on every host over SSH, in parallel, checking host
/// keys against known_hosts: each host answers with its own hostname (the same one OpenSSH's
/// client gets). With a known_hosts that lacks the hosts, nothing runs: each host is refused
/// with its SHA256 fingerprint and the command that accepts the key, and the exit code is 1.
#[test]
fn server_exec_runs_everywhere_and_refuses_unknown_host_keys() {
    let fleet = fleet(2);
    let project = Project::new(&fleet, "");
    let out = project.flotilla_ok(&["server", "exec", "--json", "hostname"], &[]);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), fleet.hosts.len(), "{out}");
    for (line, host) in lines.iter().zip(&fleet.hosts) {
        assert_eq!(line["host"], host.addr.to_string());
        assert_eq!(line["exit"], "exit status 0");
        let by_openssh = fleet.ssh(host, "hostname").unwrap();
        assert_eq!(
            line["stdout"].as_str().unwrap(),
            String::from_utf8_lossy(&by_openssh.stdout),
            "{} answers as over OpenSSH",
            host.addr
        );
    }
    let plain = project.flotilla_ok(
        &[
            "server",
            "exec",
            "-h",
            &fleet.hosts[0].addr.to_string(),
            "echo",
            "hi",
        ],
        &[],
    );
    assert_eq!(plain, format!("App Host: {}\nhi\n", fleet.hosts[0].addr));

    // The same hosts, with a known_hosts file that does not know them.
    let strict = project.root().join("strict_ssh_config");
    let empty = project.root().join("empty_known_hosts");
    std::fs::write(&empty, "").unwrap();
    std::fs::write(
        &strict,
        format!(
            "Host *\n  User root\n  IdentityFile {}\n  UserKnownHostsFile {}\n",
            fleet.ssh_key().display(),
            empty.display()
        ),
    )
    .unwrap();
    let config = std::fs::read_to_string(project.root().join("config/deploy.yml"))
        .unwrap()
        .replace(
            &fleet.ssh_config().display().to_string(),
            &strict.display().to_string(),
        );
    std::fs::write(project.root().join("config/strict.yml"), config).unwrap();
    let out = project.flotilla(
        &[
            "server",
            "exec",
            "-c",
            "config/strict.yml",
            "touch",
            "/tmp/flotilla-should-not-run",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for host in &fleet.hosts {
        assert!(err.contains(&host.addr.to_string()), "{err}");
        let ran = fleet
            .ssh(host, "test -e /tmp/flotilla-should-not-run")
            .unwrap();
        assert!(!ran.status.success(), "the command ran on {}", host.addr);
    }
    assert!(
        err.contains("SHA256:") && err.contains("ssh-keyscan"),
        "{err}"
    );
}
