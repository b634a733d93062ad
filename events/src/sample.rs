//! Realistic event streams, for tests, benchmarks and documentation.
//!
//! Ids and times are derived from the inputs, so the same call always gives
//! the same events (the stored fixtures depend on that).

use crate::envelope::{NewEvent, SCHEMA_VERSION};
use crate::event::*;
use crate::ids::{DeployId, EventId, Timestamp};

/// A deploy to describe as events.
#[derive(Clone, Debug)]
pub struct Story {
    /// The deploy id.
    pub deploy_id: DeployId,
    /// Kamal service.
    pub service: String,
    /// Kamal destination.
    pub destination: Option<String>,
    /// Version deployed.
    pub version: String,
    /// Version running before, if any.
    pub previous: Option<String>,
    /// Hosts and their role.
    pub hosts: Vec<(String, String)>,
    /// A host whose health check fails, failing the deploy.
    pub failing_host: Option<String>,
    /// Time of the first event; each next one is 10 ms later.
    pub start: Timestamp,
    /// First event id; the others follow.
    pub first_id: u128,
}

impl Story {
    /// A deploy of `version` of service `app` to `hosts` web hosts.
    pub fn new(deploy_id: &str, version: &str, hosts: usize) -> Self {
        Self {
            deploy_id: DeployId::from(deploy_id),
            service: "app".into(),
            destination: None,
            version: version.into(),
            previous: None,
            hosts: (1..=hosts)
                .map(|i| (format!("web-{i}"), "web".into()))
                .collect(),
            failing_host: None,
            start: Timestamp::from_unix_ms(1_795_000_000_000),
            first_id: 1,
        }
    }

    fn digest(&self) -> String {
        format!("sha256:{:0>64}", self.version)
    }

    /// The events of this deploy, in order.
    pub fn events(&self) -> Vec<NewEvent> {
        let image = format!("registry.local/{}:{}", self.service, self.version);
        let digest = self.digest();
        let mut out: Vec<(Option<&str>, Event)> = Vec::new();
        let request = DeployRequested {
            kind: DeployKind::Deploy,
            service: self.service.clone(),
            destination: self.destination.clone(),
            version: self.version.clone(),
            config_digest: "sha256:c0nf19".into(),
            hosts: self
                .hosts
                .iter()
                .map(|(host, role)| PlannedHost {
                    host: host.clone(),
                    roles: vec![role.clone()],
                })
                .collect(),
        };
        let holder = "alice@laptop".to_owned();
        out.push((None, request.into()));
        out.push((
            None,
            LockAcquired {
                holder: holder.clone(),
            }
            .into(),
        ));
        let built = ImageBuilt {
            image: image.clone(),
            digest: digest.clone(),
        };
        out.push((None, built.into()));
        let pushed = ImagePushed {
            image: image.clone(),
            digest: digest.clone(),
        };
        out.push((None, pushed.into()));
        let hook = HookRan {
            name: "pre-deploy".into(),
            exit_code: 0,
            duration_ms: Some(120),
        };
        out.push((None, hook.into()));
        out.push((None, DeployStarted { batch_size: 2 }.into()));
        let mut failed = None;
        for (host, role) in &self.hosts {
            let h = Some(host.as_str());
            let seen = ExecutorSeen {
                executor_version: "0.1.0".into(),
                docker_version: "20.10.24".into(),
            };
            out.push((h, seen.into()));
            let pulled = ImagePulled {
                image: image.clone(),
                digest: digest.clone(),
                bytes: 48_000_000,
                duration_ms: 900,
            };
            out.push((h, pulled.into()));
            let name = format!("{}-{role}-{}", self.service, self.version);
            let started = ContainerStarted {
                name: name.clone(),
                container_id: format!("c{:0>11}", host.len()),
                version: self.version.clone(),
                role: role.clone(),
            };
            out.push((h, started.into()));
            if self.failing_host.as_deref() == Some(host) {
                let health = HealthFailed {
                    attempts: 7,
                    last_response: Some("HTTP/1.1 503 Service Unavailable".into()),
                    error: "unhealthy after 30s".into(),
                };
                out.push((h, health.into()));
                let failure = HostFailed {
                    step: Step::AwaitHealthy,
                    error: "unhealthy after 30s".into(),
                    cause: crate::event::FailureCause::StepFailed,
                };
                out.push((h, failure.into()));
                out.push((h, OldContainerStopped { name }.into()));
                failed = Some(host.clone());
                break;
            }
            let health = HealthPassed {
                attempts: 2,
                duration_ms: 1500,
            };
            out.push((h, health.into()));
            let old = self
                .previous
                .as_ref()
                .map(|v| format!("{}-{role}-{v}", self.service));
            let switch = ProxySwitched {
                from: old.clone(),
                to: name,
            };
            out.push((h, switch.into()));
            if let Some(old) = old {
                out.push((h, OldContainerStopped { name: old }.into()));
            }
            out.push((h, HostSucceeded {}.into()));
        }
        match failed {
            None => out.push((None, DeployCompleted {}.into())),
            Some(host) => {
                let reason = format!("{host} failed its health check");
                if let Some(previous) = &self.previous {
                    let rollback = RollbackStarted {
                        from_version: Some(self.version.clone()),
                        to_version: previous.clone(),
                        reason: reason.clone(),
                    };
                    out.push((None, rollback.into()));
                }
                out.push((None, DeployFailed { reason }.into()));
            }
        }
        out.push((None, LockReleased { holder }.into()));
        self.wrap(out)
    }

    fn wrap(&self, events: Vec<(Option<&str>, Event)>) -> Vec<NewEvent> {
        events
            .into_iter()
            .enumerate()
            .map(|(i, (host, event))| NewEvent {
                id: EventId::from_u128(self.first_id + i as u128),
                deploy_id: self.deploy_id.clone(),
                at: Timestamp::from_unix_ms(self.start.unix_ms() + 10 * i as i64),
                host: host.map(str::to_owned),
                schema_version: SCHEMA_VERSION,
                actor: "alice@laptop".into(),
                event,
            })
            .collect()
    }
}

/// Events that together use every event type at least once: a good deploy, a
/// failing one with automatic rollback, an accessory boot and removal, and a
/// cancelled deploy.
pub fn every_event_type() -> Vec<NewEvent> {
    let mut events = Story::new("01D0000000000000000000GOOD", "v1", 2).events();
    let mut failing = Story::new("01D0000000000000000000FAIL", "v2", 2);
    failing.previous = Some("v1".into());
    failing.failing_host = Some("web-2".into());
    failing.first_id = 1000;
    events.extend(failing.events());
    let accessory = Story {
        deploy_id: DeployId::from("01D000000000000000000ACCES"),
        first_id: 2000,
        ..Story::new("", "v1", 0)
    };
    let db = Some("db-1");
    events.extend(accessory.wrap(vec![
        (
            db,
            AccessoryBooted {
                name: "db".into(),
                image: "mysql:8.0".into(),
                digest: Some(format!("sha256:{:0>64}", "db")),
            }
            .into(),
        ),
        (db, AccessoryRemoved { name: "db".into() }.into()),
    ]));
    let cancelled = Story {
        deploy_id: DeployId::from("01D0000000000000000000CANC"),
        first_id: 3000,
        ..Story::new("", "v3", 0)
    };
    let reason = "cancelled by alice@laptop".to_owned();
    events.extend(cancelled.wrap(vec![(None, DeployCancelled { reason }.into())]));
    let enrolment = Story {
        deploy_id: DeployId::from("01D0000000000000000000ENRL"),
        first_id: 4000,
        ..Story::new("", "v1", 0)
    };
    events.extend(enrolment.wrap(vec![(
        Some("web-1"),
        HostEnrolled {
            ssh_host_key: "SHA256:cHJldGVuZCB0aGlzIGlzIGEgZmluZ2VycHJpbnQ".into(),
            sealing_key: "c2VhbGluZyBrZXkgb2Ygd2ViLTEgKDMyIGJ5dGVzKQ==".into(),
            signing_key: "c2lnbmluZyBrZXkgb2Ygd2ViLTEgKDMyIGJ5dGVzKQ==".into(),
            nats_key: "UCIQPZ3YSJZRKWXYDDAR3FUAF2VJRR6XTOUJ6QKRCYZRXFDUGDHYXO4L".into(),
            replaces: None,
        }
        .into(),
    )]));
    let stop = Story {
        deploy_id: DeployId::from("01D0000000000000000000STOP"),
        first_id: 5000,
        ..Story::new("", "v1", 0)
    };
    let operation = Operation::AppStop;
    events.extend(stop.wrap(vec![
        (
            None,
            OperationStarted {
                operation: operation.clone(),
                service: "app".into(),
                destination: None,
                hosts: vec!["web-1".into(), "web-2".into()],
            }
            .into(),
        ),
        (
            Some("web-1"),
            OperationSucceeded {
                operation: operation.clone(),
            }
            .into(),
        ),
        (
            Some("web-2"),
            OperationFailed {
                operation: operation.clone(),
                reason: "exit 1: Error response from daemon: cannot stop container".into(),
            }
            .into(),
        ),
        (
            None,
            OperationFinished {
                operation,
                failed: vec!["web-2".into()],
            }
            .into(),
        ),
    ]));
    let remove = Story {
        deploy_id: DeployId::from("01D0000000000000000000RMIM"),
        first_id: 6000,
        ..Story::new("", "v1", 0)
    };
    events.extend(remove.wrap(vec![
        (
            Some("db-1"),
            ImageRemoved {
                image: "mysql:8.0".into(),
            }
            .into(),
        ),
        (
            Some("db-2"),
            ImageKept {
                image: "mysql:8.0".into(),
                reason: "conflict: unable to remove repository reference \"mysql:8.0\" (must \
                         force) - container 0123456789ab is using its referenced image"
                    .into(),
            }
            .into(),
        ),
    ]));
    events
}
