//! The root of deploy.yml and its `servers`.

use std::collections::BTreeMap;

use super::{Cx, Map, env, join, kamal1, proxy, sections};
use crate::config::schema;
use crate::config::secrets::Secrets;
use crate::config::types::{Config, Credential, Env, Proxy, Role};
use crate::config::yaml::{Kind, Node};

/// Decode the merged tree. Problems go to `cx`; the returned config is only meaningful when
/// `cx.diags` stays empty.
pub(crate) fn decode(
    cx: &mut Cx,
    root: &Node,
    destination: Option<&str>,
    secrets: Secrets,
) -> Option<Config> {
    let m = cx.map(root, "", &schema::ROOT)?;

    let service = required(cx, &m, "service");
    if let Some(s) = &service
        && (s.is_empty()
            || !s
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        && let Some(n) = m.get("service")
    {
        cx.error(
            n,
            "service",
            format!("\"{s}\" is not a valid service name: use letters, digits, `-` and `_`"),
        );
    }
    // With a local registry (`localhost:PORT`) Kamal names the image after the service.
    let local_registry = m
        .get("registry")
        .and_then(|r| match &r.kind {
            Kind::Map(e) => e.iter().rev().find(|(k, _)| k.key() == "server"),
            _ => None,
        })
        .is_some_and(|(_, v)| matches!(&v.kind, Kind::Str(s) if s.starts_with("localhost:")));
    let image = if local_registry && m.get("image").is_none() {
        service.clone()
    } else {
        required(cx, &m, "image")
    };

    let primary_role = cx
        .opt_string(&m, "primary_role")
        .unwrap_or_else(|| "web".into());
    let allow_empty_roles = m
        .get("allow_empty_roles")
        .and_then(|n| cx.bool(n, "allow_empty_roles"))
        .unwrap_or(false);
    let require_destination = m
        .get("require_destination")
        .and_then(|n| cx.bool(n, "require_destination"))
        .unwrap_or(false);
    if require_destination
        && destination.is_none()
        && let Some(n) = m.get("require_destination")
    {
        cx.error(
            n,
            "require_destination",
            "a destination is required: run with -d DESTINATION",
        );
    }

    let env = m
        .get("env")
        .map(|n| env::decode(cx, n, "env", &secrets))
        .unwrap_or_default();

    // Kamal 1's `traefik:` and `healthcheck:` feed the root proxy.
    let mut root_proxy = m
        .get("proxy")
        .map(|n| proxy::decode(cx, n, "proxy", cx.base_proxy(), &secrets));
    let healthcheck = kamal1::root(cx, &m, &mut root_proxy);

    let servers = match m.get("servers") {
        Some(n) => roles(cx, n, &primary_role, &env, root_proxy.as_ref(), &secrets),
        // Kamal accepts a config of accessories only.
        None if m.get("accessories").is_some() => Vec::new(),
        None => {
            cx.error(
                root,
                "servers",
                "missing required key (no servers or accessories specified)",
            );
            Vec::new()
        }
    };
    if !servers.is_empty() && !servers.iter().any(|r| r.name == primary_role) {
        let n = m.get("primary_role").or(m.get("servers")).unwrap_or(root);
        cx.error(
            n,
            "primary_role",
            format!("role `{primary_role}` is not defined in servers"),
        );
    }
    if !allow_empty_roles && let Some(servers_node) = m.get("servers") {
        for r in servers.iter().filter(|r| r.hosts.is_empty()) {
            let n = role_node(servers_node, &r.name).unwrap_or(servers_node);
            cx.error(
                n,
                &join("servers", &r.name),
                "role has no hosts (set `allow_empty_roles: true` to allow it)",
            );
        }
    }

    let registry = m
        .get("registry")
        .map(|n| sections::registry(cx, n, &secrets))
        .unwrap_or_default();
    let accessories = m
        .get("accessories")
        .map(|n| super::accessories::decode(cx, n, &servers, &secrets))
        .unwrap_or_default();

    let mut stop_timeout = m
        .get("stop_timeout")
        .and_then(|n| cx.seconds(n, "stop_timeout"));
    if let Some(n) = m.get("stop_wait_time")
        && stop_timeout.is_none()
    {
        stop_timeout = cx.seconds(n, "stop_wait_time");
    }
    let secs = |cx: &mut Cx, key: &str, default: u64| {
        m.get(key)
            .and_then(|n| cx.seconds(n, key))
            .unwrap_or(default)
    };

    let config = Config {
        service: service.unwrap_or_default(),
        image: image.unwrap_or_default(),
        destination: destination.map(str::to_string),
        primary_role,
        allow_empty_roles,
        require_destination,
        registry,
        labels: m
            .get("labels")
            .map(|n| cx.string_map(n, "labels"))
            .unwrap_or_default(),
        volumes: m
            .get("volumes")
            .map(|n| cx.strings(n, "volumes"))
            .unwrap_or_default(),
        asset_path: cx.opt_string(&m, "asset_path"),
        hooks_path: cx
            .opt_string(&m, "hooks_path")
            .unwrap_or_else(|| ".kamal/hooks".into()),
        secrets_path: cx
            .opt_string(&m, "secrets_path")
            .unwrap_or_else(|| ".kamal/secrets".into()),
        error_pages_path: cx.opt_string(&m, "error_pages_path"),
        retain_containers: m
            .get("retain_containers")
            .and_then(|n| cx.u32(n, "retain_containers"))
            .unwrap_or(5),
        minimum_version: cx.opt_string(&m, "minimum_version"),
        readiness_delay: secs(cx, "readiness_delay", 7),
        deploy_timeout: secs(cx, "deploy_timeout", 30),
        drain_timeout: secs(cx, "drain_timeout", 30),
        stop_timeout,
        ssh: m
            .get("ssh")
            .map(|n| sections::ssh(cx, n))
            .unwrap_or_default(),
        sshkit: m
            .get("sshkit")
            .map(|n| sections::sshkit(cx, n))
            .unwrap_or_default(),
        builder: match m.get("builder") {
            Some(n) => sections::builder(cx, n),
            None => kamal1_builder(cx, root),
        },
        proxy: root_proxy,
        boot: m
            .get("boot")
            .map(|n| sections::boot(cx, n))
            .unwrap_or_default(),
        logging: m
            .get("logging")
            .map(|n| sections::logging(cx, n, "logging"))
            .unwrap_or_default(),
        aliases: m.get("aliases").map(|n| aliases(cx, n)).unwrap_or_default(),
        healthcheck,
        flotilla: m
            .get("x-flotilla")
            .map(|n| sections::flotilla(cx, n))
            .unwrap_or_default(),
        env,
        servers,
        accessories,
        secrets,
        warnings: Vec::new(),
    };
    if let Some(marker) = &cx.kamal1
        && config.servers.iter().any(|r| {
            r.proxy
                .as_ref()
                .is_some_and(|p| p.app_port == kamal1::KAMAL1_APP_PORT)
        })
        && let Some(n) = m.get("servers")
    {
        let msg = format!(
            "Kamal 1 configuration (`{marker}`): proxied roles are reached on port 3000 as Kamal 1 does; the Kamal 2 form is `proxy: {{app_port: 3000}}`"
        );
        cx.warn(n, "servers", msg);
    }
    super::validate::check(cx, &m, &config);
    Some(config)
}

/// No `builder` at all: Kamal 1 builds amd64 and arm64; for Kamal 2 configs Flotilla builds for
/// the local Docker's architecture (Kamal 2 itself requires `builder.arch`).
fn kamal1_builder(cx: &mut Cx, root: &Node) -> crate::config::types::Builder {
    let mut b = crate::config::types::Builder::default();
    if cx.kamal1.is_some() {
        b.arch = vec!["amd64".into(), "arm64".into()];
        cx.warn(root, "builder", sections::KAMAL1_BOTH_ARCHES);
    }
    b
}

/// `aliases`: names Kamal accepts (lowercase, not one of its commands) to command lines.
fn aliases(cx: &mut Cx, n: &Node) -> BTreeMap<String, String> {
    let out = cx.string_map(n, "aliases");
    if let Kind::Map(entries) = &n.kind {
        for (k, _) in entries {
            if let Some(msg) = crate::config::aliases::invalid_name(k.key()) {
                cx.error(k, &join("aliases", k.key()), msg);
            }
        }
    }
    out
}

fn required(cx: &mut Cx, m: &Map<'_>, key: &str) -> Option<String> {
    match (m.get(key), m.key_node(key)) {
        (Some(n), _) => {
            let s = cx.string(n, key)?;
            if s.trim().is_empty() {
                cx.error(n, key, "is empty");
                return None;
            }
            Some(s)
        }
        // Written but empty, often an ERB tag that rendered nothing: point at the key.
        (None, Some(k)) => {
            cx.error(
                k,
                key,
                "is empty (an ERB tag there may have rendered nothing)",
            );
            None
        }
        (None, None) => {
            cx.error(m.node, key, "missing required key");
            None
        }
    }
}

fn role_node<'a>(servers: &'a Node, name: &str) -> Option<&'a Node> {
    match &servers.kind {
        Kind::Map(e) => e.iter().find(|(k, _)| k.key() == name).map(|(k, _)| k),
        _ => None,
    }
}

/// `servers`: a host list (role `web`) or a map of role name to a host list or a role map.
fn roles(
    cx: &mut Cx,
    n: &Node,
    primary: &str,
    root_env: &Env,
    root_proxy: Option<&Proxy>,
    secrets: &Secrets,
) -> Vec<Role> {
    match &n.kind {
        Kind::Seq(_) => vec![role(
            cx, "web", n, "servers", primary, root_env, root_proxy, secrets,
        )],
        Kind::Map(entries) => entries
            .iter()
            .map(|(k, v)| {
                role(
                    cx,
                    k.key(),
                    v,
                    &join("servers", k.key()),
                    primary,
                    root_env,
                    root_proxy,
                    secrets,
                )
            })
            .collect(),
        _ => {
            cx.error(
                n,
                "servers",
                format!(
                    "should be a list of hosts or a map of roles, found {}",
                    n.kind_name()
                ),
            );
            Vec::new()
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn role(
    cx: &mut Cx,
    name: &str,
    n: &Node,
    path: &str,
    primary: &str,
    root_env: &Env,
    root_proxy: Option<&Proxy>,
    secrets: &Secrets,
) -> Role {
    let mut r = Role {
        name: name.to_string(),
        hosts: Vec::new(),
        tags: BTreeMap::new(),
        cmd: None,
        options: BTreeMap::new(),
        labels: BTreeMap::new(),
        env: root_env.clone(),
        logging: None,
        proxy: None,
        stop_timeout: None,
        asset_path: None,
    };
    let is_primary = name == primary;
    let mut proxied = is_primary;
    let mut role_proxy: Option<&Node> = None;
    let mut role_healthcheck = None;
    match &n.kind {
        Kind::Seq(_) | Kind::Null => hosts(cx, n, path, &mut r),
        Kind::Map(_) => {
            let Some(m) = cx.map(n, path, &schema::SERVERS) else {
                return r;
            };
            if let Some(h) = m.get("hosts") {
                hosts(cx, h, &m.at("hosts"), &mut r);
            }
            r.cmd = cx.opt_string(&m, "cmd");
            r.options = m
                .get("options")
                .map(|o| cx.options(o, &m.at("options")))
                .unwrap_or_default();
            r.labels = m
                .get("labels")
                .map(|o| cx.string_map(o, &m.at("labels")))
                .unwrap_or_default();
            if let Some(e) = m.get("env") {
                r.env = root_env.merged(&env::decode(cx, e, &m.at("env"), secrets));
            }
            r.logging = m
                .get("logging")
                .map(|o| sections::logging(cx, o, &m.at("logging")));
            r.stop_timeout = m
                .get("stop_timeout")
                .and_then(|o| cx.seconds(o, &m.at("stop_timeout")));
            r.asset_path = cx.opt_string(&m, "asset_path");
            if let Some(p) = m.get("proxy") {
                match p.kind {
                    Kind::Bool(b) => proxied = b,
                    _ => {
                        proxied = true;
                        role_proxy = Some(p);
                    }
                }
            }
            if let Some(enabled) = kamal1::role_traefik(cx, &m) {
                proxied = enabled;
            }
            role_healthcheck = kamal1::healthcheck(cx, m.get("healthcheck"), &m.at("healthcheck"));
        }
        _ => cx.error(
            n,
            path,
            format!(
                "should be a list of hosts or a map with `hosts`, found {}",
                n.kind_name()
            ),
        ),
    }
    if proxied {
        let base = root_proxy.cloned().unwrap_or_else(|| cx.base_proxy());
        let mut p = match role_proxy {
            Some(node) => proxy::decode(cx, node, &join(path, "proxy"), base, secrets),
            None => base,
        };
        kamal1::labels_into_proxy(&r.labels, &mut p);
        if let Some(hc) = &role_healthcheck {
            kamal1::apply_healthcheck(hc, &mut p);
        }
        r.proxy = Some(p);
    }
    r
}

/// Hosts: strings, or one-entry maps `host: [tags]` / `host: tag`.
fn hosts(cx: &mut Cx, n: &Node, path: &str, r: &mut Role) {
    let items = match &n.kind {
        Kind::Seq(items) => items.as_slice(),
        Kind::Null => &[],
        _ => {
            cx.error(
                n,
                path,
                format!("should be a list of hosts, found {}", n.kind_name()),
            );
            return;
        }
    };
    for (i, item) in items.iter().enumerate() {
        let p = join(path, &i.to_string());
        match &item.kind {
            Kind::Str(h) => r.hosts.push(h.clone()),
            Kind::Map(e) if e.len() == 1 => {
                let (k, v) = &e[0];
                let tags = cx.strings(v, &join(&p, k.key()));
                r.hosts.push(k.key().to_string());
                r.tags.insert(k.key().to_string(), tags);
            }
            _ => cx.error(
                item,
                &p,
                format!("should be a string, found {}", item.kind_name()),
            ),
        }
    }
}

/// A value from the secrets files, or a located error naming the secret and the files searched.
pub(crate) fn secret_credential(
    cx: &mut Cx,
    n: &Node,
    path: &str,
    name: &str,
    secrets: &Secrets,
) -> Option<Credential> {
    match secrets.get(name) {
        Some(v) => Some(Credential::Secret {
            name: name.to_string(),
            value: v.clone(),
        }),
        None => {
            if secrets.missing(name) {
                cx.error(n, path, secrets.not_defined(name));
            }
            None
        }
    }
}
