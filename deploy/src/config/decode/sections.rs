//! The small sections: registry, builder, ssh, sshkit, boot, logging and x-flotilla.

use super::root::secret_credential;
use super::{Cx, kamal1};
use crate::config::schema;
use crate::config::secrets::{Secret, Secrets};
use crate::config::types::{
    Boot, Builder, Credential, ExecutorSettings, Flotilla, HostCount, Logging, Metrics, Nats, Otel,
    Registry, Rollout, SchedulerMode, SchedulerSettings, Ssh, SshConfig, Sshkit,
};
use crate::config::yaml::{Kind, Node};

pub(crate) fn registry(cx: &mut Cx, n: &Node, secrets: &Secrets) -> Registry {
    registry_at(cx, n, "registry", secrets)
}

/// A registry section at `path` (the root one, or an accessory's own).
pub(crate) fn registry_at(cx: &mut Cx, n: &Node, path: &str, secrets: &Secrets) -> Registry {
    let Some(m) = cx.map(n, path, &schema::REGISTRY) else {
        return Registry::default();
    };
    let cred = |cx: &mut Cx, key: &str| {
        let node = m.get(key)?;
        let path = m.at(key);
        match &node.kind {
            // A one-item list names a secret, as in Kamal.
            Kind::Seq(items) => {
                let first = items.first().filter(|_| items.len() == 1);
                let Some(item) = first else {
                    cx.error(
                        node,
                        &path,
                        "should be a string or a one-item list naming a secret",
                    );
                    return None;
                };
                let name = cx.string(item, &format!("{path}/0"))?;
                secret_credential(cx, item, &format!("{path}/0"), &name, secrets)
            }
            _ => cx.text(node, &path).map(Credential::Clear),
        }
    };
    let server = cx.opt_string(&m, "server");
    let username = cred(cx, "username");
    let password = cred(cx, "password");
    Registry {
        server,
        username,
        password,
    }
}

pub(crate) fn builder(cx: &mut Cx, n: &Node) -> Builder {
    let Some(m) = cx.map(n, "builder", &schema::BUILDER) else {
        return Builder::default();
    };
    let mut b = Builder {
        arch: m
            .get("arch")
            .map(|a| cx.strings(a, "builder/arch"))
            .unwrap_or_default(),
        local: None,
        cache: m
            .get("cache")
            .map(|c| cx.string_map(c, "builder/cache"))
            .unwrap_or_default(),
        context: cx.opt_string(&m, "context"),
        dockerfile: cx.opt_string(&m, "dockerfile"),
        target: cx.opt_string(&m, "target"),
        args: m
            .get("args")
            .map(|c| cx.string_map(c, "builder/args"))
            .unwrap_or_default(),
        secrets: m
            .get("secrets")
            .map(|c| cx.strings(c, "builder/secrets"))
            .unwrap_or_default(),
        ssh: cx.opt_string(&m, "ssh"),
        driver: cx.opt_string(&m, "driver"),
        provenance: cx.opt_string(&m, "provenance"),
        sbom: cx.opt_string(&m, "sbom"),
        remote: None,
    };
    for (i, a) in b.arch.iter().enumerate() {
        if a != "amd64" && a != "arm64" {
            let node = m.get("arch").unwrap_or(n);
            cx.error(
                node,
                &format!("builder/arch/{i}"),
                format!("should be amd64 or arm64, found `{a}`"),
            );
        }
    }
    // `remote` and `local` are strings/booleans in Kamal 2 and `{arch, host}` maps in Kamal 1.
    if let Some(r) = m.get("remote") {
        match r.kind {
            Kind::Map(_) => kamal1::builder_map(cx, r, "builder/remote", &mut b, true),
            _ => b.remote = cx.text(r, "builder/remote"),
        }
    }
    if let Some(l) = m.get("local") {
        match l.kind {
            Kind::Map(_) => kamal1::builder_map(cx, l, "builder/local", &mut b, false),
            _ => b.local = cx.bool(l, "builder/local"),
        }
    }
    if let Some(ma) = m.get("multiarch") {
        kamal1::multiarch(cx, ma, m.key_node("multiarch").unwrap_or(ma), &mut b);
    }
    if let Some(t) = b.cache.get("type")
        && t != "gha"
        && t != "registry"
    {
        let node = m.get("cache").unwrap_or(n);
        cx.error(
            node,
            "builder/cache/type",
            format!("Invalid cache type: {t}"),
        );
    }
    if b.driver.as_deref() == Some("docker") {
        // Kamal's builder checks: the plain docker driver builds on the local engine only.
        let node = m.get("driver").unwrap_or(n);
        for (bad, what) in [
            (b.remote.is_some(), "remote builders"),
            (!b.cache.is_empty(), "caching"),
            (b.arch.len() > 1, "multiple arches"),
        ] {
            if bad {
                cx.error(
                    node,
                    "builder/driver",
                    format!("the `docker` driver does not support {what}"),
                );
            }
        }
    }
    if b.local == Some(false) && b.remote.is_none() {
        let node = m.get("local").unwrap_or(n);
        cx.error(
            node,
            "builder/local",
            "Cannot disable local builds, no remote is set",
        );
    }
    if b.arch.is_empty() && m.get("arch").is_none() {
        let multiarch_off = matches!(m.get("multiarch").map(|n| &n.kind), Some(Kind::Bool(false)));
        if cx.kamal1.is_some() && !multiarch_off {
            b.arch = vec!["amd64".into(), "arm64".into()];
            cx.warn(
                m.key_node("arch").unwrap_or(n),
                "builder",
                KAMAL1_BOTH_ARCHES,
            );
        } else if cx.kamal1.is_none() {
            // Kamal 2 refuses this; Flotilla's own projects (and earlier Flotilla configs)
            // rely on building for the local architecture, so it is a warning here.
            cx.warn(
                n,
                "builder/arch",
                "Builder arch not set: Kamal 2 refuses this config; Flotilla builds for the local Docker's architecture (set e.g. `arch: amd64`)",
            );
        }
    }
    b
}

/// Warned when a Kamal 1 config leaves the architecture to Kamal 1's default.
pub(crate) const KAMAL1_BOTH_ARCHES: &str = "Kamal 1 configuration without `builder.arch`: \
building amd64 and arm64 as Kamal 1 does; the Kamal 2 form is `builder: {arch: [amd64, arm64]}`";

pub(crate) fn ssh(cx: &mut Cx, n: &Node) -> Ssh {
    let Some(m) = cx.map(n, "ssh", &schema::SSH) else {
        return Ssh::default();
    };
    let d = Ssh::default();
    Ssh {
        user: cx.opt_string(&m, "user").unwrap_or(d.user),
        port: m
            .get("port")
            .and_then(|p| cx.port(p, "ssh/port"))
            .unwrap_or(d.port),
        proxy: cx.opt_string(&m, "proxy"),
        proxy_command: cx.opt_string(&m, "proxy_command"),
        keys: m
            .get("keys")
            .map(|k| cx.strings(k, "ssh/keys"))
            .unwrap_or_default(),
        key_data: m
            .get("key_data")
            .map(|k| {
                cx.strings(k, "ssh/key_data")
                    .into_iter()
                    .map(Secret::new)
                    .collect()
            })
            .unwrap_or_default(),
        keys_only: m.get("keys_only").and_then(|k| cx.bool(k, "ssh/keys_only")),
        config: m.get("config").map(|c| match c.kind {
            Kind::Bool(b) => SshConfig::Use(b),
            _ => SshConfig::Files(cx.strings(c, "ssh/config")),
        }),
        log_level: cx.opt_string(&m, "log_level"),
    }
}

pub(crate) fn sshkit(cx: &mut Cx, n: &Node) -> Sshkit {
    let Some(m) = cx.map(n, "sshkit", &schema::SSHKIT) else {
        return Sshkit::default();
    };
    let d = Sshkit::default();
    Sshkit {
        max_concurrent_starts: m
            .get("max_concurrent_starts")
            .and_then(|v| cx.u32(v, "sshkit/max_concurrent_starts"))
            .unwrap_or(d.max_concurrent_starts),
        pool_idle_timeout: m
            .get("pool_idle_timeout")
            .and_then(|v| cx.seconds(v, "sshkit/pool_idle_timeout"))
            .unwrap_or(d.pool_idle_timeout),
    }
}

pub(crate) fn boot(cx: &mut Cx, n: &Node) -> Boot {
    let Some(m) = cx.map(n, "boot", &schema::BOOT) else {
        return Boot::default();
    };
    Boot {
        limit: m.get("limit").and_then(|v| cx.host_count(v, "boot/limit")),
        wait: m.get("wait").and_then(|v| cx.seconds(v, "boot/wait")),
        parallel_roles: m
            .get("parallel_roles")
            .and_then(|v| cx.bool(v, "boot/parallel_roles"))
            .unwrap_or(false),
    }
}

pub(crate) fn logging(cx: &mut Cx, n: &Node, path: &str) -> Logging {
    let Some(m) = cx.map(n, path, &schema::LOGGING) else {
        return Logging::default();
    };
    Logging {
        driver: cx.opt_string(&m, "driver"),
        options: m
            .get("options")
            .map(|o| cx.string_map(o, &m.at("options")))
            .unwrap_or_default(),
    }
}

pub(crate) fn flotilla(cx: &mut Cx, n: &Node) -> Flotilla {
    let Some(m) = cx.map(n, "x-flotilla", &schema::FLOTILLA) else {
        return Flotilla::default();
    };
    let mut f = Flotilla::default();
    if let Some(r) = m.get("rollout")
        && let Some(rm) = cx.map(r, "x-flotilla/rollout", &schema::ROLLOUT)
    {
        let d = Rollout::default();
        f.rollout = Rollout {
            canary: rm
                .get("canary")
                .and_then(|v| cx.host_count(v, &rm.at("canary"))),
            max_parallel: rm
                .get("max_parallel")
                .and_then(|v| cx.host_count(v, &rm.at("max_parallel"))),
            max_failures: rm
                .get("max_failures")
                .and_then(|v| match v.kind {
                    // Zero is the default and valid here: no failure tolerated.
                    Kind::Int(0) => Some(HostCount::Count(0)),
                    _ => cx.host_count(v, &rm.at("max_failures")),
                })
                .unwrap_or(d.max_failures),
            auto_rollback: rm
                .get("auto_rollback")
                .and_then(|v| cx.bool(v, &rm.at("auto_rollback")))
                .unwrap_or(d.auto_rollback),
            step_timeout: rm
                .get("step_timeout")
                .and_then(|v| cx.seconds(v, &rm.at("step_timeout")))
                .unwrap_or(d.step_timeout),
        };
    }
    if let Some(nn) = m.get("nats")
        && let Some(nm) = cx.map(nn, "x-flotilla/nats", &schema::NATS)
    {
        f.nats = Some(Nats {
            url: cx.opt_string(&nm, "url"),
            creds: cx.opt_string(&nm, "creds"),
            ca: cx.opt_string(&nm, "ca"),
            image: cx.opt_string(&nm, "image"),
        });
    }
    if let Some(cn) = m.get("control") {
        f.control = cx.strings(cn, "x-flotilla/control");
    }
    if let Some(mn) = m.get("metrics")
        && let Some(mm) = cx.map(mn, "x-flotilla/metrics", &schema::METRICS)
    {
        match mm.get("listen") {
            Some(l) => {
                f.metrics = cx
                    .string(l, "x-flotilla/metrics/listen")
                    .map(|listen| Metrics { listen })
            }
            None => cx.error(mn, "x-flotilla/metrics/listen", "missing required key"),
        }
    }
    if let Some(on) = m.get("otel")
        && let Some(om) = cx.map(on, "x-flotilla/otel", &schema::OTEL)
    {
        match om.get("endpoint") {
            Some(e) => {
                f.otel = cx
                    .string(e, "x-flotilla/otel/endpoint")
                    .map(|endpoint| Otel { endpoint })
            }
            None => cx.error(on, "x-flotilla/otel/endpoint", "missing required key"),
        }
    }
    if let Some(sn) = m.get("scheduler")
        && let Some(sm) = cx.map(sn, "x-flotilla/scheduler", &schema::SCHEDULER)
    {
        match sm.get("mode") {
            Some(v) => match cx.string(v, "x-flotilla/scheduler/mode").as_deref() {
                Some("embedded") => {
                    f.scheduler = Some(SchedulerSettings {
                        mode: SchedulerMode::Embedded,
                    })
                }
                Some("service") => {
                    f.scheduler = Some(SchedulerSettings {
                        mode: SchedulerMode::Service,
                    })
                }
                Some(_) => cx.error(
                    v,
                    "x-flotilla/scheduler/mode",
                    "should be `embedded` or `service`",
                ),
                None => {}
            },
            None => cx.error(sn, "x-flotilla/scheduler/mode", "missing required key"),
        }
    }
    if let Some(en) = m.get("executor")
        && let Some(em) = cx.map(en, "x-flotilla/executor", &schema::EXECUTOR)
    {
        f.executor = Some(ExecutorSettings {
            metrics_port: em
                .get("metrics_port")
                .and_then(|v| cx.port(v, "x-flotilla/executor/metrics_port")),
        });
    }
    f
}
