//! `Releases`: every release per service and destination, with the exact image
//! digests it ran: the rollback targets.
//!
//! A release is one deploy or rollback (not accessory changes). It is *good*
//! when the deploy completed and every planned host reported success; "last
//! good release" is the newest good one.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::Projection;
use crate::envelope::Envelope;
use crate::event::{DeployKind, Event, Operation, OperationStarted};
use crate::ids::{DeployId, Timestamp};

/// What releases are grouped by: Kamal's service and destination.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReleaseTarget {
    /// Kamal `service`.
    pub service: String,
    /// Kamal destination, if any.
    pub destination: Option<String>,
}

impl ReleaseTarget {
    /// The target for `service` and `destination`.
    pub fn new(service: impl Into<String>, destination: Option<&str>) -> Self {
        Self {
            service: service.into(),
            destination: destination.map(str::to_owned),
        }
    }
}

/// An image by reference and exact digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    /// Reference with tag, e.g. `registry/app:abc123`.
    pub image: String,
    /// Exact digest (`sha256:...`): what a rollback runs.
    pub digest: String,
}

/// How a release ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Outcome {
    /// Not finished.
    #[default]
    InProgress,
    /// Completed on every planned host.
    Completed,
    /// Completed, but some planned hosts did not succeed.
    Partial {
        /// Hosts that did not report success.
        missing: Vec<String>,
    },
    /// Failed.
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

/// One release: a deploy or rollback of a version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Release {
    /// The deploy that made it.
    pub deploy_id: DeployId,
    /// Deploy or rollback.
    pub kind: DeployKind,
    /// Version rolled out.
    pub version: String,
    /// Exact image per role, from what hosts pulled (or what was pushed).
    pub images: BTreeMap<String, ImageRef>,
    /// Digest of the configuration it ran with.
    pub config_digest: String,
    /// How it ended.
    pub outcome: Outcome,
    /// When it was requested.
    pub requested_at: Timestamp,
    /// When it ended.
    pub finished_at: Option<Timestamp>,
    /// Who performed it.
    pub performer: String,
    /// Hosts in its plan.
    pub planned_hosts: BTreeSet<String>,
    /// Planned hosts that reported success.
    pub succeeded_hosts: BTreeSet<String>,
}

impl Release {
    /// Completed on every planned host: a safe rollback target.
    pub fn is_good(&self) -> bool {
        self.outcome == Outcome::Completed && self.succeeded_hosts == self.planned_hosts
    }
}

/// Working state of a release in progress, dropped when it ends.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Pending {
    /// Distinct images pulled (usually one), so hosts share one copy.
    images: Vec<ImageRef>,
    /// Index in `images` of what each host pulled, to attribute it to the
    /// roles started there.
    pulled: HashMap<String, usize>,
    /// Digest pushed by the build, for roles whose host reported no pull.
    pushed: Option<ImageRef>,
}

/// Every release, per service and destination.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Releases {
    releases: Vec<Release>,
    by_deploy: HashMap<DeployId, usize>,
    by_target: BTreeMap<ReleaseTarget, Vec<usize>>,
    pending: HashMap<usize, Pending>,
    /// The release of the previous relevant event (events come in runs per
    /// deploy; this spares most lookups).
    recent: Option<usize>,
    /// App operations begun and not yet finished (`app stop`, `app start`, `app remove`).
    operations: HashMap<DeployId, OperationStarted>,
    /// Targets whose app an `app stop` or `app remove` took down on every host of the newest
    /// release, and no deploy or `app start` has run since.
    stopped: BTreeMap<ReleaseTarget, Stopped>,
}

/// What took a target's app down: nothing of it runs since.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stopped {
    /// The operation's id (`flotilla replay ID`).
    pub deploy_id: DeployId,
    /// `app stop` or `app remove`.
    pub operation: Operation,
    /// When it finished.
    pub at: Timestamp,
}

impl Releases {
    /// The releases of `target`, oldest first.
    pub fn of(&self, target: &ReleaseTarget) -> impl DoubleEndedIterator<Item = &Release> {
        self.by_target
            .get(target)
            .into_iter()
            .flatten()
            .filter_map(|&i| self.releases.get(i))
    }

    /// The release made by a deploy.
    pub fn by_deploy(&self, deploy_id: &DeployId) -> Option<&Release> {
        self.releases.get(*self.by_deploy.get(deploy_id)?)
    }

    /// What took the target's app down, when an `app stop` or `app remove` finished on every
    /// host of its newest release and no deploy or `app start` ran since: then none of its
    /// releases runs.
    pub fn stopped(&self, target: &ReleaseTarget) -> Option<&Stopped> {
        self.stopped.get(target)
    }

    /// The release the target's hosts run: the newest, unless the app was stopped since.
    pub fn running(&self, target: &ReleaseTarget) -> Option<&Release> {
        if self.stopped.contains_key(target) {
            return None;
        }
        self.of(target).next_back()
    }

    /// Follows the app operations that decide whether anything runs ([`Releases::stopped`]).
    fn apply_operation(&mut self, e: &Envelope) {
        match &e.event {
            Event::OperationStarted(o)
                if matches!(
                    o.operation,
                    Operation::AppStop | Operation::AppRemove | Operation::AppStart { .. }
                ) =>
            {
                self.operations.insert(e.deploy_id.clone(), o.clone());
            }
            Event::OperationFinished(f) => {
                let Some(started) = self.operations.remove(&e.deploy_id) else {
                    return;
                };
                let target = ReleaseTarget::new(&started.service, started.destination.as_deref());
                match started.operation {
                    Operation::AppStart { .. } => {
                        self.stopped.remove(&target);
                    }
                    Operation::AppStop | Operation::AppRemove if f.failed.is_empty() => {
                        let everywhere = self.of(&target).next_back().is_some_and(|r| {
                            r.planned_hosts.iter().all(|h| started.hosts.contains(h))
                        });
                        if everywhere {
                            let stopped = Stopped {
                                deploy_id: e.deploy_id.clone(),
                                operation: started.operation,
                                at: e.at,
                            };
                            self.stopped.insert(target, stopped);
                        }
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }

    /// Every target with at least one release.
    pub fn targets(&self) -> impl Iterator<Item = &ReleaseTarget> {
        self.by_target.keys()
    }

    /// The newest release that completed on every planned host.
    pub fn last_good(&self, target: &ReleaseTarget) -> Option<&Release> {
        self.of(target).rev().find(|r| r.is_good())
    }

    /// What `flotilla rollback [VERSION]` rolls back to.
    ///
    /// With a version: the newest good release of that version. Without: the
    /// last good release, unless the newest release is itself that good one
    /// (nothing to undo from a failure), then the good release before it with
    /// a different version.
    pub fn rollback_target(
        &self,
        target: &ReleaseTarget,
        version: Option<&str>,
    ) -> Option<&Release> {
        if let Some(version) = version {
            return self
                .of(target)
                .rev()
                .find(|r| r.is_good() && r.version == version);
        }
        let newest = self.of(target).next_back()?;
        if !newest.is_good() {
            return self.last_good(target);
        }
        self.of(target)
            .rev()
            .find(|r| r.is_good() && r.version != newest.version)
    }
}

impl Projection for Releases {
    fn apply(&mut self, e: &Envelope) {
        if let Event::DeployRequested(request) = &e.event {
            if request.kind == DeployKind::Accessory || self.by_deploy.contains_key(&e.deploy_id) {
                return;
            }
            let index = self.releases.len();
            self.releases.push(Release {
                deploy_id: e.deploy_id.clone(),
                kind: request.kind,
                version: request.version.clone(),
                images: BTreeMap::new(),
                config_digest: request.config_digest.clone(),
                outcome: Outcome::InProgress,
                requested_at: e.at,
                finished_at: None,
                performer: e.actor.clone(),
                planned_hosts: request.hosts.iter().map(|h| h.host.clone()).collect(),
                succeeded_hosts: BTreeSet::new(),
            });
            self.by_deploy.insert(e.deploy_id.clone(), index);
            let target = ReleaseTarget::new(&request.service, request.destination.as_deref());
            // A rollout runs the app again, whatever stopped it.
            self.stopped.remove(&target);
            self.by_target.entry(target).or_default().push(index);
            self.pending.insert(index, Pending::default());
            return;
        }
        if matches!(
            e.event,
            Event::OperationStarted(_) | Event::OperationFinished(_)
        ) {
            return self.apply_operation(e);
        }
        let relevant = matches!(
            e.event,
            Event::ImagePushed(_)
                | Event::ImagePulled(_)
                | Event::ContainerStarted(_)
                | Event::HostSucceeded(_)
                | Event::DeployCompleted(_)
                | Event::DeployFailed(_)
                | Event::DeployCancelled(_)
        );
        if !relevant {
            return;
        }
        let index = match self.recent {
            Some(i)
                if self
                    .releases
                    .get(i)
                    .is_some_and(|r| r.deploy_id == e.deploy_id) =>
            {
                i
            }
            _ => match self.by_deploy.get(&e.deploy_id) {
                Some(&i) => i,
                None => return,
            },
        };
        self.recent = Some(index);
        let (Some(release), Some(pending)) =
            (self.releases.get_mut(index), self.pending.get_mut(&index))
        else {
            // A completed release takes no more changes.
            return;
        };
        let host = e.host.as_deref();
        match &e.event {
            Event::ImagePushed(p) => {
                pending.pushed = Some(ImageRef {
                    image: p.image.clone(),
                    digest: p.digest.clone(),
                });
            }
            Event::ImagePulled(p) => {
                if let Some(host) = host {
                    let known = pending
                        .images
                        .iter()
                        .position(|i| i.digest == p.digest && i.image == p.image);
                    let index = known.unwrap_or_else(|| {
                        pending.images.push(ImageRef {
                            image: p.image.clone(),
                            digest: p.digest.clone(),
                        });
                        pending.images.len() - 1
                    });
                    match pending.pulled.get_mut(host) {
                        Some(slot) => *slot = index,
                        None => {
                            pending.pulled.insert(host.to_owned(), index);
                        }
                    }
                }
            }
            Event::ContainerStarted(c) => {
                let image = host
                    .and_then(|h| pending.pulled.get(h))
                    .and_then(|&i| pending.images.get(i))
                    .or(pending.pushed.as_ref());
                if let Some(image) = image
                    && release.images.get(&c.role) != Some(image)
                {
                    release.images.insert(c.role.clone(), image.clone());
                }
            }
            Event::HostSucceeded(_) => {
                if let Some(host) = host.filter(|h| release.planned_hosts.contains(*h)) {
                    release.succeeded_hosts.insert(host.to_owned());
                }
            }
            Event::DeployCompleted(_) => {
                let missing: Vec<String> = release
                    .planned_hosts
                    .difference(&release.succeeded_hosts)
                    .cloned()
                    .collect();
                release.outcome = if missing.is_empty() {
                    Outcome::Completed
                } else {
                    Outcome::Partial { missing }
                };
                release.finished_at = Some(e.at);
                self.pending.remove(&index);
            }
            // A failed or cancelled deploy may be resumed: its later events still count, and
            // a `DeployCompleted` after a resume is its final outcome (only that one ends it).
            Event::DeployFailed(f) => {
                release.outcome = Outcome::Failed {
                    reason: f.reason.clone(),
                };
                release.finished_at = Some(e.at);
            }
            Event::DeployCancelled(c) => {
                release.outcome = Outcome::Cancelled {
                    reason: c.reason.clone(),
                };
                release.finished_at = Some(e.at);
            }
            _ => {}
        }
    }
}
