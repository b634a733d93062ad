//! `registry login|logout` on a host. Kamal's `commands/registry.rb`, except that the password
//! goes to `docker login` on stdin (`--password-stdin`), never on a command line where the
//! host's process list would show it.

use super::quote;
use crate::config::types::Registry;

/// `docker login` for `registry`, reading the password from stdin; `None` for a local
/// registry (nothing to log in to) or one without a username.
pub fn login(registry: &Registry) -> Option<String> {
    if registry.is_local() {
        return None;
    }
    let user = registry.username.as_ref()?;
    Some(match &registry.server {
        Some(s) => format!(
            "docker login {} -u {} --password-stdin",
            quote(s),
            quote(user.expose())
        ),
        None => format!("docker login -u {} --password-stdin", quote(user.expose())),
    })
}

/// `docker logout` of `registry`'s server (Docker Hub without one).
pub fn logout(registry: &Registry) -> String {
    match &registry.server {
        Some(s) => format!("docker logout {}", quote(s)),
        None => "docker logout".to_owned(),
    }
}
