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

/// CPU seconds of a process from /proc/PID/stat: (its own utime+stime, its reaped
/// children's cutime+cstime), at 100 ticks per second.
fn cpu(pid: &str) -> (f64, f64) {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return (0.0, 0.0);
    };
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<f64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // Fields 14-17 of the line are 11-14 after the state field (index 0 here).
    ((f[11] + f[12]) / 100.0, (f[13] + f[14]) / 100.0)
}

/// (client CPU: this process plus its reaped children, server CPU: every sshd with all its
/// descendants, live or reaped: per-connection processes and the shells they run), seconds.
fn cpu_now(sshds: &[harness::Sshd]) -> (f64, f64) {
    let (own, children) = cpu("self");
    // ppid of every live process, to walk the sshds' process trees.
    let mut kids: std::collections::HashMap<u32, Vec<u32>> = Default::default();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name();
        let Ok(pid) = name.to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let ppid = stat[close + 2..]
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        kids.entry(ppid).or_default().push(pid);
    }
    let mut server = 0.0;
    let mut stack: Vec<u32> = sshds.iter().map(|s| s.pid()).collect();
    while let Some(pid) = stack.pop() {
        // A process that exited since the listing moved its CPU into its parent's
        // children times, which are counted with the parent.
        if std::fs::metadata(format!("/proc/{pid}")).is_ok() {
            let (o, c) = cpu(&pid.to_string());
            server += o + c;
        }
        stack.extend(kids.get(&pid).into_iter().flatten());
    }
    (own + children, server)
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

/// `kex`: force OpenSSH's key exchange (its default against this sshd is
/// sntrup761x25519-sha512, which russh does not offer; the pool gets curve25519-sha256).
async fn openssh_round(lab: &Lab, port: u16, kex: Option<&str>) -> Duration {
    let t = Instant::now();
    let children: Vec<_> = (2..=101u8)
        .map(|n| {
            tokio::process::Command::new("ssh")
                .args(["-F", "/dev/null", "-o", "BatchMode=yes", "-o"])
                .arg(format!(
                    "UserKnownHostsFile={}",
                    lab.known_hosts().display()
                ))
                .args(kex.map(|k| format!("-oKexAlgorithms={k}")))
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
    let (sshds, port) = hundred_hosts(&lab);
    println!("load before: {}", load());
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    let (mut openssh, mut openssh_x25519) = (Vec::new(), Vec::new());
    // CPU seconds (client, server) summed over all rounds, per variant.
    let mut cpu_of = [(0.0, 0.0); 4];
    let mut account = |i: usize, before: (f64, f64), sshds: &[harness::Sshd]| {
        let after = cpu_now(sshds);
        cpu_of[i].0 += after.0 - before.0;
        cpu_of[i].1 += after.1 - before.1;
    };
    for _ in 0..rounds {
        let pool = Pool::new(lab.settings(&Ssh { port, ..lab.ssh() }));
        let t = cpu_now(&sshds);
        cold.push(pool_round(&pool).await);
        account(0, t, &sshds);
        let t = cpu_now(&sshds);
        warm.push(pool_round(&pool).await);
        account(1, t, &sshds);
        pool.close().await;
        let t = cpu_now(&sshds);
        openssh.push(openssh_round(&lab, port, None).await);
        account(2, t, &sshds);
        let t = cpu_now(&sshds);
        openssh_x25519.push(openssh_round(&lab, port, Some("curve25519-sha256")).await);
        account(3, t, &sshds);
    }
    let names = ["pool cold", "pool warm", "OpenSSH", "OpenSSH x25519"];
    for (name, (client, server)) in names.iter().zip(cpu_of) {
        let r = rounds as f64;
        println!(
            "CPU per round, {name}: client {:.2} s, server {:.2} s",
            client / r,
            server / r
        );
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
    println!(
        "100 x OpenSSH ssh, curve25519-sha256: median {:?} all {openssh_x25519:?}",
        median(openssh_x25519.clone())
    );
}
