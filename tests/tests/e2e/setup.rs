//! `flotilla setup`, `server bootstrap` and `remove` on bare fleet hosts (Docker and sshd
//! only, empty `/etc/flotilla` and `/var/lib/flotilla`): nothing started by hand, NATS booted
//! by setup and reached through an SSH tunnel, the agents built from the static flotilla.

mod tls;

use crate::support::{fleet, http_get, ssh_ok};
use flotilla_e2e::bare;
use flotilla_e2e::fleet::{Fleet, Host, wait_until};
use flotilla_e2e::testapp;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

/// How long agents may take to be back after their host's dockerd restarted: the engine
/// starts, restores its containers, the proxy restores its routes.
const AGENTS_BACK: Duration = Duration::from_secs(60);

/// Failed requests during a proxy hand-over stay under one in this many (seen: 0 and 1 in
/// about 35,000).
const RESET_BOUND: usize = 1000;

const CONFIG: &str = r#"service: testapp
image: testapp
servers:
  web:
{hosts}proxy:
  app_port: 80
  healthcheck:
    path: /up
    interval: 1
    timeout: 2
registry:
  server: {registry}
  username: flotilla
  password:
    - KAMAL_REGISTRY_PASSWORD
builder:
  arch: amd64
  args:
    APP_VERSION: <%= ENV.fetch("APP_VERSION", "dev") %>
ssh:
  config:
    - {ssh_config}
deploy_timeout: 20
drain_timeout: 5
readiness_delay: 0
x-flotilla:
  nats:
    image: {nats_image}
"#;

/// A Kamal project for bare hosts: no NATS url (setup boots NATS), no agents started.
pub(crate) struct BareProject {
    dir: tempfile::TempDir,
    pub(crate) flotilla: PathBuf,
    builder: String,
    registry: String,
    ssh_config: String,
    nats_image: String,
    /// Appended to `x-flotilla:` (two-space indented keys).
    extra: String,
}

impl BareProject {
    pub(crate) fn new(fleet: &Fleet, hosts: &[&Host]) -> BareProject {
        BareProject::with_extra(fleet, hosts, "")
    }

    /// [`BareProject::new`] with `extra` settings under `x-flotilla:`.
    pub(crate) fn with_extra(fleet: &Fleet, hosts: &[&Host], extra: &str) -> BareProject {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("config")).unwrap();
        std::fs::create_dir_all(root.join(".kamal")).unwrap();
        std::fs::write(
            root.join(".kamal/secrets"),
            "KAMAL_REGISTRY_PASSWORD=unused-by-this-registry\n",
        )
        .unwrap();
        std::fs::write(
            root.join("Dockerfile"),
            "FROM scratch\nCOPY app /app\nARG APP_VERSION=dev\nENV APP_VERSION=$APP_VERSION PORT=80\n\
             EXPOSE 80\nENTRYPOINT [\"/app\"]\n",
        )
        .unwrap();
        std::fs::copy(testapp::build_static_binary().unwrap(), root.join("app")).unwrap();
        let project = BareProject {
            dir,
            flotilla: bare::build_static_flotilla().unwrap(),
            builder: fleet.builder_docker_host(),
            registry: fleet.registry(),
            ssh_config: fleet.ssh_config().display().to_string(),
            nats_image: bare::push_nats_image(fleet).unwrap(),
            extra: extra.to_owned(),
        };
        project.set_hosts(hosts);
        project
    }

    pub(crate) fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Rewrites `config/deploy.yml` with these hosts in the web role.
    fn set_hosts(&self, hosts: &[&Host]) {
        let list: String = hosts
            .iter()
            .map(|h| format!("    - {}\n", h.addr))
            .collect();
        let config = CONFIG
            .replace("{hosts}", &list)
            .replace("{registry}", &self.registry)
            .replace("{ssh_config}", &self.ssh_config)
            .replace("{nats_image}", &self.nats_image)
            + &self.extra;
        std::fs::write(self.root().join("config/deploy.yml"), config).unwrap();
    }

    /// Runs the static `flotilla ARGS` (its own binary is what the agents' image is built
    /// from), with no NATS address in the environment.
    pub(crate) fn flotilla(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.flotilla_in(self.root(), args, env)
    }

    /// [`BareProject::flotilla`] in another directory (a second checkout).
    pub(crate) fn flotilla_in(&self, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
        std::process::Command::new(&self.flotilla)
            .args(args)
            .current_dir(dir)
            .env("DOCKER_HOST", &self.builder)
            // `deploy` logs in to the registry: into the checkout's own Docker config, not
            // this machine's ~/.docker.
            .env("DOCKER_CONFIG", dir.join(".docker"))
            .env("NO_COLOR", "1")
            .env_remove("FLOTILLA_NATS_URL")
            .env_remove("FLOTILLA_AGENT_BINARY")
            .env_remove("KAMAL_DESTINATION")
            .envs(env.iter().copied())
            .output()
            .unwrap()
    }

    /// The builder engine, where `deploy` builds the app image.
    pub(crate) fn builder(&self) -> &str {
        &self.builder
    }

    pub(crate) fn flotilla_ok(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        let out = self.flotilla(args, env);
        assert!(
            out.status.success(),
            "flotilla {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

pub(crate) fn version_of(host: &Host) -> String {
    match http_get(SocketAddr::from((host.addr, 80)), "/version") {
        Ok((200, body)) => body.trim().to_owned(),
        other => panic!("GET {}/version: {other:?}", host.addr),
    }
}

/// Every container on the host as `name id started-at`, sorted.
pub(crate) fn containers(fleet: &Fleet, host: &Host) -> Vec<String> {
    let out = ssh_ok(
        fleet,
        host,
        "docker ps -aq | xargs -r docker inspect -f '{{.Name}} {{.Id}} {{.State.StartedAt}} {{.State.Running}}'",
    );
    let mut v: Vec<String> = out.lines().map(str::to_owned).collect();
    v.sort();
    v
}

/// What a bare host has: no container, no image, nothing of Flotilla's.
fn assert_bare(fleet: &Fleet, host: &Host) {
    assert_eq!(
        ssh_ok(
            fleet,
            host,
            "docker ps -aq | wc -l; docker images -q | wc -l; docker volume ls -q | wc -l; \
             find /etc/flotilla /var/lib/flotilla /run/flotilla -mindepth 1 2>/dev/null | wc -l"
        ),
        "0\n0\n0\n0",
        "{} is bare",
        host.name
    );
}

/// From bare hosts, `flotilla setup` alone makes the app served: Docker was there, the
/// agents run as containers with `--restart unless-stopped`, NATS runs on the control host
/// (the first host), the CLI reaches it through an SSH tunnel, each executor is enrolled.
/// A second `setup` changes nothing (every container keeps its id and start time, no step
/// runs, no host is enrolled again). A host added to deploy.yml is bootstrapped, enrolled
/// and served by the next `setup`, and the first host is still left alone.
#[test]
fn setup_from_bare_hosts_serves_then_changes_nothing_then_takes_a_new_host() {
    let fleet = fleet(2);
    let (h1, h2) = (&fleet.hosts[0], &fleet.hosts[1]);
    for h in [h1, h2] {
        assert_bare(&fleet, h);
    }
    let project = BareProject::new(&fleet, &[h1]);
    let v1 = [("APP_VERSION", "v1")];
    project.flotilla_ok(&["setup", "--version", "v1"], &v1);
    assert_eq!(version_of(h1), "v1");
    let first = containers(&fleet, h1);
    let names: Vec<&str> = first
        .iter()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "/flotilla-executor",
            "/flotilla-nats",
            "/flotilla-proxy",
            "/testapp-web-v1"
        ]
    );
    assert_eq!(
        ssh_ok(
            &fleet,
            h1,
            "docker inspect -f '{{.HostConfig.RestartPolicy.Name}}' flotilla-proxy flotilla-executor flotilla-nats"
        ),
        "unless-stopped\nunless-stopped\nunless-stopped"
    );
    assert_eq!(
        ssh_ok(
            &fleet,
            h1,
            "stat -c %a /etc/flotilla /etc/flotilla/executor.conf"
        ),
        "700\n600"
    );

    // Again: nothing to do anywhere, nothing restarted.
    let out = project.flotilla_ok(&["setup", "--version", "v1", "--json"], &v1);
    assert!(out.contains(r#"{"host":"#), "{out}");
    assert!(out.contains(r#""planned":[]"#), "{out}");
    assert!(!out.contains(r#""done":"#), "a step ran: {out}");
    assert!(out.contains(r#""enrolled":false"#), "{out}");
    assert_eq!(
        containers(&fleet, h1),
        first,
        "a second setup restarts nothing"
    );

    // A host added to deploy.yml.
    assert_bare(&fleet, h2);
    project.set_hosts(&[h1, h2]);
    let out = project.flotilla_ok(&["setup", "--version", "v1", "--json"], &v1);
    assert!(
        out.contains(&format!(r#"{{"enrolled":true,"host":"{}"}}"#, h2.addr)),
        "{out}"
    );
    assert_eq!(version_of(h2), "v1");
    let on_h2: Vec<String> = containers(&fleet, h2)
        .iter()
        .map(|l| l.split_whitespace().next().unwrap().to_owned())
        .collect();
    assert_eq!(
        on_h2,
        ["/flotilla-executor", "/flotilla-proxy", "/testapp-web-v1"],
        "NATS runs on the control host only"
    );
    assert_eq!(containers(&fleet, h1), first, "h1 was left alone");
}

/// The agents come back by themselves after their host's dockerd restarts (restart policy),
/// and the host serves again; `flotilla remove -y` then leaves nothing on any host: no
/// container, image or volume, empty Flotilla directories.
#[test]
fn agents_survive_a_dockerd_restart_and_remove_leaves_nothing() {
    let fleet = fleet(2);
    let (h1, h2) = (&fleet.hosts[0], &fleet.hosts[1]);
    let project = BareProject::new(&fleet, &[h1, h2]);
    project.flotilla_ok(&["setup", "--version", "v1"], &[("APP_VERSION", "v1")]);
    assert_eq!(version_of(h2), "v1");

    fleet.restart_docker(h2).unwrap();
    let back = wait_until(AGENTS_BACK, || {
        let running = fleet
            .ssh(
                h2,
                "docker inspect -f '{{.State.Running}}' flotilla-proxy flotilla-executor",
            )
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "true\ntrue");
        running
            && matches!(
                http_get(SocketAddr::from((h2.addr, 80)), "/version"),
                Ok((200, _))
            )
    });
    assert!(
        back,
        "agents on {} not back: {:?}",
        h2.name,
        containers(&fleet, h2)
    );
    assert_eq!(version_of(h2), "v1");

    let out = project.flotilla(&["remove"], &[]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "no confirmation, nothing removed"
    );
    assert!(!containers(&fleet, h1).is_empty());
    project.flotilla_ok(&["remove", "-y"], &[]);
    for h in [h1, h2] {
        assert_bare(&fleet, h);
    }
}

/// A host without Docker, where Docker cannot be installed (no internet here), stops
/// bootstrap with a message naming the host and what to do; the other host is set up.
#[test]
fn host_without_docker_gets_a_clear_message() {
    let fleet = fleet(2);
    let (h1, h2) = (&fleet.hosts[0], &fleet.hosts[1]);
    // Hide the docker client in h2's mount namespace only.
    ssh_ok(
        &fleet,
        h2,
        "for d in $(which -a docker); do mount --bind /dev/null $d; done; \
         command -v docker || echo hidden",
    );
    let project = BareProject::new(&fleet, &[h1, h2]);
    let out = project.flotilla(&["server", "bootstrap"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}: installing Docker failed", h2.addr)),
        "{err}"
    );
    assert!(
        err.contains(&format!("install Docker on {} yourself", h2.addr)),
        "{err}"
    );
    assert!(
        err.contains(&format!("bootstrap failed on {}", h2.addr)),
        "{err}"
    );
    assert!(!err.contains(&format!("{}: installing", h1.addr)), "{err}");
    assert_eq!(
        ssh_ok(
            &fleet,
            h1,
            "docker inspect -f '{{.State.Running}}' flotilla-executor"
        ),
        "true"
    );
}

/// A new flotilla binary (here: the same one with bytes appended, so a new digest and a new
/// image tag) replaces the agents on the next bootstrap, and the proxy is handed over: the
/// new one takes the old one's listening sockets (`--listeners-socket`, so nothing queued
/// on them is reset), then the old one drains. Under continuous load the app is served
/// throughout and no request gets an error answer; a bootstrap right after changes nothing.
/// Known remaining gap, bounded here rather than hidden: a connection the old proxy accepted
/// in its last instant, before reading its request, is closed by its shutdown (seen: 0 of
/// 33,621 in one run, 1 broken pipe of 39,993 in another).
#[test]
fn new_agent_image_replaces_the_agents_while_the_proxy_serves() {
    let fleet = fleet(1);
    let h1 = &fleet.hosts[0];
    let project = BareProject::new(&fleet, &[h1]);
    project.flotilla_ok(&["setup", "--version", "v1"], &[("APP_VERSION", "v1")]);
    let image = |name: &str| {
        ssh_ok(
            &fleet,
            h1,
            &format!("docker inspect -f '{{{{.Config.Image}}}}' {name}"),
        )
    };
    let old = image("flotilla-proxy");

    let changed = project.root().join("flotilla-changed");
    let mut bytes = std::fs::read(&project.flotilla).unwrap();
    bytes.extend_from_slice(b"\0a different build\0");
    std::fs::write(&changed, bytes).unwrap();
    std::fs::set_permissions(
        &changed,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let agent = [("FLOTILLA_AGENT_BINARY", changed.to_str().unwrap())];

    let load = crate::load::start(&[SocketAddr::from((h1.addr, 80))], 4);
    project.flotilla_ok(&["server", "bootstrap"], &agent);
    let stats = load.stop();
    assert!(stats.ok > 0);
    let total = stats.ok + stats.failed.len();
    // A transport error (an `os error`), never an HTTP error answer.
    let answers: Vec<&String> = stats
        .failed
        .iter()
        .filter(|f| !f.contains("os error"))
        .collect();
    assert!(
        answers.is_empty() && stats.failed.len() * RESET_BOUND < total,
        "{} of {total} requests failed during the hand-over: {:?}",
        stats.failed.len(),
        &stats.failed[..stats.failed.len().min(5)]
    );
    let logs = ssh_ok(&fleet, h1, "docker logs flotilla-proxy 2>&1");
    assert!(
        logs.contains("took the listening sockets over"),
        "the new proxy bound its own sockets instead: {logs}"
    );
    let new = image("flotilla-proxy");
    assert_ne!(new, old);
    assert_eq!(image("flotilla-executor"), new);
    assert_eq!(version_of(h1), "v1");
    let out = project.flotilla_ok(&["server", "bootstrap", "--json"], &agent);
    assert!(out.contains(r#""planned":[]"#), "{out}");
}

/// `flotilla upgrade` (Kamal's `kamal upgrade`) with a new flotilla build: on every host the
/// executor and the proxy run the new agent image, while the app keeps serving under load
/// (no HTTP error answer; transport resets within the hand-over's known bound) and is not
/// redeployed (the same app container runs); an upgrade right after changes no container;
/// the upgraded agents then deploy a new version.
#[test]
fn upgrade_brings_every_hosts_agents_to_this_build_and_keeps_the_app() {
    let fleet = fleet(2);
    let (h1, h2) = (&fleet.hosts[0], &fleet.hosts[1]);
    let project = BareProject::new(&fleet, &[h1, h2]);
    project.flotilla_ok(&["setup", "--version", "v1"], &[("APP_VERSION", "v1")]);
    let inspect = |h: &Host, what: &str, name: &str| {
        ssh_ok(&fleet, h, &format!("docker inspect -f '{what}' {name}"))
    };
    let ids = |h: &Host| ssh_ok(&fleet, h, "docker ps -q --no-trunc | sort | tr '\\n' ' '");
    let app_id = |h: &Host| inspect(h, "{{.Id}}", "testapp-web-v1");
    let before: Vec<(String, String)> = [h1, h2]
        .iter()
        .map(|h| (inspect(h, "{{.Config.Image}}", "flotilla-proxy"), app_id(h)))
        .collect();

    let changed = project.root().join("flotilla-upgraded");
    let mut bytes = std::fs::read(&project.flotilla).unwrap();
    bytes.extend_from_slice(b"\0an upgraded build\0");
    std::fs::write(&changed, bytes).unwrap();
    std::fs::set_permissions(
        &changed,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let agent = [("FLOTILLA_AGENT_BINARY", changed.to_str().unwrap())];

    let addrs = [
        SocketAddr::from((h1.addr, 80)),
        SocketAddr::from((h2.addr, 80)),
    ];
    let load = crate::load::start(&addrs, 4);
    project.flotilla_ok(&["upgrade"], &agent);
    let stats = load.stop();
    let total = stats.ok + stats.failed.len();
    eprintln!(
        "upgrade under load: {} of {total} requests failed",
        stats.failed.len()
    );
    assert!(stats.ok > 0);
    let answers: Vec<&String> = stats
        .failed
        .iter()
        .filter(|f| !f.contains("os error"))
        .collect();
    assert!(
        answers.is_empty() && stats.failed.len() * RESET_BOUND < total,
        "{} of {total} requests failed during the upgrade: {:?}",
        stats.failed.len(),
        &stats.failed[..stats.failed.len().min(5)]
    );
    for (h, (old_image, old_app)) in [h1, h2].into_iter().zip(&before) {
        let new_image = inspect(h, "{{.Config.Image}}", "flotilla-proxy");
        assert_ne!(
            &new_image, old_image,
            "{}: the proxy runs the new build",
            h.addr
        );
        assert_eq!(
            inspect(h, "{{.Config.Image}}", "flotilla-executor"),
            new_image,
            "{}: the executor runs the new build",
            h.addr
        );
        assert_eq!(
            &app_id(h),
            old_app,
            "{}: the app was not redeployed",
            h.addr
        );
        assert_eq!(version_of(h), "v1");
    }

    let running = [ids(h1), ids(h2)];
    project.flotilla_ok(&["upgrade"], &agent);
    assert_eq!(
        [ids(h1), ids(h2)],
        running,
        "a second upgrade changes nothing"
    );

    project.flotilla_ok(&["deploy", "--version", "v2"], &[("APP_VERSION", "v2")]);
    for h in [h1, h2] {
        assert_eq!(
            version_of(h),
            "v2",
            "{}: the upgraded agents deploy",
            h.addr
        );
    }
}

/// Trust on a fleet set up from bare hosts: the NATS setup booted admits no connection
/// without an enrolled key (no passive subscriber, no app container), and a host whose
/// executor comes back with other keys (its state wiped, as on a reinstalled host) is refused
/// with the command that accepts it; once accepted, deploys reach it again.
#[test]
fn nats_admits_only_enrolled_keys_and_changed_keys_need_replace() {
    let fleet = fleet(2);
    let (h1, h2) = (&fleet.hosts[0], &fleet.hosts[1]);
    let project = BareProject::new(&fleet, &[h1, h2]);
    project.flotilla_ok(&["setup", "--version", "v1"], &[("APP_VERSION", "v1")]);
    assert_eq!(version_of(h2), "v1");

    // Every client here speaks TLS pinned to the project's CA, so a refusal is NATS's
    // authorisation saying no, not the handshake: the operators' key is admitted the same way.
    let url = format!("nats://{}:4222", h1.addr);
    let ca = project.root().join(".flotilla/nats-ca.pem");
    let tls = || {
        async_nats::ConnectOptions::new()
            .add_root_certificates(ca.clone())
            .require_tls(true)
    };
    let operator = std::fs::read_to_string(project.root().join(".flotilla/nats-operator.nk"))
        .unwrap()
        .trim()
        .to_owned();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let admitted = tls().nkey(operator).connect(&url).await;
        assert!(
            admitted.is_ok(),
            "the operators' key over pinned TLS was refused: {:?}",
            admitted.err()
        );
        let refused_by_auth = |res: Result<async_nats::Client, async_nats::ConnectError>| {
            res.err()
                .is_some_and(|e| e.kind() == async_nats::ConnectErrorKind::AuthorizationViolation)
        };
        assert!(
            refused_by_auth(tls().connect(&url).await),
            "NATS did not refuse a TLS connection without credentials as unauthorised"
        );
        let stranger = nkeys::KeyPair::new_user().seed().unwrap();
        assert!(
            refused_by_auth(tls().nkey(stranger).connect(&url).await),
            "NATS did not refuse a key nobody enrolled as unauthorised"
        );
    });

    // h2's executor state wiped: it makes new keys on its next start.
    ssh_ok(
        &fleet,
        h2,
        "docker stop flotilla-executor >/dev/null && cd /var/lib/flotilla/executor && \
         rm -f host.key signing.key nats.nk identity.pub && docker start flotilla-executor >/dev/null",
    );
    let identity = h2.flotilla_state.join("executor/identity.pub");
    assert!(
        wait_until(AGENTS_BACK, || identity.exists()),
        "the executor on {} made no new identity",
        h2.name
    );
    let out = project.flotilla(&["server", "enroll"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("{}: already enrolled", h1.addr)),
        "{stdout}"
    );
    assert!(
        stdout.contains("executor keys changed")
            && stdout.contains(&format!("flotilla server enroll {} --replace", h2.addr)),
        "{stdout}"
    );

    project.flotilla_ok(
        &["server", "enroll", &h2.addr.to_string(), "--replace"],
        &[],
    );
    project.flotilla_ok(&["deploy", "--version", "v2"], &[("APP_VERSION", "v2")]);
    for h in [h1, h2] {
        assert_eq!(version_of(h), "v2");
    }
}
