use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use flotilla_deploy::config::secrets::Secret;
use flotilla_deploy::config::types::{Ssh, Sshkit};
use flotilla_ssh::{Error, Pool, Settings};

use crate::harness::{Lab, addr, run};

/// A private key given inline (`ssh.key_data`, usually from a secret) logs in, with no key
/// file and no agent.
#[tokio::test]
async fn key_data_authenticates() {
    let lab = Lab::new();
    let sshd = lab.sshd("s", &[addr(9)], "");
    lab.trust(&sshd);
    let ssh = Ssh {
        port: sshd.port,
        keys: Vec::new(),
        key_data: vec![Secret::new(std::fs::read_to_string(&lab.key).unwrap())],
        ..lab.ssh()
    };
    let out = Pool::new(lab.settings(&ssh))
        .exec("127.0.0.9", "echo in")
        .await
        .unwrap();
    assert_eq!(out.stdout, b"in\n");
}

/// With no usable key the error names the user, host and what was tried.
#[tokio::test]
async fn no_accepted_key_is_a_clear_error() {
    let lab = Lab::new();
    let sshd = lab.sshd("s", &[addr(10)], "");
    lab.trust(&sshd);
    let other = lab.path().join("other_key");
    crate::harness::keygen(&other);
    let ssh = Ssh {
        port: sshd.port,
        keys: vec![other.display().to_string()],
        ..lab.ssh()
    };
    let err = Pool::new(lab.settings(&ssh))
        .session("127.0.0.10")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AuthFailed { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "root@127.0.0.10: permission denied, no key was accepted (tried: {})",
            other.display()
        )
    );
}

/// An ssh-agent of our own, killed by pid on drop.
struct Agent {
    child: Child,
    socket: std::path::PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_agent(lab: &Lab) -> Agent {
    let socket = lab.path().join("agent.sock");
    let mut child = Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ssh-agent");
    // In the foreground, ssh-agent prints its SSH_AUTH_SOCK line once the socket listens.
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("SSH_AUTH_SOCK="), "{line}");
    Agent { child, socket }
}

/// Keys held by the ssh-agent (`SSH_AUTH_SOCK`) log in when no key file is configured.
#[tokio::test]
async fn agent_authenticates() {
    let lab = Lab::new();
    let sshd = lab.sshd("s", &[addr(11)], "");
    lab.trust(&sshd);
    let agent = start_agent(&lab);
    run(Command::new("ssh-add")
        .arg(&lab.key)
        .env("SSH_AUTH_SOCK", &agent.socket));
    let mut env = lab.env();
    env.auth_sock = Some(agent.socket.clone());
    let ssh = Ssh {
        port: sshd.port,
        keys: Vec::new(),
        keys_only: None,
        ..lab.ssh()
    };
    let pool = Pool::new(Settings::from_kamal(&ssh, &Sshkit::default(), env.clone()));
    let out = pool.exec("127.0.0.11", "echo agent").await.unwrap();
    assert_eq!(out.stdout, b"agent\n");

    // keys_only turns the agent off: the same setup is refused.
    let only = Ssh {
        keys_only: Some(true),
        ..ssh
    };
    let err = Pool::new(Settings::from_kamal(&only, &Sshkit::default(), env))
        .session("127.0.0.11")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AuthFailed { .. }), "{err:?}");
}
