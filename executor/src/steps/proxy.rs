//! `proxy boot|reboot`: the host proxy's container replaced by one with the job's settings,
//! through the Docker API. When the old proxy runs with the same ports, the new one is
//! started beside it (`--listeners-socket`: it takes the old one's listening sockets, so no
//! connection is refused and nothing queued is reset); once it has taken the admin socket
//! (it binds that after its listeners), the old one is stopped (it stops accepting and
//! drains in-flight requests) and the new one takes the usual name. Sockets on other ports
//! cannot be handed over: then the old proxy is stopped and the new one binds afresh, as
//! `flotilla setup` does.
//!
//! The proxy's container carries no role, so, like an accessory's, it is no release's: the
//! step reports nothing but the host's outcome (the operation's events say what it was).

use std::path::Path;
use std::time::Duration;

use flotilla_events::Event;
use flotilla_protocol::names::{
    EXECUTOR_CONTAINER, PROXY_CONTAINER, PROXY_NEXT_CONTAINER, PROXY_STOP_TIMEOUT_S,
};
use flotilla_protocol::proxy_run::{ProxyRun, RUN_LABEL};
use flotilla_protocol::wire::{ReplaceProxy, RestartPolicy};

use super::{Executor, StepFailed};
use crate::runtime::{CreateSpec, EnvValue, Proxy, Runtime};

/// How long the new proxy may take to bind its listeners and take the admin socket: a start
/// restores saved routes and loads certificates (setup's hand-over allows the same).
pub const HANDOVER_WAIT: Duration = Duration::from_secs(30);
/// How often the admin socket is looked at during a hand-over: a file replaced by another
/// process cannot be awaited.
const HANDOVER_POLL: Duration = Duration::from_millis(100);

/// Runs the step (see the module's doc).
pub(super) async fn replace<R: Runtime, P: Proxy>(
    ex: &Executor<R, P>,
    s: &ReplaceProxy,
) -> Result<Vec<Event>, StepFailed> {
    let now = ex.runtime.inspect(PROXY_CONTAINER).await?;
    let want = s.run.label();
    if s.boot
        && let Some(c) = &now
        && c.labels.get(RUN_LABEL) == Some(&want)
    {
        if !c.running {
            ex.runtime.start(PROXY_CONTAINER).await?;
        }
        return Ok(Vec::new());
    }
    // The agents' image: the proxy's own, else the executor's (a removed proxy).
    let image = match &now {
        Some(c) => c.image.clone(),
        None => match ex.runtime.inspect(EXECUTOR_CONTAINER).await? {
            Some(c) => c.image,
            None => {
                return Err(StepFailed::new(format!(
                    "neither {PROXY_CONTAINER} nor {EXECUTOR_CONTAINER} runs on this host to \
                     take the agents' image from"
                )));
            }
        },
    };
    let ports_now = now
        .as_ref()
        .and_then(|c| c.labels.get(RUN_LABEL))
        .and_then(|l| ProxyRun::ports_of_label(l))
        .map(str::to_owned)
        .unwrap_or_else(|| ProxyRun::default().ports());
    match &now {
        Some(c) if c.running && ports_now == s.run.ports() => handover(ex, &image, &s.run).await?,
        _ => fresh(ex, &image, &s.run).await?,
    }
    Ok(Vec::new())
}

/// The proxy's container as `flotilla setup` runs it (`setup::plan::proxy_argv`).
fn spec(name: &str, image: &str, run: &ProxyRun) -> CreateSpec {
    CreateSpec {
        name: name.to_owned(),
        image: image.to_owned(),
        env: run
            .env()
            .into_iter()
            .map(|(k, v)| (k, EnvValue::Clear(v)))
            .collect(),
        labels: run.labels().into_iter().collect(),
        volumes: ProxyRun::volumes(),
        cmd: Some(run.command()),
        publish: Vec::new(),
        network: "host".to_owned(),
        log_driver: None,
        log_options: vec![("max-size".to_owned(), run.log_max_size.clone())],
        memory_bytes: None,
        shm_size_bytes: None,
        extra_hosts: Vec::new(),
        restart: Some(RestartPolicy::UnlessStopped),
        nano_cpus: None,
        user: None,
        hostname: None,
        stop_timeout_s: Some(PROXY_STOP_TIMEOUT_S),
    }
}

/// A new proxy beside the running one, taking its sockets; then the old one drains and goes.
async fn handover<R: Runtime, P: Proxy>(
    ex: &Executor<R, P>,
    image: &str,
    run: &ProxyRun,
) -> Result<(), StepFailed> {
    // A successor left by an interrupted hand-over would hold the name.
    ex.runtime.remove(PROXY_NEXT_CONTAINER).await?;
    let before = socket_id(&ex.proxy_socket).await;
    ex.runtime
        .create(&spec(PROXY_NEXT_CONTAINER, image, run))
        .await?;
    ex.runtime.start(PROXY_NEXT_CONTAINER).await?;
    let deadline = tokio::time::Instant::now() + HANDOVER_WAIT;
    while socket_id(&ex.proxy_socket).await == before {
        let next = ex.runtime.inspect(PROXY_NEXT_CONTAINER).await?;
        let gone = next.as_ref().is_none_or(|c| !c.running);
        if gone || tokio::time::Instant::now() >= deadline {
            let status = ex.container_status(PROXY_NEXT_CONTAINER).await;
            ex.runtime.remove(PROXY_NEXT_CONTAINER).await?;
            return Err(StepFailed::new(format!(
                "the new proxy did not start serving within {}s; the old one still serves{status}",
                HANDOVER_WAIT.as_secs()
            )));
        }
        tokio::time::sleep(HANDOVER_POLL).await;
    }
    ex.runtime
        .stop(PROXY_CONTAINER, PROXY_STOP_TIMEOUT_S)
        .await?;
    ex.runtime.remove(PROXY_CONTAINER).await?;
    ex.runtime
        .rename(PROXY_NEXT_CONTAINER, PROXY_CONTAINER)
        .await?;
    Ok(())
}

/// No running proxy with these ports to take sockets from: the old one (if any) stops and
/// drains, then the new one binds.
async fn fresh<R: Runtime, P: Proxy>(
    ex: &Executor<R, P>,
    image: &str,
    run: &ProxyRun,
) -> Result<(), StepFailed> {
    if ex.runtime.inspect(PROXY_CONTAINER).await?.is_some() {
        ex.runtime
            .stop(PROXY_CONTAINER, PROXY_STOP_TIMEOUT_S)
            .await?;
    }
    ex.runtime.remove(PROXY_CONTAINER).await?;
    ex.runtime.remove(PROXY_NEXT_CONTAINER).await?;
    ex.runtime
        .create(&spec(PROXY_CONTAINER, image, run))
        .await?;
    ex.runtime.start(PROXY_CONTAINER).await?;
    Ok(())
}

/// Which file the admin socket's path names now, `None` without one: a new proxy that took
/// the socket over made a new file. The change time is part of it, as a freed inode number
/// can be given to the next file made.
async fn socket_id(path: &Path) -> Option<(u64, u64, i64, i64)> {
    use std::os::unix::fs::MetadataExt as _;
    tokio::fs::metadata(path)
        .await
        .ok()
        .map(|m| (m.dev(), m.ino(), m.ctime(), m.ctime_nsec()))
}
