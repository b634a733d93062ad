//! Keeps each proxy service pointed at its container when the container moves.
//!
//! The proxy routes by address (`ADDR:PORT` on the kamal network), and dockerd gives the
//! containers it starts again (after the engine was restarted, or the host rebooted) new
//! addresses. Without this the proxy would keep the old address and answer 502 until the
//! next deploy. The executor is the one agent that sees both sides (Docker and the proxy),
//! so it looks every [`REPOINT_EVERY`]: a service whose serving container runs at another
//! address than the proxy's target is deployed again to the new address, through the
//! proxy's usual health gate.
//!
//! The serving container is named by the proxy's own route: the switch step sets the
//! route's version, and Kamal's container name is the proxy service's name and that
//! version (`flotilla_protocol::names`). A route whose container does not run (stopped by
//! the user, or not made by Flotilla) is left alone.

use std::sync::Arc;
use std::time::Duration;

use flotilla_proxy::admin::DeployRequest;
use flotilla_proxy::admin::protocol::DEFAULT_DEPLOY_TIMEOUT_MS;

use crate::runtime::{Proxy, Runtime};
use crate::steps::Executor;

/// How often the executor compares the proxy's targets with Docker's addresses: a restarted
/// container is served again within this (plus its health check) of its start, for one
/// container listing and one admin call each time.
pub const REPOINT_EVERY: Duration = Duration::from_secs(2);

/// How long requests still running against the old address may take: none are served
/// there (the container moved), so they are not waited for.
const REPOINT_DRAIN_MS: u64 = 0;

/// One service pointed at its container's new address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repointed {
    pub service: String,
    pub container: String,
    pub from: String,
    pub to: String,
}

/// Compares every proxy route with its container's address once and points the routes
/// whose container moved at the new address. Returns the routes changed; a proxy or
/// engine that does not answer changes nothing (the next look tries again).
pub async fn once<R: Runtime, P: Proxy>(ex: &Executor<R, P>) -> Vec<Repointed> {
    let _switching = ex.switching.lock().await;
    let services = match ex.proxy.services().await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "proxy routes not read");
            return Vec::new();
        }
    };
    if services.is_empty() {
        return Vec::new();
    }
    let running = match ex.runtime.list(&[], false).await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(error = %e.message, "containers not listed");
            return Vec::new();
        }
    };
    let mut changed = Vec::new();
    for status in services {
        let spec = &status.spec;
        let Some(version) = spec.version.as_deref() else {
            continue;
        };
        let Some((target_ip, port)) = spec.target.rsplit_once(':') else {
            continue;
        };
        // `names::container_name` is `names::proxy_service` and the version.
        let container = format!("{}-{version}", spec.name);
        let Some(ip) = running
            .iter()
            .find(|c| c.name == container)
            .and_then(|c| c.ip.as_deref())
        else {
            continue;
        };
        if ip == target_ip {
            continue;
        }
        let mut moved = spec.clone();
        moved.target = format!("{ip}:{port}");
        let request = DeployRequest {
            service: moved,
            health: status.health.clone().unwrap_or_default(),
            deploy_timeout_ms: DEFAULT_DEPLOY_TIMEOUT_MS,
            drain_timeout_ms: REPOINT_DRAIN_MS,
        };
        let to = request.service.target.clone();
        match ex.proxy.deploy(request).await {
            Ok(_) => {
                tracing::info!(service = %spec.name, %container, from = %spec.target, %to, "container moved: proxy pointed at its new address");
                changed.push(Repointed {
                    service: spec.name.clone(),
                    container,
                    from: spec.target.clone(),
                    to,
                });
            }
            Err(e) => {
                tracing::warn!(service = %spec.name, %container, %to, error = %e, "container moved, but the proxy was not pointed at it (tried again shortly)");
            }
        }
    }
    changed
}

/// Runs [`once`] every [`REPOINT_EVERY`], for as long as the executor runs.
pub async fn run<R: Runtime, P: Proxy>(ex: Arc<Executor<R, P>>) {
    let mut tick = tokio::time::interval(REPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        once(&ex).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::sim::{SimConfig, SimRuntime};
    use flotilla_protocol::sealing::HostKey;
    use flotilla_protocol::wire::{ContainerConfig, JobStep, StartContainer, SwitchProxy};

    fn sim() -> SimRuntime {
        SimRuntime::new(SimConfig {
            latency: Duration::ZERO,
            pull_latency: Duration::ZERO,
            ..Default::default()
        })
    }

    async fn serve(ex: &Executor<SimRuntime, SimRuntime>, role: &str, version: &str) {
        ex.run_step(&JobStep::StartContainer(StartContainer {
            service: "app".into(),
            role: role.into(),
            destination: None,
            version: version.into(),
            config: ContainerConfig {
                image: format!("r/app:{version}"),
                ..Default::default()
            },
        }))
        .await
        .unwrap();
        ex.run_step(&JobStep::SwitchProxy(SwitchProxy {
            proxy_service: format!("app-{role}"),
            container: format!("app-{role}-{version}"),
            version: version.into(),
            app_port: 3000,
            hosts: vec![format!("{role}.example")],
            path_prefix: None,
            health_path: "/healthz".into(),
            health_interval_ms: 100,
            health_timeout_ms: 100,
            deploy_timeout_ms: 1000,
            drain_timeout_ms: 0,
        }))
        .await
        .unwrap();
    }

    async fn target(ex: &Executor<SimRuntime, SimRuntime>, service: &str) -> String {
        ex.proxy.target(service).await.unwrap().unwrap()
    }

    async fn address(ex: &Executor<SimRuntime, SimRuntime>, container: &str) -> String {
        let c = ex.runtime.inspect(container).await.unwrap().unwrap();
        format!("{}:3000", c.ip.unwrap())
    }

    /// After the engine restarts, the serving container runs at a new address and the
    /// proxy is pointed there, keeping the route's hosts and the health check of its last
    /// deploy; while nothing moved, a look changes nothing.
    #[tokio::test]
    async fn a_container_restarted_at_a_new_address_is_served_there() {
        let ex = Executor::new(sim(), sim(), HostKey::generate(), "10.0.0.5");
        serve(&ex, "web", "v1").await;
        serve(&ex, "api", "v1").await;
        assert_eq!(once(&ex).await, []);
        let before = target(&ex, "app-web").await;
        assert_eq!(before, address(&ex, "app-web-v1").await);

        ex.runtime.stop_engine();
        ex.runtime.start_engine();
        let moved = address(&ex, "app-web-v1").await;
        assert_ne!(
            moved, before,
            "the sim restarts containers at new addresses"
        );

        let changed = once(&ex).await;
        assert_eq!(changed.len(), 2, "{changed:?}");
        assert_eq!(
            changed.iter().find(|r| r.service == "app-web"),
            Some(&Repointed {
                service: "app-web".into(),
                container: "app-web-v1".into(),
                from: before,
                to: moved.clone(),
            })
        );
        assert_eq!(target(&ex, "app-web").await, moved);
        assert_eq!(
            target(&ex, "app-api").await,
            address(&ex, "app-api-v1").await
        );
        let web = ex
            .proxy
            .services()
            .await
            .unwrap()
            .into_iter()
            .find(|s| s.spec.name == "app-web")
            .unwrap();
        assert_eq!(web.spec.hosts, ["web.example"]);
        assert_eq!(web.spec.version.as_deref(), Some("v1"));
        assert_eq!(web.health.unwrap().path, "/healthz");
        assert_eq!(once(&ex).await, []);
    }

    /// A route whose container is not running (stopped by hand) is left alone: there is no
    /// address to point it at.
    #[tokio::test]
    async fn a_route_whose_container_is_stopped_is_left_alone() {
        let ex = Executor::new(sim(), sim(), HostKey::generate(), "10.0.0.5");
        serve(&ex, "web", "v1").await;
        let before = target(&ex, "app-web").await;
        ex.runtime.stop("app-web-v1", 1).await.unwrap();
        assert_eq!(once(&ex).await, []);
        assert_eq!(target(&ex, "app-web").await, before);
    }
}
