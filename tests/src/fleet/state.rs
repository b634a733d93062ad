//! The fleet's state file: who owns it and which processes it started.
//!
//! Written (atomically) after every change during `up`, so a crash at any point leaves enough
//! behind for `down` or the next `up` to clean up.

use super::error::FleetError;
use super::sys::Proc;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    pub slot: u8,
    /// A name given by the user (`demo`); `up` with the same name replaces that fleet.
    pub name: String,
    /// Persistent fleets outlive the process that made them (the demo). Others belong to their
    /// owner process and are stale once it has exited.
    pub persistent: bool,
    pub owner: Option<Proc>,
    pub hosts: u8,
    pub registry: Option<Proc>,
    /// The NATS server fleets made before `flotilla server bootstrap` booted NATS on the
    /// control host; read so that `down` still stops it in a fleet such a build left behind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats: Option<Proc>,
    /// One entry per machine: (machine name, dockerd, sshd).
    pub machines: Vec<MachineProcs>,
    /// Whether `up` completed; a fleet left half-made is always stale.
    pub ready: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MachineProcs {
    pub name: String,
    pub dockerd: Option<Proc>,
    pub sshd: Option<Proc>,
}

impl State {
    pub fn load(path: &Path) -> Result<State, FleetError> {
        let text = std::fs::read_to_string(path).map_err(FleetError::io(path))?;
        serde_json::from_str(&text).map_err(|e| FleetError::State {
            path: path.to_owned(),
            detail: e.to_string(),
        })
    }

    pub fn save(&self, path: &Path) -> Result<(), FleetError> {
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self).map_err(|e| FleetError::State {
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
        std::fs::write(&tmp, text).map_err(FleetError::io(&tmp))?;
        std::fs::rename(&tmp, path).map_err(FleetError::io(path))
    }

    /// A fleet nobody will take down: its owner has exited, or it never finished coming up and
    /// its owner is gone.
    pub fn is_stale(&self) -> bool {
        let owner_alive = self.owner.is_some_and(|o| o.alive());
        if self.persistent && self.ready {
            return false;
        }
        !owner_alive
    }

    pub fn machine_mut(&mut self, name: &str) -> &mut MachineProcs {
        if let Some(i) = self.machines.iter().position(|m| m.name == name) {
            &mut self.machines[i]
        } else {
            self.machines.push(MachineProcs {
                name: name.to_owned(),
                ..MachineProcs::default()
            });
            let last = self.machines.len() - 1;
            &mut self.machines[last]
        }
    }

    /// Every process recorded, daemons of machines first (they own containers).
    pub fn all_procs(&self) -> Vec<Proc> {
        let mut v: Vec<Proc> = self
            .machines
            .iter()
            .flat_map(|m| [m.dockerd, m.sshd])
            .flatten()
            .collect();
        v.extend(self.registry);
        v.extend(self.nats);
        v
    }
}
