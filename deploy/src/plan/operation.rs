//! Kamal's state-changing app commands other than a rollout (`app start|stop|remove`, `prune
//! containers`), planned like a deploy: per host, the steps its executor runs, as plain data.
//! The scheduler turns them into signed jobs and records them; nothing here runs anything.

use super::build::{roles_of, stop_timeout};
use super::{HostPlan, Plan, Release, Step, container_name, proxy_service};
use crate::config::Config;
use serde::Serialize;

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
                    AppOperation::Maintenance { .. }
                    | AppOperation::Live
                    | AppOperation::PruneContainers { .. } => {}
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
                AppOperation::Start { .. }
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
        // A host without a proxied role has nothing to put in maintenance.
        .filter(|h: &HostPlan| !h.steps.is_empty() || !proxy_only(operation))
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

/// Whether the operation concerns only proxied roles.
fn proxy_only(operation: &AppOperation) -> bool {
    matches!(
        operation,
        AppOperation::Maintenance { .. } | AppOperation::Live
    )
}
