//! Waiting for a new container to be healthy: through Docker's state for roles without a
//! proxy, through the host proxy's health-gated switch for proxied roles. A container that
//! never becomes healthy is stopped, and `HealthFailed` says why and how it exited (never its
//! log, which may hold secrets: it stays on the host).

use std::time::Duration;

use flotilla_events::Event;
use flotilla_events::event::{HealthFailed, HealthPassed, ProxySwitched};
use flotilla_proxy::admin::DeployRequest;
use flotilla_proxy::{HealthCheck, ServiceSpec};
use tokio::time::Instant;

use super::{Executor, StepFailed, millis, shorten};
use crate::runtime::{ContainerInfo, Proxy, ProxyError, Runtime};
use flotilla_protocol::names;
use flotilla_protocol::wire::{AwaitHealthy, SwitchProxy};

/// Reports a health failure: stops the new container so it takes no traffic and restarts
/// no more, and returns `HealthFailed` with why and how it exited as the step's failure.
async fn unhealthy<R: Runtime, P: Proxy>(
    ex: &Executor<R, P>,
    container: &str,
    attempts: u32,
    why: String,
) -> StepFailed {
    let status = ex.container_status(container).await;
    if let Err(e) = ex.runtime.stop(container, 10).await {
        tracing::warn!(%container, error = %e.message, "could not stop unhealthy container");
    }
    let error = shorten(&format!("{why}{status}"));
    StepFailed {
        events: vec![
            HealthFailed {
                attempts,
                last_response: None,
                error: error.clone(),
            }
            .into(),
        ],
        error: format!("{container} not healthy: {why}"),
        cause: flotilla_events::event::FailureCause::StepFailed,
    }
}

pub(super) async fn await_healthy<R: Runtime, P: Proxy>(
    ex: &Executor<R, P>,
    step: &AwaitHealthy,
) -> Result<Vec<Event>, StepFailed> {
    let started = Instant::now();
    let deadline = started + Duration::from_millis(step.timeout_ms);
    let readiness = Duration::from_millis(step.readiness_delay_ms);
    let interval = Duration::from_millis(step.interval_ms.max(10));
    let mut running_since: Option<Instant> = None;
    let mut last_start: Option<String> = None;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let why = match ex.runtime.inspect(&step.container).await? {
            None => {
                return Err(StepFailed::new(format!(
                    "no container {} on this host",
                    step.container
                )));
            }
            Some(c) if !c.running => {
                let code = c.exit_code.map_or("unknown".to_owned(), |c| c.to_string());
                return Err(unhealthy(
                    ex,
                    &step.container,
                    attempts,
                    format!("container exited with code {code}"),
                )
                .await);
            }
            Some(c) => {
                // A restart (the app crashed and Docker started it again) restarts the clock.
                if c.started_at != last_start {
                    last_start = c.started_at.clone();
                    running_since = None;
                }
                let since = *running_since.get_or_insert_with(Instant::now);
                match c.health.as_deref() {
                    Some("healthy") => None,
                    Some(other) => Some(format!("docker health status is {other}")),
                    None if since.elapsed() >= readiness => None,
                    None => Some("running, within the readiness delay".to_owned()),
                }
            }
        };
        let Some(why) = why else {
            keep_restarting(ex, &step.container).await?;
            return Ok(vec![
                HealthPassed {
                    attempts,
                    duration_ms: millis(started.elapsed()),
                }
                .into(),
            ]);
        };
        if Instant::now() + interval > deadline {
            let why = format!("not healthy after {}ms: {why}", step.timeout_ms);
            return Err(unhealthy(ex, &step.container, attempts, why).await);
        }
        tokio::time::sleep(interval).await;
    }
}

pub(super) async fn switch_proxy<R: Runtime, P: Proxy>(
    ex: &Executor<R, P>,
    step: &SwitchProxy,
) -> Result<Vec<Event>, StepFailed> {
    let started = Instant::now();
    let _switching = ex.switching.lock().await;
    let container = match ex.runtime.inspect(&step.container).await? {
        Some(c) if c.running => c,
        Some(c) => {
            let code = c.exit_code.map_or("unknown".to_owned(), |c| c.to_string());
            return Err(unhealthy(
                ex,
                &step.container,
                0,
                format!("container exited with code {code}"),
            )
            .await);
        }
        None => {
            return Err(StepFailed::new(format!(
                "no container {} on this host",
                step.container
            )));
        }
    };
    let Some(ip) = container.ip.as_deref() else {
        return Err(StepFailed::new(format!(
            "{} has no address on the {} network",
            step.container,
            super::NETWORK
        )));
    };
    let target = format!("{ip}:{}", step.app_port);
    let current = ex
        .proxy
        .target(&step.proxy_service)
        .await
        .map_err(|e| StepFailed::new(format!("proxy: {e}")))?;
    let from = match &current {
        Some(t) => container_at(ex, t).await,
        None => None,
    };
    let health_passed = |attempts| -> Event {
        HealthPassed {
            attempts,
            duration_ms: millis(started.elapsed()),
        }
        .into()
    };
    if current.as_deref() == Some(target.as_str()) {
        // Switched already (a redelivered job): the proxy only routes to healthy targets.
        // The proxy no longer names the container it switched from, so Docker's state says
        // which one it was, and the rerun reports the same event as the first run.
        keep_restarting(ex, &step.container).await?;
        return Ok(vec![
            health_passed(1),
            ProxySwitched {
                from: switched_from(ex, &container).await,
                to: step.container.clone(),
            }
            .into(),
        ]);
    }
    let mut spec = ServiceSpec::new(&step.proxy_service, &target, step.hosts.clone());
    spec.version = Some(step.version.clone());
    spec.path_prefix = step.path_prefix.clone();
    let request = DeployRequest {
        service: spec,
        health: HealthCheck {
            path: step.health_path.clone(),
            interval_ms: step.health_interval_ms,
            timeout_ms: step.health_timeout_ms,
        },
        deploy_timeout_ms: step.deploy_timeout_ms,
        drain_timeout_ms: step.drain_timeout_ms,
    };
    // The proxy waits up to `deploy_timeout` for the new container; a dockerd that stops
    // meanwhile takes the container down, and the wait would end as "unhealthy" only then.
    // Watching the engine beside it fails the step within seconds instead (as
    // `EngineUnreachable`, see `Executor::run_step`). Dropping the admin request leaves the
    // proxy to finish its own wait: it switches only to a healthy target, and a container
    // on a stopped engine is none.
    let deployed = tokio::select! {
        deployed = ex.proxy.deploy(request) => deployed,
        why = engine_gone(ex) => {
            return Err(StepFailed::new(format!(
                "switch to {} abandoned: {why}",
                step.container
            )));
        }
    };
    match deployed {
        // The proxy does not count its checks: one successful check is what it reports.
        Ok(_) => {
            keep_restarting(ex, &step.container).await?;
            Ok(vec![
                health_passed(1),
                ProxySwitched {
                    from,
                    to: step.container.clone(),
                }
                .into(),
            ])
        }
        Err(ProxyError::Unhealthy(message)) => {
            let attempts = u32::try_from(step.deploy_timeout_ms / step.health_interval_ms.max(1))
                .unwrap_or(u32::MAX);
            Err(unhealthy(ex, &step.container, attempts, message).await)
        }
        Err(ProxyError::Other(message)) => Err(StepFailed::new(format!("proxy: {message}"))),
    }
}

/// How often a step waiting on the proxy asks the engine whether it still answers.
const ENGINE_WATCH_EVERY: Duration = Duration::from_secs(1);
/// Failed asks in a row before the engine counts as gone: one slow answer on a busy host
/// is not an outage.
const ENGINE_WATCH_MISSES: u32 = 2;

/// Returns once the engine has failed [`ENGINE_WATCH_MISSES`] asks in a row, with its error.
async fn engine_gone<R: Runtime, P: Proxy>(ex: &Executor<R, P>) -> String {
    let mut misses = 0;
    loop {
        tokio::time::sleep(ENGINE_WATCH_EVERY).await;
        match tokio::time::timeout(ENGINE_WATCH_EVERY, ex.runtime.version()).await {
            Ok(Ok(_)) => misses = 0,
            Ok(Err(e)) => {
                misses += 1;
                if misses >= ENGINE_WATCH_MISSES {
                    return format!("docker engine unreachable: {}", e.message);
                }
            }
            Err(_) => {
                misses += 1;
                if misses >= ENGINE_WATCH_MISSES {
                    return "docker engine does not answer".to_owned();
                }
            }
        }
    }
}

/// Gives a container proven healthy the restart policy it was created without (see
/// `app::start`). When this fails the step fails: a serving container that would not come
/// back after a reboot is not a finished deploy, and a rerun of the step sets it.
async fn keep_restarting<R: Runtime, P: Proxy>(
    ex: &Executor<R, P>,
    container: &str,
) -> Result<(), StepFailed> {
    ex.runtime
        .keep_restarting(container)
        .await
        .map_err(|e| StepFailed::new(format!("restart policy of {container}: {}", e.message)))
}

/// The name of the running container whose `ADDR:PORT` on the kamal network is `target`.
async fn container_at<R: Runtime, P: Proxy>(ex: &Executor<R, P>, target: &str) -> Option<String> {
    let ip = target.rsplit_once(':').map(|(ip, _)| ip)?;
    let all = ex.runtime.list(&[], false).await.ok()?;
    all.into_iter()
        .find(|c| c.ip.as_deref() == Some(ip))
        .map(|c| c.name)
}

/// The container a switch to `new` replaced, found again from Docker's state for a rerun of
/// a switch already done: the newest other running container of `new`'s service, role and
/// destination (the old version keeps running until `StopOldContainers`, the next step of the
/// same job). When none runs, that step ran too before the job was interrupted, and the
/// newest stopped one created before `new` is the old version, unless an earlier failed
/// deploy left a newer stopped container behind: then the event may name that one.
async fn switched_from<R: Runtime, P: Proxy>(
    ex: &Executor<R, P>,
    new: &ContainerInfo,
) -> Option<String> {
    let keys = [
        names::LABEL_SERVICE,
        names::LABEL_ROLE,
        names::LABEL_DESTINATION,
    ];
    let labels: Vec<(String, String)> = keys
        .iter()
        .filter_map(|k| new.labels.get(*k).map(|v| ((*k).to_owned(), v.clone())))
        .collect();
    if labels.is_empty() {
        return None;
    }
    let all = ex.runtime.list(&labels, true).await.ok()?;
    // `inspect` leaves the creation time out; the listing has it.
    let new_created = all
        .iter()
        .find(|c| c.name == new.name)
        .and_then(|c| c.created);
    let mut others: Vec<ContainerInfo> = all
        .into_iter()
        .filter(|c| c.name != new.name)
        // Without a destination, containers of a destination belong to another deploy.
        .filter(|c| {
            new.labels.contains_key(names::LABEL_DESTINATION)
                || !c.labels.contains_key(names::LABEL_DESTINATION)
        })
        .collect();
    others.sort_by_key(|c| std::cmp::Reverse(c.created.unwrap_or(0)));
    if let Some(running) = others.iter().find(|c| c.running) {
        return Some(running.name.clone());
    }
    others
        .into_iter()
        .find(|c| match (c.created, new_created) {
            (Some(c), Some(n)) => c <= n,
            _ => true,
        })
        .map(|c| c.name)
}
