//! `accessories`: long-lived services placed by host or by role.

use super::{Cx, env, join, proxy};
use crate::config::schema;
use crate::config::secrets::Secrets;
use crate::config::types::{Accessory, Proxy, Role};
use crate::config::yaml::Node;

pub(crate) fn decode(cx: &mut Cx, n: &Node, roles: &[Role], secrets: &Secrets) -> Vec<Accessory> {
    let mut out = Vec::new();
    for (k, v) in cx.raw_map(n, "accessories").unwrap_or_default() {
        let name = k.key();
        let path = join("accessories", name);
        let Some(m) = cx.map(v, &path, &schema::ACCESSORY) else {
            continue;
        };
        let image = match m.get("image") {
            Some(i) => cx.string(i, &m.at("image")).unwrap_or_default(),
            None => {
                cx.error(k, &m.at("image"), "missing required key");
                String::new()
            }
        };
        // Kamal prefixes the image with the accessory's own registry server.
        let registry = m
            .get("registry")
            .map(|r| super::sections::registry_at(cx, r, &m.at("registry"), secrets));
        let image = match registry.as_ref().and_then(|r| r.server.as_deref()) {
            Some(server) if !image.is_empty() => format!("{server}/{image}"),
            _ => image,
        };
        let mut hosts = Vec::new();
        if let Some(h) = m.get("host") {
            hosts.extend(cx.string(h, &m.at("host")));
        }
        if let Some(h) = m.get("hosts") {
            hosts.extend(cx.strings(h, &m.at("hosts")));
        }
        let mut role_names = Vec::new();
        for key in ["role", "roles"] {
            let Some(r) = m.get(key) else { continue };
            let names = cx.strings(r, &m.at(key));
            for (i, rn) in names.iter().enumerate() {
                match roles.iter().find(|r| &r.name == rn) {
                    Some(role) => hosts.extend(role.hosts.iter().cloned()),
                    None if !roles.is_empty() => {
                        let p = if key == "role" {
                            m.at(key)
                        } else {
                            join(&m.at(key), &i.to_string())
                        };
                        cx.error(r, &p, format!("role `{rn}` is not defined in servers"));
                    }
                    None => {}
                }
            }
            role_names.extend(names);
        }
        if m.get("host").is_none() && m.get("hosts").is_none() && role_names.is_empty() {
            cx.error(
                k,
                &path,
                "accessory needs one of `host`, `hosts`, `role` or `roles`",
            );
        }
        let mut seen = Vec::new();
        hosts.retain(|h| {
            let new = !seen.contains(h);
            seen.push(h.clone());
            new
        });
        out.push(Accessory {
            name: name.to_string(),
            image,
            hosts,
            roles: role_names,
            service: cx.opt_string(&m, "service"),
            cmd: cx.opt_string(&m, "cmd"),
            port: cx.opt_string(&m, "port"),
            labels: m
                .get("labels")
                .map(|l| cx.string_map(l, &m.at("labels")))
                .unwrap_or_default(),
            options: m
                .get("options")
                .map(|o| cx.options(o, &m.at("options")))
                .unwrap_or_default(),
            env: m
                .get("env")
                .map(|e| env::decode(cx, e, &m.at("env"), secrets))
                .unwrap_or_default(),
            files: m
                .get("files")
                .map(|f| cx.strings(f, &m.at("files")))
                .unwrap_or_default(),
            directories: m
                .get("directories")
                .map(|f| cx.strings(f, &m.at("directories")))
                .unwrap_or_default(),
            volumes: m
                .get("volumes")
                .map(|f| cx.strings(f, &m.at("volumes")))
                .unwrap_or_default(),
            network: cx.opt_string(&m, "network"),
            proxy: m
                .get("proxy")
                .map(|p| proxy::decode(cx, p, &m.at("proxy"), Proxy::default(), secrets)),
            registry,
        });
    }
    out
}
