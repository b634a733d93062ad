//! Kamal's `proxy start|stop|restart|remove` for the `flotilla-proxy` container `flotilla
//! setup` runs on every host, planned like a deploy: per host, the steps its executor runs.
//! (`proxy boot` and `reboot` stay SSH commands: replacing a running proxy hands its
//! listening sockets to the new container, which no executor step does yet.)

use super::build::roles_of;
use super::{HostPlan, Plan, Release, Step};
use crate::config::Config;
use flotilla_protocol::names::{PROXY_CONTAINER, PROXY_NEXT_CONTAINER, PROXY_STOP_TIMEOUT_S};
use serde::Serialize;

/// What a proxy operation does on each host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ProxyOperation {
    /// The existing container started, as it is.
    Start,
    /// SIGTERM (the proxy stops accepting and drains), then Docker's kill after the proxy's
    /// stop timeout.
    Stop,
    /// Stopped, then started.
    Restart,
    /// The proxy's containers removed; its saved routes stay on the host, so a later `proxy
    /// boot` serves the deployed apps again.
    Remove,
}

/// The plan of `operation` on every host of the config (each with its roles, so Kamal's
/// `-h`/`-r` narrow it), every host at once.
pub fn proxy_plan(config: &Config, operation: ProxyOperation) -> Plan {
    let stop = Step::StopProxy {
        container: PROXY_CONTAINER.to_owned(),
        stop_timeout_s: u64::from(PROXY_STOP_TIMEOUT_S),
    };
    let start = Step::StartProxy {
        container: PROXY_CONTAINER.to_owned(),
    };
    let steps = match operation {
        ProxyOperation::Start => vec![start],
        ProxyOperation::Stop => vec![stop],
        ProxyOperation::Restart => vec![stop, start],
        ProxyOperation::Remove => [PROXY_CONTAINER, PROXY_NEXT_CONTAINER]
            .into_iter()
            .map(|c| Step::RemoveContainer {
                container: c.to_owned(),
            })
            .collect(),
    };
    let hosts = config
        .all_hosts()
        .into_iter()
        .map(|host| HostPlan {
            host: host.to_owned(),
            roles: roles_of(config, host)
                .iter()
                .map(|r| r.name.clone())
                .collect(),
            primary: false,
            steps: steps.clone(),
        })
        .collect();
    Plan {
        service: config.service.clone(),
        destination: config.destination.clone(),
        release: Release {
            version: String::new(),
            image: String::new(),
        },
        primary_role: config.primary_role.clone(),
        hosts,
    }
}
