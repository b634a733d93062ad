//! Kamal's `proxy boot|reboot|start|stop|restart|remove` for the `flotilla-proxy` container
//! `flotilla setup` runs on every host, planned like a deploy: per host, the steps its
//! executor runs. `boot` and `reboot` are one `ReplaceProxy` step with the host's `proxy.run`
//! (the executor hands the listening sockets to the new container when the ports stay).

use super::build::roles_of;
use super::{HostPlan, Plan, Release, Step};
use crate::config::Config;
use flotilla_protocol::names::{PROXY_CONTAINER, PROXY_NEXT_CONTAINER, PROXY_STOP_TIMEOUT_S};
use flotilla_protocol::proxy_run::{ProxyRun, ProxyRunError};
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
    /// A proxy with the host's `proxy.run` where it is missing or runs other settings; a
    /// stopped one with them started; a current one left alone.
    Boot,
    /// A new proxy container with the host's `proxy.run` replacing the running one.
    Reboot,
}

/// The plan of `operation` on every host of the config (each with its roles, so Kamal's
/// `-h`/`-r` narrow it), every host at once.
pub fn proxy_plan(config: &Config, operation: ProxyOperation) -> Result<Plan, ProxyRunError> {
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
        // Per host, below: each host's own `proxy.run`.
        ProxyOperation::Boot | ProxyOperation::Reboot => Vec::new(),
    };
    let hosts = config
        .all_hosts()
        .into_iter()
        .map(|host| {
            let steps = match operation {
                ProxyOperation::Boot | ProxyOperation::Reboot => vec![Step::ReplaceProxy {
                    container: PROXY_CONTAINER.to_owned(),
                    run: proxy_run(config, host)?,
                    boot: operation == ProxyOperation::Boot,
                }],
                _ => steps.clone(),
            };
            Ok(HostPlan {
                host: host.to_owned(),
                roles: roles_of(config, host)
                    .iter()
                    .map(|r| r.name.clone())
                    .collect(),
                primary: false,
                steps,
            })
        })
        .collect::<Result<_, ProxyRunError>>()?;
    Ok(Plan {
        service: config.service.clone(),
        destination: config.destination.clone(),
        release: Release {
            version: String::new(),
            image: String::new(),
        },
        primary_role: config.primary_role.clone(),
        hosts,
    })
}

/// The `proxy.run` of `host`: the first of its roles that sets one (the config's validation
/// already refused hosts whose roles disagree), else the root `proxy.run`; with the warnings
/// for keys that do not apply to Flotilla's proxy.
pub fn proxy_run_with_warnings(
    config: &Config,
    host: &str,
) -> Result<(ProxyRun, Vec<String>), ProxyRunError> {
    let empty = Default::default();
    let run = config
        .servers
        .iter()
        .filter(|r| r.hosts.iter().any(|h| h == host))
        .filter_map(|r| r.proxy.as_ref())
        .map(|p| &p.run)
        .find(|r| !r.is_empty())
        .or_else(|| config.proxy.as_ref().map(|p| &p.run))
        .unwrap_or(&empty);
    ProxyRun::from_kamal(run)
}

/// [`proxy_run_with_warnings`] without the warnings (the CLI prints them).
pub fn proxy_run(config: &Config, host: &str) -> Result<ProxyRun, ProxyRunError> {
    proxy_run_with_warnings(config, host).map(|(run, _)| run)
}
