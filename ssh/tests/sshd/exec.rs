use std::os::unix::fs::PermissionsExt;

use flotilla_ssh::{Event, Exit, Pty};
use sha2::{Digest, Sha256};

use crate::harness::{Lab, addr};

/// A command's stdout, stderr and exit status come back separately, and a failing command's
/// status is reported, not turned into an error; commands start in the test home (so the
/// shared /root/.bashrc and its pyenv init are not run).
#[tokio::test]
async fn exec_reports_output_and_exit_status() {
    let lab = Lab::new();
    let sshd = lab.sshd("s", &[addr(2)], "");
    lab.trust(&sshd);
    let pool = lab.pool(&sshd);
    let out = pool
        .exec("127.0.0.2", "echo out; echo err >&2; exit 3")
        .await
        .unwrap();
    assert_eq!(out.exit, Exit::Status(3));
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");
    assert!(!out.success());

    let out = pool
        .exec("127.0.0.2", "echo \"$HOME|${PYENV_ROOT:-}\"")
        .await
        .unwrap();
    let home = lab.path().join("remote-home");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("{}|\n", home.display())
    );

    let err = pool
        .session("127.0.0.2")
        .await
        .unwrap()
        .check("false")
        .await;
    assert!(
        err.unwrap_err()
            .to_string()
            .contains("`false` failed with exit status 1"),
    );
    assert_eq!(
        pool.stats().handshakes,
        1,
        "one connection for every command"
    );
}

/// Tens of megabytes of stdin (a `docker load` archive, say) are streamed to the command
/// intact.
#[tokio::test]
async fn large_stdin_arrives_intact() {
    let lab = Lab::new();
    let sshd = lab.sshd("s", &[addr(3)], "");
    lab.trust(&sshd);
    let pool = lab.pool(&sshd);
    let data: Vec<u8> = (0..40u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let expect = hex::encode(Sha256::digest(&data));
    let session = pool.session("127.0.0.3").await.unwrap();
    let out = session
        .exec_with_stdin("sha256sum", &data[..])
        .await
        .unwrap();
    assert!(out.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("{expect}  -\n")
    );
}

/// An upload writes the file with the asked mode, replacing what was there.
#[tokio::test]
async fn upload_writes_file_with_mode() {
    let lab = Lab::new();
    let sshd = lab.sshd("s", &[addr(4)], "");
    lab.trust(&sshd);
    let pool = lab.pool(&sshd);
    let path = lab.path().join("remote file's name");
    std::fs::write(&path, "old").unwrap();
    let session = pool.session("127.0.0.4").await.unwrap();
    session
        .upload(&b"SECRET=1\n"[..], path.to_str().unwrap(), 0o600)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"SECRET=1\n");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let err = session
        .upload(&b"x"[..], "/nonexistent-dir/file", 0o644)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("failed with exit status"), "{err}");
}

/// An interactive command gets a terminal, reads what is typed and reports its exit.
#[tokio::test]
async fn interactive_exec_has_a_tty() {
    let lab = Lab::new();
    let sshd = lab.sshd("s", &[addr(5)], "");
    lab.trust(&sshd);
    let pool = lab.pool(&sshd);
    let session = pool.session("127.0.0.5").await.unwrap();
    let pty = Pty {
        term: "xterm".into(),
        cols: 100,
        rows: 30,
    };
    let mut it = session
        .exec_pty("tty; stty size; read x; echo got-$x; exit 7", &pty)
        .await
        .unwrap();
    it.send(b"abc\n").await.unwrap();
    // On a PTY, sshd may report the exit before the last output: read until the channel
    // closes.
    let (mut output, mut exit) = (Vec::new(), None);
    while let Some(event) = it.next().await {
        match event {
            Event::Output(b) => output.extend(b),
            Event::Exit(e) => exit = Some(e),
        }
    }
    let text = String::from_utf8_lossy(&output);
    assert_eq!(exit, Some(Exit::Status(7)), "{text}");
    assert!(text.contains("/dev/pts/"), "{text}");
    assert!(text.contains("30 100"), "{text}");
    assert!(text.contains("got-abc"), "{text}");
}
