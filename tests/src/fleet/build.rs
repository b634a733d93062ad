//! The `up` procedure: bridge, shared services, SSH keys, then every machine in parallel.

use super::error::FleetError;
use super::layout::{Layout, Role};
use super::machine;
use super::services;
use super::state::State;
use super::sys::{cmd, run};
use std::sync::Mutex;

pub(super) fn build(l: &Layout, state: &mut State) -> Result<(), FleetError> {
    let state_file = l.state_file();
    state.save(&state_file)?;

    // Namespace files must live on a mount with private propagation to be bind-mounted.
    let ns_dir = l.ns_dir();
    std::fs::create_dir_all(&ns_dir).map_err(FleetError::io(&ns_dir))?;
    run(cmd(
        "mount",
        ["--bind".as_ref(), ns_dir.as_os_str(), ns_dir.as_os_str()],
    ))?;
    run(cmd(
        "mount",
        ["--make-private".as_ref(), ns_dir.as_os_str()],
    ))?;

    let bridge = l.bridge();
    run(cmd("ip", ["link", "add", &bridge, "type", "bridge"]))?;
    run(cmd(
        "ip",
        [
            "addr",
            "add",
            &format!("{}/24", l.bridge_addr()),
            "dev",
            &bridge,
        ],
    ))?;
    run(cmd("ip", ["link", "set", &bridge, "up"]))?;

    state.registry = Some(services::start_registry(l)?);
    state.save(&state_file)?;

    write_ssh_identity(l)?;

    let mut roles: Vec<Role> = (1..=state.hosts).map(Role::Host).collect();
    roles.push(Role::Builder);
    for &role in &roles {
        machine::create_network(l, role)?;
        machine::create_mount_ns(l, role)?;
    }

    // Fault injection for the test that proves a failed `up` undoes what it made.
    if std::env::var_os("FLOTILLA_FLEET_FAIL_BEFORE_ENGINES").is_some() {
        return Err(FleetError::NotReady {
            what: "engines (FLOTILLA_FLEET_FAIL_BEFORE_ENGINES is set)".into(),
            after: std::time::Duration::ZERO,
            log: l.dir(),
        });
    }

    // Engines take a second or two each to start: start them side by side.
    let shared = Mutex::new(std::mem::take(state));
    let results: Vec<Result<(), FleetError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = roles
            .iter()
            .map(|&role| {
                let shared = &shared;
                let state_file = &state_file;
                scope.spawn(move || start_machine(l, role, shared, state_file))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(FleetError::State {
                        path: state_file.clone(),
                        detail: "a machine start thread panicked".into(),
                    })
                })
            })
            .collect()
    });
    *state = shared.into_inner().unwrap_or_else(|p| p.into_inner());
    results.into_iter().collect::<Result<Vec<()>, _>>()?;

    let mut known = String::new();
    for i in 1..=state.hosts {
        known.push_str(&machine::known_hosts_line(l, Role::Host(i))?);
    }
    std::fs::write(l.known_hosts(), known).map_err(FleetError::io(l.known_hosts()))?;
    write_ssh_config(l, state.hosts)?;

    state.ready = true;
    state.save(&state_file)
}

fn start_machine(
    l: &Layout,
    role: Role,
    shared: &Mutex<State>,
    state_file: &std::path::Path,
) -> Result<(), FleetError> {
    let name = l.name(role);
    let record = |f: &dyn Fn(&mut State)| -> Result<(), FleetError> {
        let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut s);
        s.save(state_file)
    };
    let dockerd = machine::start_dockerd(l, role)?;
    record(&|s| s.machine_mut(&name).dockerd = Some(dockerd))?;
    if let Role::Host(_) = role {
        let sshd = machine::start_sshd(l, role)?;
        record(&|s| s.machine_mut(&name).sshd = Some(sshd))?;
    }
    Ok(())
}

/// The fleet's client key, authorised for root on every host.
fn write_ssh_identity(l: &Layout) -> Result<(), FleetError> {
    let key = l.ssh_key();
    run(cmd(
        "ssh-keygen",
        [
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "flotilla-fleet",
            "-f",
        ],
    )
    .arg(&key))?;
    let public = key.with_extension("pub");
    let auth = l.dir().join("authorized_keys");
    std::fs::copy(&public, &auth).map_err(FleetError::io(&auth))?;
    Ok(())
}

fn write_ssh_config(l: &Layout, hosts: u8) -> Result<(), FleetError> {
    let mut text = String::new();
    for i in 1..=hosts {
        let role = Role::Host(i);
        text.push_str(&format!(
            "Host {name} {addr}\n  HostName {addr}\n  User root\n  IdentityFile {key}\n  \
             UserKnownHostsFile {known}\n  StrictHostKeyChecking yes\n  BatchMode yes\n",
            name = l.name(role),
            addr = l.addr(role),
            key = l.ssh_key().display(),
            known = l.known_hosts().display(),
        ));
    }
    std::fs::write(l.ssh_config(), text).map_err(FleetError::io(l.ssh_config()))
}
