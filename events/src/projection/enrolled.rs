//! `Enrolled`: each host's keys as its latest `HostEnrolled` recorded them.
//!
//! This is the only source of the keys the scheduler seals secrets to and verifies reports
//! with; nothing a host sends over NATS can change it.

use std::collections::BTreeMap;

use super::Projection;
use crate::envelope::Envelope;
use crate::event::{Event, HostEnrolled};
use crate::ids::Timestamp;

/// One host's enrolment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Enrolment {
    /// The keys and the SSH host key they were read through.
    pub keys: HostEnrolled,
    /// When the host was (last) enrolled.
    pub at: Timestamp,
}

/// Every enrolled host, by host id as deploy.yml names it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Enrolled {
    hosts: BTreeMap<String, Enrolment>,
}

impl Enrolled {
    /// The host's latest enrolment, if it was ever enrolled.
    pub fn host(&self, host: &str) -> Option<&Enrolment> {
        self.hosts.get(host)
    }

    /// Every enrolled host.
    pub fn hosts(&self) -> impl Iterator<Item = (&str, &Enrolment)> {
        self.hosts.iter().map(|(h, e)| (h.as_str(), e))
    }
}

impl Projection for Enrolled {
    fn apply(&mut self, event: &Envelope) {
        if let (Event::HostEnrolled(keys), Some(host)) = (&event.event, &event.host) {
            self.hosts.insert(
                host.clone(),
                Enrolment {
                    keys: keys.clone(),
                    at: event.at,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DeployId, NewEvent};

    fn enrolled(host: &str, signing: &str, seq: u64) -> Envelope {
        NewEvent::new(
            DeployId::new(),
            "ops@laptop",
            HostEnrolled {
                ssh_host_key: "SHA256:abc".into(),
                sealing_key: format!("seal-{signing}"),
                signing_key: signing.into(),
                replaces: None,
            },
        )
        .on_host(host)
        .into_envelope(seq)
    }

    /// The latest enrolment of a host wins; other hosts keep theirs; other events change nothing.
    #[test]
    fn latest_enrolment_wins() {
        let mut e = Enrolled::default();
        e.apply(&enrolled("h1", "k1", 1));
        e.apply(&enrolled("h2", "k2", 2));
        e.apply(&enrolled("h1", "k3", 3));
        assert_eq!(
            e.host("h1").map(|x| x.keys.signing_key.as_str()),
            Some("k3")
        );
        assert_eq!(
            e.host("h2").map(|x| x.keys.signing_key.as_str()),
            Some("k2")
        );
        assert!(e.host("h3").is_none());
        assert_eq!(e.hosts().count(), 2);
    }
}
