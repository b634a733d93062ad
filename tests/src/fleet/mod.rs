//! A local fleet of real hosts on one machine.
//!
//! Each host is a network namespace with its own address on the fleet's bridge, a private
//! mount and UTS namespace, its own `dockerd` and its own `sshd` accepting the fleet's key. A
//! builder machine (a Docker engine with no SSH, standing in for the developer's laptop) builds
//! and pushes images. The fleet's Docker registry listens on the bridge address, reachable from
//! every host and from the root namespace. Hosts start bare: no agent and no NATS, which
//! `flotilla server bootstrap` (or `setup`) installs over SSH, as for a user.
//!
//! `Fleet::up` records every resource in a state file as it makes it, so a failure part-way, a
//! crashed test or a forgotten demo can always be taken down (`Fleet::down`, `down_slot`).
//! Fleets made by a process belong to it: the next `up` removes fleets whose owner has exited.

mod down;
mod error;
mod layout;
mod machine;
mod preflight;
mod services;
mod state;
mod sys;

pub use down::{down_slot, leftovers, mounts_under};
pub use error::FleetError;
pub use layout::{BASE_DIR, Layout, Role};
pub use services::http_status;
pub use sys::{POLL, Proc, wait_until};

use state::State;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Output};

/// What to bring up.
#[derive(Debug, Clone)]
pub struct FleetSpec {
    pub hosts: u8,
    /// A name makes the fleet persistent (it outlives this process) and unique: `up` with a
    /// name first removes any fleet of that name. Unnamed fleets belong to this process.
    pub name: Option<String>,
}

impl FleetSpec {
    pub fn hosts(n: u8) -> FleetSpec {
        FleetSpec {
            hosts: n,
            name: None,
        }
    }
}

/// A host of the fleet, as a deploy tool sees it.
#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    pub index: u8,
    pub addr: Ipv4Addr,
    /// The host's Docker socket, reachable from the root namespace (for test assertions).
    pub docker_socket: PathBuf,
    /// The host's `/var/lib/flotilla`, as seen from the root namespace (for test assertions).
    pub flotilla_state: PathBuf,
}

/// A running fleet. Dropping it takes it down (unless it is persistent).
#[derive(Debug)]
pub struct Fleet {
    layout: Layout,
    pub name: String,
    pub hosts: Vec<Host>,
    persistent: bool,
    down_done: bool,
}

impl Fleet {
    /// Brings up a fleet: checks the machine, removes stale fleets, then creates the bridge,
    /// services and machines. On failure, removes what it made and returns the error.
    pub fn up(spec: &FleetSpec) -> Result<Fleet, FleetError> {
        preflight::check()?;
        remove_stale(spec.name.as_deref())?;
        let slot = claim_slot()?;
        let layout = Layout::new(slot);
        let mut state = State {
            slot,
            name: spec.name.clone().unwrap_or_else(|| format!("s{slot}")),
            persistent: spec.name.is_some(),
            owner: Proc::of(std::process::id()),
            hosts: spec.hosts,
            ..State::default()
        };
        match build(&layout, &mut state) {
            Ok(()) => Ok(Fleet::from_state(&layout, &state)),
            Err(e) => {
                // Undo what was made; the original error is what the user needs to see.
                let _ = down_slot(slot);
                Err(e)
            }
        }
    }

    /// Attaches to a running fleet by name (as `flotilla-fleet env demo` does).
    pub fn attach(name: &str) -> Result<Fleet, FleetError> {
        for slot in down::used_slots() {
            let layout = Layout::new(slot);
            if let Ok(state) = State::load(&layout.state_file())
                && state.name == name
                && state.ready
            {
                let mut fleet = Fleet::from_state(&layout, &state);
                fleet.persistent = true;
                return Ok(fleet);
            }
        }
        Err(FleetError::NotFound(name.to_owned()))
    }

    fn from_state(layout: &Layout, state: &State) -> Fleet {
        Fleet {
            layout: layout.clone(),
            name: state.name.clone(),
            hosts: (1..=state.hosts)
                .map(|i| Host {
                    name: layout.name(Role::Host(i)),
                    index: i,
                    addr: layout.addr(Role::Host(i)),
                    docker_socket: layout.docker_socket(Role::Host(i)),
                    flotilla_state: layout.flotilla_state(Role::Host(i)),
                })
                .collect(),
            persistent: state.persistent,
            down_done: false,
        }
    }

    /// Stops the host's dockerd (as a reboot or a package upgrade would) and starts it again;
    /// returns once the new engine answers. Containers with a restart policy come back.
    pub fn restart_docker(&self, host: &Host) -> Result<(), FleetError> {
        let role = Role::Host(host.index);
        let state_file = self.layout.state_file();
        let mut state = State::load(&state_file)?;
        if let Some(old) = state.machine_mut(&host.name).dockerd.take() {
            old.stop(DOCKERD_STOP_GRACE);
        }
        state.save(&state_file)?;
        let proc = machine::start_dockerd(&self.layout, role)?;
        state.machine_mut(&host.name).dockerd = Some(proc);
        state.save(&state_file)
    }

    pub fn slot(&self) -> u8 {
        self.layout.slot
    }

    pub fn dir(&self) -> PathBuf {
        self.layout.dir()
    }

    /// `ADDR:PORT` of the fleet's registry, as image references spell it.
    pub fn registry(&self) -> String {
        self.layout.registry()
    }

    /// The fleet's address on its bridge (the root namespace), which every host reaches: where
    /// a test serves what the hosts must reach (an OTLP collector).
    pub fn bridge_addr(&self) -> Ipv4Addr {
        self.layout.bridge_addr()
    }

    /// The private key every host's sshd accepts for root.
    pub fn ssh_key(&self) -> PathBuf {
        self.layout.ssh_key()
    }

    /// known_hosts with every host's key, for strict host key checking.
    pub fn known_hosts(&self) -> PathBuf {
        self.layout.known_hosts()
    }

    /// An ssh_config naming each host (`ssh -F FILE h1`).
    pub fn ssh_config(&self) -> PathBuf {
        self.layout.ssh_config()
    }

    /// `DOCKER_HOST` of the builder engine (the stand-in for the developer's own Docker).
    pub fn builder_docker_host(&self) -> String {
        format!(
            "unix://{}",
            self.layout.docker_socket(Role::Builder).display()
        )
    }

    /// Runs a shell command on a host over real SSH, as root with the fleet key.
    pub fn ssh(&self, host: &Host, command: &str) -> std::io::Result<Output> {
        Command::new("ssh")
            .args(["-F", "none", "-i"])
            .arg(self.ssh_key())
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                self.known_hosts().display()
            ))
            .args([
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=5",
            ])
            .arg(format!("root@{}", host.addr))
            .arg(command)
            .output()
    }

    /// A `docker` CLI command aimed at the builder engine.
    pub fn builder_docker(&self) -> Command {
        let mut c = Command::new("docker");
        c.env("DOCKER_HOST", self.builder_docker_host())
            .env("DOCKER_BUILDKIT", "0");
        c
    }

    /// A `docker` CLI command aimed at a host's engine, for test assertions.
    pub fn host_docker(&self, host: &Host) -> Command {
        let mut c = Command::new("docker");
        c.env(
            "DOCKER_HOST",
            format!("unix://{}", host.docker_socket.display()),
        );
        c
    }

    /// A command run inside a host's namespaces, as a process on that host would run.
    pub fn on_host(&self, host: &Host) -> Command {
        let mut c = machine::on_machine(&self.layout, Role::Host(host.index));
        c.arg("--");
        c
    }

    /// Stops a host's Docker engine as `systemctl stop docker` does (SIGTERM; dockerd stops
    /// its containers and exits), for fault tests; [`Fleet::start_docker`] brings it back.
    pub fn stop_docker(&self, host: &Host) -> Result<(), FleetError> {
        let state = State::load(&self.layout.state_file())?;
        let dockerd = state
            .machines
            .iter()
            .find(|m| m.name == host.name)
            .and_then(|m| m.dockerd);
        if let Some(p) = dockerd {
            p.stop(DOCKERD_STOP_GRACE);
        }
        Ok(())
    }

    /// Starts a host's Docker engine again after [`Fleet::stop_docker`] and records it, so
    /// `down` stops this one.
    pub fn start_docker(&self, host: &Host) -> Result<(), FleetError> {
        let dockerd = machine::start_dockerd(&self.layout, Role::Host(host.index))?;
        let path = self.layout.state_file();
        let mut state = State::load(&path)?;
        state.machine_mut(&host.name).dockerd = Some(dockerd);
        state.save(&path)
    }

    /// Cuts a host's network link (its veth down inside its namespace), for fault tests;
    /// [`Fleet::restore_link`] brings it back. Processes on the host keep running.
    pub fn cut_link(&self, host: &Host) -> Result<(), FleetError> {
        machine::set_link(&self.layout, Role::Host(host.index), false)
    }

    /// Brings a host's link back after [`Fleet::cut_link`].
    pub fn restore_link(&self, host: &Host) -> Result<(), FleetError> {
        machine::set_link(&self.layout, Role::Host(host.index), true)
    }

    /// Stops the fleet's registry, for fault tests; [`Fleet::start_registry`] starts it
    /// again on the same storage.
    pub fn stop_registry(&self) -> Result<(), FleetError> {
        let state = State::load(&self.layout.state_file())?;
        if let Some(p) = state.registry {
            p.stop(DOCKERD_STOP_GRACE);
        }
        Ok(())
    }

    /// Starts the fleet's registry again after [`Fleet::stop_registry`] and records it.
    pub fn start_registry(&self) -> Result<(), FleetError> {
        let registry = services::start_registry(&self.layout)?;
        let path = self.layout.state_file();
        let mut state = State::load(&path)?;
        state.registry = Some(registry);
        state.save(&path)
    }

    /// Shell `export` lines describing the fleet, for scripts.
    pub fn env_lines(&self) -> String {
        let hosts: Vec<String> = self.hosts.iter().map(|h| h.addr.to_string()).collect();
        format!(
            "export FLEET_NAME={}\nexport FLEET_DIR={}\nexport FLEET_HOSTS='{}'\n\
             export FLEET_REGISTRY={}\nexport FLEET_SSH_KEY={}\n\
             export FLEET_SSH_CONFIG={}\nexport FLEET_BUILDER_DOCKER_HOST={}\n",
            self.name,
            self.dir().display(),
            hosts.join(" "),
            self.registry(),
            self.ssh_key().display(),
            self.ssh_config().display(),
            self.builder_docker_host(),
        )
    }

    /// Takes the fleet down and checks that nothing is left.
    pub fn down(mut self) -> Result<(), FleetError> {
        self.down_done = true;
        down_slot(self.layout.slot)
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if !self.down_done && !self.persistent {
            let _ = down_slot(self.layout.slot);
        }
    }
}

/// How long a stopping dockerd gets before SIGKILL: its containers' own grace
/// (`--shutdown-timeout=2`) and its clean-up, with room on a loaded machine.
const DOCKERD_STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(20);

/// How long a freshly claimed slot may go without a state file before it counts as stale.
const CLAIM_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// Removes fleets nobody will take down, and the fleet that `name` will replace.
fn remove_stale(name: Option<&str>) -> Result<(), FleetError> {
    for slot in down::used_slots() {
        let layout = Layout::new(slot);
        let stale = match State::load(&layout.state_file()) {
            Ok(s) => s.is_stale() || name.is_some_and(|n| n == s.name),
            // No readable state: leftovers of a crash, unless another `up` has just claimed
            // the slot and is about to write its state file.
            Err(_) => std::fs::metadata(layout.dir())
                .and_then(|m| m.modified())
                .map_or(true, |t| t.elapsed().unwrap_or_default() > CLAIM_GRACE),
        };
        if stale {
            // Another `up` may be removing the same fleet at the same moment; what matters is
            // that this one gets a clean slot, which `claim_slot` checks.
            if let Err(e) = down_slot(slot) {
                eprintln!("flotilla-fleet: warning: removing stale fleet in slot {slot}: {e}");
            }
        }
    }
    Ok(())
}

/// Claims the lowest free slot by creating its directory (mkdir is atomic, so two fleets
/// starting at once never get the same slot).
fn claim_slot() -> Result<u8, FleetError> {
    std::fs::create_dir_all(BASE_DIR).map_err(FleetError::io(BASE_DIR))?;
    for slot in 0..layout::MAX_SLOTS {
        let l = Layout::new(slot);
        if !leftovers(slot).iter().all(|x| x.starts_with("directory")) {
            continue;
        }
        if std::fs::create_dir(l.dir()).is_ok() {
            return Ok(slot);
        }
    }
    Err(FleetError::NoFreeSlot {
        max: layout::MAX_SLOTS,
    })
}

mod build;
use build::build;
