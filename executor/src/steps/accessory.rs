//! Accessory steps: boot (directories, files, container), remove, and remove its image.
//!
//! `boot_sealed` is Kamal's `accessory boot` (a host where the container exists is left as
//! it is) and `reboot` (the container stopped, removed and booted again; named volumes and
//! host directories stay), with the accessory's files opened from their sealed form only
//! here, on the host.

use std::os::unix::fs::PermissionsExt as _;

use flotilla_events::Event;
use flotilla_events::event::{AccessoryBooted, AccessoryRemoved, ImageKept, ImageRemoved};

use super::app::{create_spec, credentials, ensure_running};
use super::{Executor, StepFailed};
use crate::runtime::{Proxy, Runtime};
use flotilla_protocol::wire::{
    BootAccessory, BootSealedAccessory, ExistingAccessory, ImageRef, RemoveAccessory,
};

/// How long an accessory being removed may take to stop before Docker kills it: Docker's own
/// default, which Kamal's `docker container stop` in `accessory remove` gets.
const REMOVE_STOP_TIMEOUT_S: u32 = 10;

fn io(what: &str, path: &str, e: std::io::Error) -> StepFailed {
    StepFailed::new(format!("{what} {path}: {e}"))
}

pub(super) async fn boot<R: Runtime, P: Proxy>(
    ex: &Executor<R, P>,
    step: &BootAccessory,
) -> Result<Vec<Event>, StepFailed> {
    let name = format!("{}-{}", step.service, step.name);
    // Paths are the host's (Docker binds them into the accessory); errors name them so.
    for dir in &step.directories {
        std::fs::create_dir_all(ex.on_host(dir)).map_err(|e| io("create directory", dir, e))?;
    }
    for file in &step.files {
        let at = ex.on_host(&file.path);
        if let Some(parent) = at.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io("create directory", &file.path, e))?;
        }
        std::fs::write(&at, &file.contents).map_err(|e| io("write", &file.path, e))?;
        std::fs::set_permissions(&at, std::fs::Permissions::from_mode(file.mode))
            .map_err(|e| io("chmod", &file.path, e))?;
    }
    let pulled = ex
        .runtime
        .pull(&step.config.image, None)
        .await
        .map_err(|e| StepFailed::new(format!("pull {}: {}", step.config.image, e.message)))?;
    let labels = vec![("service".to_owned(), name.clone())];
    let spec = create_spec(ex, &name, Vec::new(), labels, &step.config)?;
    ensure_running(ex, &spec).await?;
    Ok(vec![
        AccessoryBooted {
            name: step.name.clone(),
            image: step.config.image.clone(),
            digest: Some(pulled.digest),
        }
        .into(),
    ])
}

pub(super) async fn boot_sealed<R: Runtime, P: Proxy>(
    ex: &Executor<R, P>,
    step: &BootSealedAccessory,
) -> Result<Vec<Event>, StepFailed> {
    let name = &step.container;
    match (step.existing, ex.runtime.inspect(name).await?) {
        // Kamal's boot skips a host where the container exists: a successful host with no
        // `AccessoryBooted` says so.
        (ExistingAccessory::Keep, Some(_)) => return Ok(Vec::new()),
        (ExistingAccessory::Replace { stop_timeout_s }, Some(c)) => {
            if c.running {
                ex.runtime.stop(name, stop_timeout_s).await?;
            }
            ex.runtime.remove(name).await?;
        }
        (_, None) => {}
    }
    for dir in &step.directories {
        std::fs::create_dir_all(ex.on_host(dir)).map_err(|e| io("create directory", dir, e))?;
    }
    for file in &step.files {
        let contents = ex
            .host_key()
            .open_bytes(&file.contents)
            .map_err(|e| StepFailed::new(format!("file {}: {e}", file.path)))?;
        let at = ex.on_host(&file.path);
        if let Some(parent) = at.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io("create directory", &file.path, e))?;
        }
        std::fs::write(&at, contents.as_slice()).map_err(|e| io("write", &file.path, e))?;
        std::fs::set_permissions(&at, std::fs::Permissions::from_mode(file.mode))
            .map_err(|e| io("chmod", &file.path, e))?;
    }
    let auth = credentials(ex, step.auth.as_ref())?;
    let pulled = ex
        .runtime
        .pull(&step.config.image, auth.as_ref())
        .await
        .map_err(|e| StepFailed::new(format!("pull {}: {}", step.config.image, e.message)))?;
    let labels = vec![(
        flotilla_protocol::names::LABEL_SERVICE.to_owned(),
        name.clone(),
    )];
    let mut spec = create_spec(ex, name, Vec::new(), labels, &step.config)?;
    spec.shm_size_bytes = step.shm_size_bytes;
    // The accessory's `options:` (Kamal's `docker run --KEY VALUE` flags) the API can set.
    if let Some(restart) = step.restart {
        spec.restart = Some(restart);
    }
    if let Some(network) = &step.network {
        spec.network = network.clone();
    }
    spec.nano_cpus = step.nano_cpus;
    spec.user = step.user.clone();
    spec.hostname = step.hostname.clone();
    ensure_running(ex, &spec).await?;
    Ok(vec![
        AccessoryBooted {
            name: step.name.clone(),
            image: step.config.image.clone(),
            digest: Some(pulled.digest),
        }
        .into(),
    ])
}

pub(super) async fn remove<R: Runtime, P: Proxy>(
    ex: &Executor<R, P>,
    step: &RemoveAccessory,
) -> Result<Vec<Event>, StepFailed> {
    let name = format!("{}-{}", step.service, step.name);
    // Stopped first, as Kamal's `docker container stop` does: a database gets its SIGTERM
    // and its shutdown time before the container goes (its named volumes stay).
    if let Some(c) = ex.runtime.inspect(&name).await?
        && c.running
    {
        ex.runtime.stop(&name, REMOVE_STOP_TIMEOUT_S).await?;
    }
    ex.runtime.remove(&name).await?;
    for path in &step.paths {
        let p = ex.on_host(path);
        let result = if p.is_dir() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        match result {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io("remove", path, e));
            }
            _ => {}
        }
    }
    Ok(vec![
        AccessoryRemoved {
            name: step.name.clone(),
        }
        .into(),
    ])
}

/// Kamal's `accessory remove_image`: the image removed by its reference. Docker refuses while
/// a container still uses it (another accessory or app on the same image): the step keeps it
/// and says so (`ImageKept`, a warning in the log), because the accessory itself is gone and
/// removing a shared image would break the other container's next start. An image already
/// gone is removed as far as the operator is concerned (a rerun reports the same).
pub(super) async fn remove_image<R: Runtime, P: Proxy>(
    ex: &Executor<R, P>,
    step: &ImageRef,
) -> Result<Vec<Event>, StepFailed> {
    let image = step.image.clone();
    match ex.runtime.remove_image(&image).await {
        Ok(()) => {
            tracing::info!(%image, "image removed");
            Ok(vec![ImageRemoved { image }.into()])
        }
        Err(e) if e.not_found => {
            tracing::info!(%image, "image already gone");
            Ok(vec![ImageRemoved { image }.into()])
        }
        Err(e) if e.conflict => {
            tracing::warn!(%image, reason = %e.message, "image kept: a container still uses it");
            Ok(vec![
                ImageKept {
                    image,
                    reason: e.message,
                }
                .into(),
            ])
        }
        Err(e) => Err(StepFailed::new(format!(
            "remove image {image}: {}",
            e.message
        ))),
    }
}
