//! Projections: what Flotilla knows, as pure folds of the log.
//!
//! Each projection is a value with `apply(&mut self, &Envelope)`: no I/O, no
//! clock, no randomness, so folding the same events always gives the same
//! state, whether event by event, in batches, or after reopening the log.
//! Events a projection does not care about are ignored, as are events that
//! make no sense in its state (e.g. a host event before the deploy was
//! requested): a fold never fails, it records what it can.

mod deploy_state;
mod enrolled;
mod fleet;
mod releases;

pub use deploy_state::{DeployState, DeployStatus, Deploys, HostState, HostStatus};
pub use enrolled::{Enrolled, Enrolment};
pub use fleet::{FleetState, HostRuns, RunningAccessory, RunningContainer};
pub use releases::{ImageRef, Outcome, Release, ReleaseTarget, Releases, Stopped};

use crate::envelope::Envelope;
use crate::log::{EventLog, LogError};

/// A pure fold of events into state.
pub trait Projection {
    /// Fold one event in.
    fn apply(&mut self, event: &Envelope);

    /// Fold events in, in order.
    fn apply_all<'a>(&mut self, events: impl IntoIterator<Item = &'a Envelope>)
    where
        Self: Sized,
    {
        for event in events {
            self.apply(event);
        }
    }
}

/// Every projection Flotilla keeps, folded together in one pass.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Projections {
    /// Each deploy's progress per host.
    pub deploys: Deploys,
    /// Releases and rollback targets per service and destination.
    pub releases: Releases,
    /// What each host runs now.
    pub fleet: FleetState,
    /// Each host's enrolled keys.
    pub enrolled: Enrolled,
}

impl Projections {
    /// Fold the whole log; the first unreadable record stops with its error.
    pub fn rebuild(log: &dyn EventLog) -> Result<Self, LogError> {
        let mut state = Self::default();
        for event in log.read_all()? {
            state.apply(&event?);
        }
        Ok(state)
    }
}

impl Projection for Projections {
    fn apply(&mut self, event: &Envelope) {
        self.deploys.apply(event);
        self.releases.apply(event);
        self.fleet.apply(event);
        self.enrolled.apply(event);
    }
}
