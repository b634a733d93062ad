//! The state file: every service's route, saved atomically after each change and
//! read at start, so a restarted proxy serves the same routes at once.
//!
//! Saving writes a temporary file beside the real one, fsyncs it, renames it over
//! the real one and fsyncs the directory: a crash leaves the old or the new file,
//! never half of one.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::spec::{HealthCheck, ServiceSpec};

/// The file format's version, bumped when a change is not backward compatible.
pub const STATE_VERSION: u32 = 1;

/// What the state file holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SavedState {
    pub version: u32,
    pub services: Vec<SavedService>,
}

/// One service as saved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedService {
    pub spec: ServiceSpec,
    /// The maintenance message while the service is in maintenance.
    #[serde(default)]
    pub maintenance: Option<String>,
    /// The health check of its last deploy (absent in files written before it was kept).
    #[serde(default)]
    pub health: Option<HealthCheck>,
}

/// Reading or writing the state file failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("read state file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state file {path} is not valid: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("write state file {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Reads the state file; a missing file is an empty state.
pub fn load(path: &Path) -> Result<SavedState, StateError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(SavedState {
                version: STATE_VERSION,
                services: vec![],
            });
        }
        Err(source) => {
            return Err(StateError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    let state: SavedState = serde_json::from_str(&text).map_err(|e| StateError::Invalid {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    if state.version != STATE_VERSION {
        return Err(StateError::Invalid {
            path: path.to_owned(),
            message: format!(
                "version {} is not {STATE_VERSION}, the version this proxy reads",
                state.version
            ),
        });
    }
    Ok(state)
}

/// Writes the state file atomically (temporary file, fsync, rename, fsync of the directory).
pub fn save(path: &Path, state: &SavedState) -> Result<(), StateError> {
    let err = |source| StateError::Write {
        path: path.to_owned(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(err)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let json = serde_json::to_vec_pretty(state).map_err(|e| err(e.into()))?;
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&json)?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(&dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What is saved is what is loaded, and no temporary file is left behind.
    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert!(load(&path).unwrap().services.is_empty());
        let state = SavedState {
            version: STATE_VERSION,
            services: vec![SavedService {
                spec: ServiceSpec::new("web", "127.0.0.1:3000", vec!["a.test".into()]),
                maintenance: Some("back soon".into()),
                health: Some(HealthCheck::default()),
            }],
        };
        save(&path, &state).unwrap();
        assert_eq!(load(&path).unwrap(), state);
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(files.len(), 1);
    }

    /// A damaged state file is an error naming the file, not an empty proxy.
    #[test]
    fn damaged_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, "{not json").unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(e.contains("state.json") && e.contains("not valid"), "{e}");
    }
}
