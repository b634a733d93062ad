//! `exec true` on 100 hosts at once: through one flotilla-ssh pool (cold: handshakes
//! included; warm: connections reused) against 100 OpenSSH `ssh` processes, interleaved
//! rounds on the same sshds (see `tests/sshd/harness.rs`). Prints medians; timings are for
//! BENCHMARKS.md, never for pass/fail.
//!
//! `cargo bench -p flotilla-ssh --bench hundred_hosts -- [ROUNDS]`
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/sshd/harness.rs"]
#[allow(dead_code)]
mod harness;

use std::time::{Duration, Instant};

use flotilla_deploy::config::types::Ssh;
use flotilla_ssh::Pool;
use harness::{Lab, addr, hundred_hosts};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

async fn pool_round(pool: &Pool) -> Duration {
    let t = Instant::now();
    let tasks: Vec<_> = (2..=101u8)
        .map(|n| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.exec(&addr(n).to_string(), "true").await })
        })
        .collect();
    for task in tasks {
        assert!(task.await.unwrap().unwrap().success());
    }
    t.elapsed()
}

async fn openssh_round(lab: &Lab, port: u16) -> Duration {
    let t = Instant::now();
    let children: Vec<_> = (2..=101u8)
        .map(|n| {
            tokio::process::Command::new("ssh")
                .args(["-F", "/dev/null", "-o", "BatchMode=yes", "-o"])
                .arg(format!(
                    "UserKnownHostsFile={}",
                    lab.known_hosts().display()
                ))
                .arg("-i")
                .arg(&lab.key)
                .arg("-p")
                .arg(port.to_string())
                .arg(format!("root@{}", addr(n)))
                .arg("true")
                .stdin(std::process::Stdio::null())
                .status()
        })
        .collect();
    for status in futures_join(children).await {
        assert!(status.unwrap().success());
    }
    t.elapsed()
}

async fn futures_join<F>(fs: Vec<F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = fs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::main]
async fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5);
    let lab = Lab::new();
    let (_sshds, port) = hundred_hosts(&lab);
    println!("load before: {}", load());
    let (mut cold, mut warm, mut openssh) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let pool = Pool::new(lab.settings(&Ssh { port, ..lab.ssh() }));
        cold.push(pool_round(&pool).await);
        warm.push(pool_round(&pool).await);
        pool.close().await;
        openssh.push(openssh_round(&lab, port).await);
    }
    println!("load after: {}", load());
    println!("rounds: {rounds}");
    println!(
        "pool, cold (100 handshakes + exec): median {:?} all {cold:?}",
        median(cold.clone())
    );
    println!(
        "pool, warm (100 exec on open connections): median {:?} all {warm:?}",
        median(warm.clone())
    );
    println!(
        "100 x OpenSSH ssh: median {:?} all {openssh:?}",
        median(openssh.clone())
    );
}
