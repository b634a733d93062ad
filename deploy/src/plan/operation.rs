//! Kamal's state-changing app commands other than a rollout (`app start|stop|remove|
//! maintenance|live`, `app stale_containers --stop`, `prune containers|images|all`), planned like a deploy: per host, the steps its executor runs, as plain data.
//! The scheduler turns them into signed jobs and records them; nothing here runs anything.

use super::build::{roles_of, stop_timeout};
use super::{HostPlan, Plan, Release, Step, container_name, proxy_service};
use crate::config::Config;
use serde::Serialize;
use std::collections::BTreeMap;

/// What an app operation does on each app host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum AppOperation {
    /// `app start`: each role's existing container of `version` started again.
    Start { version: String },
    /// `app stop`: every running container of each role stopped.
    Stop,
    /// `app remove`: every container of each role stopped, then every stopped container of
    /// the service removed with the images no container uses any more.
    Remove,
    /// `prune containers`: stopped containers beyond the newest `retain` removed (never one of
    /// `protected`, the rollback target's), with the images no container uses any more.
    PruneContainers { retain: u32, protected: Vec<String> },
    /// `prune images`: the service's images no container uses removed, never one of
    /// `protected_images` (the rollback target's, by reference).
    PruneImages { protected_images: Vec<String> },
    /// `prune all`: `prune containers`, then `prune images` (the removed containers' images
    /// go too).
    PruneAll {
        retain: u32,
        protected: Vec<String>,
        protected_images: Vec<String>,
    },
    /// `app stale_containers --stop`: on each host in `keep`, each role's running containers
    /// other than that host's version stopped; a host not in `keep` is left alone.
    StopStale { keep: BTreeMap<String, String> },
    /// `app maintenance`: each proxied role answers 503 with the message.
    Maintenance { message: Option<String> },
    /// `app live`: each proxied role forwards to the app again.
    Live,
}

/// The plan of `operation` on every app host, in the config's order.
/// `release.version` is the version the operation concerns (`app start`'s), else empty: no
/// image is pulled.
pub fn operation_plan(config: &Config, operation: &AppOperation) -> Plan {
    let version = match operation {
        AppOperation::Start { version } => version.clone(),
        _ => String::new(),
    };
    let hosts = config
        .all_hosts()
        .into_iter()
        .map(|host| {
            let roles = roles_of(config, host);
            let mut steps = Vec::new();
            for role in &roles {
                match operation {
                    AppOperation::Start { version } => steps.push(Step::StartExisting {
                        role: role.name.clone(),
                        container: container_name(
                            &config.service,
                            &role.name,
                            config.destination.as_deref(),
                            version,
                        ),
                    }),
                    AppOperation::Stop | AppOperation::Remove => steps.push(Step::StopRole {
                        role: role.name.clone(),
                        stop_timeout_s: stop_timeout(config, role),
                    }),
                    AppOperation::Maintenance { message } if role.proxy.is_some() => {
                        steps.push(Step::Maintenance {
                            role: role.name.clone(),
                            proxy_service: proxy_service(
                                &config.service,
                                &role.name,
                                config.destination.as_deref(),
                            ),
                            message: message.clone(),
                        })
                    }
                    AppOperation::Live if role.proxy.is_some() => steps.push(Step::Live {
                        role: role.name.clone(),
                        proxy_service: proxy_service(
                            &config.service,
                            &role.name,
                            config.destination.as_deref(),
                        ),
                    }),
                    AppOperation::StopStale { keep } => {
                        if let Some(version) = keep.get(host) {
                            steps.push(Step::StopOldContainers {
                                role: role.name.clone(),
                                keep: container_name(
                                    &config.service,
                                    &role.name,
                                    config.destination.as_deref(),
                                    version,
                                ),
                                stop_timeout_s: stop_timeout(config, role),
                            })
                        }
                    }
                    AppOperation::Maintenance { .. }
                    | AppOperation::Live
                    | AppOperation::PruneContainers { .. }
                    | AppOperation::PruneImages { .. }
                    | AppOperation::PruneAll { .. } => {}
                }
            }
            match operation {
                AppOperation::Remove => steps.push(Step::Prune {
                    retain: 0,
                    protected: Vec::new(),
                }),
                AppOperation::PruneContainers { retain, protected } => steps.push(Step::Prune {
                    retain: *retain,
                    protected: protected.clone(),
                }),
                AppOperation::PruneImages { protected_images } => steps.push(Step::PruneImages {
                    protected: protected_images.clone(),
                }),
                AppOperation::PruneAll {
                    retain,
                    protected,
                    protected_images,
                } => {
                    steps.push(Step::Prune {
                        retain: *retain,
                        protected: protected.clone(),
                    });
                    steps.push(Step::PruneImages {
                        protected: protected_images.clone(),
                    });
                }
                AppOperation::Start { .. }
                | AppOperation::StopStale { .. }
                | AppOperation::Stop
                | AppOperation::Maintenance { .. }
                | AppOperation::Live => {}
            }
            HostPlan {
                host: host.to_owned(),
                // Kamal runs these on every host at once: no host waits for a primary one.
                primary: false,
                roles: roles.iter().map(|r| r.name.clone()).collect(),
                steps,
            }
        })
        // A host without a proxied role has nothing to put in maintenance; one whose version
        // the log does not know has no stale containers it could tell.
        .filter(|h: &HostPlan| !h.steps.is_empty() || !skips_idle_hosts(operation))
        .collect();
    Plan {
        service: config.service.clone(),
        destination: config.destination.clone(),
        release: Release {
            version,
            image: String::new(),
        },
        primary_role: config.primary_role.clone(),
        hosts,
    }
}

/// Whether a host the operation gives no step is left out of its plan.
fn skips_idle_hosts(operation: &AppOperation) -> bool {
    matches!(
        operation,
        AppOperation::Maintenance { .. } | AppOperation::Live | AppOperation::StopStale { .. }
    )
}
