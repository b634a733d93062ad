//! Which event finishes which step, written once and typed.
//!
//! The executor reports a step done with one of these events; the scheduler reads the log
//! with the same relation to know how far a host got (`resume`), and waits instead of
//! re-sending. A step is named by its [`Step`] kind and, where a host runs several roles, the
//! container it concerns.

use flotilla_events::event::{Event, Step};

/// Whether `event` reports the step of `kind` (about `container`, when given) done.
/// A failure event never finishes a step; pruning reports nothing (it is always redone: it
/// is harmless), and neither do stopping or removing one named container.
pub fn finishes(kind: Step, container: Option<&str>, event: &Event) -> bool {
    let about = |name: &str| container.is_none_or(|c| c == name);
    match (kind, event) {
        (Step::PullImage, Event::ImagePulled(_)) => true,
        (Step::StartContainer, Event::ContainerStarted(c)) => about(&c.name),
        (Step::AwaitHealthy, Event::HealthPassed(_)) => true,
        (Step::SwitchProxy, Event::ProxySwitched(p)) => about(&p.to),
        (Step::StopOldContainer, Event::OldContainerStopped(_)) => true,
        (Step::BootAccessory, Event::AccessoryBooted(_)) => true,
        (Step::RemoveAccessory, Event::AccessoryRemoved(_)) => true,
        // A kept image (still used by another container) is the step's outcome too.
        (Step::RemoveImage, Event::ImageRemoved(_) | Event::ImageKept(_)) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_events::event::{ContainerStarted, HealthFailed, ProxySwitched};

    /// A host running two roles finishes "start web" only with web's container, and a failed
    /// health check finishes nothing.
    #[test]
    fn events_finish_their_own_step_only() {
        let started = Event::from(ContainerStarted {
            name: "app-web-v2".into(),
            container_id: "c1".into(),
            version: "v2".into(),
            role: "web".into(),
        });
        assert!(finishes(Step::StartContainer, Some("app-web-v2"), &started));
        assert!(!finishes(
            Step::StartContainer,
            Some("app-job-v2"),
            &started
        ));
        assert!(!finishes(Step::AwaitHealthy, None, &started));
        let switched = Event::from(ProxySwitched {
            from: None,
            to: "app-web-v2".into(),
        });
        assert!(finishes(Step::SwitchProxy, Some("app-web-v2"), &switched));
        let unhealthy = Event::from(HealthFailed {
            attempts: 3,
            last_response: None,
            error: "503".into(),
        });
        assert!(!finishes(Step::AwaitHealthy, None, &unhealthy));
        assert!(!finishes(Step::SwitchProxy, None, &unhealthy));
    }
}
