//! The known keys of `config/deploy.yml`, section by section, with their documentation.
//!
//! This table is the one source of truth for both the validator (a key not listed here is an
//! unknown-key error with a "did you mean") and `flotilla docs`. Keys marked `kamal1` are accepted
//! for Kamal 1 configs and translated or ignored with a warning.

/// One section of the configuration: a map whose keys are known.
#[derive(Debug)]
pub struct Section {
    /// The name `flotilla docs NAME` takes, and the path the section appears at.
    pub name: &'static str,
    pub summary: &'static str,
    pub keys: &'static [Key],
}

/// One known key of a section.
#[derive(Debug)]
pub struct Key {
    pub name: &'static str,
    pub doc: &'static str,
    /// Accepted for Kamal 1 configs only.
    pub kamal1: bool,
}

impl Section {
    pub fn key_names(&self) -> impl Iterator<Item = &'static str> {
        self.keys.iter().map(|k| k.name)
    }

    pub fn knows(&self, key: &str) -> bool {
        self.keys.iter().any(|k| k.name == key)
    }
}

macro_rules! keys {
    ($($name:literal : $doc:literal),* $(,)?) => { &[$(Key { name: $name, doc: $doc, kamal1: false }),*] };
}

const fn k1(name: &'static str, doc: &'static str) -> Key {
    Key {
        name,
        doc,
        kamal1: true,
    }
}

pub static ROOT: Section = Section {
    name: "root",
    summary: "The top level of config/deploy.yml. Keys starting with `x-` are ignored (use them for YAML anchors), except `x-flotilla`, which holds Flotilla's own settings.",
    keys: &[
        Key {
            name: "service",
            doc: "Required. The service name, `[a-z0-9_-]+`; it prefixes container names.",
            kamal1: false,
        },
        Key {
            name: "image",
            doc: "Required. The image name, e.g. `user/app`; the registry server is prefixed when set.",
            kamal1: false,
        },
        Key {
            name: "servers",
            doc: "The hosts: a list (role `web`) or a map of role name to role (see `servers`).",
            kamal1: false,
        },
        Key {
            name: "registry",
            doc: "Where images are pushed and pulled (see `registry`).",
            kamal1: false,
        },
        Key {
            name: "env",
            doc: "Environment of every container (see `env`).",
            kamal1: false,
        },
        Key {
            name: "labels",
            doc: "Extra Docker labels on every app container.",
            kamal1: false,
        },
        Key {
            name: "volumes",
            doc: "Volumes mounted into every app container, `host:container`.",
            kamal1: false,
        },
        Key {
            name: "asset_path",
            doc: "Path of assets shared between old and new containers during a deploy.",
            kamal1: false,
        },
        Key {
            name: "hooks_path",
            doc: "Directory of hooks (default `.kamal/hooks`).",
            kamal1: false,
        },
        Key {
            name: "secrets_path",
            doc: "Base path of the secrets files (default `.kamal/secrets`).",
            kamal1: false,
        },
        Key {
            name: "error_pages_path",
            doc: "Directory of custom error pages served by the proxy.",
            kamal1: false,
        },
        Key {
            name: "require_destination",
            doc: "Refuse to run without `-d DESTINATION` (default false).",
            kamal1: false,
        },
        Key {
            name: "primary_role",
            doc: "The role booted first and proxied by default (default `web`).",
            kamal1: false,
        },
        Key {
            name: "allow_empty_roles",
            doc: "Allow roles without hosts (default false).",
            kamal1: false,
        },
        Key {
            name: "retain_containers",
            doc: "How many old containers to keep for rollback (default 5).",
            kamal1: false,
        },
        Key {
            name: "minimum_version",
            doc: "The oldest tool version allowed to deploy this config.",
            kamal1: false,
        },
        Key {
            name: "readiness_delay",
            doc: "Seconds to wait for a container without proxy to be ready (default 7).",
            kamal1: false,
        },
        Key {
            name: "deploy_timeout",
            doc: "Seconds a new container has to become healthy (default 30).",
            kamal1: false,
        },
        Key {
            name: "drain_timeout",
            doc: "Seconds in-flight requests get to finish on the old container (default 30).",
            kamal1: false,
        },
        Key {
            name: "stop_timeout",
            doc: "Seconds `docker stop` waits before killing a container.",
            kamal1: false,
        },
        Key {
            name: "ssh",
            doc: "How hosts are reached (see `ssh`).",
            kamal1: false,
        },
        Key {
            name: "sshkit",
            doc: "SSH connection pool settings (see `sshkit`).",
            kamal1: false,
        },
        Key {
            name: "builder",
            doc: "How the image is built (see `builder`).",
            kamal1: false,
        },
        Key {
            name: "accessories",
            doc: "Long-lived services beside the app: databases, caches (see `accessories`).",
            kamal1: false,
        },
        Key {
            name: "proxy",
            doc: "The HTTP proxy in front of the app (see `proxy`).",
            kamal1: false,
        },
        Key {
            name: "boot",
            doc: "Rolling boot: how many hosts at a time (see `boot`).",
            kamal1: false,
        },
        Key {
            name: "logging",
            doc: "Docker logging driver and options (see `logging`).",
            kamal1: false,
        },
        Key {
            name: "output",
            doc: "Where command output is logged (accepted, not used by Flotilla).",
            kamal1: false,
        },
        Key {
            name: "aliases",
            doc: "Command aliases, e.g. `console: app exec -i \"bin/rails console\"`.",
            kamal1: false,
        },
        Key {
            name: "x-flotilla",
            doc: "Flotilla's own settings (see `x-flotilla`); Kamal ignores it.",
            kamal1: false,
        },
        k1(
            "traefik",
            "Kamal 1: Traefik settings; router `Host(...)` rules, the ACME email and the https redirect are translated to `proxy`.",
        ),
        k1(
            "healthcheck",
            "Kamal 1: health check `{path, port, interval, max_attempts}`, translated to `proxy.healthcheck`.",
        ),
        k1("stop_wait_time", "Kamal 1: the old name of `stop_timeout`."),
    ],
};

pub static SERVERS: Section = Section {
    name: "servers",
    summary: "A role: a list of hosts, or a map with the keys below. Hosts may carry tags: `- 10.0.0.1: [gpu]`.",
    keys: &[
        Key {
            name: "hosts",
            doc: "The role's hosts (strings, optionally tagged).",
            kamal1: false,
        },
        Key {
            name: "cmd",
            doc: "Command the role's containers run instead of the image's.",
            kamal1: false,
        },
        Key {
            name: "options",
            doc: "Extra `docker run` options, e.g. `cpus: 2`.",
            kamal1: false,
        },
        Key {
            name: "labels",
            doc: "Extra Docker labels.",
            kamal1: false,
        },
        Key {
            name: "env",
            doc: "Environment merged over the root `env`.",
            kamal1: false,
        },
        Key {
            name: "logging",
            doc: "Logging settings for this role.",
            kamal1: false,
        },
        Key {
            name: "proxy",
            doc: "`true`/`false`, or proxy settings merged over the root `proxy`. Only the primary role is proxied by default.",
            kamal1: false,
        },
        Key {
            name: "stop_timeout",
            doc: "Seconds `docker stop` waits for this role.",
            kamal1: false,
        },
        Key {
            name: "asset_path",
            doc: "Asset path for this role.",
            kamal1: false,
        },
        k1(
            "traefik",
            "Kamal 1: `true`/`false`, whether the role is proxied.",
        ),
        k1(
            "healthcheck",
            "Kamal 1: role health check, translated like the root one.",
        ),
    ],
};

pub static ENV: Section = Section {
    name: "env",
    summary: "A flat map of clear variables, or the keys below. `secret` names are looked up in the secrets files; `NAME:SECRET` sets NAME from the secret SECRET.",
    keys: keys! {
        "clear": "Variables with their values, visible in the config.",
        "secret": "Names of secrets to pass, each `NAME` or `NAME:SECRET_NAME`.",
        "tags": "Per host tag: env (flat or clear/secret) for hosts carrying that tag.",
    },
};

pub static REGISTRY: Section = Section {
    name: "registry",
    summary: "The image registry. A value given as a one-item list names a secret.",
    keys: keys! {
        "server": "Registry host (default Docker Hub).",
        "username": "User name, or `[SECRET_NAME]`.",
        "password": "Password, usually `[KAMAL_REGISTRY_PASSWORD]` (a secret); always redacted.",
    },
};

pub static PROXY: Section = Section {
    name: "proxy",
    summary: "Routing to the app through the host's proxy, health-gated switch between versions.",
    keys: keys! {
        "host": "The host name routed to the app.",
        "hosts": "Several host names.",
        "app_port": "The port the app listens on in its container (default 80).",
        "ssl": "`true` for automatic certificates (ACME), or `{certificate_pem, private_key_pem}` secret names.",
        "ssl_redirect": "Redirect HTTP to HTTPS when ssl is on (default true).",
        "forward_headers": "Forward X-Forwarded-* headers from the client.",
        "response_timeout": "Seconds a request may take (default 30).",
        "path_prefix": "Route only this path prefix to the app.",
        "strip_path_prefix": "Strip the path prefix before forwarding (default true).",
        "healthcheck": "`{interval, path, timeout}`: the check a new container must pass (default path `/up`).",
        "buffering": "Request and response buffering settings.",
        "logging": "Request and response header logging.",
        "run": "How the proxy itself runs: `{http_port, https_port, metrics_port, ...}`.",
    },
};

pub static PROXY_HEALTHCHECK: Section = Section {
    name: "proxy/healthcheck",
    summary: "The health check a new container must pass before traffic switches to it.",
    keys: keys! {
        "interval": "Seconds between checks (default 1).",
        "path": "HTTP path that must answer 2xx (default `/up`).",
        "timeout": "Seconds each check may take (default 5).",
    },
};

pub static PROXY_SSL: Section = Section {
    name: "proxy/ssl",
    summary: "Custom certificate, given as secret names.",
    keys: keys! {
        "certificate_pem": "Secret holding the PEM certificate chain.",
        "private_key_pem": "Secret holding the PEM private key.",
    },
};

pub static BUILDER: Section = Section {
    name: "builder",
    summary: "How the image is built.",
    keys: &[
        Key {
            name: "arch",
            doc: "`amd64`, `arm64` or both as a list.",
            kamal1: false,
        },
        Key {
            name: "remote",
            doc: "SSH URL of a remote builder.",
            kamal1: false,
        },
        Key {
            name: "local",
            doc: "Build locally (default true).",
            kamal1: false,
        },
        Key {
            name: "cache",
            doc: "Build cache `{type, options, image}`.",
            kamal1: false,
        },
        Key {
            name: "context",
            doc: "Build context (default `.`; git clone when unset in Kamal).",
            kamal1: false,
        },
        Key {
            name: "dockerfile",
            doc: "Dockerfile path (default `Dockerfile`).",
            kamal1: false,
        },
        Key {
            name: "target",
            doc: "Build target stage.",
            kamal1: false,
        },
        Key {
            name: "args",
            doc: "Build arguments.",
            kamal1: false,
        },
        Key {
            name: "secrets",
            doc: "Secret names passed as build secrets.",
            kamal1: false,
        },
        Key {
            name: "ssh",
            doc: "SSH agent forwarding spec for the build.",
            kamal1: false,
        },
        Key {
            name: "driver",
            doc: "Buildx driver (default `docker-container`).",
            kamal1: false,
        },
        Key {
            name: "provenance",
            doc: "Provenance attestation setting.",
            kamal1: false,
        },
        Key {
            name: "sbom",
            doc: "SBOM attestation setting.",
            kamal1: false,
        },
        k1("multiarch", "Kamal 1: `true` builds amd64 and arm64."),
    ],
};

pub static SSH: Section = Section {
    name: "ssh",
    summary: "How hosts are reached over SSH.",
    keys: keys! {
        "user": "Login user (default `root`).",
        "port": "Port (default 22).",
        "proxy": "Jump host, `user@host`.",
        "proxy_command": "ProxyCommand for the connection.",
        "keys": "Private key files to use.",
        "key_data": "Private keys given inline, as secret names.",
        "keys_only": "Use only the given keys.",
        "config": "Read ~/.ssh/config (true) or these files.",
        "log_level": "SSH log level.",
    },
};

pub static SSHKIT: Section = Section {
    name: "sshkit",
    summary: "SSH connection pool settings.",
    keys: keys! {
        "max_concurrent_starts": "Connections opened at once (default 30).",
        "pool_idle_timeout": "Seconds an idle connection is kept (default 900).",
        "dns_retries": "DNS lookup retries.",
    },
};

pub static BOOT: Section = Section {
    name: "boot",
    summary: "Rolling boot of app containers.",
    keys: keys! {
        "limit": "Hosts booted at once: a count or a percentage like `\"25%\"`.",
        "wait": "Seconds between groups.",
        "parallel_roles": "Boot roles in parallel instead of primary first.",
    },
};

pub static LOGGING: Section = Section {
    name: "logging",
    summary: "Docker logging driver for app containers.",
    keys: keys! {
        "driver": "Logging driver, e.g. `json-file`.",
        "options": "Driver options, e.g. `max-size: 100m`.",
    },
};

pub static ACCESSORY: Section = Section {
    name: "accessories",
    summary: "A long-lived service beside the app. Needs one of `host`, `hosts`, `role` or `roles`.",
    keys: keys! {
        "image": "Image to run.",
        "host": "The host it runs on.",
        "hosts": "Hosts it runs on.",
        "role": "Runs on every host of this role.",
        "roles": "Runs on every host of these roles.",
        "service": "Container name override (default `SERVICE-NAME`).",
        "cmd": "Command to run.",
        "port": "Published port, `PORT` or `HOST:CONTAINER`.",
        "labels": "Docker labels.",
        "options": "Extra `docker run` options.",
        "env": "Environment (flat, or clear/secret).",
        "files": "Files copied to the host, `local:remote`; `.erb` files are rendered.",
        "directories": "Directories created on the host and mounted, `host:container`.",
        "volumes": "Volumes, `host:container`.",
        "network": "Docker network (default `kamal`).",
        "proxy": "Proxy settings when the accessory serves HTTP.",
        "registry": "Registry settings for the accessory image.",
    },
};

pub static FLOTILLA: Section = Section {
    name: "x-flotilla",
    summary: "Flotilla's own settings. Kamal ignores `x-` keys, so one file serves both tools.",
    keys: keys! {
        "rollout": "Rollout policy (see `x-flotilla/rollout`).",
        "nats": "`{url, creds}` of a NATS cluster of your own (JetStream); absent, `flotilla setup` boots NATS on the control host and the CLI reaches it through an SSH tunnel (`image` picks that server's image).",
        "control": "The control host (a host of `servers`, or a list): where setup boots NATS. Default: the first host of the primary role.",
        "metrics": "`{listen}`: address the scheduler serves Prometheus metrics on.",
        "otel": "`{endpoint}`: OpenTelemetry collector that receives each deploy's trace (OTLP/HTTP).",
        "scheduler": "`{mode}`: where deploys run (see `x-flotilla/scheduler`).",
        "executor": "`{metrics_port}`: how setup runs each host's executor (see `x-flotilla/executor`).",
    },
};

pub static EXECUTOR: Section = Section {
    name: "x-flotilla/executor",
    summary: "The executor `flotilla setup` runs on every host.",
    keys: keys! {
        "metrics_port": "Port each executor serves its step metrics on (`/metrics`, every address of the host, as `proxy.run.metrics_port` does for the proxy). Default: not served.",
    },
};

pub static SCHEDULER: Section = Section {
    name: "x-flotilla/scheduler",
    summary: "Where deploys run: in the CLI, or in the scheduler service on the control host.",
    keys: keys! {
        "mode": "`embedded` (default): the CLI runs the deploy against `.flotilla/events`; `service`: `flotilla scheduler run` runs it and keeps the one history, the CLI follows.",
    },
};

pub static ROLLOUT: Section = Section {
    name: "x-flotilla/rollout",
    summary: "How a deploy rolls out across hosts.",
    keys: keys! {
        "canary": "Hosts deployed first, alone, before the rest: a count or a percentage.",
        "max_parallel": "Hosts deployed at once (default: `boot.limit`, else all).",
        "max_failures": "Failed hosts tolerated before the deploy stops: a count or a percentage like \"10%\" (default 0).",
        "auto_rollback": "Roll back hosts already switched when the deploy fails (default false).",
        "step_timeout": "Seconds a host may stay silent on one step before it is failed (default 300).",
    },
};

pub static NATS: Section = Section {
    name: "x-flotilla/nats",
    summary: "The NATS cluster carrying jobs and events.",
    keys: keys! {
        "url": "Server URL, e.g. `nats://nats.internal:4222`.",
        "creds": "Path of a NATS credentials file.",
        "ca": "Path of the CA certificate (PEM) that signed your NATS's TLS certificate: the CLI, the scheduler and every executor trust it alone and refuse a NATS without TLS. The NATS `flotilla setup` boots uses a CA of the project's own (`.flotilla/nats-ca.pem`).",
        "image": "Image of the NATS server `flotilla setup` boots when `url` is absent (default: the official `nats` image).",
    },
};

pub static METRICS: Section = Section {
    name: "x-flotilla/metrics",
    summary: "Prometheus metrics of the scheduler.",
    keys: keys! {
        "listen": "Address to listen on, e.g. `127.0.0.1:9394`.",
    },
};

pub static OTEL: Section = Section {
    name: "x-flotilla/otel",
    summary: "OpenTelemetry traces of deploys (else `OTEL_EXPORTER_OTLP_ENDPOINT`).",
    keys: keys! {
        "endpoint": "A collector's OTLP/HTTP base URL, e.g. `http://127.0.0.1:4318` (`/v1/traces` is appended).",
    },
};

pub static TRAEFIK: Section = Section {
    name: "traefik",
    summary: "Kamal 1's Traefik proxy. Flotilla runs its own proxy; what has a meaning is translated.",
    keys: keys! {
        "image": "Ignored.",
        "host_port": "Ignored.",
        "publish": "Ignored.",
        "labels": "Ignored.",
        "args": "The ACME email and http-to-https redirect are translated; the rest is ignored.",
        "options": "Ignored.",
        "env": "Ignored.",
    },
};

pub static HEALTHCHECK: Section = Section {
    name: "healthcheck",
    summary: "Kamal 1's health check, translated to `proxy.healthcheck` and `proxy.app_port`.",
    keys: keys! {
        "path": "Translated to `proxy.healthcheck.path`.",
        "port": "Translated to `proxy.app_port`.",
        "interval": "Translated to `proxy.healthcheck.interval` (`10s` or seconds).",
        "max_attempts": "Kept: with the interval it bounds how long a container may take to become healthy.",
        "cmd": "Ignored.",
        "log_lines": "Ignored.",
    },
};

/// Every section, in the order `flotilla docs` prints them.
pub static SECTIONS: &[&Section] = &[
    &ROOT,
    &SERVERS,
    &ENV,
    &REGISTRY,
    &PROXY,
    &PROXY_HEALTHCHECK,
    &PROXY_SSL,
    &BUILDER,
    &SSH,
    &SSHKIT,
    &BOOT,
    &LOGGING,
    &ACCESSORY,
    &FLOTILLA,
    &ROLLOUT,
    &NATS,
    &METRICS,
    &OTEL,
    &SCHEDULER,
    &EXECUTOR,
    &TRAEFIK,
    &HEALTHCHECK,
];

/// The section `flotilla docs NAME` asks for.
pub fn section(name: &str) -> Option<&'static Section> {
    SECTIONS.iter().copied().find(|s| s.name == name)
}

/// Render one section as the text `flotilla docs` prints.
pub fn render(s: &Section) -> String {
    let mut out = format!("{}\n  {}\n\n", s.name, s.summary);
    let width = s.keys.iter().map(|k| k.name.len()).max().unwrap_or(0);
    for k in s.keys {
        out.push_str(&format!("  {:width$}  {}\n", k.name, k.doc));
    }
    out
}
