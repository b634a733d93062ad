//! Planned steps become signed jobs with secrets sealed to each host's key.
#![allow(clippy::unwrap_used)]

use flotilla_deploy::config::{LoadOptions, load};
use flotilla_deploy::plan::{PlanContext, Release, plan};
use flotilla_events::{DeployId, Timestamp};
use flotilla_protocol::sealing::HostKey;
use flotilla_protocol::wire::{self, JobStep};
use flotilla_scheduler::jobs::{JobContext, JobError, job_for};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

fn config() -> flotilla_deploy::Config {
    let root =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/tests/fixtures/plan_roles_tags");
    let opts = LoadOptions {
        env: BTreeMap::from([("PATH".to_owned(), "/usr/bin:/bin".to_owned())]),
        ..LoadOptions::new(root)
    };
    load(&opts).unwrap()
}

/// Secret env and the registry password reach the job only sealed to the host's key: the
/// encoded job holds no cleartext, and the host's key opens them to the right values.
#[test]
fn secrets_are_sealed_to_the_host() {
    let config = config();
    let release = Release {
        version: "v1".into(),
        image: "acme/shop:v1".into(),
    };
    let plan = plan(&config, &release, &PlanContext::default());
    let host_key = HostKey::generate();
    let keys = BTreeMap::from([("10.0.0.2".to_owned(), host_key.public_key_base64())]);
    let deploy_id = DeployId::from("01TESTDEPLOY");
    let ctx = JobContext {
        config: &config,
        deploy_id: &deploy_id,
        host_keys: &keys,
        now: Timestamp::from_unix_ms(1_000),
        validity: Duration::from_secs(600),
    };
    let host = plan.host("10.0.0.2").unwrap();
    let job = job_for(&plan, host, 0, &ctx).unwrap();
    assert_eq!(job.steps.len(), host.steps.len());
    assert_eq!(job.expires_at, Timestamp::from_unix_ms(601_000));
    let bytes = wire::encode(&job).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        !text.contains("hunter2") && !text.contains("postgres://db/shop") && !text.contains("pw")
    );

    let JobStep::StartContainer(start) = &job.steps[1] else {
        panic!("{:?}", job.steps[1])
    };
    let opened: BTreeMap<String, String> = start
        .config
        .secret_env
        .iter()
        .map(|(k, v)| (k.clone(), host_key.open(v).unwrap().expose().to_owned()))
        .collect();
    assert_eq!(opened["DB_PASSWORD"], "hunter2");
    assert_eq!(opened["DATABASE_URL"], "postgres://db/shop");
    let JobStep::PullImage(pull) = &job.steps[0] else {
        panic!()
    };
    let auth = pull.auth.as_ref().unwrap();
    assert_eq!(
        (
            host_key.open(&auth.username).unwrap().expose(),
            host_key.open(&auth.password).unwrap().expose()
        ),
        ("ci", "pw")
    );
    // Neither travels in clear: the job's bytes hold no trace of them.
    let bytes = flotilla_protocol::wire::encode(&job).unwrap();
    assert!(!bytes.windows(7).any(|w| w == b"hunter2"));

    // A resume from step 3 sends only the rest, under its own job id.
    let rest = job_for(&plan, host, 3, &ctx).unwrap();
    assert_eq!(rest.steps.len(), host.steps.len() - 3);
    assert_ne!(rest.id, job.id);
    // A resume that sends the host the same steps again (from step 0, within JetStream's
    // two-minute dedup window) does so under a new id, the `Nats-Msg-Id`: a reused id
    // would be dropped as a duplicate and the host would never get the job.
    let again = job_for(&plan, host, 0, &ctx).unwrap();
    assert_eq!(again.steps.len(), job.steps.len());
    assert_ne!(again.id, job.id);
}

/// A host that was never enrolled has no key: the job cannot be made, and the error names
/// the host.
#[test]
fn unknown_host_key_is_an_error() {
    let config = config();
    let release = Release {
        version: "v1".into(),
        image: "acme/shop:v1".into(),
    };
    let plan = plan(&config, &release, &PlanContext::default());
    let keys = BTreeMap::new();
    let deploy_id = DeployId::new();
    let ctx = JobContext {
        config: &config,
        deploy_id: &deploy_id,
        host_keys: &keys,
        now: Timestamp::now(),
        validity: Duration::from_secs(60),
    };
    let err = job_for(&plan, &plan.hosts[0], 0, &ctx).unwrap_err();
    assert!(matches!(err, JobError::NoHostKey { .. }));
    assert!(err.to_string().contains("10.0.0.1"));
}
