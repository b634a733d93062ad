//! `proxy`, at the root, on a role (merged over the root one) or on an accessory.

use super::{Cx, join};
use crate::config::schema;
use crate::config::secrets::Secrets;
use crate::config::types::{Proxy, Ssl};
use crate::config::yaml::{Kind, Node};

/// Apply the keys of `n` over `base`.
pub(crate) fn decode(cx: &mut Cx, n: &Node, path: &str, base: Proxy, secrets: &Secrets) -> Proxy {
    let mut p = base;
    let Some(m) = cx.map(n, path, &schema::PROXY) else {
        return p;
    };
    if let Some(h) = m.get("host") {
        // `host` may list several names separated by commas, as kamal-proxy accepts.
        if let Some(s) = cx.string(h, &m.at("host")) {
            p.hosts = s
                .split(',')
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
                .collect();
        }
    }
    if let Some(h) = m.get("hosts") {
        p.hosts = cx.strings(h, &m.at("hosts"));
        if m.get("host").is_some() {
            cx.error(
                h,
                &m.at("hosts"),
                "specify one of `host` or `hosts`, not both",
            );
        }
    }
    if let Some(v) = m.get("app_port") {
        p.app_port = cx.port(v, &m.at("app_port")).unwrap_or(p.app_port);
    }
    if let Some(v) = m.get("ssl") {
        let sp = m.at("ssl");
        match &v.kind {
            Kind::Bool(true) => p.ssl = Ssl::Auto,
            Kind::Bool(false) => p.ssl = Ssl::Off,
            Kind::Map(_) => {
                if let Some(sm) = cx.map(v, &sp, &schema::PROXY_SSL) {
                    let name = |cx: &mut Cx, key: &str| {
                        let Some(node) = sm.get(key) else {
                            cx.error(v, &join(&sp, key), "missing required key");
                            return None;
                        };
                        let name = cx.string(node, &sm.at(key))?;
                        if secrets.missing(&name) {
                            cx.error(node, &sm.at(key), secrets.not_defined(&name));
                        }
                        Some(name)
                    };
                    let cert = name(cx, "certificate_pem");
                    let key = name(cx, "private_key_pem");
                    if let (Some(certificate_pem), Some(private_key_pem)) = (cert, key) {
                        p.ssl = Ssl::Custom { certificate_pem, private_key_pem };
                    }
                }
            }
            _ => cx.error(v, &sp, format!("should be true, false or a map with certificate_pem and private_key_pem, found {}", v.kind_name())),
        }
    }
    if let (Some(v), true, false) = (m.get("ssl"), p.hosts.is_empty(), matches!(p.ssl, Ssl::Off)) {
        cx.error(v, &m.at("ssl"), "must set a host to enable automatic SSL");
    }
    if let Some(v) = m.get("ssl_redirect") {
        p.ssl_redirect = cx.bool(v, &m.at("ssl_redirect")).unwrap_or(p.ssl_redirect);
    }
    if let Some(v) = m.get("forward_headers") {
        p.forward_headers = cx.bool(v, &m.at("forward_headers"));
    }
    if let Some(v) = m.get("response_timeout") {
        p.response_timeout = cx
            .seconds(v, &m.at("response_timeout"))
            .unwrap_or(p.response_timeout);
    }
    if let Some(v) = cx.opt_string(&m, "path_prefix") {
        p.path_prefix = Some(v);
    }
    if let Some(v) = m.get("strip_path_prefix") {
        p.strip_path_prefix = cx
            .bool(v, &m.at("strip_path_prefix"))
            .unwrap_or(p.strip_path_prefix);
    }
    if let Some(v) = m.get("healthcheck")
        && let Some(hm) = cx.map(v, &m.at("healthcheck"), &schema::PROXY_HEALTHCHECK)
    {
        if let Some(i) = hm.get("interval") {
            p.healthcheck.interval = cx
                .seconds(i, &hm.at("interval"))
                .unwrap_or(p.healthcheck.interval);
        }
        if let Some(s) = cx.opt_string(&hm, "path") {
            p.healthcheck.path = s;
        }
        if let Some(t) = hm.get("timeout") {
            p.healthcheck.timeout = cx
                .seconds(t, &hm.at("timeout"))
                .unwrap_or(p.healthcheck.timeout);
        }
    }
    for (key, field) in [
        ("buffering", &mut p.buffering),
        ("logging", &mut p.logging),
        ("run", &mut p.run),
    ] {
        if let Some(v) = m.get(key) {
            *field = flat(cx, v, &m.at(key));
        }
    }
    p
}

/// A nested settings map flattened to `a/b: value` text, for sections Flotilla passes through.
fn flat(cx: &mut Cx, n: &Node, path: &str) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    for (k, v) in cx.raw_map(n, path).unwrap_or_default() {
        match &v.kind {
            Kind::Map(_) => {
                for (ik, iv) in flat(cx, v, &join(path, k.key())) {
                    out.insert(format!("{}/{ik}", k.key()), iv);
                }
            }
            Kind::Seq(_) => {
                out.insert(
                    k.key().to_string(),
                    cx.strings(v, &join(path, k.key())).join(","),
                );
            }
            _ => {
                if let Some(t) = cx.text(v, &join(path, k.key())) {
                    out.insert(k.key().to_string(), t);
                }
            }
        }
    }
    out
}
