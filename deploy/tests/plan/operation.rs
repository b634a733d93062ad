//! App operations other than a rollout (`app start|stop|remove`, `stale_containers --stop`,
//! `prune`), planned as data like a deploy.

use crate::fixture;
use flotilla_deploy::config::{LoadOptions, load};
use flotilla_deploy::plan::{AppOperation, Plan, Step, operation_plan};
use std::collections::BTreeMap;

fn planned(operation: &AppOperation) -> Plan {
    let opts = LoadOptions {
        env: BTreeMap::from([("PATH".to_owned(), "/usr/bin:/bin".to_owned())]),
        ..LoadOptions::new(fixture("plan_roles_tags"))
    };
    let config = load(&opts).unwrap();
    operation_plan(&config, operation)
}

fn steps(plan: &Plan, host: &str) -> Vec<Step> {
    plan.host(host).unwrap().steps.clone()
}

/// `app stop` stops every role a host runs (none kept), each with its own `stop_timeout`;
/// `-r job` leaves web alone and the hosts without job out.
#[test]
fn stop_stops_each_role_with_its_timeout() {
    let plan = planned(&AppOperation::Stop);
    assert_eq!(plan.release.version, "");
    assert_eq!(
        steps(&plan, "10.0.0.2"),
        [
            Step::StopRole {
                role: "web".into(),
                stop_timeout_s: 30
            },
            Step::StopRole {
                role: "job".into(),
                stop_timeout_s: 90
            },
        ]
    );
    let jobs = plan.filtered(&[], &["job".into()]);
    let hosts: Vec<&str> = jobs.hosts.iter().map(|h| h.host.as_str()).collect();
    assert_eq!(hosts, ["10.0.0.2", "10.0.0.3"]);
    assert_eq!(steps(&jobs, "10.0.0.2").len(), 1);
}

/// `app start --version v7` starts each role's container of that version by Kamal's name.
#[test]
fn start_names_the_version_containers() {
    let plan = planned(&AppOperation::Start {
        version: "v7".into(),
    });
    assert_eq!(plan.release.version, "v7");
    assert_eq!(
        steps(&plan, "10.0.0.2"),
        [
            Step::StartExisting {
                role: "web".into(),
                container: "shop-web-v7".into()
            },
            Step::StartExisting {
                role: "job".into(),
                container: "shop-job-v7".into()
            },
        ]
    );
}

/// `app remove` stops the roles, then removes every stopped container of the service (none
/// retained, none protected); `prune containers` is one prune per host, keeping the newest
/// `retain` and the rollback target's containers.
#[test]
fn remove_and_prune() {
    let plan = planned(&AppOperation::Remove);
    assert_eq!(
        steps(&plan, "10.0.0.1"),
        [
            Step::StopRole {
                role: "web".into(),
                stop_timeout_s: 30
            },
            Step::Prune {
                retain: 0,
                protected: vec![]
            },
        ]
    );
    let plan = planned(&AppOperation::PruneContainers {
        retain: 1,
        protected: vec!["shop-web-v6".into()],
    });
    for host in ["10.0.0.1", "10.0.0.2", "10.0.0.3"] {
        assert_eq!(
            steps(&plan, host),
            [Step::Prune {
                retain: 1,
                protected: vec!["shop-web-v6".into()]
            }]
        );
    }
}

/// `prune images` is one image prune per host that keeps the rollback target's images;
/// `prune all` prunes containers first, so the images they held go in the same run.
#[test]
fn prune_images_and_all() {
    let protected_images = vec!["registry:4443/shop@sha256:abc".to_owned()];
    let plan = planned(&AppOperation::PruneImages {
        protected_images: protected_images.clone(),
    });
    for host in ["10.0.0.1", "10.0.0.2", "10.0.0.3"] {
        assert_eq!(
            steps(&plan, host),
            [Step::PruneImages {
                protected: protected_images.clone()
            }]
        );
    }
    let plan = planned(&AppOperation::PruneAll {
        retain: 2,
        protected: vec!["shop-web-v6".into()],
        protected_images: protected_images.clone(),
    });
    assert_eq!(
        steps(&plan, "10.0.0.2"),
        [
            Step::Prune {
                retain: 2,
                protected: vec!["shop-web-v6".into()]
            },
            Step::PruneImages {
                protected: protected_images
            },
        ]
    );
}

/// `app stale_containers --stop` keeps, on each host, the version the log says that host
/// runs (10.0.0.1 still v6 after a v7 that failed there) and stops each role's others; a
/// host whose version the log does not know is left out of the plan, not stripped bare.
#[test]
fn stop_stale_keeps_each_hosts_own_version() {
    let keep = BTreeMap::from([
        ("10.0.0.1".to_owned(), "v6".to_owned()),
        ("10.0.0.2".to_owned(), "v7".to_owned()),
    ]);
    let plan = planned(&AppOperation::StopStale { keep });
    assert_eq!(
        steps(&plan, "10.0.0.1"),
        [Step::StopOldContainers {
            role: "web".into(),
            keep: "shop-web-v6".into(),
            stop_timeout_s: 30
        }]
    );
    assert_eq!(
        steps(&plan, "10.0.0.2"),
        [
            Step::StopOldContainers {
                role: "web".into(),
                keep: "shop-web-v7".into(),
                stop_timeout_s: 30
            },
            Step::StopOldContainers {
                role: "job".into(),
                keep: "shop-job-v7".into(),
                stop_timeout_s: 90
            },
        ]
    );
    assert!(plan.host("10.0.0.3").is_none());
}
