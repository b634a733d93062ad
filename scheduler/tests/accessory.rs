//! Accessory operations (`accessory boot|reboot|upgrade|start|stop|restart|remove`) planned
//! as the steps each of the accessory's hosts runs, and the jobs they become: the
//! accessory's secret env, its rendered files and its registry password reach a host only
//! sealed to that host's key.
#![allow(clippy::unwrap_used)]

use flotilla_deploy::config::{LoadOptions, load};
use flotilla_deploy::plan::{
    AccessoryFiles, AccessoryPlanError, BootAccessory, FileContents, Plan, Step,
};
use flotilla_events::event::{AccessoryAction, Operation};
use flotilla_events::{DeployId, MemoryLog, Timestamp};
use flotilla_protocol::sealing::HostKey;
use flotilla_protocol::wire::{self, ExistingAccessory, JobStep};
use flotilla_scheduler::jobs::{JobContext, job_for};
use flotilla_scheduler::procedure::plans::{Narrow, PlanError, operation_plan};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

fn config() -> flotilla_deploy::Config {
    let root =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/tests/fixtures/plan_accessory");
    let opts = LoadOptions {
        env: BTreeMap::from([("PATH".to_owned(), "/usr/bin:/bin".to_owned())]),
        ..LoadOptions::new(root)
    };
    load(&opts).unwrap()
}

/// What the CLI read and rendered from `files:`.
fn files() -> AccessoryFiles {
    BTreeMap::from([(
        "db".to_owned(),
        BTreeMap::from([(
            "config/init.sql.erb".to_owned(),
            FileContents::new("ALTER USER shop PASSWORD 'pg-s3cret';\n"),
        )]),
    )])
}

fn planned(name: &str, action: AccessoryAction) -> Result<Plan, PlanError> {
    let operation = Operation::Accessory {
        name: name.into(),
        action,
    };
    operation_plan(
        &config(),
        &MemoryLog::new(),
        &operation,
        &Narrow::default(),
        &files(),
    )
}

fn steps(plan: &Plan, host: &str) -> Vec<Step> {
    plan.host(host).unwrap().steps.clone()
}

fn boot_of(plan: &Plan, host: &str) -> BootAccessory {
    match &steps(plan, host)[..] {
        [Step::BootAccessory(b)] => (**b).clone(),
        other => panic!("{other:?}"),
    }
}

/// `accessory reboot db` runs on each of db's hosts (not the app's), every host at once: one
/// boot that replaces the container, with Kamal's paths made absolute under the SSH user's
/// home, the bind mounts of its files and directories beside its named volume, `KAMAL_HOST`
/// of that host, and its secret env by name only. `upgrade` plans the same.
#[test]
fn reboot_boots_again_on_each_accessory_host_replacing_the_container() {
    let plan = planned("db", AccessoryAction::Reboot).unwrap();
    let hosts: Vec<&str> = plan.hosts.iter().map(|h| h.host.as_str()).collect();
    assert_eq!(hosts, ["10.0.0.2", "10.0.0.3"]);
    assert!(plan.hosts.iter().all(|h| !h.primary));
    let boot = boot_of(&plan, "10.0.0.3");
    assert_eq!(boot.container, "shop-db");
    assert_eq!(boot.image, "other.registry/postgres:16");
    assert_eq!(boot.replace, Some(10));
    assert_eq!(
        boot.volumes,
        [
            "shop-pg:/var/lib/postgresql",
            "/root/shop-db/docker-entrypoint-initdb.d/init.sql:/docker-entrypoint-initdb.d/init.sql",
            "/root/shop-db/data:/var/lib/postgresql/data",
            "/srv/backups:/backups:ro",
        ]
    );
    assert_eq!(boot.directories, ["/root/shop-db/data", "/srv/backups"]);
    assert_eq!(
        boot.files[0].host_path,
        "/root/shop-db/docker-entrypoint-initdb.d/init.sql"
    );
    assert_eq!(boot.files[0].mode, 0o755);
    assert_eq!(
        boot.env_file.as_deref(),
        Some("/root/.kamal/apps/shop/env/accessories/db.env")
    );
    assert_eq!(
        boot.env,
        BTreeMap::from([
            ("KAMAL_HOST".to_owned(), "10.0.0.3".to_owned()),
            ("POSTGRES_USER".to_owned(), "shop".to_owned()),
        ])
    );
    assert_eq!(
        boot.secret_env,
        [(
            "POSTGRES_PASSWORD".to_owned(),
            "POSTGRES_PASSWORD".to_owned()
        )]
    );
    assert_eq!(boot.publish, ["5432:5432"]);
    assert_eq!(
        boot.cmd,
        Some(vec![
            "postgres".to_owned(),
            "-c".to_owned(),
            "max_connections=50".to_owned()
        ])
    );
    // The plan prints: no file's contents in it.
    let shown = format!("{plan:?}{}", serde_json::to_string(&plan).unwrap());
    assert!(!shown.contains("pg-s3cret"), "{shown}");

    let upgrade = planned("db", AccessoryAction::Upgrade).unwrap();
    assert_eq!(upgrade, plan);
}

/// `boot` keeps a container that exists (Kamal's skip); `start`, `stop`, `restart` and
/// `remove` plan Kamal's container commands, and `remove` takes the accessory's directory
/// under the SSH user's home and then its image (Kamal's `remove_image`); an accessory with
/// its own `service:` name has that container removed by name.
#[test]
fn boot_keeps_and_the_other_verbs_plan_kamals_commands() {
    assert_eq!(
        boot_of(&planned("db", AccessoryAction::Boot).unwrap(), "10.0.0.2").replace,
        None
    );
    let stop = Step::StopAccessory {
        name: "db".into(),
        container: "shop-db".into(),
        stop_timeout_s: 10,
    };
    let start = Step::StartAccessory {
        name: "db".into(),
        container: "shop-db".into(),
    };
    let host = "10.0.0.2";
    let plan = |action| steps(&planned("db", action).unwrap(), host);
    assert_eq!(plan(AccessoryAction::Start), std::slice::from_ref(&start));
    assert_eq!(plan(AccessoryAction::Stop), std::slice::from_ref(&stop));
    assert_eq!(plan(AccessoryAction::Restart), [stop, start]);
    assert_eq!(
        plan(AccessoryAction::Remove),
        [
            Step::RemoveAccessory {
                name: "db".into(),
                container: "shop-db".into(),
                paths: vec!["/root/shop-db".into()],
            },
            Step::RemoveImage {
                image: "other.registry/postgres:16".into()
            }
        ]
    );
    let cache = planned("cache", AccessoryAction::Remove).unwrap();
    assert_eq!(cache.hosts.len(), 1);
    assert_eq!(
        steps(&cache, host),
        [
            Step::RemoveContainer {
                container: "shop-redis".into()
            },
            Step::RemoveAccessory {
                name: "cache".into(),
                container: "shop-redis".into(),
                paths: vec!["/root/shop-redis".into()],
            },
            Step::RemoveImage {
                image: "redis:7".into()
            }
        ]
    );
}

/// An accessory the config does not have, and a boot whose files were not read, are refused
/// before anything runs, with what to do.
#[test]
fn unknown_accessory_and_unread_files_are_refused() {
    let unknown = planned("nope", AccessoryAction::Stop).unwrap_err();
    assert!(matches!(
        unknown,
        PlanError::Accessory(AccessoryPlanError::Unknown(_))
    ));
    assert_eq!(unknown.to_string(), "no accessory named \"nope\"");
    let operation = Operation::Accessory {
        name: "db".into(),
        action: AccessoryAction::Boot,
    };
    let unread = operation_plan(
        &config(),
        &MemoryLog::new(),
        &operation,
        &Narrow::default(),
        &AccessoryFiles::new(),
    )
    .unwrap_err();
    assert_eq!(
        unread.to_string(),
        "accessory db: file config/init.sql.erb was not read"
    );
    assert!(!unread.hint().is_empty());
}

/// The boot's job carries the secret env, the rendered file, the secret env file (0600, for
/// `accessory exec`) and the accessory's own registry credentials sealed to the host: the
/// encoded job holds no cleartext secret, and the host's key opens each to its value.
#[test]
fn the_boot_job_seals_secrets_files_and_registry_to_the_host() {
    let config = config();
    let plan = planned("db", AccessoryAction::Reboot).unwrap();
    let host_key = HostKey::generate();
    let keys = BTreeMap::from([("10.0.0.2".to_owned(), host_key.public_key_base64())]);
    let deploy_id = DeployId::from("01TESTACCESSORY");
    let ctx = JobContext {
        config: &config,
        deploy_id: &deploy_id,
        host_keys: &keys,
        now: Timestamp::from_unix_ms(1_000),
        validity: Duration::from_secs(600),
    };
    let job = job_for(&plan, plan.host("10.0.0.2").unwrap(), 0, &ctx).unwrap();
    let bytes = wire::encode(&job).unwrap();
    for clear in [&b"pg-s3cret"[..], b"other-pw", b"ALTER USER"] {
        assert!(!bytes.windows(clear.len()).any(|w| w == clear));
    }
    let [JobStep::BootSealedAccessory(boot)] = &job.steps[..] else {
        panic!("{:?}", job.steps)
    };
    assert_eq!(boot.container, "shop-db");
    assert_eq!(
        boot.shm_size_bytes,
        Some(256 << 20),
        "options: shm-size: 256m"
    );
    assert_eq!(
        boot.existing,
        ExistingAccessory::Replace { stop_timeout_s: 10 }
    );
    let opened: Vec<(String, Vec<u8>, u32)> = boot
        .files
        .iter()
        .map(|f| {
            let bytes = host_key.open_bytes(&f.contents).unwrap();
            (f.path.clone(), bytes.to_vec(), f.mode)
        })
        .collect();
    assert_eq!(
        opened,
        [
            (
                "/root/shop-db/docker-entrypoint-initdb.d/init.sql".to_owned(),
                b"ALTER USER shop PASSWORD 'pg-s3cret';\n".to_vec(),
                0o755
            ),
            (
                "/root/.kamal/apps/shop/env/accessories/db.env".to_owned(),
                b"POSTGRES_PASSWORD=pg-s3cret\n".to_vec(),
                0o600
            ),
        ]
    );
    let [(var, sealed)] = &boot.config.secret_env[..] else {
        panic!("{:?}", boot.config.secret_env)
    };
    assert_eq!(
        (var.as_str(), host_key.open(sealed).unwrap().expose()),
        ("POSTGRES_PASSWORD", "pg-s3cret")
    );
    let auth = boot.auth.as_ref().unwrap();
    assert_eq!(auth.server, "other.registry");
    assert_eq!(host_key.open(&auth.username).unwrap().expose(), "robot");
    assert_eq!(host_key.open(&auth.password).unwrap().expose(), "other-pw");
}

/// `accessory remove`'s job asks the host to stop and remove the container and directory,
/// then to remove the accessory's image by the reference deploy.yml gives it, as its own step
/// (reported as itself, `RemoveImage`, never as another step).
#[test]
fn the_remove_job_removes_the_image_as_its_own_step() {
    let config = config();
    let plan = planned("db", AccessoryAction::Remove).unwrap();
    let keys = BTreeMap::from([(
        "10.0.0.3".to_owned(),
        HostKey::generate().public_key_base64(),
    )]);
    let deploy_id = DeployId::from("01TESTACCESSORYRM");
    let ctx = JobContext {
        config: &config,
        deploy_id: &deploy_id,
        host_keys: &keys,
        now: Timestamp::from_unix_ms(1_000),
        validity: Duration::from_secs(600),
    };
    let job = job_for(&plan, plan.host("10.0.0.3").unwrap(), 0, &ctx).unwrap();
    let [
        JobStep::RemoveAccessory(remove),
        JobStep::RemoveImage(image),
    ] = &job.steps[..]
    else {
        panic!("{:?}", job.steps)
    };
    assert_eq!(remove.paths, ["/root/shop-db"]);
    assert_eq!(image.image, "other.registry/postgres:16");
    assert_eq!(
        job.steps[1].kind(),
        flotilla_events::event::Step::RemoveImage
    );
}

/// An accessory's `options:` reach the host in its boot job as Docker settings, as Kamal's
/// `docker run --restart always --cpus 1.5 ...`: the restart policy instead of Kamal's
/// default `unless-stopped`, its network (Kamal 2's `network:` key) instead of `kamal`, the
/// CPU limit as Docker's nano-CPUs, the user and the host name. Without them the job asks for
/// none (the executor's defaults: `unless-stopped`, `kamal`).
#[test]
fn the_boot_job_carries_the_accessorys_docker_options() {
    let config = config();
    let key = HostKey::generate().public_key_base64();
    let keys = BTreeMap::from([("10.0.0.2".to_owned(), key)]);
    let deploy_id = DeployId::from("01TESTACCESSORYOPT");
    let ctx = JobContext {
        config: &config,
        deploy_id: &deploy_id,
        host_keys: &keys,
        now: Timestamp::from_unix_ms(1_000),
        validity: Duration::from_secs(600),
    };
    let boot = |name: &str| {
        let plan = planned(name, AccessoryAction::Boot).unwrap();
        let job = job_for(&plan, plan.host("10.0.0.2").unwrap(), 0, &ctx).unwrap();
        match &job.steps[..] {
            [JobStep::BootSealedAccessory(b)] => b.clone(),
            other => panic!("{other:?}"),
        }
    };
    let cache = boot("cache");
    assert_eq!(cache.restart, Some(wire::RestartPolicy::Always));
    assert_eq!(cache.network.as_deref(), Some("backend"));
    assert_eq!(cache.nano_cpus, Some(1_500_000_000));
    assert_eq!(cache.user.as_deref(), Some("999"));
    assert_eq!(cache.hostname.as_deref(), Some("cache-1"));
    let db = boot("db");
    assert_eq!(
        (db.restart, db.network, db.nano_cpus, db.user, db.hostname),
        (None, None, None, None, None)
    );
}
