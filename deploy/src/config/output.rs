//! `flotilla config` output: the resolved config in deploy.yml's shape, secrets redacted.

use super::types::Config;

/// Why the config could not be printed (a serializer failure, not a user error).
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("cannot render config as YAML: {0}")]
    Yaml(#[from] serde_saphyr::SerializeError),
    #[error("cannot render config as JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// The config as YAML. Secret values and the registry password print as `[REDACTED]`.
pub fn to_yaml(config: &Config) -> Result<String, OutputError> {
    Ok(serde_saphyr::to_string(config)?)
}

/// The config as pretty JSON. Secret values and the registry password print as `[REDACTED]`.
pub fn to_json(config: &Config) -> Result<String, OutputError> {
    Ok(serde_json::to_string_pretty(config)?)
}
