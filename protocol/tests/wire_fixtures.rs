//! Messages written by earlier builds must still decode: an executor and a scheduler of
//! different versions meet on NATS during every upgrade. A stored fixture of each wire
//! version is decoded by this build.
//!
//! `FLOTILLA_BLESS=1 cargo test -p flotilla-protocol --test wire_fixtures` writes a fixture
//! that does not exist yet (never overwrites one: they are history).

use flotilla_events::event::{HostSucceeded, ImagePulled};
use flotilla_events::{DeployId, EventId, NewEvent, Timestamp};
use flotilla_protocol::wire::*;
use std::path::PathBuf;

/// One of every message kind and every job step, as version 3 wrote them.
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Sample {
    job: Job,
    signed: SignedJob,
    reports: Vec<Report>,
    signed_report: SignedReport,
    heartbeat: Heartbeat,
}

fn at(ms: i64) -> Timestamp {
    Timestamp::from_unix_ms(1_790_000_000_000 + ms)
}

fn sample() -> Sample {
    let deploy_id = DeployId::from("01D00000000000000000000W1A");
    let config = ContainerConfig {
        image: "registry.test/app@sha256:abc".into(),
        env: vec![("APP_MODE".into(), "healthy".into())],
        secret_env: vec![("SECRET".into(), SealedValue(vec![7; 48]))],
        labels: vec![("team".into(), "web".into())],
        volumes: vec!["/data:/data".into()],
        cmd: Some(vec!["bin/server".into()]),
        publish: vec!["5432:5432".into()],
        log_driver: Some("json-file".into()),
        log_options: vec![("max-size".into(), "10m".into())],
        memory_bytes: Some(1 << 30),
        extra_hosts: vec!["db:10.0.0.9".into()],
    };
    let steps = vec![
        JobStep::PullImage(PullImage {
            image: "registry.test/app:v1".into(),
            auth: Some(RegistryAuth {
                server: "registry.test".into(),
                username: SealedValue(vec![2; 48]),
                password: SealedValue(vec![1; 48]),
            }),
        }),
        JobStep::StartContainer(StartContainer {
            service: "app".into(),
            role: "web".into(),
            destination: Some("staging".into()),
            version: "v1".into(),
            config: config.clone(),
        }),
        JobStep::AwaitHealthy(AwaitHealthy {
            container: "app-web-staging-v1".into(),
            readiness_delay_ms: 1000,
            timeout_ms: 30_000,
            interval_ms: 500,
        }),
        JobStep::SwitchProxy(SwitchProxy {
            proxy_service: "app-web-staging".into(),
            container: "app-web-staging-v1".into(),
            version: "v1".into(),
            app_port: 3000,
            hosts: vec!["app.test".into()],
            path_prefix: Some("/api".into()),
            health_path: "/up".into(),
            health_interval_ms: 1000,
            health_timeout_ms: 5000,
            deploy_timeout_ms: 30_000,
            drain_timeout_ms: 30_000,
        }),
        JobStep::StopOldContainers(StopOldContainers {
            service: "app".into(),
            role: "web".into(),
            destination: Some("staging".into()),
            keep: "app-web-staging-v1".into(),
            stop_timeout_s: 30,
        }),
        JobStep::Prune(Prune {
            service: "app".into(),
            retain: 5,
            protected: vec!["app-web-staging-v0".into()],
        }),
        JobStep::BootAccessory(BootAccessory {
            service: "app".into(),
            name: "db".into(),
            config,
            directories: vec!["/var/lib/db".into()],
            files: vec![AccessoryFile {
                path: "/etc/db.conf".into(),
                contents: b"max_connections = 10\n".to_vec(),
                mode: 0o600,
            }],
        }),
        JobStep::RemoveAccessory(RemoveAccessory {
            service: "app".into(),
            name: "db".into(),
            paths: vec!["/var/lib/db".into()],
        }),
        JobStep::StartExisting(ContainerRef {
            container: "app-web-staging-v0".into(),
        }),
        JobStep::StopContainer(StopContainer {
            container: "app-web-staging-v0".into(),
            stop_timeout_s: 10,
        }),
        JobStep::RemoveContainer(ContainerRef {
            container: "app-web-staging-v0".into(),
        }),
    ];
    let job = Job {
        id: "01D00000000000000000000W1A-h1-0".into(),
        deploy_id: deploy_id.clone(),
        host: "h1".into(),
        issued_at: at(0),
        expires_at: at(3_600_000),
        generation: 1_790_000_000_000,
        scope: "app.staging".into(),
        steps,
    };
    let event = |n: u128, e: flotilla_events::Event| NewEvent {
        id: EventId::from_u128(n),
        deploy_id: deploy_id.clone(),
        at: at(n as i64),
        host: Some("h1".into()),
        schema_version: 3,
        actor: "executor".into(),
        event: e,
    };
    let pulled = ImagePulled {
        image: "registry.test/app:v1".into(),
        digest: "sha256:abc".into(),
        bytes: 1 << 20,
        duration_ms: 40,
    };
    Sample {
        signed_report: SignedReport {
            report: vec![4, 5, 6],
            signature: vec![8; 64],
        },
        signed: SignedJob {
            job: vec![1, 2, 3],
            signature: vec![9; 64],
        },
        reports: vec![
            Report::Event(JobEvent {
                job_id: job.id.clone(),
                step: Some(0),
                event: event(1, pulled.into()),
            }),
            Report::Event(JobEvent {
                job_id: job.id.clone(),
                step: None,
                event: event(2, HostSucceeded {}.into()),
            }),
            Report::Refused(Refusal {
                job_id: job.id.clone(),
                deploy_id: deploy_id.to_string(),
                host: "h1".into(),
                reason: RefusalReason::Expired,
                detail: "expired".into(),
                at: at(5),
            }),
        ],
        heartbeat: Heartbeat {
            host: "h1".into(),
            executor_version: "0.1.0".into(),
            docker_version: "20.10.24".into(),
            containers: vec!["app-web-staging-v1".into()],
            at: at(6),
            period_ms: 5000,
        },
        job,
    }
}

/// Version 3 messages still decode, field for field.
#[test]
fn version_3_messages_decode() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wire-v3.bin");
    if !path.exists() && std::env::var_os("FLOTILLA_BLESS").is_some() {
        std::fs::write(&path, encode(&sample()).expect("encode")).expect("write fixture");
    }
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert_eq!(bytes[0], 3, "the fixture is a version 3 message");
    let decoded: Sample = decode(&bytes).expect("the v3 fixture decodes");
    assert_eq!(decoded, sample());
}

/// A version 2 message (unsigned reports, no job generation) is refused as an unknown
/// version naming both, never read as something it is not.
#[test]
fn version_2_messages_are_refused() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wire-v2.bin");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let err = decode::<Sample>(&bytes).unwrap_err();
    assert!(matches!(err, WireError::UnknownVersion(2)), "{err:?}");
    assert!(err.to_string().contains("this build speaks 3"), "{err}");
}
