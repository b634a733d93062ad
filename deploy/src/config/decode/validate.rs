//! Checks across sections that Kamal makes once the whole config is read: SSL and proxy
//! settings per host, container retention, the Kamal version a config asks for, the registry.

use std::collections::BTreeMap;

use super::{Cx, Map, join};
use crate::config::types::{Config, Ssl};
use crate::config::yaml::{Kind, Node};

/// The Kamal release whose configuration Flotilla reads; a config's `minimum_version` is a
/// Kamal version, so it is compared with this one.
pub const KAMAL_VERSION: &str = "2.12.0";

pub(crate) fn check(cx: &mut Cx, m: &Map<'_>, c: &Config) {
    if let Some(n) = m.get("retain_containers")
        && c.retain_containers < 1
    {
        cx.error(n, "retain_containers", "must retain at least 1 container");
    }
    if let (Some(n), Some(min)) = (m.get("minimum_version"), &c.minimum_version)
        && version_key(min) > version_key(KAMAL_VERSION)
    {
        cx.error(
            n,
            "minimum_version",
            format!(
                "Kamal {min} or later is required; Flotilla reads Kamal {KAMAL_VERSION}'s configuration"
            ),
        );
    }
    let servers = m.get("servers").unwrap_or(m.node);
    ssl(cx, servers, c);
    proxy_runs(cx, servers, c);
    registry(cx, m, c);
}

/// Kamal's SSL rules: automatic certificates for a role need it on one host, and two roles
/// cannot both terminate TLS for one name.
fn ssl(cx: &mut Cx, servers: &Node, c: &Config) {
    let mut owner: BTreeMap<&str, &str> = BTreeMap::new();
    let mut shared = Vec::new();
    for r in &c.servers {
        let Some(p) = &r.proxy else { continue };
        if matches!(p.ssl, Ssl::Off) {
            continue;
        }
        let at = role_key(servers, &r.name).unwrap_or(servers);
        if matches!(p.ssl, Ssl::Auto) && r.hosts.len() > 1 {
            cx.error(
                at,
                &join("servers", &r.name),
                format!(
                    "SSL is only supported on a single server unless you provide custom certificates, found {} servers for role {}",
                    r.hosts.len(),
                    r.name
                ),
            );
        }
        for h in &p.hosts {
            match owner.get(h.as_str()) {
                Some(other) if *other != r.name => shared.push(h.clone()),
                _ => {
                    owner.insert(h, &r.name);
                }
            }
        }
    }
    if !shared.is_empty() {
        cx.error(
            servers,
            "servers",
            format!(
                "different roles can't share the same host for SSL: {}",
                shared.join(", ")
            ),
        );
    }
}

/// One kamal-proxy runs per host, so the roles and accessories there must agree on `proxy.run`.
fn proxy_runs(cx: &mut Cx, servers: &Node, c: &Config) {
    let mut hosts: Vec<&str> = c.all_hosts();
    for a in &c.accessories {
        for h in &a.hosts {
            if !hosts.contains(&h.as_str()) {
                hosts.push(h);
            }
        }
    }
    for host in hosts {
        let roles = c
            .servers
            .iter()
            .filter(|r| r.hosts.iter().any(|h| h == host))
            .filter_map(|r| r.proxy.as_ref());
        let accessories = c
            .accessories
            .iter()
            .filter(|a| a.hosts.iter().any(|h| h == host))
            .filter_map(|a| a.proxy.as_ref());
        let mut runs: Vec<&BTreeMap<String, String>> = roles
            .chain(accessories)
            .map(|p| &p.run)
            .filter(|r| !r.is_empty())
            .collect();
        runs.dedup();
        if runs.len() > 1 {
            cx.error(
                servers,
                "proxy/run",
                format!("conflicting proxy run configurations for host {host}"),
            );
        }
    }
}

/// A registry other than a local one needs credentials, as Kamal's validator says.
fn registry(cx: &mut Cx, m: &Map<'_>, c: &Config) {
    // No `registry` at all is left alone: Flotilla's own fleet and tests run without one.
    let Some(n) = m.get("registry") else {
        return;
    };
    if c.registry.is_local() || !matches!(n.kind, Kind::Map(_)) {
        return;
    }
    for (key, set) in [
        ("username", c.registry.username.is_some()),
        ("password", c.registry.password.is_some()),
    ] {
        if !set && !has_key(n, key) {
            cx.error(n, &join("registry", key), "is required");
        }
    }
}

fn has_key(n: &Node, key: &str) -> bool {
    matches!(&n.kind, Kind::Map(e) if e.iter().any(|(k, _)| k.key() == key))
}

fn role_key<'a>(servers: &'a Node, name: &str) -> Option<&'a Node> {
    match &servers.kind {
        Kind::Map(e) => e.iter().find(|(k, _)| k.key() == name).map(|(k, _)| k),
        _ => None,
    }
}

/// `2.10.1` as numbers, so that it sorts after `2.9`; a non-numeric part counts as 0.
fn version_key(v: &str) -> Vec<u64> {
    v.trim_start_matches('v')
        .split('.')
        .map(|p| {
            p.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .unwrap_or(0)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::version_key;

    /// Versions compare by number, not as text.
    #[test]
    fn versions_compare_numerically() {
        assert!(version_key("2.10.0") > version_key("2.9.9"));
        assert!(version_key("v3") > version_key("2.12.0"));
        assert!(version_key("2.12") <= version_key("2.12.0"));
    }
}
