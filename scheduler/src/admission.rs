//! Which reports count: a report is appended to the log only if it verifies against its
//! host's enrolled signing key and its subject host, event host, deploy and job all agree
//! with what this run dispatched. Everything else is dropped with the reason (logged and
//! counted by the engine), never appended. Pure: no I/O, no clock.

use std::collections::BTreeMap;

use flotilla_events::{DeployId, Enrolled};
use flotilla_protocol::identity::ReportVerifier;
use flotilla_protocol::subjects::token;
use flotilla_protocol::wire::{self, Report, SignedReport, WireError};

/// The enrolled keys of a run's hosts.
#[derive(Debug, Clone, Default)]
pub struct HostKeys {
    /// By host token: the host as deploy.yml names it, and its report verifier.
    verifiers: BTreeMap<String, (String, ReportVerifier)>,
    /// Host -> sealing key (base64): what its secrets are sealed to.
    pub sealing: BTreeMap<String, String>,
}

/// Hosts a run needs that were never enrolled (or whose enrolled key is unreadable).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "not enrolled: {}: the scheduler trusts a host's keys only once `flotilla setup` (or \
     `flotilla server enroll HOST`) has read them over SSH",
    hosts.join(", ")
)]
pub struct NotEnrolled {
    pub hosts: Vec<String>,
}

impl HostKeys {
    /// The keys of `hosts` from their enrolments.
    pub fn of(enrolled: &Enrolled, hosts: &[String]) -> Result<HostKeys, NotEnrolled> {
        let mut keys = HostKeys::default();
        let mut missing = Vec::new();
        for host in hosts {
            let Some(e) = enrolled.host(host) else {
                missing.push(host.clone());
                continue;
            };
            let Ok(verifier) = ReportVerifier::new(&e.keys.signing_key) else {
                missing.push(host.clone());
                continue;
            };
            keys.verifiers.insert(token(host), (host.clone(), verifier));
            keys.sealing
                .insert(host.clone(), e.keys.sealing_key.clone());
        }
        if missing.is_empty() {
            Ok(keys)
        } else {
            Err(NotEnrolled { hosts: missing })
        }
    }
}

/// Why a report was not appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dropped {
    /// Not a signed report in a format this build reads.
    Undecodable,
    /// Names a host that is not one of this run's enrolled hosts.
    UnknownHost,
    /// The signature does not verify with the named host's enrolled key.
    BadSignature,
    /// Arrived on another host's subject than the host it names.
    WrongSubject,
    /// For another deploy than this run's.
    OtherDeploy,
    /// For a job this run did not dispatch to that host.
    NotDispatched,
    /// A refusal of bytes the scheduler never signed: it says nothing about any deploy.
    UnsignedRefusal,
}

impl Dropped {
    /// The metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Dropped::Undecodable => "undecodable",
            Dropped::UnknownHost => "unknown_host",
            Dropped::BadSignature => "bad_signature",
            Dropped::WrongSubject => "wrong_subject",
            Dropped::OtherDeploy => "other_deploy",
            Dropped::NotDispatched => "not_dispatched",
            Dropped::UnsignedRefusal => "unsigned_refusal",
        }
    }
}

/// Decides whether `signed`, which arrived on the subject of `subject_host` (a host token,
/// when the transport knows it), counts for the run of `deploy`; `dispatched(host, job)` says
/// whether this run sent that job to that host. Returns the report and the host it is from.
pub fn admit(
    signed: Result<&SignedReport, &WireError>,
    subject_host: Option<&str>,
    deploy: &DeployId,
    keys: &HostKeys,
    dispatched: impl Fn(&str, &str) -> bool,
) -> Result<(String, Report), Dropped> {
    let signed = signed.map_err(|_| Dropped::Undecodable)?;
    let report: Report = wire::decode(&signed.report).map_err(|_| Dropped::Undecodable)?;
    let (claimed, job_id, report_deploy) = match &report {
        Report::Event(e) => (
            e.event.host.as_deref().ok_or(Dropped::UnknownHost)?,
            e.job_id.as_str(),
            e.event.deploy_id.as_str(),
        ),
        Report::Refused(r) => {
            if !r.reason.job_was_signed() {
                return Err(Dropped::UnsignedRefusal);
            }
            (r.host.as_str(), r.job_id.as_str(), r.deploy_id.as_str())
        }
    };
    let (host, verifier) = keys
        .verifiers
        .get(&token(claimed))
        .ok_or(Dropped::UnknownHost)?;
    if !verifier.verify(&signed.report, &signed.signature) {
        return Err(Dropped::BadSignature);
    }
    if subject_host.is_some_and(|s| s != token(claimed)) {
        return Err(Dropped::WrongSubject);
    }
    if report_deploy != deploy.as_str() {
        return Err(Dropped::OtherDeploy);
    }
    if !dispatched(host, job_id) {
        return Err(Dropped::NotDispatched);
    }
    Ok((host.clone(), report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_events::event::{HostEnrolled, HostSucceeded};
    use flotilla_events::{NewEvent, Projection};
    use flotilla_protocol::identity::ReportSigner;
    use flotilla_protocol::wire::{JobEvent, Refusal, RefusalReason};

    struct Host {
        name: &'static str,
        signer: ReportSigner,
    }

    fn enrolled(hosts: &[&Host]) -> Enrolled {
        let mut e = Enrolled::default();
        for (i, h) in hosts.iter().enumerate() {
            let event = NewEvent::new(
                DeployId::new(),
                "ops",
                HostEnrolled {
                    ssh_host_key: "SHA256:x".into(),
                    sealing_key: "c2VhbA==".into(),
                    signing_key: h.signer.public_key_base64(),
                    nats_key: format!("U{}", h.name),
                    replaces: None,
                },
            )
            .on_host(h.name);
            e.apply(&event.into_envelope(i as u64 + 1));
        }
        e
    }

    fn signed(by: &ReportSigner, report: &Report) -> SignedReport {
        let report = wire::encode(report).unwrap();
        SignedReport {
            signature: by.sign(&report),
            report,
        }
    }

    fn succeeded(deploy: &DeployId, host: &str, job: &str) -> Report {
        Report::Event(JobEvent {
            job_id: job.into(),
            step: None,
            event: NewEvent::new(deploy.clone(), "executor", HostSucceeded {}).on_host(host),
        })
    }

    /// Only a report signed by its own host's enrolled key, on its own subject, for this
    /// deploy and a job dispatched to that host counts; each forgery is dropped with its
    /// reason.
    #[test]
    fn only_verified_dispatched_reports_count() {
        let h1 = Host {
            name: "10.0.0.1",
            signer: ReportSigner::generate(),
        };
        let h2 = Host {
            name: "10.0.0.2",
            signer: ReportSigner::generate(),
        };
        let hosts = ["10.0.0.1".to_owned(), "10.0.0.2".to_owned()];
        let keys = HostKeys::of(&enrolled(&[&h1, &h2]), &hosts).unwrap();
        let deploy = DeployId::new();
        let dispatched = |host: &str, job: &str| host == "10.0.0.1" && job == "job-1";
        let admit_ = |s: &SignedReport, subject: &str| {
            admit(Ok(s), Some(subject), &deploy, &keys, dispatched).map(|(h, _)| h)
        };
        let good = signed(&h1.signer, &succeeded(&deploy, "10.0.0.1", "job-1"));
        assert_eq!(admit_(&good, "10-0-0-1"), Ok("10.0.0.1".to_owned()));
        // Another host (enrolled, with its own valid key) forging a report for h1.
        let forged = signed(&h2.signer, &succeeded(&deploy, "10.0.0.1", "job-1"));
        assert_eq!(admit_(&forged, "10-0-0-1"), Err(Dropped::BadSignature));
        // h1's genuine report replayed on h2's subject.
        assert_eq!(admit_(&good, "10-0-0-2"), Err(Dropped::WrongSubject));
        // h1 reporting outside a job dispatched to it.
        let outside = signed(&h1.signer, &succeeded(&deploy, "10.0.0.1", "job-9"));
        assert_eq!(admit_(&outside, "10-0-0-1"), Err(Dropped::NotDispatched));
        // A report of another deploy.
        let other = signed(
            &h1.signer,
            &succeeded(&DeployId::new(), "10.0.0.1", "job-1"),
        );
        assert_eq!(admit_(&other, "10-0-0-1"), Err(Dropped::OtherDeploy));
        // A host that is not enrolled.
        let stranger = signed(&h1.signer, &succeeded(&deploy, "10.0.0.3", "job-1"));
        assert_eq!(admit_(&stranger, "10-0-0-3"), Err(Dropped::UnknownHost));
        // Unsigned bytes.
        let unsigned = SignedReport {
            report: good.report.clone(),
            signature: vec![],
        };
        assert_eq!(admit_(&unsigned, "10-0-0-1"), Err(Dropped::BadSignature));
        // A (genuinely signed) refusal of a message the scheduler never signed.
        let refusal = |reason| {
            Report::Refused(Refusal {
                job_id: "job-1".into(),
                deploy_id: deploy.to_string(),
                host: "10.0.0.1".into(),
                reason,
                detail: String::new(),
                at: flotilla_events::Timestamp::from_unix_ms(1),
            })
        };
        let unsigned_job = signed(&h1.signer, &refusal(RefusalReason::Unsigned));
        assert_eq!(
            admit_(&unsigned_job, "10-0-0-1"),
            Err(Dropped::UnsignedRefusal)
        );
        let stale = signed(&h1.signer, &refusal(RefusalReason::Stale));
        assert_eq!(admit_(&stale, "10-0-0-1"), Ok("10.0.0.1".to_owned()));
        assert_eq!(
            admit(
                Err(&WireError::UnknownVersion(2)),
                None,
                &deploy,
                &keys,
                dispatched
            )
            .map(|(h, _)| h),
            Err(Dropped::Undecodable)
        );
    }

    /// A run cannot start on hosts that were never enrolled; the error names them.
    #[test]
    fn unenrolled_hosts_are_named() {
        let h1 = Host {
            name: "a",
            signer: ReportSigner::generate(),
        };
        let err = HostKeys::of(&enrolled(&[&h1]), &["a".into(), "b".into()]).unwrap_err();
        assert_eq!(err.hosts, ["b"]);
        assert!(err.to_string().contains("flotilla server enroll"), "{err}");
    }
}
