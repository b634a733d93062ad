//! Schema 1, frozen: the shapes records of version 1 were written with, and
//! their upcast to the current types. Never edit this file; shapes that
//! changed later are the later frozen ones (`HostFailed` is `v2.rs`'s).
//!
//! The only difference to schema 2: `HookRan` had no `duration_ms`.

use serde::{Deserialize, Serialize};

use crate::event as current;
use crate::ids::{DeployId, EventId, Seq, Timestamp};

/// Declares the frozen enum and its upcast from one list, so the two cannot
/// disagree.
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
    HostFailed(super::v2::HostFailed),
    RollbackStarted(current::RollbackStarted),
    HookRan(HookRan),
    ExecutorSeen(current::ExecutorSeen),
    AccessoryBooted(current::AccessoryBooted),
    AccessoryRemoved(current::AccessoryRemoved),
}

/// `HookRan` as of schema 1.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct HookRan {
    pub name: String,
    pub exit_code: i32,
}

impl From<HookRan> for current::HookRan {
    fn from(old: HookRan) -> Self {
        Self {
            name: old.name,
            exit_code: old.exit_code,
            // Schema 1 did not measure it; unknown is not zero.
            duration_ms: None,
        }
    }
}

/// The envelope as of schema 1 (unchanged since, but frozen with its enum).
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
