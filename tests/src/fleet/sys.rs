//! Running system commands and handling processes by pid.
//!
//! Every process the fleet stops is one it recorded (pid plus kernel start time, so a reused
//! pid is never mistaken for ours) or one found inside a namespace or cgroup the fleet made.

use super::error::FleetError;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs a command to completion; a non-zero exit is an error carrying its stderr.
pub fn run(mut cmd: impl std::borrow::BorrowMut<Command>) -> Result<String, FleetError> {
    let cmd = cmd.borrow_mut();
    let described = describe(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| FleetError::Command {
            command: described.clone(),
            status: "not started".into(),
            stderr: e.to_string(),
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(FleetError::Command {
            command: described,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// `Command` for a program with arguments, in one call.
pub fn cmd<I, S>(program: &str, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut c = Command::new(program);
    c.args(args);
    c
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// A process the fleet started: its pid and its start time in clock ticks since boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proc {
    pub pid: i32,
    pub start: u64,
}

impl Proc {
    /// Records a just-spawned child.
    pub fn of(pid: u32) -> Option<Proc> {
        let pid = i32::try_from(pid).ok()?;
        start_time(pid).map(|start| Proc { pid, start })
    }

    /// True while the very process we recorded still exists (not a later one with its pid).
    pub fn alive(&self) -> bool {
        start_time(self.pid) == Some(self.start) && !is_zombie(self.pid)
    }

    /// Sends SIGTERM, waits up to `grace`, then SIGKILL; returns once it is gone.
    pub fn stop(&self, grace: Duration) {
        if !self.alive() {
            return;
        }
        let _ = kill(Pid::from_raw(self.pid), Signal::SIGTERM);
        if !wait_until(grace, || !self.alive()) {
            let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
            wait_until(Duration::from_secs(5), || !self.alive());
        }
    }
}

/// Start time of a process (field 22 of /proc/PID/stat), or None if it does not exist.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after it follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rfind(')')
                .map(|i| s[i + 2..].starts_with('Z') || s[i + 2..].starts_with('X'))
        })
        .unwrap_or(true)
}

/// How often [`wait_until`] looks again: external processes and servers have no event to
/// await, so their state is polled, briefly.
pub const POLL: Duration = Duration::from_millis(50);

/// Polls `done` every [`POLL`] until it holds or `limit` passes; says whether it held. The one
/// wait of the test suite, used only for external processes, which have no event to await.
pub fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

/// Every process whose network namespace is the one bound at `netns_file`.
pub fn pids_in_netns(netns_file: &Path) -> Vec<i32> {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(netns_file) else {
        return Vec::new();
    };
    let wanted = format!("net:[{}]", meta.ino());
    all_pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/ns/net"))
                .is_ok_and(|l| l.to_string_lossy() == wanted)
        })
        .collect()
}

/// Every process in a cgroup directory or below it (cgroup v1 or v2 layout alike).
pub fn pids_in_cgroup(dir: &Path) -> Vec<i32> {
    let mut pids = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(s) = std::fs::read_to_string(d.join("cgroup.procs")) {
            pids.extend(s.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
        if let Ok(entries) = std::fs::read_dir(&d) {
            stack.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
    pids
}

fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// SIGKILLs each pid and waits for them to go (bounded).
pub fn kill_all(pids: &[i32]) {
    for &pid in pids {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    wait_until(Duration::from_secs(5), || {
        pids.iter()
            .all(|&p| start_time(p).is_none() || is_zombie(p))
    });
}

/// Looks a program up on PATH (plus the sbin directories root has).
pub fn which(binary: &str) -> bool {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"])
        .any(|dir| Path::new(dir).join(binary).is_file())
}
