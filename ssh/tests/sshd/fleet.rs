use std::sync::Arc;

use flotilla_deploy::config::types::{Ssh, Sshkit};
use flotilla_ssh::{Pool, Settings};

use crate::harness::{Lab, addr, hundred_hosts};

/// Three commands on each of 100 hosts, all at once through one pool: every command
/// succeeds, each host gets exactly one connection, and no handshake is reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_hosts_in_parallel() {
    let lab = Lab::new();
    let (_sshds, port) = hundred_hosts(&lab);
    let pool = Pool::new(lab.settings(&Ssh { port, ..lab.ssh() }));
    let mut tasks = Vec::new();
    for n in 2..=101u8 {
        for k in 0..3 {
            let pool = pool.clone();
            tasks.push(tokio::spawn(async move {
                let host = addr(n).to_string();
                let out = pool.exec(&host, &format!("echo {host}-{k}")).await?;
                Ok::<_, flotilla_ssh::Error>((host, k, out))
            }));
        }
    }
    for t in tasks {
        let (host, k, out) = t.await.unwrap().unwrap();
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            format!("{host}-{k}\n")
        );
    }
    let stats = pool.stats();
    assert_eq!(stats.connections, 100, "{stats:?}");
    assert_eq!(stats.handshakes, 100, "{stats:?}");
    assert!(stats.peak_concurrent_handshakes <= 30, "{stats:?}");
}

/// `sshkit.max_concurrent_starts` caps the handshakes in flight, while the commands still
/// run in parallel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_cap_is_honoured() {
    let lab = Lab::new();
    let addrs: Vec<_> = (60..72u8).map(addr).collect();
    let sshd = lab.sshd("cap", &addrs, "");
    lab.trust(&sshd);
    let sshkit = Sshkit {
        max_concurrent_starts: 3,
        ..Sshkit::default()
    };
    let ssh = Ssh {
        port: sshd.port,
        ..lab.ssh()
    };
    let pool = Arc::new(Pool::new(Settings::from_kamal(&ssh, &sshkit, lab.env())));
    let tasks: Vec<_> = sshd
        .hosts()
        .into_iter()
        .map(|h| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.exec(&h, "true").await })
        })
        .collect();
    for t in tasks {
        assert!(t.await.unwrap().unwrap().success());
    }
    let stats = pool.stats();
    assert_eq!(stats.handshakes, 12);
    assert!(
        (2..=3).contains(&stats.peak_concurrent_handshakes),
        "handshakes overlapped up to the cap and never past it: {stats:?}"
    );
}

/// A connection that died (its server process killed) is replaced on the next command, and
/// an idle one is closed by `close_idle` only when nobody holds it.
#[tokio::test]
async fn dead_connection_is_replaced_and_idle_closed() {
    let lab = Lab::new();
    let sshd = lab.sshd("s", &[addr(19)], "");
    lab.trust(&sshd);
    let ssh = Ssh {
        port: sshd.port,
        ..lab.ssh()
    };
    let sshkit = Sshkit {
        pool_idle_timeout: 0,
        ..Sshkit::default()
    };
    let pool = Pool::new(Settings::from_kamal(&ssh, &sshkit, lab.env()));
    // The command's parent is this connection's sshd process: killing it drops the link.
    let _ = pool.exec("127.0.0.19", "kill -9 $PPID").await;
    let out = pool.exec("127.0.0.19", "echo again").await.unwrap();
    assert_eq!(out.stdout, b"again\n");
    assert_eq!(pool.stats().handshakes, 2);

    let held = pool.session("127.0.0.19").await.unwrap();
    assert_eq!(pool.close_idle().await, 0, "a held connection is not idle");
    drop(held);
    assert_eq!(pool.close_idle().await, 1);
    assert_eq!(pool.stats().connections, 0);
    pool.exec("127.0.0.19", "true").await.unwrap();
    assert_eq!(pool.stats().handshakes, 3);
}

/// More commands at once on one host than OpenSSH's default `MaxSessions` (10) all succeed:
/// they share the host's one connection and wait for a free channel instead of being refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_commands_than_max_sessions_on_one_host() {
    let lab = Lab::new();
    let sshd = lab.sshd("s", &[addr(21)], "MaxSessions 10");
    lab.trust(&sshd);
    let pool = lab.pool(&sshd);
    // Each command holds its channel a moment so that all 25 overlap: without the pool's
    // per-connection limit, sshd would refuse the channels past its tenth.
    let tasks: Vec<_> = (0..25)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move {
                pool.exec("127.0.0.21", &format!("sleep 0.2; echo {i}"))
                    .await
            })
        })
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        assert_eq!(
            t.await.unwrap().unwrap().stdout,
            format!("{i}\n").into_bytes()
        );
    }
    assert_eq!(pool.stats().handshakes, 1);
}
