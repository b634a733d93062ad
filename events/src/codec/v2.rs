//! Schema 2, frozen: the shapes records of version 2 were written with, and their upcast to
//! the current types. Never edit a shape here; a later change freezes its own file.
//!
//! The only difference to schema 3: `HostFailed` had no `cause`. Schema 2 recorded a refused
//! job and a step timeout as a failure of some step with a telling text, so the upcast reads
//! the cause back from that text (what those builds wrote, word for word).

use serde::{Deserialize, Serialize};

use crate::event as current;
use crate::ids::{DeployId, EventId, Seq, Timestamp};

/// Declares the frozen enum and its upcast from one list, so the two cannot disagree.
macro_rules! frozen_event_enum {
    ($($variant:ident($payload:ty)),+ $(,)?) => {
        #[derive(Debug, Serialize, Deserialize)]
        pub(crate) enum Event {
            $($variant($payload)),+
        }

        impl From<Event> for current::Event {
            fn from(event: Event) -> Self {
                match event {
                    $(Event::$variant(payload) => current::Event::$variant(payload.into())),+
                }
            }
        }
    };
}

frozen_event_enum! {
    DeployRequested(current::DeployRequested),
    DeployStarted(current::DeployStarted),
    DeployCompleted(current::DeployCompleted),
    DeployFailed(current::DeployFailed),
    DeployCancelled(current::DeployCancelled),
    LockAcquired(current::LockAcquired),
    LockReleased(current::LockReleased),
    ImageBuilt(current::ImageBuilt),
    ImagePushed(current::ImagePushed),
    ImagePulled(current::ImagePulled),
    ContainerStarted(current::ContainerStarted),
    HealthPassed(current::HealthPassed),
    HealthFailed(current::HealthFailed),
    ProxySwitched(current::ProxySwitched),
    OldContainerStopped(current::OldContainerStopped),
    HostSucceeded(current::HostSucceeded),
    HostFailed(HostFailed),
    RollbackStarted(current::RollbackStarted),
    HookRan(current::HookRan),
    ExecutorSeen(current::ExecutorSeen),
    AccessoryBooted(current::AccessoryBooted),
    AccessoryRemoved(current::AccessoryRemoved),
}

/// `HostFailed` as of schemas 1 and 2.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct HostFailed {
    pub step: current::Step,
    pub error: String,
}

/// The text schema 2's scheduler gave a refused job's failure.
const REFUSED_PREFIX: &str = "the executor refused the job";
/// The text schema 2's scheduler ended a step timeout's failure with.
const TIMEOUT_SUFFIX: &str = "(step_timeout)";

impl From<HostFailed> for current::HostFailed {
    fn from(old: HostFailed) -> Self {
        let cause = if old.error.starts_with(REFUSED_PREFIX) {
            current::FailureCause::Refused
        } else if old.error.ends_with(TIMEOUT_SUFFIX) {
            current::FailureCause::TimedOut
        } else {
            current::FailureCause::StepFailed
        };
        Self {
            step: old.step,
            error: old.error,
            cause,
        }
    }
}

/// The envelope as of schema 2 (unchanged since, but frozen with its enum).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Envelope {
    pub id: EventId,
    pub deploy_id: DeployId,
    pub seq: Seq,
    pub at: Timestamp,
    pub host: Option<String>,
    pub schema_version: u16,
    pub actor: String,
    pub event: Event,
}

impl From<Envelope> for crate::envelope::Envelope {
    fn from(old: Envelope) -> Self {
        Self {
            id: old.id,
            deploy_id: old.deploy_id,
            seq: old.seq,
            at: old.at,
            host: old.host,
            schema_version: old.schema_version,
            actor: old.actor,
            event: old.event.into(),
        }
    }
}
