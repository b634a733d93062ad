//! Enrolment: whether the keys an executor presents, read over its pinned SSH connection, are
//! recorded as that host's identity. Pure: the caller reads the keys and appends the event.
//!
//! A host enrolled once keeps its keys: an executor presenting other keys (a reinstalled
//! host, a wiped state directory, or an impostor that got the host's address) is refused until
//! an operator says `flotilla server enroll HOST --replace`.

use flotilla_events::event::HostEnrolled;
use flotilla_events::{DeployId, Enrolled, NewEvent};
use flotilla_protocol::identity::PublicIdentity;

/// What enrolling a host does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The host is enrolled with exactly these keys through this SSH host key: nothing to record.
    Unchanged,
    /// Record this enrolment.
    Enrol(HostEnrolled),
}

/// An enrolment the operator must confirm.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the executor on {host} presents keys that differ from the ones enrolled on {enrolled_at} \
     (enrolled signing key {enrolled}, presented {presented})"
)]
pub struct KeysChanged {
    pub host: String,
    pub enrolled: String,
    pub presented: String,
    pub enrolled_at: String,
}

impl KeysChanged {
    /// The command that accepts the new keys, once the operator knows why they changed.
    pub fn accept_command(&self) -> String {
        format!("flotilla server enroll {} --replace", self.host)
    }
}

/// Decides whether `identity`, read from `host` over the SSH connection whose host key
/// fingerprint is `ssh_host_key`, is recorded.
pub fn decide(
    enrolled: &Enrolled,
    host: &str,
    ssh_host_key: &str,
    identity: &PublicIdentity,
    replace: bool,
) -> Result<Decision, KeysChanged> {
    let record = |replaces| {
        Decision::Enrol(HostEnrolled {
            ssh_host_key: ssh_host_key.to_owned(),
            sealing_key: identity.sealing_key.clone(),
            signing_key: identity.signing_key.clone(),
            replaces,
        })
    };
    let Some(current) = enrolled.host(host) else {
        return Ok(record(None));
    };
    let same_keys = current.keys.sealing_key == identity.sealing_key
        && current.keys.signing_key == identity.signing_key;
    if same_keys {
        // The SSH layer refuses a changed host key unless the operator accepted it in
        // known_hosts; once accepted, the new fingerprint is what this enrolment went through.
        return Ok(if current.keys.ssh_host_key == ssh_host_key {
            Decision::Unchanged
        } else {
            record(None)
        });
    }
    if replace {
        return Ok(record(Some(current.keys.signing_key.clone())));
    }
    Err(KeysChanged {
        host: host.to_owned(),
        enrolled: current.keys.signing_key.clone(),
        presented: identity.signing_key.clone(),
        enrolled_at: current.at.to_string(),
    })
}

/// The event that records `enrolment` of `host`, by `actor`.
pub fn event(host: &str, actor: &str, enrolment: HostEnrolled) -> NewEvent {
    NewEvent::new(DeployId::new(), actor, enrolment).on_host(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_events::Projection;

    fn id(n: u8) -> PublicIdentity {
        PublicIdentity {
            sealing_key: format!("seal{n}"),
            signing_key: format!("sign{n}"),
        }
    }

    fn enrolled(host: &str, fp: &str, identity: &PublicIdentity) -> Enrolled {
        let Decision::Enrol(e) = decide(&Enrolled::default(), host, fp, identity, false).unwrap()
        else {
            panic!("a new host is enrolled")
        };
        let mut state = Enrolled::default();
        state.apply(&event(host, "ops", e).into_envelope(1));
        state
    }

    /// A new host is enrolled; the same keys again record nothing; other keys are refused
    /// with the command that accepts them, and accepted with `--replace`, naming the old key.
    #[test]
    fn changed_keys_need_replace() {
        let state = enrolled("h1", "SHA256:a", &id(1));
        assert_eq!(
            decide(&state, "h1", "SHA256:a", &id(1), false),
            Ok(Decision::Unchanged)
        );
        let refused = decide(&state, "h1", "SHA256:a", &id(2), false).unwrap_err();
        assert_eq!(
            refused.accept_command(),
            "flotilla server enroll h1 --replace"
        );
        assert!(refused.to_string().contains("sign1"), "{refused}");
        let Ok(Decision::Enrol(e)) = decide(&state, "h1", "SHA256:a", &id(2), true) else {
            panic!("--replace enrols the new keys")
        };
        assert_eq!(e.signing_key, "sign2");
        assert_eq!(e.replaces.as_deref(), Some("sign1"));
        // A host key the operator accepted in known_hosts is recorded with the same keys.
        let Ok(Decision::Enrol(e)) = decide(&state, "h1", "SHA256:b", &id(1), false) else {
            panic!("a new SSH host key is recorded")
        };
        assert_eq!(e.replaces, None);
        // Another host is unaffected.
        assert!(matches!(
            decide(&state, "h2", "SHA256:c", &id(3), false),
            Ok(Decision::Enrol(_))
        ));
    }
}
