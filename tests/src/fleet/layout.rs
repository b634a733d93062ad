//! Names, addresses and paths of a fleet, all derived from its slot number.
//!
//! Deriving everything from the slot is what lets `down` clean up a fleet whose state file was
//! lost in a crash: it knows which namespaces, links, mounts and cgroups to look for.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// Where fleets keep their files; one directory per slot.
pub const BASE_DIR: &str = "/var/lib/flotilla-fleet";
/// Slots 0..MAX_SLOTS; each fleet gets `10.199.SLOT.0/24` for its hosts.
pub const MAX_SLOTS: u8 = 50;
/// Port of the fleet's Docker registry on the bridge address.
pub const REGISTRY_PORT: u16 = 5000;

/// Which machine of the fleet: a deploy target, or the builder (the "laptop" Docker that
/// builds and pushes images, with no SSH server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Host(u8),
    Builder,
}

#[derive(Debug, Clone)]
pub struct Layout {
    pub slot: u8,
}

impl Layout {
    pub fn new(slot: u8) -> Layout {
        Layout { slot }
    }

    pub fn dir(&self) -> PathBuf {
        Path::new(BASE_DIR).join(format!("s{}", self.slot))
    }

    pub fn state_file(&self) -> PathBuf {
        self.dir().join("fleet.json")
    }

    /// Directory bound onto itself with private propagation, holding the namespace files.
    pub fn ns_dir(&self) -> PathBuf {
        self.dir().join("ns")
    }

    pub fn prefix(&self) -> String {
        format!("flt{}", self.slot)
    }

    pub fn bridge(&self) -> String {
        format!("flt{}br", self.slot)
    }

    pub fn bridge_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 199, self.slot, 1)
    }

    pub fn registry(&self) -> String {
        format!("{}:{REGISTRY_PORT}", self.bridge_addr())
    }

    pub fn ssh_key(&self) -> PathBuf {
        self.dir().join("id_ed25519")
    }

    pub fn known_hosts(&self) -> PathBuf {
        self.dir().join("known_hosts")
    }

    pub fn ssh_config(&self) -> PathBuf {
        self.dir().join("ssh_config")
    }

    /// Short machine name, also its hostname: `h1`, `h2`, ... or `builder`.
    pub fn name(&self, role: Role) -> String {
        match role {
            Role::Host(i) => format!("h{i}"),
            Role::Builder => "builder".to_owned(),
        }
    }

    /// Network namespace name, also the root-side veth name (at most 15 characters).
    pub fn netns(&self, role: Role) -> String {
        match role {
            Role::Host(i) => format!("flt{}h{i}", self.slot),
            Role::Builder => format!("flt{}b", self.slot),
        }
    }

    pub fn netns_file(&self, role: Role) -> PathBuf {
        Path::new("/var/run/netns").join(self.netns(role))
    }

    pub fn addr(&self, role: Role) -> Ipv4Addr {
        match role {
            Role::Host(i) => Ipv4Addr::new(10, 199, self.slot, 10 + i),
            Role::Builder => Ipv4Addr::new(10, 199, self.slot, 250),
        }
    }

    /// The docker0 subnet of this machine's engine: unique per fleet and machine.
    pub fn docker_bip(&self, role: Role) -> String {
        let third = match role {
            Role::Host(i) => i,
            Role::Builder => 100,
        };
        format!("10.{}.{third}.1/24", 200 + self.slot)
    }

    /// Pool for user-defined networks (such as `kamal`), unique per fleet.
    pub fn address_pool(&self) -> String {
        format!("base=10.{}.128.0/17,size=24", 200 + self.slot)
    }

    /// The machine's `/var/lib/flotilla`, as seen from the root namespace.
    pub fn flotilla_state(&self, role: Role) -> PathBuf {
        self.machine_dir(role).join("var-lib-flotilla")
    }

    pub fn machine_dir(&self, role: Role) -> PathBuf {
        self.dir().join(self.name(role))
    }

    pub fn mnt_ns_file(&self, role: Role) -> PathBuf {
        self.ns_dir().join(format!("{}.mnt", self.name(role)))
    }

    pub fn uts_ns_file(&self, role: Role) -> PathBuf {
        self.ns_dir().join(format!("{}.uts", self.name(role)))
    }

    /// The machine's Docker socket as seen from the root namespace (the machine itself also
    /// listens on the default `/var/run/docker.sock` inside its own mount namespace).
    pub fn docker_socket(&self, role: Role) -> PathBuf {
        self.machine_dir(role).join("docker.sock")
    }

    /// cgroup parent of the machine's containers, so `down` finds every container process.
    pub fn cgroup_parent(&self, role: Role) -> String {
        format!("/{}", self.netns(role))
    }
}

/// The cgroup directories named `name` in every mounted hierarchy (v1 controllers and v2).
pub fn cgroup_dirs(name: &str) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut dirs = vec![root.join(name.trim_start_matches('/'))];
    if let Ok(rd) = std::fs::read_dir(root) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(e.path().join(name.trim_start_matches('/')));
            }
        }
    }
    dirs.into_iter().filter(|d| d.is_dir()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Interface names stay within Linux's 15-character limit for every slot and host.
    #[test]
    fn names_fit_in_ifnamsiz() {
        let l = Layout::new(MAX_SLOTS - 1);
        assert!(l.netns(Role::Host(200)).len() <= 15);
        assert!(l.bridge().len() <= 15);
        assert!(l.netns(Role::Builder).len() <= 15);
    }

    /// Two fleets never share a subnet or a name.
    #[test]
    fn fleets_do_not_collide() {
        let (a, b) = (Layout::new(3), Layout::new(4));
        assert_ne!(a.addr(Role::Host(1)), b.addr(Role::Host(1)));
        assert_ne!(a.docker_bip(Role::Host(1)), b.docker_bip(Role::Host(1)));
        assert_ne!(a.netns(Role::Host(1)), b.netns(Role::Host(1)));
        assert_ne!(a.registry(), b.registry());
        assert_eq!(a.addr(Role::Host(2)).to_string(), "10.199.3.12");
    }
}
