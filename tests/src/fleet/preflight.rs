//! Checks made before anything is created: root, namespaces, and the programs the fleet runs.

use super::error::FleetError;
use super::sys::which;

/// Programs the fleet runs, with the Debian package that provides each.
pub const REQUIRED: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("nsenter", "util-linux"),
    ("unshare", "util-linux"),
    ("mount", "mount"),
    ("dockerd", "docker.io"),
    ("docker", "docker.io"),
    ("sshd", "openssh-server"),
    ("ssh", "openssh-client"),
    ("ssh-keygen", "openssh-client"),
    ("docker-registry", "docker-registry"),
];

pub fn check() -> Result<(), FleetError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(FleetError::NotRoot);
    }
    for &(binary, package) in REQUIRED {
        if !which(binary) {
            return Err(FleetError::MissingBinary { binary, package });
        }
    }
    if !std::path::Path::new("/proc/self/ns/net").exists()
        || !std::path::Path::new("/proc/self/ns/mnt").exists()
    {
        return Err(FleetError::NoNamespaces {
            detail: "/proc/self/ns/net or /proc/self/ns/mnt is missing".into(),
        });
    }
    Ok(())
}
