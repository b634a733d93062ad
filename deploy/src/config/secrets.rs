//! Secret values and the `.kamal/secrets*` files they come from.
//!
//! [`Secret`] never shows its value through `Debug`, `Display` or `Serialize`: printing a config,
//! logging it or writing it as JSON shows `[REDACTED]`. Only [`Secret::expose`] gives the value,
//! and is meant for the one place that hands it to a container (an env file, mode 0600).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::diag::{Diagnostic, Pos};
use super::dotenv;

/// What a redacted value prints as.
pub const REDACTED: &str = "[REDACTED]";

/// A secret value that redacts itself everywhere except [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The cleartext value. Call it only where the value must leave the process for its target.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(REDACTED)
    }
}

/// Every secret defined by the secrets files, in definition order of their last definition.
#[derive(Clone, Debug, Default)]
pub struct Secrets {
    values: BTreeMap<String, Secret>,
    /// The files that were looked for, in reading order, whether they existed or not.
    pub searched: Vec<PathBuf>,
    /// Those of `searched` that exist.
    pub found: Vec<PathBuf>,
    /// A secrets file failed to load (already reported): a name missing now says nothing new.
    pub incomplete: bool,
    /// Kamal 1 reads secrets from the process environment too (after `.env`): looked up by
    /// name, never listed, so `flotilla config` does not print the whole environment.
    process: BTreeMap<String, Secret>,
}

impl Secrets {
    /// Secrets resolved elsewhere (the operator's machine), by name: how the scheduler service
    /// gets the values a CLI sealed to it.
    pub fn from_values(values: impl IntoIterator<Item = (String, Secret)>) -> Self {
        Secrets {
            values: values.into_iter().collect(),
            ..Secrets::default()
        }
    }

    pub fn get(&self, name: &str) -> Option<&Secret> {
        self.values.get(name).or_else(|| self.process.get(name))
    }

    /// Whether `name` should be reported as undefined: absent, and not because a file failed.
    pub fn missing(&self, name: &str) -> bool {
        self.get(name).is_none() && !self.incomplete
    }

    /// Why `name` is not there, naming the files as Kamal does.
    pub fn not_defined(&self, name: &str) -> String {
        if self.found.is_empty() {
            format!(
                "secret {name} is not defined: no secrets file found (looked for {})",
                self.searched_list()
            )
        } else {
            let found: Vec<String> = self.found.iter().map(|p| p.display().to_string()).collect();
            format!("secret {name} is not defined in {}", found.join(", "))
        }
    }

    /// What is known when loading the secrets files failed: which files, and that it failed.
    pub fn failed(searched: Vec<PathBuf>) -> Self {
        Secrets {
            searched,
            incomplete: true,
            ..Secrets::default()
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Secret)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The searched files as one readable list, for "not defined in ..." messages.
    pub fn searched_list(&self) -> String {
        let names: Vec<String> = self
            .searched
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        names.join(", ")
    }
}

/// The secrets files Kamal reads, in order (later wins): `PATH-common`, then `PATH` or `PATH.DEST`.
pub fn secret_files(secrets_path: &str, destination: Option<&str>) -> Vec<PathBuf> {
    let own = match destination {
        Some(d) => format!("{secrets_path}.{d}"),
        None => secrets_path.to_string(),
    };
    vec![
        PathBuf::from(format!("{secrets_path}-common")),
        PathBuf::from(own),
    ]
}

/// Read and resolve the secrets files under `root`. Missing files are skipped, as Kamal does.
pub fn load(
    root: &Path,
    secrets_path: &str,
    destination: Option<&str>,
    env: &BTreeMap<String, String>,
) -> Result<Secrets, Vec<Diagnostic>> {
    load_files(root, &secret_files(secrets_path, destination), env)
}

/// Read `files` (those that exist) in order, later definitions winning.
fn load_files(
    root: &Path,
    files: &[PathBuf],
    env: &BTreeMap<String, String>,
) -> Result<Secrets, Vec<Diagnostic>> {
    let searched = files.to_vec();
    let mut known = BTreeMap::new();
    let mut errors = Vec::new();
    let mut found = Vec::new();
    for file in &searched {
        let text = match std::fs::read_to_string(root.join(file)) {
            Ok(t) => {
                found.push(file.clone());
                t
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                errors.push(Diagnostic::new(
                    file,
                    Pos::default(),
                    "",
                    format!("cannot read secrets file: {e}"),
                ));
                continue;
            }
        };
        let ctx = dotenv::Context { env, cwd: root };
        if let Err(errs) = dotenv::parse(&text, &mut known, ctx) {
            for e in errs {
                let pos = Pos {
                    line: e.line,
                    column: e.column,
                };
                errors.push(Diagnostic::new(file, pos, "", e.message));
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let values = known.into_iter().map(|(k, v)| (k, Secret(v))).collect();
    Ok(Secrets {
        values,
        searched,
        found,
        incomplete: false,
        process: BTreeMap::new(),
    })
}

/// Kamal 1's secrets: `.env`, then `.env.DEST` over it (Kamal 1.9 `Dotenv.overload`s both
/// into its environment), then the process environment for any other name.
pub fn load_kamal1(
    root: &Path,
    destination: Option<&str>,
    env: &BTreeMap<String, String>,
) -> Result<Secrets, Vec<Diagnostic>> {
    let mut searched = vec![PathBuf::from(".env")];
    if let Some(d) = destination {
        searched.push(PathBuf::from(format!(".env.{d}")));
    }
    let mut secrets = load_files(root, &searched, env)?;
    secrets.process = env
        .iter()
        .map(|(k, v)| (k.clone(), Secret(v.clone())))
        .collect();
    Ok(secrets)
}

/// Why `secrets extract` found nothing.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("secrets JSON is invalid: {0}")]
    InvalidJson(#[from] serde_json::Error),
    #[error("secrets JSON must be an object of names to values")]
    NotAnObject,
    #[error("could not find secret {0}")]
    NotFound(String),
}

/// Kamal's `secrets extract NAME JSON`: the value under `NAME`, or under a key ending in `/NAME`
/// (adapters prefix names with their vault path).
pub fn extract(name: &str, json: &str) -> Result<String, ExtractError> {
    let v: serde_json::Value = serde_json::from_str(json)?;
    let obj = v.as_object().ok_or(ExtractError::NotAnObject)?;
    let suffix = format!("/{name}");
    let found = obj
        .get(name)
        .or_else(|| {
            obj.iter()
                .find(|(k, _)| k.ends_with(&suffix))
                .map(|(_, v)| v)
        })
        .ok_or_else(|| ExtractError::NotFound(name.to_string()))?;
    Ok(match found {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A secret prints as `[REDACTED]` through Debug, Display and Serialize; only `expose` shows it.
    #[test]
    fn secret_redacts_itself() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "[REDACTED] [REDACTED]");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"[REDACTED]\"");
        assert_eq!(s.expose(), "hunter2");
    }

    /// `secrets extract` finds a name directly or as the last segment of an adapter's key.
    #[test]
    fn extract_by_name_or_suffix() {
        let json = r#"{"a/b/DB": "x", "TOKEN": "t", "N": 5}"#;
        assert_eq!(extract("DB", json).unwrap(), "x");
        assert_eq!(extract("TOKEN", json).unwrap(), "t");
        assert_eq!(extract("N", json).unwrap(), "5");
        assert_eq!(
            extract("NOPE", json).unwrap_err().to_string(),
            "could not find secret NOPE"
        );
        assert!(matches!(
            extract("X", "[1]"),
            Err(ExtractError::NotAnObject)
        ));
    }
}
