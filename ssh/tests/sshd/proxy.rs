use flotilla_deploy::config::types::{Ssh, SshConfig};
use flotilla_ssh::{Error, HostKeyError, Pool};

use crate::harness::{Lab, addr};

/// `ssh.proxy` reaches the host through a jump host: both host keys are checked, the jump
/// connection is pooled, and the command runs on the target.
#[tokio::test]
async fn proxy_jump_through_a_second_sshd() {
    let lab = Lab::new();
    let target = lab.sshd("target", &[addr(12)], "");
    // The jump host may open channels to the target only.
    let jump = lab.sshd(
        "jump",
        &[addr(13)],
        &format!("PermitOpen 127.0.0.12:{}", target.port),
    );
    lab.trust(&jump);
    let ssh = Ssh {
        port: target.port,
        proxy: Some(format!("root@127.0.0.13:{}", jump.port)),
        ..lab.ssh()
    };
    let pool = Pool::new(lab.settings(&ssh));
    // The target's key is checked too, and this machine cannot keyscan a host behind a
    // jump, so the accept command appends the exact line.
    let err = pool.session("127.0.0.12").await.unwrap_err();
    let Error::HostKey(HostKeyError::Unknown { accept, .. }) = &err else {
        panic!("{err:?}")
    };
    assert!(
        accept.starts_with(&format!("echo '[127.0.0.12]:{} ssh-ed25519 ", target.port)),
        "{accept}"
    );
    std::process::Command::new("sh")
        .arg("-c")
        .arg(accept)
        .status()
        .unwrap();
    let out = pool.exec("127.0.0.12", "echo via-jump").await.unwrap();
    assert_eq!(out.stdout, b"via-jump\n");
    let stats = pool.stats();
    assert_eq!(stats.connections, 2, "{stats:?}");
    assert_eq!(
        stats.handshakes, 3,
        "jump once (pooled), target twice: {stats:?}"
    );
}

/// A `ProxyJump` from the user's OpenSSH config is followed when `ssh.config` reads it.
#[tokio::test]
async fn proxy_jump_from_openssh_config() {
    let lab = Lab::new();
    let target = lab.sshd("target", &[addr(14)], "");
    let jump = lab.sshd("jump", &[addr(15)], "");
    lab.trust(&target);
    lab.trust(&jump);
    let config = lab.path().join("ssh_config");
    std::fs::write(
        &config,
        format!(
            "Host app\n  HostName 127.0.0.14\n  Port {}\n  ProxyJump 127.0.0.15:{}\n",
            target.port, jump.port
        ),
    )
    .unwrap();
    let ssh = Ssh {
        config: Some(SshConfig::Files(vec![config.display().to_string()])),
        ..lab.ssh()
    };
    let pool = Pool::new(lab.settings(&ssh));
    let out = pool.exec("app", "echo app").await.unwrap();
    assert_eq!(out.stdout, b"app\n");
    assert_eq!(pool.stats().handshakes, 2);
}

/// `ssh.proxy_command` carries the connection over the command's stdin/stdout, with `%h`
/// and `%p` replaced: here OpenSSH's `ssh -W %h:%p` through a jump host, the usual use.
#[tokio::test]
async fn proxy_command_carries_the_connection() {
    let lab = Lab::new();
    let target = lab.sshd("target", &[addr(16)], "");
    let jump = lab.sshd("jump", &[addr(20)], "");
    lab.trust(&target);
    lab.trust(&jump);
    let marker = lab.path().join("proxied");
    let ssh = Ssh {
        port: target.port,
        proxy_command: Some(format!(
            "echo %h:%p > {marker} && exec ssh -F /dev/null -o BatchMode=yes \
             -o UserKnownHostsFile={kh} -i {key} -p {jport} root@127.0.0.20 -W %h:%p",
            marker = marker.display(),
            kh = lab.known_hosts().display(),
            key = lab.key.display(),
            jport = jump.port,
        )),
        ..lab.ssh()
    };
    let pool = Pool::new(lab.settings(&ssh));
    let out = pool.exec("127.0.0.16", "echo proxied").await.unwrap();
    assert_eq!(out.stdout, b"proxied\n");
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        format!("127.0.0.16:{}\n", target.port)
    );
    assert_eq!(
        pool.stats().handshakes,
        1,
        "the jump is the command's, not the pool's"
    );
}
