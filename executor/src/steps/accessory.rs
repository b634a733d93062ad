//! Accessory steps: boot (directories, files, container) and remove.

use std::os::unix::fs::PermissionsExt as _;

use flotilla_events::Event;
use flotilla_events::event::{AccessoryBooted, AccessoryRemoved};

use super::app::{create_spec, ensure_running};
use super::{Executor, StepFailed};
use crate::runtime::{Proxy, Runtime};
use flotilla_protocol::wire::{BootAccessory, RemoveAccessory};

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

pub(super) async fn remove<R: Runtime, P: Proxy>(
    ex: &Executor<R, P>,
    step: &RemoveAccessory,
) -> Result<Vec<Event>, StepFailed> {
    let name = format!("{}-{}", step.service, step.name);
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
