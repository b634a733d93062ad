//! Kamal 1 keys still found in the wild: translated where Flotilla has a meaning for them,
//! otherwise accepted with one warning line per ignored key.

use std::collections::BTreeMap;

use super::{Cx, Map, join};
use crate::config::schema;
use crate::config::types::{Builder, HealthCheck, Proxy, Ssl};
use crate::config::yaml::{Kind, Node};

/// Kamal 1's app port: the port its health check and Traefik reach the app on.
pub(crate) const KAMAL1_APP_PORT: u16 = 3000;

/// The first key only Kamal 1 has (`traefik`, `healthcheck`, `stop_wait_time`,
/// `builder.multiarch`, a `builder.remote`/`local` map, a role's `traefik`/`healthcheck`):
/// the sign that a project is on Kamal 1, whose defaults then apply. Returns its path and node.
pub(crate) fn detect(root: &Node) -> Option<(String, &Node)> {
    let entries = map_entries(root)?;
    for (k, v) in entries {
        match k.key() {
            "traefik" | "healthcheck" | "stop_wait_time" => return Some((k.key().into(), k)),
            "builder" => {
                for (bk, bv) in map_entries(v).unwrap_or_default() {
                    let old = match bk.key() {
                        "multiarch" => true,
                        "remote" | "local" => matches!(bv.kind, Kind::Map(_)),
                        _ => false,
                    };
                    if old {
                        return Some((join("builder", bk.key()), bk));
                    }
                }
            }
            "servers" => {
                for (rk, rv) in map_entries(v).unwrap_or_default() {
                    for (key, _) in map_entries(rv).unwrap_or_default() {
                        if matches!(key.key(), "traefik" | "healthcheck") {
                            let path = join(&join("servers", rk.key()), key.key());
                            return Some((path, key));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    None
}

fn map_entries(n: &Node) -> Option<&[(Node, Node)]> {
    match &n.kind {
        Kind::Map(e) => Some(e),
        _ => None,
    }
}

const IGNORED_TRAEFIK: &str = "Kamal 1 Traefik setting ignored: Flotilla runs its own proxy";

/// Root `traefik:` and `healthcheck:`; both feed the root proxy, created if needed.
pub(crate) fn root(cx: &mut Cx, m: &Map<'_>, proxy: &mut Option<Proxy>) -> Option<HealthCheck> {
    if let Some(t) = m.get("traefik")
        && let Some(tm) = cx.map(t, "traefik", &schema::TRAEFIK)
    {
        let base = cx.base_proxy();
        let p = proxy.get_or_insert(base);
        for (kn, v) in tm.entries() {
            let key = kn.key();
            if key != "args" {
                cx.warn(kn, &tm.at(key), IGNORED_TRAEFIK);
                continue;
            }
            for (arg, av) in cx.raw_map(v, "traefik/args").unwrap_or_default() {
                let name = arg.key();
                let path = join("traefik/args", name);
                let value = cx.text(av, &path).unwrap_or_default();
                if name.starts_with("certificatesResolvers.") && name.ends_with(".acme.email") {
                    p.acme_email = Some(value);
                    p.ssl = Ssl::Auto;
                } else if name.starts_with("entryPoints.")
                    && name.contains(".http.redirections.entryPoint.")
                {
                    // `...entryPoint.to: websecure` and `...entryPoint.scheme: https` mean one thing.
                    p.ssl_redirect = true;
                } else {
                    cx.warn(arg, &path, IGNORED_TRAEFIK);
                }
            }
        }
    }
    let hc = healthcheck(cx, m.get("healthcheck"), "healthcheck");
    if let Some(hc) = &hc {
        let base = cx.base_proxy();
        apply_healthcheck(hc, proxy.get_or_insert(base));
    }
    hc
}

/// A Kamal 1 `healthcheck:` map (root or role).
pub(crate) fn healthcheck(cx: &mut Cx, n: Option<&Node>, path: &str) -> Option<HealthCheck> {
    let m = cx.map(n?, path, &schema::HEALTHCHECK)?;
    let hc = HealthCheck {
        path: cx.opt_string(&m, "path"),
        port: m.get("port").and_then(|v| cx.port(v, &m.at("port"))),
        interval: m
            .get("interval")
            .and_then(|v| cx.seconds(v, &m.at("interval"))),
        max_attempts: m
            .get("max_attempts")
            .and_then(|v| cx.u32(v, &m.at("max_attempts"))),
    };
    for key in ["cmd", "log_lines"] {
        if let Some(k) = m.key_node(key) {
            cx.warn(
                k,
                &m.at(key),
                "Kamal 1 health check setting ignored: the proxy checks over HTTP",
            );
        }
    }
    Some(hc)
}

pub(crate) fn apply_healthcheck(hc: &HealthCheck, p: &mut Proxy) {
    if let Some(path) = &hc.path {
        p.healthcheck.path = path.clone();
    }
    if let Some(port) = hc.port {
        p.app_port = port;
    }
    if let Some(i) = hc.interval {
        p.healthcheck.interval = i;
    }
}

/// Role `traefik: true|false`: whether the role is proxied.
pub(crate) fn role_traefik(cx: &mut Cx, m: &Map<'_>) -> Option<bool> {
    let n = m.get("traefik")?;
    cx.bool(n, &m.at("traefik"))
}

/// Traefik router labels: `Host(...)` rules become proxy hosts, a cert resolver turns on TLS.
pub(crate) fn labels_into_proxy(labels: &BTreeMap<String, String>, p: &mut Proxy) {
    for (k, v) in labels {
        if !k.starts_with("traefik.http.routers.") {
            continue;
        }
        if k.ends_with(".rule") {
            for host in rule_hosts(v) {
                if !p.hosts.contains(&host) {
                    p.hosts.push(host);
                }
            }
        } else if k.ends_with(".tls.certresolver") || (k.ends_with(".tls") && v == "true") {
            p.ssl = Ssl::Auto;
        }
    }
}

/// The names in every `Host(...)` of a Traefik rule: ``Host(`a.com`) || Host(`b.com`, `c.com`)``.
fn rule_hosts(rule: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = rule;
    while let Some(i) = rest.find("Host(") {
        let after = &rest[i + 5..];
        let end = after.find(')').unwrap_or(after.len());
        for part in after[..end].split(',') {
            let h = part.trim().trim_matches(['`', '"', '\'']);
            if !h.is_empty() {
                out.push(h.to_string());
            }
        }
        rest = &after[end..];
    }
    out
}

/// Kamal 1 `builder.remote: {arch, host}` / `builder.local: {arch, host}`.
pub(crate) fn builder_map(cx: &mut Cx, n: &Node, path: &str, b: &mut Builder, remote: bool) {
    let Some(entries) = cx.raw_map(n, path) else {
        return;
    };
    for (k, v) in entries {
        let p = join(path, k.key());
        match k.key() {
            "arch" => {
                for a in cx.strings(v, &p) {
                    if !b.arch.contains(&a) {
                        b.arch.push(a);
                    }
                }
            }
            "host" if remote => b.remote = cx.string(v, &p),
            "host" => cx.warn(
                k,
                &p,
                "Kamal 1 local builder host ignored: the local Docker builds",
            ),
            other => {
                let known = ["arch", "host"];
                let hint = crate::config::diag::did_you_mean(other, known)
                    .map(|s| format!(", did you mean `{s}`?"))
                    .unwrap_or_default();
                cx.error(k, &p, format!("unknown key{hint}"));
            }
        }
    }
}

/// Kamal 1 `builder.multiarch`: `true` builds amd64 and arm64.
pub(crate) fn multiarch(cx: &mut Cx, n: &Node, key: &Node, b: &mut Builder) {
    match n.kind {
        Kind::Bool(true) => {
            if b.arch.is_empty() {
                b.arch = vec!["amd64".into(), "arm64".into()];
            }
        }
        Kind::Bool(false) => cx.warn(
            key,
            "builder/multiarch",
            "Kamal 1 key ignored: set `arch` to choose architectures",
        ),
        _ => {
            cx.bool(n, "builder/multiarch");
        }
    }
}
