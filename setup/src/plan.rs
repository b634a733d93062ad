//! Bootstrap and removal planned as data: what a host should run ([`HostSpec`]), what it
//! runs now ([`Facts`], read by one probe command), and the [`Step`]s between the two.
//! Nothing here does I/O; `host.rs` carries the steps out over SSH.

use std::collections::BTreeMap;

pub use flotilla_protocol::access::User;

/// Where everything Flotilla keeps on a host lives.
pub const ETC_DIR: &str = "/etc/flotilla";
pub const STATE_DIR: &str = "/var/lib/flotilla";
pub const EXECUTOR_STATE: &str = "/var/lib/flotilla/executor";
pub const PROXY_STATE: &str = flotilla_protocol::proxy_run::PROXY_STATE;
pub const NATS_STATE: &str = "/var/lib/flotilla/nats";
pub const RUN_DIR: &str = flotilla_protocol::proxy_run::RUN_DIR;
pub const EXECUTOR_CONF: &str = "/etc/flotilla/executor.conf";
/// NATS's configuration lives in a directory of its own, bound into the container as a
/// directory: a file rewritten by setup (a new file renamed into place) would stay invisible
/// behind a single-file bind, and a reload would reread the old one.
pub const NATS_ETC: &str = "/etc/flotilla/nats";
pub const NATS_CONF: &str = "/etc/flotilla/nats/nats.conf";
pub const SCHEDULER_PUB: &str = "/etc/flotilla/scheduler.pub";
/// The scheduler service's state (its sled event log, its sealing key `service.key` and
/// `service.pub`, the job signing key, its NATS nkey): a directory bound at the same path,
/// so the log outlives the container and an upgrade continues it.
pub const SCHEDULER_STATE: &str = "/var/lib/flotilla/scheduler";
/// The job signing key the executors were enrolled with (the project's
/// `.flotilla/scheduler.key`), where `flotilla scheduler run --state` reads it.
pub const SCHEDULER_KEY: &str = "/var/lib/flotilla/scheduler/scheduler.key";
/// The operators' NATS nkey seed the service connects with (`scheduler run --nkey`).
pub const SCHEDULER_NKEY: &str = "/var/lib/flotilla/scheduler/nats.nk";
/// The public half of the service's sealing key, which setup pins in the project.
pub const SERVICE_PUB: &str = "/var/lib/flotilla/scheduler/service.pub";
/// Where the service serves `/metrics` on the control host (Prometheus's scrape target,
/// `grafana/prometheus.yml`), all the time.
pub const SCHEDULER_METRICS: &str = "0.0.0.0:9394";
/// The CA every host's executor trusts for NATS (setup's own, or the user's
/// `x-flotilla.nats.ca`); `executor.conf` names it as `nats_ca`.
pub const NATS_CA: &str = "/etc/flotilla/nats-ca.pem";
/// The NATS server's certificate and key on the control host (key 0600), in NATS's
/// directory; [`NATS_CERT_IN`] and [`NATS_KEY_IN`] are the same files inside its container.
pub const NATS_CERT: &str = "/etc/flotilla/nats/server-cert.pem";
pub const NATS_KEY: &str = "/etc/flotilla/nats/server-key.pem";
pub const NATS_CERT_IN: &str = "/etc/nats/server-cert.pem";
pub const NATS_KEY_IN: &str = "/etc/nats/server-key.pem";
/// Seconds NATS gives a client to finish its TLS handshake. nats-server's default (0.5 s)
/// is short for an executor on a loaded host reconnecting together with many others.
pub const NATS_TLS_TIMEOUT_SECS: u32 = 5;
pub const DOCKER_SOCKET: &str = "/var/run/docker.sock";
/// Where the executor's container sees the host's `/` (`executor run --host-root`).
pub const HOST_ROOT: &str = "/host";
/// Where a running proxy hands its listening sockets to its successor (`proxy run
/// --listeners-socket`): the new proxy serves the same sockets, so nothing queued is reset.
pub const PROXY_LISTENERS: &str = flotilla_protocol::proxy_run::PROXY_LISTENERS;

/// Container names of the agents and of the NATS server setup boots.
pub const PROXY: &str = flotilla_protocol::names::PROXY_CONTAINER;
pub const EXECUTOR: &str = flotilla_protocol::names::EXECUTOR_CONTAINER;
pub const NATS: &str = "flotilla-nats";
pub const SCHEDULER: &str = "flotilla-scheduler";
/// The new proxy's name while it and the old one both serve (renamed once the old is gone).
pub const PROXY_NEXT: &str = flotilla_protocol::names::PROXY_NEXT_CONTAINER;

/// NATS's client port on the control host.
pub const NATS_PORT: u16 = 4222;
/// The port NATS's nodes route to each other on, with three control hosts (nats-server's
/// default cluster port).
pub const NATS_CLUSTER_PORT: u16 = 6222;
/// How often a cluster node pings its routes (and clients), and how many pings may go
/// unanswered: a node whose host lost its link sends no reset, so the others see it gone
/// only by pings. nats-server's defaults (2 minutes, 2) keep routing requests to a lost
/// node for minutes, where a new leader's reads time out; 2 s and 3 notice it within
/// about 6 s, inside the failover's goal of 10.
pub const NATS_PING_INTERVAL_SECS: u32 = 2;
pub const NATS_PING_MAX: u32 = 3;
/// The name of the cluster the control hosts' NATS nodes form.
pub const NATS_CLUSTER: &str = "flotilla";
/// The project's CA in NATS's own directory, with three control hosts: each node's route
/// verifies the others' certificates against it (a route is admitted by certificate only).
pub const NATS_ROUTE_CA: &str = "/etc/flotilla/nats/ca.pem";
pub const NATS_ROUTE_CA_IN: &str = "/etc/nats/ca.pem";
/// The scheduler service's sealing key, which every instance of an HA service shares (the
/// CLI pins one key whichever instance leads); setup writes it only with three control hosts.
pub const SERVICE_KEY: &str = "/var/lib/flotilla/scheduler/service.key";
/// The official image, used when `x-flotilla.nats.image` is not set.
pub const DEFAULT_NATS_IMAGE: &str = "nats:2.11";

/// Seconds Docker waits after SIGTERM before killing an agent: the proxy drains in-flight
/// requests for up to 30 s (its `--shutdown-timeout` default), the executor finishes its step.
pub const STOP_TIMEOUT_SECS: u32 = flotilla_protocol::names::PROXY_STOP_TIMEOUT_S;

/// Docker's json-file log of an agent is capped, as Kamal caps kamal-proxy's: the agents run
/// for months and Docker never rotates by default.
pub const LOG_MAX_SIZE: &str = "max-size=10m";

/// What one host should run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostSpec {
    /// The host as deploy.yml names it (the executor's host id).
    pub host: String,
    /// The agent image's tag (`flotilla:VERSION-DIGEST`).
    pub image: String,
    /// `/etc/flotilla/executor.conf`, rendered.
    pub executor_conf: String,
    /// The CA (PEM) the executor pins for NATS, written to [`NATS_CA`]: the project's own
    /// for the NATS setup boots, the user's for a NATS of their own (absent: none given).
    pub nats_ca: Option<String>,
    /// NATS, on the control host only, when setup boots it.
    pub nats: Option<NatsSpec>,
    /// How the proxy runs (`proxy.run`).
    pub proxy_run: crate::proxy::ProxyRun,
    /// The scheduler service, on the control host only, when deploys run there
    /// (`x-flotilla.scheduler.mode: service`).
    pub scheduler: Option<SchedulerSpec>,
}

/// The scheduler service (`flotilla scheduler run`) setup boots next to NATS, from the same
/// agent image.
#[derive(Clone, PartialEq, Eq)]
pub struct SchedulerSpec {
    /// The job signing key (base64), written to [`SCHEDULER_KEY`].
    pub signing_key: String,
    /// The operators' NATS nkey seed, written to [`SCHEDULER_NKEY`].
    pub nkey_seed: String,
    /// The other control hosts (empty: one control host). With peers, the service runs as
    /// one HA instance (`--ha`) and reaches NATS on its own host first, then on theirs.
    pub peers: Vec<String>,
    /// The sealing key all HA instances share (secret, public; base64), written to
    /// [`SERVICE_KEY`] and [`SERVICE_PUB`]; `None` with one control host, whose service
    /// makes its own.
    pub service_key: Option<(String, String)>,
}

impl std::fmt::Debug for SchedulerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Both are secrets: never in a debug print.
        f.debug_struct("SchedulerSpec").finish_non_exhaustive()
    }
}

/// The NATS server setup boots on the control host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsSpec {
    pub image: String,
    /// `/etc/flotilla/nats/nats.conf`, rendered by [`nats_config`].
    pub config: String,
    /// The project's CA (PEM) for the cluster's routes, written to [`NATS_ROUTE_CA`]; `None`
    /// for a single server.
    pub route_ca: Option<String>,
    /// The CA that issues NATS's server certificate, and the names it must carry. Absent:
    /// no certificate is managed (a config without TLS).
    pub tls: Option<NatsTls>,
}

/// What NATS's server certificate must be: issued by `ca` for `names` (plus the host's own
/// name, read by the probe).
#[derive(Clone, Debug)]
pub struct NatsTls {
    pub ca: std::sync::Arc<crate::tls::ProjectCa>,
    /// The control host as deploy.yml names it, then `127.0.0.1` and `localhost` (the CLI
    /// reaches NATS through an SSH tunnel to the host's loopback).
    pub names: Vec<String>,
}

impl PartialEq for NatsTls {
    fn eq(&self, other: &Self) -> bool {
        self.ca.cert_pem == other.ca.cert_pem && self.names == other.names
    }
}

impl Eq for NatsTls {}

impl NatsTls {
    /// The names the certificate carries on this host: the wanted ones and the host's own
    /// name as it reports it.
    pub fn names_for(&self, facts: &Facts) -> Vec<String> {
        let mut names = self.names.clone();
        if let Some(h) = facts.hostname.as_ref().filter(|h| !h.is_empty())
            && !names.contains(h)
        {
            names.push(h.clone());
        }
        names
    }

    /// The names NATS's certificate carries for a control host named `host` in deploy.yml.
    pub fn names_of(host: &str) -> Vec<String> {
        let mut names = vec![host.to_owned()];
        for local in ["127.0.0.1", "localhost"] {
            if host != local {
                names.push(local.to_owned());
            }
        }
        names
    }
}

/// The settings of the NATS server setup boots, as data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsSettings {
    pub server_name: String,
    pub port: u16,
    /// The JetStream store inside the container (a bind of [`NATS_STATE`]).
    pub store_dir: String,
    /// Who may connect, with what permissions: the operators' key and each enrolled host's
    /// (`flotilla_protocol::access`). No connection without one of these keys gets in.
    pub users: Vec<User>,
    /// TLS on the client port (certificate and key at [`NATS_CERT_IN`], [`NATS_KEY_IN`]):
    /// NATS then refuses every client that does not upgrade to TLS.
    pub tls: bool,
    /// The other nodes of the cluster (empty: a single server). Routes speak TLS both ways
    /// with the nodes' own certificates, verified against [`NATS_ROUTE_CA_IN`]: that is how a
    /// node is admitted to the cluster, with no password to hand around.
    pub routes: Vec<String>,
}

impl NatsSettings {
    pub fn for_host(host: &str, users: Vec<User>) -> NatsSettings {
        NatsSettings {
            server_name: format!("flotilla-{}", flotilla_token(host)),
            port: NATS_PORT,
            store_dir: "/data".into(),
            users,
            tls: true,
            routes: Vec::new(),
        }
    }

    /// One node of the cluster on the control hosts: `host`'s server, routing to `peers`.
    pub fn clustered(host: &str, peers: &[String], users: Vec<User>) -> NatsSettings {
        NatsSettings {
            routes: peers.to_vec(),
            ..NatsSettings::for_host(host, users)
        }
    }
}

/// Renders the NATS config file (nats-server's own format).
pub fn nats_config(s: &NatsSettings) -> String {
    let tls = if s.tls {
        format!(
            "tls {{\n  cert_file: \"{NATS_CERT_IN}\"\n  key_file: \"{NATS_KEY_IN}\"\n  \
             timeout: {NATS_TLS_TIMEOUT_SECS}\n}}\n"
        )
    } else {
        String::new()
    };
    format!(
        "# Written by flotilla setup; rewritten on every setup.\n\
         server_name: \"{}\"\nport: {}\njetstream {{\n  store_dir: \"{}\"\n}}\n{tls}{}{}",
        s.server_name,
        s.port,
        s.store_dir,
        cluster_config(s),
        flotilla_protocol::access::authorization_conf(&s.users)
    )
}

/// The `cluster` block of a node with peers (nothing for a single server). Clients are
/// not told of the other nodes (`no_advertise`): they are given every node's URL by setup,
/// and the CLI reaches each through its own SSH tunnel, where an advertised address would
/// be unreachable.
fn cluster_config(s: &NatsSettings) -> String {
    if s.routes.is_empty() {
        return String::new();
    }
    let routes: String = s
        .routes
        .iter()
        .map(|h| format!("    \"nats-route://{}:{NATS_CLUSTER_PORT}\"\n", url_host(h)))
        .collect();
    format!(
        "ping_interval: \"{NATS_PING_INTERVAL_SECS}s\"\nping_max: {NATS_PING_MAX}\n\
         cluster {{\n  name: \"{NATS_CLUSTER}\"\n  listen: \"0.0.0.0:{NATS_CLUSTER_PORT}\"\n  \
         no_advertise: true\n  routes: [\n{routes}  ]\n  tls {{\n    cert_file: \"{NATS_CERT_IN}\"\n    \
         key_file: \"{NATS_KEY_IN}\"\n    ca_file: \"{NATS_ROUTE_CA_IN}\"\n    verify: true\n    \
         timeout: {NATS_TLS_TIMEOUT_SECS}\n  }}\n}}\n"
    )
}

/// A host as it goes in a URL (an IPv6 address in brackets).
fn url_host(host: &str) -> String {
    match host.parse::<std::net::Ipv6Addr>() {
        Ok(_) => format!("[{host}]"),
        Err(_) => host.to_owned(),
    }
}

/// The NATS URL list clients are given: every control host's client port, in order.
pub fn nats_urls(control: &[String]) -> String {
    control
        .iter()
        .map(|h| format!("nats://{}:{NATS_PORT}", url_host(h)))
        .collect::<Vec<_>>()
        .join(",")
}

/// Renders `/etc/flotilla/executor.conf` (`key = value` lines, read by `flotilla executor run`).
/// With `nats_ca`, the executor trusts only [`NATS_CA`] and refuses a NATS without TLS.
pub fn executor_conf(host: &str, nats_url: &str, scheduler_key: &str, nats_ca: bool) -> String {
    let ca = if nats_ca {
        format!("nats_ca = {NATS_CA}\n")
    } else {
        String::new()
    };
    format!(
        "# Written by flotilla setup; rewritten on every setup.\n\
         host_id = {host}\nnats_url = {nats_url}\n{ca}scheduler_key = {scheduler_key}\n\
         state_dir = {EXECUTOR_STATE}\n"
    )
}

/// The lines `executor.conf` gets for the executor's telemetry: `/metrics` on every address
/// of the host at `metrics_port` (`x-flotilla.executor.metrics_port`), and its job spans sent
/// to `otlp_endpoint` (`x-flotilla.otel.endpoint`, the collector the deploy's trace goes
/// to, so each job's span joins it). Empty when neither is set.
pub fn executor_telemetry_conf(metrics_port: Option<u16>, otlp_endpoint: Option<&str>) -> String {
    let mut out = String::new();
    if let Some(port) = metrics_port {
        out.push_str(&format!("metrics_listen = 0.0.0.0:{port}\n"));
    }
    if let Some(url) = otlp_endpoint {
        out.push_str(&format!("otlp_endpoint = {url}\n"));
    }
    out
}

fn flotilla_token(host: &str) -> String {
    host.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

/// A container as `docker inspect` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Container {
    pub image: String,
    pub running: bool,
    /// The proxy's settings label ([`crate::proxy::RUN_LABEL`]); empty for the others, and
    /// for a proxy started before the label existed.
    pub settings: String,
}

/// What a host has now, from [`probe_command`]'s output.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    pub docker: bool,
    /// Root, or sudo is there (what installing Docker needs).
    pub can_install: bool,
    pub image_present: bool,
    pub proxy: Option<Container>,
    pub executor: Option<Container>,
    pub nats: Option<Container>,
    /// The files setup writes, as they are now (absent: `None`).
    pub executor_conf: Option<String>,
    pub nats_conf: Option<String>,
    /// The CA file executors trust, and NATS's server certificate (never its key).
    pub nats_ca: Option<String>,
    pub nats_cert: Option<String>,
    /// The routes' CA in NATS's directory ([`NATS_ROUTE_CA`]).
    pub nats_route_ca: Option<String>,
    /// The host's own name (`/proc/sys/kernel/hostname`), one of the names on NATS's
    /// certificate.
    pub hostname: Option<String>,
    pub dirs: bool,
    pub scheduler: Option<Container>,
    /// The scheduler's key files as they are now (absent: `None`).
    pub scheduler_key: Option<String>,
    pub scheduler_nkey: Option<String>,
    /// The service's sealing key ([`SERVICE_KEY`]), which HA instances share.
    pub service_key: Option<String>,
    /// [`SCHEDULER_STATE`] exists (hosts set up before the service had none).
    pub scheduler_dir: bool,
}

/// One shell command that prints the facts as `key=value` lines (base64 for file bodies).
/// Docker counts as present when `docker -v` runs (as Kamal checks), not when a file of that
/// name is on PATH.
pub fn probe_command(image: &str) -> String {
    let inspect = |name: &str| {
        // The proxy's settings label last: it holds commas itself.
        let label = match name {
            PROXY => format!(
                ",{{{{index .Config.Labels \"{}\"}}}}",
                crate::proxy::RUN_LABEL
            ),
            _ => String::new(),
        };
        format!(
            "echo {name}=$(docker inspect -f '{{{{.Config.Image}}}},{{{{.State.Running}}}}{label}' {name} 2>/dev/null)"
        )
    };
    format!(
        "docker -v >/dev/null 2>&1 && echo docker=1; \
         {{ [ \"$(id -u)\" -eq 0 ] || command -v sudo >/dev/null 2>&1; }} && echo can_install=1; \
         [ -d {EXECUTOR_STATE} ] && [ -d {PROXY_STATE} ] && [ -d {ETC_DIR} ] && echo dirs=1; \
         [ -f {EXECUTOR_CONF} ] && echo executor_conf=$(base64 -w0 {EXECUTOR_CONF}); \
         [ -f {NATS_CONF} ] && echo nats_conf=$(base64 -w0 {NATS_CONF}); \
         [ -d {SCHEDULER_STATE} ] && echo scheduler_dir=1; \
         [ -f {SCHEDULER_KEY} ] && echo scheduler_key=$(base64 -w0 {SCHEDULER_KEY}); \
         [ -f {SCHEDULER_NKEY} ] && echo scheduler_nkey=$(base64 -w0 {SCHEDULER_NKEY}); \
         [ -f {NATS_CA} ] && echo nats_ca=$(base64 -w0 {NATS_CA}); \
         [ -f {NATS_CERT} ] && echo nats_cert=$(base64 -w0 {NATS_CERT}); \
         [ -f {NATS_ROUTE_CA} ] && echo nats_route_ca=$(base64 -w0 {NATS_ROUTE_CA}); \
         [ -f {SERVICE_KEY} ] && echo service_key=$(base64 -w0 {SERVICE_KEY}); \
         echo hostname=$(cat /proc/sys/kernel/hostname 2>/dev/null); \
         if docker -v >/dev/null 2>&1; then \
         docker image inspect {image} >/dev/null 2>&1 && echo image=1; {}; {}; {}; {}; fi; true",
        inspect(PROXY),
        inspect(EXECUTOR),
        inspect(NATS),
        inspect(SCHEDULER),
    )
}

/// Reads [`probe_command`]'s output.
pub fn parse_facts(out: &str) -> Facts {
    use base64::Engine as _;
    let kv: BTreeMap<&str, &str> = out
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    let container = |k: &str| {
        let mut parts = kv.get(k)?.splitn(3, ',');
        let (image, running) = (parts.next()?, parts.next()?);
        Some(Container {
            image: image.to_owned(),
            running: running == "true",
            settings: parts.next().unwrap_or_default().to_owned(),
        })
    };
    let file = |k: &str| {
        kv.get(k).map(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b)
                .map(|v| String::from_utf8_lossy(&v).into_owned())
                .unwrap_or_default()
        })
    };
    Facts {
        docker: kv.contains_key("docker"),
        can_install: kv.contains_key("can_install"),
        image_present: kv.contains_key("image"),
        proxy: container(PROXY),
        executor: container(EXECUTOR),
        nats: container(NATS),
        executor_conf: file("executor_conf"),
        nats_conf: file("nats_conf"),
        nats_ca: file("nats_ca"),
        nats_cert: file("nats_cert"),
        nats_route_ca: file("nats_route_ca"),
        service_key: file("service_key"),
        hostname: kv
            .get("hostname")
            .filter(|h| !h.is_empty())
            .map(|h| (*h).to_owned()),
        dirs: kv.contains_key("dirs"),
        scheduler: container(SCHEDULER),
        scheduler_key: file("scheduler_key"),
        scheduler_nkey: file("scheduler_nkey"),
        scheduler_dir: kv.contains_key("scheduler_dir"),
    }
}

/// One thing to do on a host, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Docker is missing: install it as Kamal does (get.docker.com).
    InstallDocker,
    /// Make `/etc/flotilla` (0700) and the state directories.
    MakeDirs,
    /// Stream the agent image into `docker load`.
    LoadImage,
    /// Write a file (mode 0600).
    WriteFile { path: String, content: String },
    /// Write NATS's server key and certificate (both 0600); the key never shows in `Debug`.
    InstallCertificate { cert: crate::tls::ServerCert },
    /// `docker run -d ...` (the argv after `docker`).
    Run { name: String, argv: Vec<String> },
    /// Start a stopped container as it is.
    Start { name: String },
    /// Stop (SIGTERM, then the stop timeout) and remove.
    Remove { name: String },
    /// Tell a running container to reread its configuration (SIGHUP): NATS admits newly
    /// enrolled hosts without a restart.
    Reload { name: String },
    /// Start the new proxy beside the old one (both listen with SO_REUSEPORT), wait until
    /// it has taken the admin socket, then stop the old one (it drains) and rename.
    HandOverProxy { argv: Vec<String> },
}

impl Step {
    /// What the step does, for progress lines.
    pub fn describe(&self) -> String {
        match self {
            Step::InstallDocker => "install Docker".into(),
            Step::MakeDirs => format!("make {ETC_DIR} and {STATE_DIR}"),
            Step::LoadImage => "load the agent image".into(),
            Step::WriteFile { path, .. } => format!("write {path}"),
            Step::InstallCertificate { .. } => format!("write {NATS_CERT} and its key"),
            Step::Run { name, .. } => format!("run {name}"),
            Step::Start { name } => format!("start {name}"),
            Step::Remove { name } => format!("remove {name}"),
            Step::Reload { name } => format!("reload {name}'s configuration"),
            Step::HandOverProxy { .. } => format!("hand {PROXY} over to the new image"),
        }
    }
}

/// `docker run` argv of the proxy: host networking, so it listens on the host's 80/443 as a
/// host process would and reaches app containers at their addresses on the `kamal` network;
/// a new proxy takes the old one's listening sockets over (`--listeners-socket`) and serves
/// beside it while that one drains.
/// `run` is `proxy.run`: its ports, metrics and log settings, kept in a label too.
pub fn proxy_argv(name: &str, image: &str, run: &crate::proxy::ProxyRun) -> Vec<String> {
    let mut v = agent_common(name);
    // The proxy's log cap is `proxy.run.log_max_size`'s, not the other agents'.
    if let Some(i) = v.iter().position(|a| a == LOG_MAX_SIZE) {
        v.drain(i - 1..=i);
    }
    v.extend(run.docker_options());
    v.extend(
        [
            "-v",
            &format!("{RUN_DIR}:{RUN_DIR}"),
            "-v",
            &format!("{PROXY_STATE}:{PROXY_STATE}"),
            image,
            "proxy",
            "run",
            "--listeners-socket",
            PROXY_LISTENERS,
        ]
        .map(String::from),
    );
    v.extend(run.proxy_args());
    v
}

/// `docker run` argv of the executor: the Docker socket, its state at the same path (paths
/// it hands to Docker must mean the same on the host), settings read-only, the proxy socket,
/// and the host's `/` at [`HOST_ROOT`], where it writes accessory directories and files (host
/// paths, which Docker binds into the accessory; the Docker socket already gives it the
/// host).
pub fn executor_argv(image: &str) -> Vec<String> {
    let mut v = agent_common(EXECUTOR);
    v.extend(
        [
            "-v",
            &format!("{DOCKER_SOCKET}:{DOCKER_SOCKET}"),
            "-v",
            &format!("{EXECUTOR_STATE}:{EXECUTOR_STATE}"),
            "-v",
            &format!("{ETC_DIR}:{ETC_DIR}:ro"),
            "-v",
            &format!("{RUN_DIR}:{RUN_DIR}"),
            "-v",
            &format!("/:{HOST_ROOT}"),
            image,
            "executor",
            "run",
            "--host-root",
            HOST_ROOT,
        ]
        .map(String::from),
    );
    v
}

/// `docker run` argv of NATS: host networking (executors on every host reach it at the
/// control host's address), JetStream's store on a host directory.
pub fn nats_argv(image: &str) -> Vec<String> {
    let mut v = agent_common(NATS);
    v.extend(
        [
            "-v",
            &format!("{NATS_STATE}:/data"),
            "-v",
            &format!("{NATS_ETC}:/etc/nats:ro"),
            image,
            "-c",
            "/etc/nats/nats.conf",
        ]
        .map(String::from),
    );
    v
}

fn agent_common(name: &str) -> Vec<String> {
    [
        "run",
        "-d",
        "--name",
        name,
        "--restart",
        "unless-stopped",
        "--network",
        "host",
        "--stop-timeout",
        &STOP_TIMEOUT_SECS.to_string(),
        "--label",
        "flotilla.agent=1",
        "--log-opt",
        LOG_MAX_SIZE,
    ]
    .map(String::from)
    .to_vec()
}

/// The steps from `facts` to `spec`; empty when the host is current (nothing restarts).
/// `renewed` is NATS's new server certificate, when the one on the host is not current
/// (`tls::ProjectCa::is_current`).
pub fn plan(spec: &HostSpec, facts: &Facts, renewed: Option<&crate::tls::ServerCert>) -> Vec<Step> {
    let mut steps = Vec::new();
    if !facts.docker {
        steps.push(Step::InstallDocker);
    }
    if !facts.dirs || (spec.scheduler.is_some() && !facts.scheduler_dir) {
        steps.push(Step::MakeDirs);
    }
    if !facts.image_present {
        steps.push(Step::LoadImage);
    }
    if let Some(nats) = &spec.nats {
        if let Some(cert) = renewed {
            steps.push(Step::InstallCertificate { cert: cert.clone() });
        }
        let route_ca_changed =
            nats.route_ca.is_some() && facts.nats_route_ca.as_deref() != nats.route_ca.as_deref();
        if let Some(ca) = nats.route_ca.as_ref().filter(|_| route_ca_changed) {
            steps.push(Step::WriteFile {
                path: NATS_ROUTE_CA.into(),
                content: ca.clone(),
            });
        }
        let conf_changed = facts.nats_conf.as_deref() != Some(nats.config.as_str());
        if conf_changed {
            steps.push(Step::WriteFile {
                path: NATS_CONF.into(),
                content: nats.config.clone(),
            });
        }
        let conf_changed = conf_changed || renewed.is_some() || route_ca_changed;
        match facts.nats.as_ref() {
            // Only the configuration or the certificate changed (a host enrolled, a renewal,
            // TLS turned on): NATS rereads both in place, no restart. Joining or leaving a
            // cluster is not something a running NATS can reload: that restarts it.
            Some(c)
                if c.image == nats.image
                    && c.running
                    && conf_changed
                    && !topology_changed(facts, nats) =>
            {
                steps.push(Step::Reload { name: NATS.into() });
            }
            now => container_steps(
                &mut steps,
                NATS,
                &nats.image,
                now,
                conf_changed,
                nats_argv(&nats.image),
            ),
        }
    }
    let run = &spec.proxy_run;
    // A proxy started before the settings label ran with the defaults.
    let settings = |c: &Container| match c.settings.as_str() {
        "" => crate::proxy::ProxyRun::default().label(),
        s => s.to_owned(),
    };
    let ports_of = |label: &str| label.split(';').next().unwrap_or_default().to_owned();
    match &facts.proxy {
        Some(c) if c.image == spec.image && settings(c) == run.label() => {
            if !c.running {
                steps.push(Step::Start { name: PROXY.into() });
            }
        }
        // Listening sockets move to the new proxy only on the same ports.
        Some(c) if c.running && ports_of(&settings(c)) == run.ports() => {
            steps.push(Step::HandOverProxy {
                argv: proxy_argv(PROXY_NEXT, &spec.image, run),
            })
        }
        Some(_) => {
            steps.push(Step::Remove { name: PROXY.into() });
            steps.push(Step::Run {
                name: PROXY.into(),
                argv: proxy_argv(PROXY, &spec.image, run),
            });
        }
        None => steps.push(Step::Run {
            name: PROXY.into(),
            argv: proxy_argv(PROXY, &spec.image, run),
        }),
    }
    let ca_changed = spec.nats_ca.is_some() && facts.nats_ca != spec.nats_ca;
    if let Some(ca) = spec.nats_ca.as_ref().filter(|_| ca_changed) {
        steps.push(Step::WriteFile {
            path: NATS_CA.into(),
            content: ca.clone(),
        });
    }
    let conf_changed = facts.executor_conf.as_deref() != Some(spec.executor_conf.as_str());
    if conf_changed {
        steps.push(Step::WriteFile {
            path: EXECUTOR_CONF.into(),
            content: spec.executor_conf.clone(),
        });
    }
    container_steps(
        &mut steps,
        EXECUTOR,
        &spec.image,
        facts.executor.as_ref(),
        conf_changed || ca_changed,
        executor_argv(&spec.image),
    );
    if let Some(scheduler) = &spec.scheduler {
        // A NATS that joined or left a cluster restarts the service too: its NATS URLs and
        // HA mode change with it.
        let topology = spec
            .nats
            .as_ref()
            .is_some_and(|n| topology_changed(facts, n));
        scheduler_steps(&mut steps, spec, scheduler, facts, ca_changed || topology);
    }
    steps
}

/// Whether NATS on the host runs as a single server and should be a cluster node, or the
/// other way round (a host without NATS's configuration yet has no topology to change).
fn topology_changed(facts: &Facts, nats: &NatsSpec) -> bool {
    let clustered = |conf: &str| conf.contains("\ncluster {");
    facts
        .nats_conf
        .as_deref()
        .is_some_and(|now| clustered(now) != clustered(&nats.config))
}

/// The scheduler service after everything else: it needs NATS, and its deploys need the
/// executors. Changed keys rewrite their files and replace the container; a new image
/// replaces it (SIGTERM: running deploys are cancelled cleanly, `replay ID --resume`
/// continues them), and its log, in [`SCHEDULER_STATE`], carries over. A new NATS CA
/// (`ca_changed`) restarts it too: it pins the CA when it connects.
fn scheduler_steps(
    steps: &mut Vec<Step>,
    spec: &HostSpec,
    s: &SchedulerSpec,
    facts: &Facts,
    ca_changed: bool,
) {
    let mut changed = ca_changed;
    for (path, now, want) in [
        (SCHEDULER_KEY, &facts.scheduler_key, &s.signing_key),
        (SCHEDULER_NKEY, &facts.scheduler_nkey, &s.nkey_seed),
    ] {
        if now.as_deref().map(str::trim) != Some(want.trim()) {
            changed = true;
            steps.push(Step::WriteFile {
                path: path.into(),
                content: format!("{}\n", want.trim()),
            });
        }
    }
    if let Some((secret, public)) = &s.service_key
        && facts.service_key.as_deref().map(str::trim) != Some(secret.trim())
    {
        changed = true;
        // The secret and the public half the service would write from it: setup reads the
        // public half back, and must not read one a former key left.
        steps.push(Step::WriteFile {
            path: SERVICE_KEY.into(),
            content: secret.trim().to_owned(),
        });
        steps.push(Step::WriteFile {
            path: SERVICE_PUB.into(),
            content: format!("{}\n", public.trim()),
        });
    }
    container_steps(
        steps,
        SCHEDULER,
        &spec.image,
        facts.scheduler.as_ref(),
        changed,
        scheduler_argv(&spec.image, &s.peers),
    );
}

/// `docker run` argv of the scheduler service: host networking (NATS on the same host's
/// loopback, `/metrics` on [`SCHEDULER_METRICS`]), its state bound at the same path. With
/// `peers` (the other control hosts), one HA instance that fails over to their NATS nodes.
pub fn scheduler_argv(image: &str, peers: &[String]) -> Vec<String> {
    let mut nats = vec![format!("nats://127.0.0.1:{NATS_PORT}")];
    if !peers.is_empty() {
        nats.push(nats_urls(peers));
    }
    let mut v = agent_common(SCHEDULER);
    v.extend(
        [
            "-v",
            &format!("{SCHEDULER_STATE}:{SCHEDULER_STATE}"),
            // The CA setup gives every host: NATS's certificate names 127.0.0.1 too.
            "-v",
            &format!("{NATS_CA}:{NATS_CA}:ro"),
            image,
            "scheduler",
            "run",
            "--state",
            SCHEDULER_STATE,
            "--nats",
            &nats.join(","),
            "--nkey",
            SCHEDULER_NKEY,
            "--nats-ca",
            NATS_CA,
            "--metrics",
            SCHEDULER_METRICS,
        ]
        .map(String::from),
    );
    if !peers.is_empty() {
        v.push("--ha".into());
    }
    v
}

/// Run a missing container, replace one on another image or whose settings changed, start a
/// stopped one, leave a current one alone.
fn container_steps(
    steps: &mut Vec<Step>,
    name: &str,
    image: &str,
    now: Option<&Container>,
    settings_changed: bool,
    argv: Vec<String>,
) {
    match now {
        Some(c) if c.image == image && !settings_changed => {
            if !c.running {
                steps.push(Step::Start { name: name.into() });
            }
            return;
        }
        Some(_) => steps.push(Step::Remove { name: name.into() }),
        None => {}
    }
    steps.push(Step::Run {
        name: name.into(),
        argv,
    });
}

/// What `flotilla remove` deletes from a host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoveSpec {
    /// The app's service name (containers labelled `service=NAME`).
    pub service: String,
    /// Image repositories to delete (the app's, NATS's).
    pub images: Vec<String>,
}

/// An image reference without its tag or digest (`reg:5000/nats:2.11` -> `reg:5000/nats`).
pub fn repository_of(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    match image.rfind(':') {
        Some(i) if !image[i..].contains('/') => &image[..i],
        _ => image,
    }
}

/// One shell command that removes everything Flotilla and the app put on a host. Each part
/// tolerates absence, so a second run (or a half-set-up host) is fine. A directory that is a
/// mount point cannot go itself: it is emptied, and only what is left inside is an error.
pub fn remove_command(spec: &RemoveSpec) -> String {
    let q = flotilla_ssh::shell_quote;
    let images: String = spec
        .images
        .iter()
        .chain(std::iter::once(&crate::image::REPOSITORY.to_owned()))
        .map(|i| format!(" --filter reference={}", q(&format!("{i}:*"))))
        .collect::<Vec<_>>()
        .concat();
    // `docker image ls` combines several reference filters with OR.
    format!(
        "if docker -v >/dev/null 2>&1; then \
         docker ps -aq --filter label=service={svc} | xargs -r docker rm -f -v >/dev/null; \
         docker rm -f -v {PROXY} {PROXY_NEXT} {EXECUTOR} {NATS} {SCHEDULER} >/dev/null 2>&1; \
         docker image ls -q{images} | sort -u | xargs -r docker rmi -f >/dev/null; \
         docker volume ls -q --filter label=service={svc} | xargs -r docker volume rm >/dev/null; \
         docker network rm kamal >/dev/null 2>&1; \
         fi; rm -rf {ETC_DIR} {STATE_DIR} {RUN_DIR} 2>/dev/null; \
         left=$(find {ETC_DIR} {STATE_DIR} {RUN_DIR} -mindepth 1 2>/dev/null | head -3); \
         [ -z \"$left\" ] || {{ echo \"could not remove $left\" >&2; exit 1; }}",
        svc = q(&spec.service),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(nats: bool) -> HostSpec {
        HostSpec {
            proxy_run: crate::proxy::ProxyRun::default(),
            host: "10.0.0.5".into(),
            image: "flotilla:0.1.0-abc".into(),
            executor_conf: executor_conf("10.0.0.5", "nats://10.0.0.5:4222", "KEY", true),
            nats_ca: Some("CA".into()),
            nats: nats.then(|| NatsSpec {
                image: "nats:2.11".into(),
                config: nats_config(&NatsSettings::for_host("10.0.0.5", vec![])),
                route_ca: None,
                tls: None,
            }),
            scheduler: None,
        }
    }

    fn current(spec: &HostSpec) -> Facts {
        let on = |image: &str| {
            Some(Container {
                image: image.into(),
                running: true,
                settings: String::new(),
            })
        };
        Facts {
            docker: true,
            can_install: true,
            image_present: true,
            proxy: on(&spec.image),
            executor: on(&spec.image),
            nats: spec.nats.as_ref().and_then(|n| on(&n.image)),
            executor_conf: Some(spec.executor_conf.clone()),
            nats_conf: spec.nats.as_ref().map(|n| n.config.clone()),
            nats_ca: spec.nats_ca.clone(),
            nats_cert: None,
            nats_route_ca: spec.nats.as_ref().and_then(|n| n.route_ca.clone()),
            hostname: None,
            dirs: true,
            scheduler: spec.scheduler.as_ref().and_then(|_| on(&spec.image)),
            scheduler_key: spec.scheduler.as_ref().map(|s| s.signing_key.clone()),
            scheduler_nkey: spec.scheduler.as_ref().map(|s| s.nkey_seed.clone()),
            service_key: spec
                .scheduler
                .as_ref()
                .and_then(|s| s.service_key.as_ref())
                .map(|k| k.0.clone()),
            scheduler_dir: spec.scheduler.is_some(),
        }
    }

    /// A bare host with Docker gets everything, in order: dirs, image, NATS, proxy, executor.
    #[test]
    fn bare_host_gets_everything_in_order() {
        let s = spec(true);
        let facts = Facts {
            docker: true,
            ..Facts::default()
        };
        let steps: Vec<String> = plan(&s, &facts, None).iter().map(Step::describe).collect();
        assert_eq!(
            steps,
            [
                "make /etc/flotilla and /var/lib/flotilla",
                "load the agent image",
                "write /etc/flotilla/nats/nats.conf",
                "run flotilla-nats",
                "run flotilla-proxy",
                "write /etc/flotilla/nats-ca.pem",
                "write /etc/flotilla/executor.conf",
                "run flotilla-executor",
            ]
        );
    }

    /// A host without Docker starts with installing it.
    #[test]
    fn host_without_docker_installs_it_first() {
        let s = spec(false);
        assert_eq!(plan(&s, &Facts::default(), None)[0], Step::InstallDocker);
    }

    /// Setup on a current host does nothing: no container restarts.
    #[test]
    fn current_host_needs_nothing() {
        for nats in [false, true] {
            let s = spec(nats);
            assert_eq!(plan(&s, &current(&s), None), vec![]);
        }
    }

    /// A new agent image replaces the executor and hands the proxy over (new one first),
    /// without reloading anything else.
    #[test]
    fn new_image_replaces_executor_and_hands_proxy_over() {
        let old = spec(false);
        let mut facts = current(&old);
        facts.image_present = false;
        let mut new = old.clone();
        new.image = "flotilla:0.1.0-def".into();
        assert_eq!(
            plan(&new, &facts, None),
            vec![
                Step::LoadImage,
                Step::HandOverProxy {
                    argv: proxy_argv(
                        PROXY_NEXT,
                        "flotilla:0.1.0-def",
                        &crate::proxy::ProxyRun::default()
                    )
                },
                Step::Remove {
                    name: EXECUTOR.into()
                },
                Step::Run {
                    name: EXECUTOR.into(),
                    argv: executor_argv("flotilla:0.1.0-def")
                },
            ]
        );
    }

    /// A changed `proxy.run` replaces the running proxy: handed over on the same ports, stopped
    /// and run again on other ports (sockets on other ports cannot be handed over). A proxy
    /// without the settings label ran with the defaults and is current.
    #[test]
    fn changed_proxy_run_replaces_the_proxy() {
        let s = spec(false);
        let mut changed = s.clone();
        let run = |pairs: &[(&str, &str)]| {
            crate::proxy::ProxyRun::from_kamal(
                &pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            )
            .unwrap()
            .0
        };
        changed.proxy_run = run(&[("log_max_size", "50m")]);
        assert_eq!(
            plan(&changed, &current(&s), None),
            vec![Step::HandOverProxy {
                argv: proxy_argv(PROXY_NEXT, &s.image, &changed.proxy_run)
            }]
        );
        changed.proxy_run = run(&[("http_port", "8080")]);
        let names: Vec<String> = plan(&changed, &current(&s), None)
            .iter()
            .map(Step::describe)
            .collect();
        assert_eq!(names, ["remove flotilla-proxy", "run flotilla-proxy"]);
        let mut labelled = current(&s);
        labelled.proxy.as_mut().unwrap().settings = s.proxy_run.label();
        assert!(plan(&s, &labelled, None).is_empty());
    }

    /// Agents stopped (dockerd restarted without restart policy kicking in, or stopped by
    /// hand) are started as they are; a changed executor.conf restarts the executor.
    #[test]
    fn stopped_agents_start_changed_conf_restarts_executor() {
        let s = spec(false);
        let mut facts = current(&s);
        facts.proxy.as_mut().unwrap().running = false;
        facts.executor_conf = Some("host_id = old\n".into());
        let steps: Vec<String> = plan(&s, &facts, None).iter().map(Step::describe).collect();
        assert_eq!(
            steps,
            [
                "start flotilla-proxy",
                "write /etc/flotilla/executor.conf",
                "remove flotilla-executor",
                "run flotilla-executor",
            ]
        );
    }

    fn with_scheduler() -> HostSpec {
        HostSpec {
            scheduler: Some(SchedulerSpec {
                signing_key: "SIGNING".into(),
                nkey_seed: "SUSEED".into(),
                peers: Vec::new(),
                service_key: None,
            }),
            ..spec(true)
        }
    }

    /// In service mode the control host also gets the scheduler service, last (it needs
    /// NATS and its deploys need the executors), with its keys written first.
    #[test]
    fn service_mode_boots_the_scheduler_on_the_control_host() {
        let s = with_scheduler();
        let facts = Facts {
            docker: true,
            ..Facts::default()
        };
        let steps: Vec<String> = plan(&s, &facts, None).iter().map(Step::describe).collect();
        assert_eq!(
            steps[steps.len() - 3..],
            [
                "write /var/lib/flotilla/scheduler/scheduler.key",
                "write /var/lib/flotilla/scheduler/nats.nk",
                "run flotilla-scheduler",
            ]
        );
        assert_eq!(
            plan(&s, &current(&s), None),
            vec![],
            "a current service is left alone"
        );
        assert_eq!(
            scheduler_argv("flotilla:x", &[]).join(" "),
            "run -d --name flotilla-scheduler --restart unless-stopped --network host \
             --stop-timeout 40 --label flotilla.agent=1 --log-opt max-size=10m \
             -v /var/lib/flotilla/scheduler:/var/lib/flotilla/scheduler \
             -v /etc/flotilla/nats-ca.pem:/etc/flotilla/nats-ca.pem:ro flotilla:x scheduler run \
             --state /var/lib/flotilla/scheduler --nats nats://127.0.0.1:4222 \
             --nkey /var/lib/flotilla/scheduler/nats.nk --nats-ca /etc/flotilla/nats-ca.pem \
             --metrics 0.0.0.0:9394"
        );
    }

    /// Upgrading: a new agent image replaces the scheduler container (its log stays in the
    /// state directory); a host set up before the service gets its state directory first.
    #[test]
    fn new_image_replaces_the_scheduler_and_old_hosts_get_its_dir() {
        let old = with_scheduler();
        let mut facts = current(&old);
        let mut new = old.clone();
        new.image = "flotilla:0.1.0-def".into();
        let steps = plan(&new, &facts, None);
        assert_eq!(
            steps[steps.len() - 2..],
            [
                Step::Remove {
                    name: SCHEDULER.into()
                },
                Step::Run {
                    name: SCHEDULER.into(),
                    argv: scheduler_argv("flotilla:0.1.0-def", &[])
                },
            ]
        );
        facts.scheduler_dir = false;
        facts.scheduler = None;
        let steps: Vec<String> = plan(&old, &facts, None)
            .iter()
            .map(Step::describe)
            .collect();
        assert_eq!(
            steps,
            [
                "make /etc/flotilla and /var/lib/flotilla",
                "run flotilla-scheduler"
            ]
        );
    }

    /// The keys never show in a debug print of the plan's input.
    #[test]
    fn scheduler_spec_debug_hides_keys() {
        let text = format!("{:?}", with_scheduler());
        assert!(
            !text.contains("SIGNING") && !text.contains("SUSEED"),
            "{text}"
        );
    }

    /// Image references lose their tag, not a registry's port.
    #[test]
    fn repository_of_strips_tag_only() {
        assert_eq!(repository_of("nats:2.11"), "nats");
        assert_eq!(repository_of("reg:5000/nats:2.15"), "reg:5000/nats");
        assert_eq!(repository_of("reg:5000/nats"), "reg:5000/nats");
        assert_eq!(repository_of("nats@sha256:abc"), "nats");
    }

    /// The probe's output reads back into facts, file bodies included.
    #[test]
    fn probe_output_parses() {
        let out = "docker=1\ncan_install=1\ndirs=1\nimage=1\n\
                   executor_conf=aG9zdF9pZCA9IGgxCg==\n\
                   flotilla-proxy=flotilla:0.1.0-abc,true\nflotilla-executor=\nflotilla-nats=nats:2.11,false\n\
                   hostname=web-1\n";
        let f = parse_facts(out);
        assert_eq!(
            f,
            Facts {
                docker: true,
                can_install: true,
                image_present: true,
                proxy: Some(Container {
                    image: "flotilla:0.1.0-abc".into(),
                    running: true,
                    settings: String::new(),
                }),
                executor: None,
                nats: Some(Container {
                    image: "nats:2.11".into(),
                    running: false,
                    settings: String::new(),
                }),
                executor_conf: Some("host_id = h1\n".into()),
                nats_conf: None,
                nats_ca: None,
                nats_cert: None,
                hostname: Some("web-1".into()),
                dirs: true,
                ..Facts::default()
            }
        );
    }

    /// The files setup writes, exactly: what `flotilla executor run` and nats-server read.
    #[test]
    fn executor_telemetry_lines() {
        assert_eq!(executor_telemetry_conf(None, None), "");
        assert_eq!(
            executor_telemetry_conf(Some(9396), Some("http://10.0.0.1:4318")),
            "metrics_listen = 0.0.0.0:9396\notlp_endpoint = http://10.0.0.1:4318\n"
        );
    }

    #[test]
    fn rendered_files() {
        assert_eq!(
            executor_conf("h1", "nats://10.0.0.1:4222", "K", true),
            "# Written by flotilla setup; rewritten on every setup.\nhost_id = h1\n\
             nats_url = nats://10.0.0.1:4222\nnats_ca = /etc/flotilla/nats-ca.pem\nscheduler_key = K\n\
             state_dir = /var/lib/flotilla/executor\n"
        );
        let operator = User {
            nkey: "UOPERATOR".into(),
            permissions: flotilla_protocol::access::operator_permissions(),
        };
        assert_eq!(
            nats_config(&NatsSettings::for_host("10.0.0.1", vec![operator])),
            "# Written by flotilla setup; rewritten on every setup.\nserver_name: \"flotilla-10-0-0-1\"\n\
             port: 4222\njetstream {\n  store_dir: \"/data\"\n}\ntls {\n  cert_file: \"/etc/nats/server-cert.pem\"\n  \
             key_file: \"/etc/nats/server-key.pem\"\n  timeout: 5\n}\nauthorization {\n  users = [\n    \
             { nkey: \"UOPERATOR\", permissions: { publish: { allow: [\">\"] }, subscribe: { allow: [\">\"] } } }\n  ]\n}\n"
        );
    }

    /// With three control hosts each NATS node routes to the other two over TLS, verifying
    /// their certificates against the project's CA (written beside its config), and tells
    /// clients of no other node; a single control host's configuration has no cluster.
    #[test]
    fn three_control_hosts_make_a_cluster() {
        let peers = ["10.0.0.2".to_owned(), "10.0.0.3".to_owned()];
        let conf = nats_config(&NatsSettings::clustered("10.0.0.1", &peers, vec![]));
        assert!(
            conf.contains(
                "ping_interval: \"2s\"\nping_max: 3\ncluster {\n  name: \"flotilla\"\n  listen: \"0.0.0.0:6222\"\n  no_advertise: true\n  \
                 routes: [\n    \"nats-route://10.0.0.2:6222\"\n    \"nats-route://10.0.0.3:6222\"\n  ]\n  \
                 tls {\n    cert_file: \"/etc/nats/server-cert.pem\"\n    key_file: \"/etc/nats/server-key.pem\"\n    \
                 ca_file: \"/etc/nats/ca.pem\"\n    verify: true\n    timeout: 5\n  }\n}\n"
            ),
            "{conf}"
        );
        assert!(!nats_config(&NatsSettings::for_host("10.0.0.1", vec![])).contains("cluster"));
        assert_eq!(
            nats_urls(&["10.0.0.1".into(), "fd00::2".into()]),
            "nats://10.0.0.1:4222,nats://[fd00::2]:4222"
        );

        let mut s = spec(true);
        s.nats = Some(NatsSpec {
            image: "nats:2.11".into(),
            config: conf.clone(),
            route_ca: Some("CA".into()),
            tls: None,
        });
        s.scheduler = Some(SchedulerSpec {
            signing_key: "SIGNING".into(),
            nkey_seed: "SUSEED".into(),
            peers: peers.to_vec(),
            service_key: Some(("SECRET".into(), "PUBLIC".into())),
        });
        let fresh: Vec<String> = plan(
            &s,
            &Facts {
                docker: true,
                ..Facts::default()
            },
            None,
        )
        .iter()
        .map(Step::describe)
        .collect();
        assert_eq!(
            fresh[2..5],
            [
                "write /etc/flotilla/nats/ca.pem",
                "write /etc/flotilla/nats/nats.conf",
                "run flotilla-nats"
            ]
        );
        assert_eq!(
            fresh[fresh.len() - 5..],
            [
                "write /var/lib/flotilla/scheduler/scheduler.key",
                "write /var/lib/flotilla/scheduler/nats.nk",
                "write /var/lib/flotilla/scheduler/service.key",
                "write /var/lib/flotilla/scheduler/service.pub",
                "run flotilla-scheduler",
            ]
        );
        assert!(
            plan(&s, &current(&s), None).is_empty(),
            "a current node is left alone"
        );
        assert!(scheduler_argv("flotilla:x", &peers).join(" ").ends_with(
            "--nats nats://127.0.0.1:4222,nats://10.0.0.2:4222,nats://10.0.0.3:4222 \
                 --nkey /var/lib/flotilla/scheduler/nats.nk --nats-ca /etc/flotilla/nats-ca.pem \
                 --metrics 0.0.0.0:9394 --ha"
        ));

        // A single control host joining a cluster: NATS cannot reload into one, so it and
        // the service (new URLs, HA on) restart.
        let mut single = current(&s);
        single.nats_conf = Some(nats_config(&NatsSettings::for_host("10.0.0.1", vec![])));
        let names: Vec<String> = plan(&s, &single, None).iter().map(Step::describe).collect();
        assert_eq!(
            names,
            [
                "write /etc/flotilla/nats/nats.conf",
                "remove flotilla-nats",
                "run flotilla-nats",
                "remove flotilla-scheduler",
                "run flotilla-scheduler"
            ]
        );
    }

    /// The agents run with the restart policy, host networking and the binds the brief
    /// names (the executor's state at the same path, settings read-only).
    #[test]
    fn agent_argv() {
        let e = executor_argv("flotilla:x").join(" ");
        assert_eq!(
            e,
            "run -d --name flotilla-executor --restart unless-stopped --network host \
             --stop-timeout 40 --label flotilla.agent=1 --log-opt max-size=10m -v /var/run/docker.sock:/var/run/docker.sock \
             -v /var/lib/flotilla/executor:/var/lib/flotilla/executor -v /etc/flotilla:/etc/flotilla:ro \
             -v /run/flotilla:/run/flotilla -v /:/host flotilla:x executor run --host-root /host"
        );
        assert!(proxy_argv(PROXY, "flotilla:x", &crate::proxy::ProxyRun::default()).join(" ").ends_with(
            "--label flotilla.agent=1 --log-opt max-size=10m --label flotilla.proxy-run=ports=80,443;metrics=;log=10m;debug=0 \
             -v /run/flotilla:/run/flotilla -v /var/lib/flotilla/proxy:/var/lib/flotilla/proxy flotilla:x proxy run \
             --listeners-socket /run/flotilla/proxy-listeners.sock --http-port 80 --https-port 443"
        ));
    }

    /// A newly enrolled host changes only NATS's users: the running NATS rereads its
    /// configuration (SIGHUP) instead of restarting; another image still replaces it.
    #[test]
    fn changed_users_reload_nats_in_place() {
        let spec = HostSpec {
            proxy_run: crate::proxy::ProxyRun::default(),
            host: "h1".into(),
            image: "flotilla:x".into(),
            executor_conf: "c".into(),
            nats_ca: None,
            nats: Some(NatsSpec {
                image: "nats:2.11".into(),
                config: "new".into(),
                route_ca: None,
                tls: None,
            }),
            scheduler: None,
        };
        let mut facts = Facts {
            docker: true,
            can_install: true,
            image_present: true,
            proxy: Some(Container {
                image: "flotilla:x".into(),
                running: true,
                settings: String::new(),
            }),
            executor: Some(Container {
                image: "flotilla:x".into(),
                running: true,
                settings: String::new(),
            }),
            nats: Some(Container {
                image: "nats:2.11".into(),
                running: true,
                settings: String::new(),
            }),
            executor_conf: Some("c".into()),
            nats_conf: Some("old".into()),
            nats_ca: None,
            nats_cert: None,
            hostname: None,
            dirs: true,
            ..Facts::default()
        };
        let names: Vec<String> = plan(&spec, &facts, None)
            .iter()
            .map(Step::describe)
            .collect();
        assert_eq!(
            names,
            [
                "write /etc/flotilla/nats/nats.conf",
                "reload flotilla-nats's configuration"
            ]
        );
        facts.nats_conf = Some("new".into());
        assert!(plan(&spec, &facts, None).is_empty());
        facts.nats_conf = Some("old".into());
        facts.nats = Some(Container {
            image: "nats:2.10".into(),
            running: true,
            settings: String::new(),
        });
        let names: Vec<String> = plan(&spec, &facts, None)
            .iter()
            .map(Step::describe)
            .collect();
        assert_eq!(
            names,
            [
                "write /etc/flotilla/nats/nats.conf",
                "remove flotilla-nats",
                "run flotilla-nats"
            ]
        );
    }

    /// A renewed NATS certificate is written (key first) and NATS rereads it in place: no
    /// restart of NATS, nothing else touched.
    #[test]
    fn renewed_certificate_is_installed_and_nats_reloads() {
        let s = spec(true);
        let facts = current(&s);
        let cert = crate::tls::ServerCert {
            cert_pem: "CERT".into(),
            key_pem: zeroize::Zeroizing::new("KEY".into()),
        };
        let names: Vec<String> = plan(&s, &facts, Some(&cert))
            .iter()
            .map(Step::describe)
            .collect();
        assert_eq!(
            names,
            [
                "write /etc/flotilla/nats/server-cert.pem and its key",
                "reload flotilla-nats's configuration"
            ]
        );
        assert!(
            !format!("{:?}", plan(&s, &facts, Some(&cert))).contains("KEY"),
            "the server key shows in Debug"
        );
    }

    /// A new CA for the executor (first TLS setup, or another `x-flotilla.nats.ca`) is
    /// written and restarts the executor, even when executor.conf is unchanged.
    #[test]
    fn changed_ca_restarts_the_executor() {
        let s = spec(false);
        let mut facts = current(&s);
        facts.nats_ca = Some("OLD CA".into());
        let names: Vec<String> = plan(&s, &facts, None).iter().map(Step::describe).collect();
        assert_eq!(
            names,
            [
                "write /etc/flotilla/nats-ca.pem",
                "remove flotilla-executor",
                "run flotilla-executor"
            ]
        );
    }

    /// NATS's certificate names the control host as deploy.yml does, the loopback names the
    /// CLI's tunnel uses, and the host's own name.
    #[test]
    fn certificate_names() {
        let dir = tempfile::tempdir().unwrap();
        let tls = NatsTls {
            ca: std::sync::Arc::new(crate::tls::ProjectCa::load_or_create(dir.path()).unwrap()),
            names: NatsTls::names_of("10.0.0.5"),
        };
        let facts = Facts {
            hostname: Some("web-1".into()),
            ..Facts::default()
        };
        assert_eq!(
            tls.names_for(&facts),
            ["10.0.0.5", "127.0.0.1", "localhost", "web-1"]
        );
        assert_eq!(NatsTls::names_of("localhost"), ["localhost", "127.0.0.1"]);
    }
}
