//! App container steps: pull, start, stop the old ones, prune, start/stop one.

use flotilla_protocol::names;
use std::collections::{BTreeMap, HashSet};

use flotilla_events::Event;
use flotilla_events::event::{ContainerStarted, ImagePulled, OldContainerStopped};
use tokio::time::Instant;

use super::{Executor, NETWORK, StepFailed, millis};
use crate::runtime::{CreateSpec, Credentials, EnvValue, Proxy, Runtime};
use flotilla_protocol::wire::{
    ContainerConfig, Prune, PruneImages, PullImage, RegistryAuth, RestartPolicy, StartContainer,
    StopOldContainers,
};

pub(super) async fn pull<R: Runtime, P: Proxy>(
    ex: &Executor<R, P>,
    step: &PullImage,
) -> Result<Vec<Event>, StepFailed> {
    let started = Instant::now();
    let auth = credentials(ex, step.auth.as_ref())?;
    let pulled = ex
        .runtime
        .pull(&step.image, auth.as_ref())
        .await
        .map_err(|e| StepFailed::new(format!("pull {}: {}", step.image, e.message)))?;
    Ok(vec![
        ImagePulled {
            image: step.image.clone(),
            digest: pulled.digest,
            bytes: pulled.bytes,
            duration_ms: millis(started.elapsed()),
        }
        .into(),
    ])
}

/// A registry's credentials, opened with the host's key.
pub(super) fn credentials<R: Runtime, P: Proxy>(
    ex: &Executor<R, P>,
    auth: Option<&RegistryAuth>,
) -> Result<Option<Credentials>, StepFailed> {
    let Some(a) = auth else {
        return Ok(None);
    };
    Ok(Some(Credentials {
        server: a.server.clone(),
        username: ex
            .host_key
            .open(&a.username)
            .map_err(|e| StepFailed::new(format!("registry username: {e}")))?
            .expose()
            .to_owned(),
        password: ex
            .host_key
            .open(&a.password)
            .map_err(|e| StepFailed::new(format!("registry password: {e}")))?,
    }))
}

/// Labels Kamal puts on a role's containers.
pub(super) fn role_labels(
    service: &str,
    role: &str,
    destination: Option<&str>,
) -> Vec<(String, String)> {
    let mut labels = vec![
        (names::LABEL_SERVICE.to_owned(), service.to_owned()),
        (names::LABEL_ROLE.to_owned(), role.to_owned()),
    ];
    if let Some(d) = destination {
        labels.push((names::LABEL_DESTINATION.to_owned(), d.to_owned()));
    }
    labels
}

/// The create request for `config`, with Kamal's env first and the job's env after it.
pub(super) fn create_spec<R: Runtime, P: Proxy>(
    ex: &Executor<R, P>,
    name: &str,
    kamal_env: Vec<(String, String)>,
    labels: Vec<(String, String)>,
    config: &ContainerConfig,
) -> Result<CreateSpec, StepFailed> {
    let mut env: Vec<(String, EnvValue)> = kamal_env
        .into_iter()
        .chain(config.env.iter().cloned())
        .map(|(k, v)| (k, EnvValue::Clear(v)))
        .collect();
    env.extend(ex.open_env(&config.secret_env)?);
    let mut all_labels: BTreeMap<String, String> = config.labels.iter().cloned().collect();
    all_labels.extend(labels);
    Ok(CreateSpec {
        name: name.to_owned(),
        image: config.image.clone(),
        env,
        labels: all_labels,
        volumes: config.volumes.clone(),
        cmd: config.cmd.clone(),
        publish: config.publish.clone(),
        network: NETWORK.to_owned(),
        log_driver: config.log_driver.clone(),
        log_options: config.log_options.clone(),
        memory_bytes: config.memory_bytes,
        shm_size_bytes: None,
        extra_hosts: config.extra_hosts.clone(),
        restart: Some(RestartPolicy::UnlessStopped),
        nano_cpus: None,
        user: None,
        hostname: None,
        stop_timeout_s: None,
    })
}

/// Whether `network` is one the executor makes when missing, as it makes `kamal`: a
/// user-defined network an accessory names (`options: network`), not one of Docker's own
/// modes (`host`, `none`, `bridge`, `default`, `container:NAME`), which always exist or
/// cannot be made.
fn is_user_network(network: &str) -> bool {
    !matches!(network, "host" | "none" | "bridge" | "default" | NETWORK)
        && !network.starts_with("container:")
}

/// Makes sure the container `spec.name` runs: a running one is kept (a redelivered job), a
/// stopped one is replaced (its config may be stale), a missing one is created. Returns its id.
pub(super) async fn ensure_running<R: Runtime, P: Proxy>(
    ex: &Executor<R, P>,
    spec: &CreateSpec,
) -> Result<String, StepFailed> {
    match ex.runtime.inspect(&spec.name).await? {
        Some(c) if c.running => return Ok(c.id),
        Some(_) => ex.runtime.remove(&spec.name).await?,
        None => {}
    }
    ex.runtime.ensure_network(NETWORK).await?;
    if is_user_network(&spec.network) {
        ex.runtime.ensure_network(&spec.network).await?;
    }
    let id = ex
        .runtime
        .create(spec)
        .await
        .map_err(|e| StepFailed::new(format!("create {}: {}", spec.name, e.message)))?;
    if let Err(e) = ex.runtime.start(&spec.name).await {
        let status = ex.container_status(&spec.name).await;
        return Err(StepFailed::new(format!(
            "start {}: {}{status}",
            spec.name, e.message
        )));
    }
    Ok(id)
}

pub(super) async fn start<R: Runtime, P: Proxy>(
    ex: &Executor<R, P>,
    step: &StartContainer,
) -> Result<Vec<Event>, StepFailed> {
    let name = step.container_name();
    let mut kamal_env = vec![
        ("KAMAL_CONTAINER_NAME".to_owned(), name.clone()),
        ("KAMAL_VERSION".to_owned(), step.version.clone()),
        ("KAMAL_HOST".to_owned(), ex.host.clone()),
    ];
    if let Some(d) = &step.destination {
        kamal_env.push(("KAMAL_DESTINATION".to_owned(), d.clone()));
    }
    let labels = role_labels(&step.service, &step.role, step.destination.as_deref());
    let mut spec = create_spec(ex, &name, kamal_env, labels, &step.config)?;
    // Kamal's `unless-stopped` comes once the container is proven healthy (`AwaitHealthy`,
    // `SwitchProxy`). Until then a container that could not be stopped, because dockerd
    // stopped mid-rollout and took it down with it, stays down when dockerd starts again,
    // instead of coming back beside the old version that still serves. Chosen over cleaning
    // it up on the executor's next start or job: that leaves it running until then, and
    // nothing on the host may run when no job comes. (Under dockerd's `live-restore` the
    // container keeps running through the outage; the failed host's resume stops it.)
    spec.restart = None;
    let id = ensure_running(ex, &spec).await?;
    Ok(vec![
        ContainerStarted {
            name,
            container_id: id,
            version: step.version.clone(),
            role: step.role.clone(),
        }
        .into(),
    ])
}

pub(super) async fn stop_old<R: Runtime, P: Proxy>(
    ex: &Executor<R, P>,
    step: &StopOldContainers,
) -> Result<Vec<Event>, StepFailed> {
    let labels = role_labels(&step.service, &step.role, step.destination.as_deref());
    let running = ex.runtime.list(&labels, false).await?;
    let mut events = Vec::new();
    for c in running {
        // Without a destination, containers of a destination belong to another deploy.
        if c.name == step.keep
            || (step.destination.is_none() && c.labels.contains_key("destination"))
        {
            continue;
        }
        ex.runtime
            .stop(&c.name, step.stop_timeout_s)
            .await
            .map_err(|e| StepFailed::new(format!("stop {}: {}", c.name, e.message)))?;
        events.push(OldContainerStopped { name: c.name }.into());
    }
    Ok(events)
}

pub(super) async fn prune<R: Runtime, P: Proxy>(
    ex: &Executor<R, P>,
    step: &Prune,
) -> Result<Vec<Event>, StepFailed> {
    let labels = vec![("service".to_owned(), step.service.clone())];
    let mut all = ex.runtime.list(&labels, true).await?;
    all.sort_by_key(|c| std::cmp::Reverse(c.created.unwrap_or(0)));
    let protected: HashSet<&str> = step.protected.iter().map(String::as_str).collect();
    let mut removed_images = HashSet::new();
    let stopped = all.iter().filter(|c| !c.running);
    for c in stopped.skip(step.retain as usize) {
        if protected.contains(c.name.as_str()) {
            continue;
        }
        ex.runtime.remove(&c.name).await?;
        removed_images.insert(c.image.clone());
        tracing::info!(container = %c.name, "pruned container");
    }
    // Images still used by any container (of any service) stay.
    let in_use: HashSet<String> = ex
        .runtime
        .list(&[], true)
        .await?
        .into_iter()
        .map(|c| c.image)
        .collect();
    for image in removed_images.difference(&in_use) {
        match ex.runtime.remove_image(image).await {
            Ok(()) => tracing::info!(%image, "pruned image"),
            Err(e) => tracing::info!(%image, error = %e.message, "image kept"),
        }
    }
    Ok(Vec::new())
}

/// `prune images`: the service's images that no container (of any service) uses, tagged or
/// dangling, removed; a protected one (the rollback target's) stays. An image Docker refuses
/// to remove (a container took it meanwhile) stays too: the prune removes what it can.
pub(super) async fn prune_images<R: Runtime, P: Proxy>(
    ex: &Executor<R, P>,
    step: &PruneImages,
) -> Result<Vec<Event>, StepFailed> {
    let labels = vec![(names::LABEL_SERVICE.to_owned(), step.service.clone())];
    let images = ex.runtime.list_images(&labels).await?;
    let in_use: HashSet<String> = ex
        .runtime
        .list(&[], true)
        .await?
        .into_iter()
        .map(|c| c.image)
        .collect();
    let protected: HashSet<&str> = step.protected.iter().map(String::as_str).collect();
    for image in images {
        let names = image.tags.iter().chain(&image.digests);
        if in_use.contains(&image.id) || names.clone().any(|n| protected.contains(n.as_str())) {
            continue;
        }
        // By each tag (an image tagged twice cannot be removed by id without force), then by
        // id for what is left: a dangling image, or the last tag's untagging removed it.
        for tag in &image.tags {
            if let Err(e) = ex.runtime.remove_image(tag).await {
                tracing::info!(image = %tag, error = %e.message, "image kept");
            }
        }
        match ex.runtime.remove_image(&image.id).await {
            Ok(()) => tracing::info!(image = %image.id, "pruned image"),
            Err(e) if e.not_found => tracing::info!(image = %image.id, "pruned image"),
            Err(e) => tracing::info!(image = %image.id, error = %e.message, "image kept"),
        }
    }
    Ok(Vec::new())
}

pub(super) async fn start_existing<R: Runtime, P: Proxy>(
    ex: &Executor<R, P>,
    name: &str,
) -> Result<Vec<Event>, StepFailed> {
    let Some(c) = ex.runtime.inspect(name).await? else {
        return Err(StepFailed::new(format!("no container {name} on this host")));
    };
    if !c.running {
        ex.runtime.start(name).await?;
    }
    // An accessory's container (no role) is no release's: the fleet's view of what runs
    // holds app containers only, and reads accessories from `AccessoryBooted`.
    let Some(role) = c.labels.get(names::LABEL_ROLE).cloned() else {
        return Ok(Vec::new());
    };
    let prefix = [
        c.labels.get("service"),
        c.labels.get("role"),
        c.labels.get("destination"),
    ]
    .into_iter()
    .flatten()
    .fold(String::new(), |acc, part| format!("{acc}{part}-"));
    let version = name.strip_prefix(&prefix).unwrap_or(name).to_owned();
    Ok(vec![
        ContainerStarted {
            name: name.to_owned(),
            container_id: c.id,
            version,
            role,
        }
        .into(),
    ])
}

pub(super) async fn stop_one<R: Runtime, P: Proxy>(
    ex: &Executor<R, P>,
    name: &str,
    timeout_s: u32,
) -> Result<Vec<Event>, StepFailed> {
    if ex.runtime.inspect(name).await?.is_none() {
        return Err(StepFailed::new(format!("no container {name} on this host")));
    }
    ex.runtime.stop(name, timeout_s).await?;
    Ok(vec![
        OldContainerStopped {
            name: name.to_owned(),
        }
        .into(),
    ])
}
