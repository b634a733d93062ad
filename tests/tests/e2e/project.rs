//! A Kamal project aimed at the fleet, brought up as a user brings up bare hosts:
//! `flotilla server bootstrap` over SSH (the agents as containers built from the static
//! `flotilla`, NATS booted on the control host, every executor enrolled), then `flotilla` run
//! in the project as a user would. Nothing is started on a host by hand.

use flotilla_e2e::bare;
use flotilla_e2e::fleet::{Fleet, Host};
use flotilla_e2e::testapp;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The port each host's proxy serves `/metrics` on (`proxy.run.metrics_port`), as
/// `grafana/prometheus.yml` expects.
pub const PROXY_METRICS_PORT: u16 = 9395;
/// The port each host's executor serves `/metrics` on (`x-flotilla.executor.metrics_port`),
/// as `grafana/prometheus.yml` expects.
pub const EXECUTOR_METRICS_PORT: u16 = 9396;

/// The project's `config/deploy.yml`; `{hosts}`, `{registry}`, `{nats_image}`, `{ssh_config}`
/// and the metrics ports are filled in. No `x-flotilla.nats.url`: bootstrap boots NATS on the
/// control host (the first host) and the CLI reaches it through an SSH tunnel. Deploys run
/// embedded (the default `x-flotilla.scheduler.mode`): the tests that use this project are
/// about the deploy procedure, its events in the project's own log and the CLI that runs it
/// (some kill that CLI mid-deploy); the scheduler service has its own tests (`control.rs`).
const CONFIG: &str = r#"service: testapp
image: testapp
ssh:
  config:
    - {ssh_config}
servers:
  web:
{hosts}proxy:
  run:
    metrics_port: {proxy_metrics}
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
env:
  clear:
    APP_MODE: <%= ENV.fetch("APP_MODE", "healthy") %>
  secret:
    - APP_SECRET
  tags:
    last:
      APP_MODE: <%= ENV.fetch("LAST_HOST_MODE", "healthy") %>
deploy_timeout: <%= ENV.fetch("DEPLOY_TIMEOUT", "20") %>
drain_timeout: 5
readiness_delay: 0
x-flotilla:
  nats:
    image: {nats_image}
  executor:
    metrics_port: {executor_metrics}
  rollout:
    auto_rollback: <%= ENV.fetch("AUTO_ROLLBACK", "false") %>
    max_failures: <%= ENV.fetch("MAX_FAILURES", "0") %>
    max_parallel: <%= ENV.fetch("MAX_PARALLEL", "10") %>
    step_timeout: <%= ENV.fetch("STEP_TIMEOUT", "300") %>
<% if ENV["CANARY"] -%>
    canary: <%= ENV["CANARY"] %>
<% end -%>
"#;

/// The secret the app gets through `env.secret`; it must never show up in output or logs.
pub const APP_SECRET: &str = "flt-app-secret-5c2f9e1b";

pub struct Project {
    pub dir: tempfile::TempDir,
    /// The static `flotilla` (the agents' image is built from its own binary).
    pub flotilla: PathBuf,
    /// The fleet's hosts, in the config's order; the first is the control host.
    pub hosts: Vec<Host>,
    builder_docker_host: String,
}

impl Project {
    /// Writes `config/deploy.yml` ([`CONFIG`] with `extra` appended), a Dockerfile and the app
    /// binary, then runs `flotilla server bootstrap` on the bare hosts: Docker is there, the
    /// agents start as containers, NATS on the control host, each executor is enrolled in the
    /// project's log. What `flotilla setup` does before its deploy.
    pub fn new(fleet: &Fleet, extra: &str) -> Project {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("config")).unwrap();
        std::fs::create_dir_all(root.join(".kamal")).unwrap();
        // The last host carries the tag `last`, whose env a test can make unhealthy alone.
        let last = fleet.hosts.len() - 1;
        let hosts: String = fleet
            .hosts
            .iter()
            .enumerate()
            .map(|(i, h)| match i == last {
                true => format!("    - {}: [last]\n", h.addr),
                false => format!("    - {}\n", h.addr),
            })
            .collect();
        // Knobs a test turns through the environment, as a Kamal user would with ERB.
        let config = CONFIG
            .replace("{hosts}", &hosts)
            .replace("{registry}", &fleet.registry())
            .replace("{nats_image}", &bare::push_nats_image(fleet).unwrap())
            .replace("{proxy_metrics}", &PROXY_METRICS_PORT.to_string())
            .replace("{executor_metrics}", &EXECUTOR_METRICS_PORT.to_string())
            .replace("{ssh_config}", &fleet.ssh_config().display().to_string())
            + extra;
        std::fs::write(root.join("config/deploy.yml"), config).unwrap();
        std::fs::write(
            root.join(".kamal/secrets"),
            format!("KAMAL_REGISTRY_PASSWORD=unused-by-this-registry\nAPP_SECRET={APP_SECRET}\n"),
        )
        .unwrap();
        std::fs::write(
            root.join("Dockerfile"),
            "FROM scratch\nCOPY app /app\nARG APP_VERSION=dev\nENV APP_VERSION=$APP_VERSION PORT=80\n\
             EXPOSE 80\nENTRYPOINT [\"/app\"]\n",
        )
        .unwrap();
        std::fs::copy(testapp::build_static_binary().unwrap(), root.join("app")).unwrap();
        let project = Project {
            dir,
            flotilla: bare::build_static_flotilla().unwrap(),
            hosts: fleet.hosts.clone(),
            builder_docker_host: fleet.builder_docker_host(),
        };
        project.flotilla_ok(&["server", "bootstrap", "-q"], &[]);
        project
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `flotilla ARGS` in the project with `env`, as a user at a terminal-less shell.
    pub fn flotilla(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(&self.flotilla)
            .args(args)
            .current_dir(self.root())
            .env("DOCKER_HOST", &self.builder_docker_host)
            .env("NO_COLOR", "1")
            // The build's `docker login` writes here, not to the machine's ~/.docker.
            .env("DOCKER_CONFIG", self.root().join(".docker"))
            .env_remove("KAMAL_DESTINATION")
            .env_remove("FLOTILLA_NATS_URL")
            .env_remove("FLOTILLA_AGENT_BINARY")
            .envs(env.iter().copied())
            .output()
            .unwrap()
    }

    /// Like [`Project::flotilla`], failing the test on a non-zero exit; returns stdout.
    pub fn flotilla_ok(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        let out = self.flotilla(args, env);
        assert!(
            out.status.success(),
            "flotilla {args:?} failed ({}):\nstdout: {}\nstderr: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.agent_logs()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Every host's executor log (`docker logs flotilla-executor`), for a failure's message.
    pub fn agent_logs(&self) -> String {
        self.hosts
            .iter()
            .map(|h| {
                let out = self.docker(h, &["logs", "flotilla-executor"]);
                format!(
                    "--- executor on {}:\n{}{}",
                    h.name,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                )
            })
            .collect()
    }

    /// The host's executor container SIGKILLed, as a crash would; it stays down (a killed
    /// container is not restarted by its policy) until [`Project::start_executor`].
    pub fn kill_executor(&self, host: &Host) {
        self.docker_ok(host, &["kill", "flotilla-executor"]);
    }

    /// Starts the host's executor container again.
    pub fn start_executor(&self, host: &Host) {
        self.docker_ok(host, &["start", "flotilla-executor"]);
    }

    /// The control host, where bootstrap booted NATS.
    pub fn control_host(&self) -> &Host {
        &self.hosts[0]
    }

    /// SIGKILLs the NATS container on the control host (no clean shutdown);
    /// [`Project::start_nats`] starts it again on the same JetStream store.
    pub fn kill_nats(&self) {
        self.docker_ok(self.control_host(), &["kill", "flotilla-nats"]);
    }

    /// Stops NATS as `docker stop` does (SIGTERM: it closes its clients and flushes its
    /// store); [`Project::start_nats`] starts it again.
    pub fn stop_nats(&self) {
        self.docker_ok(self.control_host(), &["stop", "flotilla-nats"]);
    }

    pub fn start_nats(&self) {
        self.docker_ok(self.control_host(), &["start", "flotilla-nats"]);
    }

    /// `docker ARGS` against the host's engine (from outside the host, as a test asserts).
    fn docker(&self, host: &Host, args: &[&str]) -> Output {
        Command::new("docker")
            .env(
                "DOCKER_HOST",
                format!("unix://{}", host.docker_socket.display()),
            )
            .args(args)
            .output()
            .unwrap()
    }

    fn docker_ok(&self, host: &Host, args: &[&str]) {
        let out = self.docker(host, args);
        crate::support::assert_success(&out, &format!("docker {args:?} on {}", host.name));
    }
}
