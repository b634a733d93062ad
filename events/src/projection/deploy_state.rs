//! `DeployState`: how far each deploy got on each host, and why it stopped.

use std::collections::{BTreeMap, HashMap};

use super::Projection;
use crate::envelope::Envelope;
use crate::event::{DeployRequested, Event, Step};
use crate::ids::{DeployId, Timestamp};

/// Where a deploy stands as a whole.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum DeployStatus {
    /// Events arrived but not (yet) the request.
    #[default]
    Unknown,
    /// Requested, no job sent yet.
    Requested,
    /// Jobs are out.
    Running,
    /// Finished on every planned host.
    Completed,
    /// Stopped by failures.
    Failed {
        /// Why.
        reason: String,
    },
    /// Cancelled.
    Cancelled {
        /// Who or what cancelled it.
        reason: String,
    },
}

/// Where a deploy stands on one host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum HostStatus {
    /// Nothing happened on the host yet.
    #[default]
    Pending,
    /// At least one step done, not finished.
    Running,
    /// Every step succeeded.
    Succeeded,
    /// A step failed.
    Failed {
        /// The step that failed.
        step: Step,
        /// Why.
        error: String,
    },
}

/// One host's progress in one deploy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostState {
    /// The last step completed on the host.
    pub step: Option<Step>,
    /// Pending, running, succeeded or failed.
    pub status: HostStatus,
    /// Time of the host's first event.
    pub started_at: Option<Timestamp>,
    /// Time the host succeeded or failed.
    pub finished_at: Option<Timestamp>,
    /// The last error seen (a failed health check before the host gave up).
    pub last_error: Option<String>,
    /// Roles the plan gives the host.
    pub roles: Vec<String>,
}

impl HostState {
    /// Milliseconds from the host's first event to its end, once finished.
    pub fn duration_ms(&self) -> Option<i64> {
        Some(self.finished_at?.millis_since(self.started_at?))
    }
}

/// One deploy's state: the per-host step state machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeployState {
    /// The deploy.
    pub deploy_id: DeployId,
    /// What was asked (service, version, hosts, ...), once requested.
    pub request: Option<DeployRequested>,
    /// Who asked.
    pub performer: Option<String>,
    /// Where it stands as a whole.
    pub status: DeployStatus,
    /// When it was requested.
    pub requested_at: Option<Timestamp>,
    /// When it completed, failed or was cancelled.
    pub finished_at: Option<Timestamp>,
    /// Per host, including planned hosts with no event yet.
    pub hosts: BTreeMap<String, HostState>,
    /// The rollback this deploy turned into, if any: target version.
    pub rolled_back_to: Option<String>,
}

impl DeployState {
    /// The state of `deploy_id` before any event.
    pub fn new(deploy_id: DeployId) -> Self {
        Self {
            deploy_id,
            request: None,
            performer: None,
            status: DeployStatus::Unknown,
            requested_at: None,
            finished_at: None,
            hosts: BTreeMap::new(),
            rolled_back_to: None,
        }
    }

    fn finish(&mut self, status: DeployStatus, at: Timestamp) {
        self.status = status;
        self.finished_at = Some(at);
    }
}

impl Projection for DeployState {
    /// Fold an event of this deploy; events of other deploys are ignored.
    fn apply(&mut self, e: &Envelope) {
        if e.deploy_id != self.deploy_id {
            return;
        }
        match &e.event {
            Event::DeployRequested(request) => {
                for planned in &request.hosts {
                    let host = self.hosts.entry(planned.host.clone()).or_default();
                    host.roles.clone_from(&planned.roles);
                }
                self.request = Some(request.clone());
                self.performer = Some(e.actor.clone());
                self.requested_at = Some(e.at);
                if self.status == DeployStatus::Unknown {
                    self.status = DeployStatus::Requested;
                }
                return;
            }
            Event::DeployStarted(_) => {
                self.status = DeployStatus::Running;
                return;
            }
            Event::DeployCompleted(_) => return self.finish(DeployStatus::Completed, e.at),
            Event::DeployFailed(f) => {
                let status = DeployStatus::Failed {
                    reason: f.reason.clone(),
                };
                return self.finish(status, e.at);
            }
            Event::DeployCancelled(c) => {
                let status = DeployStatus::Cancelled {
                    reason: c.reason.clone(),
                };
                return self.finish(status, e.at);
            }
            Event::RollbackStarted(r) => {
                self.rolled_back_to = Some(r.to_version.clone());
                return;
            }
            // An operation other than a rollout (`app stop`, `prune`): its hosts are planned
            // from the start, and its end says which failed.
            Event::OperationStarted(o) => {
                for host in &o.hosts {
                    self.hosts.entry(host.clone()).or_default();
                }
                self.performer = Some(e.actor.clone());
                self.requested_at = Some(e.at);
                self.status = DeployStatus::Running;
                return;
            }
            Event::OperationFinished(f) => {
                let status = if f.failed.is_empty() {
                    DeployStatus::Completed
                } else {
                    DeployStatus::Failed {
                        reason: format!(
                            "{} failed on {} host(s): {}",
                            f.operation,
                            f.failed.len(),
                            f.failed.join(", ")
                        ),
                    }
                };
                return self.finish(status, e.at);
            }
            _ => {}
        }
        let Some(name) = e.host.as_deref() else {
            return;
        };
        let step = match &e.event {
            Event::ImagePulled(_) => Some(Step::PullImage),
            Event::ContainerStarted(_) => Some(Step::StartContainer),
            Event::HealthPassed(_) => Some(Step::AwaitHealthy),
            Event::ProxySwitched(_) => Some(Step::SwitchProxy),
            Event::OldContainerStopped(_) => Some(Step::StopOldContainer),
            Event::HookRan(h) if h.exit_code == 0 => Some(Step::RunHook),
            Event::AccessoryBooted(_) => Some(Step::BootAccessory),
            Event::HealthFailed(_) | Event::HostSucceeded(_) | Event::HostFailed(_) => None,
            Event::HookRan(_) => None,
            // Not part of a host's progress.
            _ => return,
        };
        // One map lookup in the common case (the fold's speed is measured).
        match self.hosts.get_mut(name) {
            Some(host) => advance(host, e, step),
            None => {
                // A host outside the plan: the log says it did something.
                let mut host = HostState::default();
                advance(&mut host, e, step);
                self.hosts.insert(name.to_owned(), host);
            }
        }
    }
}

/// Record a host event in that host's state.
fn advance(host: &mut HostState, e: &Envelope, step: Option<Step>) {
    let at = e.at;
    host.started_at.get_or_insert(at);
    if let Some(step) = step {
        host.step = Some(step);
        if host.status == HostStatus::Pending {
            host.status = HostStatus::Running;
        }
    }
    match &e.event {
        Event::HealthFailed(h) => host.last_error = Some(h.error.clone()),
        Event::HookRan(h) if h.exit_code != 0 => {
            host.last_error = Some(format!("hook {} exited with {}", h.name, h.exit_code));
        }
        Event::HostSucceeded(_) => {
            host.status = HostStatus::Succeeded;
            host.finished_at = Some(at);
        }
        Event::HostFailed(f) => {
            host.status = HostStatus::Failed {
                step: f.step,
                error: f.error.clone(),
            };
            host.last_error = Some(f.error.clone());
            host.finished_at = Some(at);
        }
        _ => {}
    }
}

/// Every deploy's state, by deploy id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Deploys {
    /// In order of each deploy's first event in the log.
    states: Vec<DeployState>,
    index: HashMap<DeployId, usize>,
    /// The deploy of the previous event: events come in runs per deploy, so
    /// this spares most lookups (the fold's speed is a measured figure).
    recent: Option<usize>,
}

impl Deploys {
    /// The state of one deploy.
    pub fn get(&self, deploy_id: &DeployId) -> Option<&DeployState> {
        self.states.get(*self.index.get(deploy_id)?)
    }

    /// Every deploy, in order of its first event in the log.
    pub fn iter(&self) -> impl Iterator<Item = &DeployState> {
        self.states.iter()
    }

    /// How many deploys the log mentions.
    pub fn len(&self) -> usize {
        self.states.len()
    }

    /// Whether the log mentions no deploy.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    fn position(&mut self, deploy_id: &DeployId) -> usize {
        if let Some(i) = self.recent
            && self
                .states
                .get(i)
                .is_some_and(|s| &s.deploy_id == deploy_id)
        {
            return i;
        }
        let i = match self.index.get(deploy_id) {
            Some(&i) => i,
            None => {
                self.states.push(DeployState::new(deploy_id.clone()));
                self.index.insert(deploy_id.clone(), self.states.len() - 1);
                self.states.len() - 1
            }
        };
        self.recent = Some(i);
        i
    }
}

impl Projection for Deploys {
    fn apply(&mut self, e: &Envelope) {
        let i = self.position(&e.deploy_id);
        if let Some(state) = self.states.get_mut(i) {
            state.apply(e);
        }
    }
}
