//! `FleetState`: what each host runs now, as far as the log knows.

use std::collections::{BTreeMap, HashMap};

use super::Projection;
use crate::envelope::Envelope;
use crate::event::{Event, ExecutorSeen};
use crate::ids::{DeployId, Timestamp};

/// An app container running on a host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunningContainer {
    /// Kamal service.
    pub service: String,
    /// Kamal destination, if any.
    pub destination: Option<String>,
    /// Role it serves.
    pub role: String,
    /// Version it runs.
    pub version: String,
    /// Docker container id.
    pub container_id: String,
    /// Exact image digest the host pulled for it, when reported.
    pub digest: Option<String>,
    /// The deploy that started it.
    pub deploy_id: DeployId,
    /// When it started.
    pub since: Timestamp,
}

/// An accessory running on a host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunningAccessory {
    /// Image reference.
    pub image: String,
    /// Exact digest, when known.
    pub digest: Option<String>,
    /// When it was booted.
    pub since: Timestamp,
}

/// What one host runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostRuns {
    /// App containers by container name; a new one that failed its health
    /// check stays listed until an event says it was stopped.
    pub containers: BTreeMap<String, RunningContainer>,
    /// Container the proxy sends each service's traffic to.
    pub live: BTreeMap<String, String>,
    /// Accessories by name.
    pub accessories: BTreeMap<String, RunningAccessory>,
    /// What the host's executor last reported.
    pub executor: Option<ExecutorSeen>,
    /// Time of the host's latest event.
    pub last_seen: Option<Timestamp>,
    /// The digest the host pulled last, and in which deploy: the digest of
    /// the containers that deploy starts there.
    pulled: Option<(DeployId, String)>,
}

/// What each host runs now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FleetState {
    hosts: BTreeMap<String, HostRuns>,
    /// Service and destination of each deploy, from its request.
    deploys: HashMap<DeployId, (String, Option<String>)>,
}

impl FleetState {
    /// One host's state.
    pub fn host(&self, host: &str) -> Option<&HostRuns> {
        self.hosts.get(host)
    }

    /// Every host the log mentions, by name.
    pub fn hosts(&self) -> impl Iterator<Item = (&str, &HostRuns)> {
        self.hosts.iter().map(|(name, runs)| (name.as_str(), runs))
    }
}

impl Projection for FleetState {
    fn apply(&mut self, e: &Envelope) {
        if let Event::DeployRequested(r) = &e.event {
            let target = (r.service.clone(), r.destination.clone());
            self.deploys.insert(e.deploy_id.clone(), target);
            return;
        }
        let Some(host) = e.host.as_deref() else {
            return;
        };
        let relevant = matches!(
            e.event,
            Event::ImagePulled(_)
                | Event::ContainerStarted(_)
                | Event::ProxySwitched(_)
                | Event::OldContainerStopped(_)
                | Event::AccessoryBooted(_)
                | Event::AccessoryRemoved(_)
                | Event::ExecutorSeen(_)
                | Event::HealthPassed(_)
                | Event::HealthFailed(_)
                | Event::HostSucceeded(_)
                | Event::HostFailed(_)
                | Event::HookRan(_)
        );
        if !relevant {
            return;
        }
        let target = match &e.event {
            Event::ContainerStarted(_) | Event::ProxySwitched(_) => self.deploys.get(&e.deploy_id),
            _ => None,
        };
        let target = target.cloned();
        if !self.hosts.contains_key(host) {
            self.hosts.insert(host.to_owned(), HostRuns::default());
        }
        let Some(runs) = self.hosts.get_mut(host) else {
            return;
        };
        runs.last_seen = Some(e.at);
        match &e.event {
            Event::ImagePulled(p) => {
                runs.pulled = Some((e.deploy_id.clone(), p.digest.clone()));
            }
            Event::ContainerStarted(c) => {
                let (service, destination) = target.unwrap_or_default();
                let digest = match &runs.pulled {
                    Some((deploy, digest)) if deploy == &e.deploy_id => Some(digest.clone()),
                    _ => None,
                };
                let container = RunningContainer {
                    service,
                    destination,
                    role: c.role.clone(),
                    version: c.version.clone(),
                    container_id: c.container_id.clone(),
                    digest,
                    deploy_id: e.deploy_id.clone(),
                    since: e.at,
                };
                runs.containers.insert(c.name.clone(), container);
            }
            Event::ProxySwitched(p) => {
                if let Some((service, _)) = target {
                    runs.live.insert(service, p.to.clone());
                }
            }
            Event::OldContainerStopped(s) => {
                runs.containers.remove(&s.name);
            }
            Event::AccessoryBooted(a) => {
                let accessory = RunningAccessory {
                    image: a.image.clone(),
                    digest: a.digest.clone(),
                    since: e.at,
                };
                runs.accessories.insert(a.name.clone(), accessory);
            }
            Event::AccessoryRemoved(a) => {
                runs.accessories.remove(&a.name);
            }
            Event::ExecutorSeen(x) => runs.executor = Some(x.clone()),
            _ => {}
        }
    }
}
