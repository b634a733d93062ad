use std::process::Command;

use flotilla_ssh::{Error, HostKeyError};

use crate::harness::{Lab, addr, keygen, run};

/// OpenSSH's own fingerprint of a public key file (`ssh-keygen -lf`), the oracle for ours.
fn openssh_fingerprint(pub_file: &std::path::Path) -> String {
    let out = run(Command::new("ssh-keygen").arg("-lf").arg(pub_file));
    out.split_whitespace().nth(1).unwrap().to_owned()
}

fn host_key_error(r: Result<flotilla_ssh::Session, Error>) -> HostKeyError {
    match r {
        Err(Error::HostKey(k)) => k,
        other => panic!("expected a host key error, got {other:?}"),
    }
}

/// An unknown host key stops the connection with the host, the fingerprint exactly as
/// `ssh-keygen -lf` prints it, and a command that, once run, makes the next connection
/// succeed; the accepted connection exposes the same fingerprint.
#[tokio::test]
async fn unknown_host_key_is_refused_with_fingerprint_and_accept_command() {
    let lab = Lab::new();
    let sshd = lab.sshd("s", &[addr(6)], "");
    let pool = lab.pool(&sshd);
    let err = host_key_error(pool.session("127.0.0.6").await);
    let fp = openssh_fingerprint(&sshd.host_key.with_extension("pub"));
    let HostKeyError::Unknown {
        host,
        fingerprint,
        accept,
        ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(host, &format!("[127.0.0.6]:{}", sshd.port));
    assert_eq!(fingerprint, &fp);
    assert_eq!(
        accept,
        &format!(
            "ssh-keyscan -p {} 127.0.0.6 >> {}",
            sshd.port,
            lab.known_hosts().display()
        )
    );
    assert!(err.to_string().contains(&fp));
    assert_eq!(pool.stats().connections, 0, "nothing pooled");

    run(Command::new("sh").arg("-c").arg(accept));
    let session = pool.session("127.0.0.6").await.unwrap();
    assert_eq!(session.host_key_fingerprint(), fp);
}

/// A host whose key changed is refused (never silently re-trusted) with where the old key is
/// and the `ssh-keygen -R` command; that command followed by keyscan lets it through.
#[tokio::test]
async fn changed_host_key_is_refused() {
    let lab = Lab::new();
    let sshd = lab.sshd("s", &[addr(7)], "");
    let old = keygen(&lab.path().join("old_host_key"));
    std::fs::write(
        lab.known_hosts(),
        format!("# old\n[127.0.0.7]:{} {}", sshd.port, old),
    )
    .unwrap();
    let pool = lab.pool(&sshd);
    let err = host_key_error(pool.session("127.0.0.7").await);
    let HostKeyError::Changed {
        fingerprint,
        known_at,
        accept,
        ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(
        fingerprint,
        &openssh_fingerprint(&sshd.host_key.with_extension("pub"))
    );
    assert_eq!(known_at, &format!("{}:2", lab.known_hosts().display()));
    assert!(accept.starts_with("ssh-keygen -R "), "{accept}");
    run(Command::new("sh").arg("-c").arg(accept));
    pool.session("127.0.0.7").await.unwrap();
}

/// known_hosts hashed by `ssh-keygen -H` (the Debian default for new entries) is read.
#[tokio::test]
async fn hashed_known_hosts_are_honoured() {
    let lab = Lab::new();
    let sshd = lab.sshd("s", &[addr(8)], "");
    lab.trust(&sshd);
    run(Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(lab.known_hosts()));
    let text = std::fs::read_to_string(lab.known_hosts()).unwrap();
    assert!(text.starts_with("|1|"), "{text}");
    lab.pool(&sshd).session("127.0.0.8").await.unwrap();
}
