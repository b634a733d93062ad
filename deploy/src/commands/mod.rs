//! The Docker command lines of Kamal's everyday commands (`app`, `accessory`, `prune`,
//! `registry`), rendered from the loaded [`Config`](crate::Config) as plain shell strings.
//!
//! Pure: no I/O. The CLI runs these strings over SSH on each host, as Kamal's
//! `commands/*.rb` builders are run by its `cli/*.rb`. Tests assert the strings exactly, against
//! Kamal's own where they match. Where they differ it is on purpose and said beside the
//! function: chiefly, a config without a destination filters on no `destination` label
//! (Kamal filters on an empty one; Flotilla's executor sets the label only with a destination).
//!
//! Every value that comes from the user or the config is shell-quoted ([`quote`]) so a command
//! line means exactly one thing; secret values never appear here, only the path of an env file
//! the caller uploaded with mode 0600.

mod accessory;
mod app;
mod prune;
mod registry;

pub use accessory::Accessory;
pub use app::{App, Logs, NewContainer};
pub use prune::{prune_app_containers, prune_dangling_images, prune_tagged_images};
pub use registry::{login, logout};

use crate::config::types::{Config, Env};

/// A word for a POSIX shell: left bare when it has nothing the shell would read, else in single
/// quotes (a `'` inside becomes `'\''`).
pub fn quote(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_./:=@%+,^".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        return word.to_owned();
    }
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// A secret env the config names but the secrets files do not define.
#[derive(Debug, thiserror::Error)]
#[error("secret {secret} (for env {var}) is not defined in the secrets files")]
pub struct MissingSecret {
    pub var: String,
    pub secret: String,
}

/// The content of a Docker env file (`VAR=value` lines) holding `env`'s secret variables, for
/// the caller to upload with mode 0600 and pass as `--env-file`: so no secret is ever on a
/// command line. `None` when the env has no secrets.
pub fn secret_env_file(
    env: &Env,
    secrets: &crate::config::secrets::Secrets,
) -> Result<Option<crate::config::secrets::Secret>, MissingSecret> {
    if env.secret.is_empty() {
        return Ok(None);
    }
    let mut text = String::new();
    for r in &env.secret {
        let value = secrets.get(&r.secret).ok_or_else(|| MissingSecret {
            var: r.var.clone(),
            secret: r.secret.clone(),
        })?;
        text.push_str(&r.var);
        text.push('=');
        text.push_str(value.expose());
        text.push('\n');
    }
    Ok(Some(crate::config::secrets::Secret::new(text)))
}

/// A word always in single quotes, as Kamal writes grep patterns and name filters.
pub fn squote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// `--filter A --filter B ...`, each filter quoted.
fn filter_args(filters: &[String]) -> String {
    filters
        .iter()
        .map(|f| format!("--filter {}", quote(f)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `--env K=V` for every clear variable (secret ones travel in an env file, never here).
fn clear_env_args(env: &Env) -> Vec<String> {
    env.clear
        .iter()
        .map(|(k, v)| format!("--env {}", quote(&format!("{k}={v}"))))
        .collect()
}

/// `--log-driver`/`--log-opt` as Kamal derives them for a container.
fn logging_args(config: &Config, role: Option<&crate::config::types::Role>) -> Vec<String> {
    let (driver, options) = config.logging_for(role);
    let mut out = Vec::new();
    if let Some(d) = driver {
        out.push(format!("--log-driver {}", quote(&d)));
    }
    for (k, v) in options {
        out.push(format!("--log-opt {}", quote(&format!("{k}={v}"))));
    }
    out
}

/// `docker run` options from a config's `options:` (`--name value`, bare flags for `true`).
fn option_args(options: &crate::config::types::DockerOptions) -> Vec<String> {
    crate::plan::build::options(options)
        .into_iter()
        .map(|(k, v)| {
            if v.is_empty() {
                format!("--{k}")
            } else {
                format!("--{k} {}", quote(&v))
            }
        })
        .collect()
}

/// Words joined by single spaces, empty ones left out.
fn join(words: impl IntoIterator<Item = String>) -> String {
    words
        .into_iter()
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::quote;

    /// A value with shell characters reaches the command as one literal word.
    #[test]
    fn quoting() {
        assert_eq!(quote("abc-1.2"), "abc-1.2");
        assert_eq!(quote("label=service=app"), "label=service=app");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote("$(rm -rf /)"), "'$(rm -rf /)'");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("{{.Names}}"), "'{{.Names}}'");
    }
}
