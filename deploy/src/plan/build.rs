//! Building the plan from a loaded configuration.

use super::{
    HostPlan, Plan, PlanContext, Release, StartContainer, Step, SwitchProxy, container_name,
    proxy_service, split_command,
};
use crate::config::Config;
use crate::config::types::{Env, OptionValue, Role, Ssl};
use std::collections::BTreeMap;

/// Seconds Docker waits after SIGTERM when neither the role nor the root sets `stop_timeout`.
const DEFAULT_STOP_TIMEOUT: u64 = 30;

/// The steps every host takes to run `release`: pull the image, then for each of its roles
/// (primary first) start the new container, gate it on health (through the proxy for proxied
/// roles), stop the old one; finally prune. Hosts appear in the config's order.
pub fn plan(config: &Config, release: &Release, context: &PlanContext) -> Plan {
    let hosts = config
        .all_hosts()
        .into_iter()
        .map(|host| host_plan(config, release, context, host))
        .collect();
    Plan {
        service: config.service.clone(),
        destination: config.destination.clone(),
        release: release.clone(),
        primary_role: config.primary_role.clone(),
        hosts,
    }
}

/// The roles `host` runs, the primary role first, then in the config's order.
pub(crate) fn roles_of<'c>(config: &'c Config, host: &str) -> Vec<&'c Role> {
    let mut roles: Vec<&Role> = config
        .servers
        .iter()
        .filter(|r| r.hosts.iter().any(|h| h == host))
        .collect();
    roles.sort_by_key(|r| r.name != config.primary_role);
    roles
}

fn host_plan(config: &Config, release: &Release, context: &PlanContext, host: &str) -> HostPlan {
    let roles = roles_of(config, host);
    let mut steps = vec![Step::PullImage {
        image: release.image.clone(),
    }];
    for role in &roles {
        steps.extend(role_steps(config, release, role, host));
    }
    steps.push(Step::Prune {
        retain: config.retain_containers,
        protected: context.protected.clone(),
    });
    HostPlan {
        host: host.to_owned(),
        primary: roles.iter().any(|r| r.name == config.primary_role),
        roles: roles.iter().map(|r| r.name.clone()).collect(),
        steps,
    }
}

fn role_steps(config: &Config, release: &Release, role: &Role, host: &str) -> Vec<Step> {
    let destination = config.destination.as_deref();
    let container = container_name(&config.service, &role.name, destination, &release.version);
    let env = host_env(role, host);
    let (log_driver, log_options) = config.logging_for(Some(role));
    let mut labels = config.labels.clone();
    labels.extend(role.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    let start = StartContainer {
        role: role.name.clone(),
        container: container.clone(),
        image: release.image.clone(),
        env: env.clear.clone(),
        secret_env: env
            .secret
            .iter()
            .map(|s| (s.var.clone(), s.secret.clone()))
            .collect(),
        labels,
        volumes: config.volumes.clone(),
        // The loader rejects a `cmd` with an open quote, so `None` here means no `cmd`.
        cmd: role.cmd.as_deref().and_then(split_command),
        options: options(&role.options),
        log_driver,
        log_options,
    };
    let gate = match &role.proxy {
        Some(proxy) => Step::SwitchProxy(SwitchProxy {
            role: role.name.clone(),
            proxy_service: proxy_service(&config.service, &role.name, destination),
            container: container.clone(),
            app_port: proxy.app_port,
            hosts: proxy.hosts.clone(),
            path_prefix: proxy.path_prefix.clone(),
            tls: !matches!(proxy.ssl, Ssl::Off),
            health_path: proxy.healthcheck.path.clone(),
            health_interval_s: proxy.healthcheck.interval,
            health_timeout_s: proxy.healthcheck.timeout,
            deploy_timeout_s: config.deploy_timeout,
            drain_timeout_s: config.drain_timeout,
        }),
        None => Step::AwaitHealthy {
            role: role.name.clone(),
            container: container.clone(),
            readiness_delay_s: config.readiness_delay,
            timeout_s: config.deploy_timeout,
        },
    };
    vec![
        Step::StartContainer(start),
        gate,
        Step::StopOldContainers {
            role: role.name.clone(),
            keep: container,
            stop_timeout_s: stop_timeout(config, role),
        },
    ]
}

/// How long Docker waits after SIGTERM for the role's containers: the role's, else the root's.
pub(crate) fn stop_timeout(config: &Config, role: &Role) -> u64 {
    role.stop_timeout
        .or(config.stop_timeout)
        .unwrap_or(DEFAULT_STOP_TIMEOUT)
}

/// The role's env with the env of each of the host's tags merged over it, in tag order.
pub(crate) fn host_env(role: &Role, host: &str) -> Env {
    let mut env = role.env.clone();
    if let Some(tags) = role.tags.get(host) {
        for tag in tags {
            if let Some(tagged) = role.env.tags.get(tag) {
                env = env.merged(tagged);
            }
        }
    }
    env
}

pub(crate) fn options(opts: &BTreeMap<String, OptionValue>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (name, value) in opts {
        match value {
            OptionValue::Flag(true) => out.push((name.clone(), String::new())),
            OptionValue::Flag(false) => {}
            OptionValue::One(v) => out.push((name.clone(), v.clone())),
            OptionValue::Many(vs) => out.extend(vs.iter().map(|v| (name.clone(), v.clone()))),
        }
    }
    out
}
