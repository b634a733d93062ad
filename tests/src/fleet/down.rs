//! Taking a fleet down: every process (by pid), namespace, interface, mount, cgroup and file
//! it made. Works from the slot alone, so a fleet whose state file was lost is still removed.

use super::error::FleetError;
use super::layout::{Layout, MAX_SLOTS, Role, cgroup_dirs};
use super::state::State;
use super::sys::{cmd, kill_all, pids_in_cgroup, pids_in_netns, run};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Highest host index `down` looks for when the state file is gone.
const MAX_HOSTS_SCAN: u8 = 64;

/// Removes everything of the fleet in `slot`. Continues past individual failures and reports
/// what it could not remove.
pub fn down_slot(slot: u8) -> Result<(), FleetError> {
    let l = Layout::new(slot);
    let state = State::load(&l.state_file()).ok();
    let hosts = state.as_ref().map_or(MAX_HOSTS_SCAN, |s| s.hosts.max(1));
    let mut roles: Vec<Role> = (1..=hosts).map(Role::Host).collect();
    roles.push(Role::Builder);

    // Containers first (they are test workloads: no grace needed, and an app that ignores
    // SIGTERM would hold its engine's shutdown for ten seconds), then the engines gracefully,
    // then the rest.
    for &role in &roles {
        for dir in cgroup_dirs(&l.cgroup_parent(role)) {
            kill_all(&pids_in_cgroup(&dir));
        }
    }
    if let Some(s) = &state {
        for m in &s.machines {
            if let Some(p) = m.dockerd {
                p.stop(Duration::from_secs(15));
            }
        }
        for p in s.all_procs() {
            p.stop(Duration::from_secs(5));
        }
    }
    // Whatever is left in the machines' namespaces or container cgroups is ours too.
    for &role in &roles {
        let mut pids = pids_in_netns(&l.netns_file(role));
        for dir in cgroup_dirs(&l.cgroup_parent(role)) {
            pids.extend(pids_in_cgroup(&dir));
        }
        pids.retain(|&p| p != std::process::id() as i32);
        kill_all(&pids);
    }
    for &role in &roles {
        for dir in cgroup_dirs(&l.cgroup_parent(role)) {
            remove_cgroup_tree(&dir);
        }
        let ns = l.netns(role);
        if l.netns_file(role).exists() {
            let _ = run(cmd("ip", ["netns", "del", &ns]));
        }
        if link_exists(&ns) {
            let _ = run(cmd("ip", ["link", "del", &ns]));
        }
    }
    if link_exists(&l.bridge()) {
        let _ = run(cmd("ip", ["link", "del", &l.bridge()]));
    }
    for m in mounts_under(&l.dir()) {
        let _ = run(cmd("umount", ["-l".as_ref(), m.as_os_str()]));
    }
    match std::fs::remove_dir_all(l.dir()) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(FleetError::Io {
                path: l.dir(),
                source: e,
            });
        }
        _ => {}
    }
    let left = leftovers(slot);
    if left.is_empty() {
        Ok(())
    } else {
        Err(FleetError::Leftovers(left))
    }
}

/// What of the fleet in `slot` still exists: namespaces, interfaces, mounts, files.
pub fn leftovers(slot: u8) -> Vec<String> {
    let l = Layout::new(slot);
    let prefix = l.prefix();
    let mut left = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/var/run/netns") {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if owned_name(&n, &prefix) {
                left.push(format!("network namespace {n}"));
            }
        }
    }
    if let Ok(rd) = std::fs::read_dir("/sys/class/net") {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if owned_name(&n, &prefix) {
                left.push(format!("interface {n}"));
            }
        }
    }
    for m in mounts_under(&l.dir()) {
        left.push(format!("mount {}", m.display()));
    }
    if l.dir().exists() {
        left.push(format!("directory {}", l.dir().display()));
    }
    left
}

/// `flt3h1`, `flt3b`, `flt3br` belong to slot 3; `flt31h1` does not.
fn owned_name(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .is_some_and(|rest| rest.starts_with('h') || rest.starts_with('b'))
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Mount points at or below `dir`, deepest first (the order to unmount them in).
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|line| line.split_whitespace().nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

fn remove_cgroup_tree(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// Slots that have anything on this machine: a directory or a leftover name.
pub fn used_slots() -> Vec<u8> {
    (0..MAX_SLOTS)
        .filter(|&s| Layout::new(s).dir().exists() || !leftovers(s).is_empty())
        .collect()
}
