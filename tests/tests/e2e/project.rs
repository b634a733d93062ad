//! A Kamal project aimed at the fleet, and `flotilla` run on it as a user would.

use flotilla_e2e::agents::{Agents, flotilla_binary};
use flotilla_e2e::fleet::Fleet;
use flotilla_e2e::testapp;
use std::path::{Path, PathBuf};
use std::process::Output;

/// The project's `config/deploy.yml`; `{hosts}`, `{registry}`, `{nats}` and `{ssh_config}`
/// are filled in.
const CONFIG: &str = r#"service: testapp
image: testapp
ssh:
  config:
    - {ssh_config}
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
    url: {nats}
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
    pub flotilla: PathBuf,
    pub agents: Vec<Agents>,
    builder_docker_host: String,
}

impl Project {
    /// Writes `config/deploy.yml` ([`CONFIG`] with `extra` appended), a Dockerfile and the app binary,
    /// creates the scheduler key, starts the agents on every host and enrols them over SSH
    /// (`flotilla server enroll`, as `flotilla setup` does).
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
            .replace("{nats}", &fleet.nats_url())
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
        let flotilla = flotilla_binary();
        let mut project = Project {
            dir,
            flotilla,
            agents: Vec::new(),
            builder_docker_host: fleet.builder_docker_host(),
        };
        let key = project.flotilla_ok(&["key"], &[]);
        let key = key.trim().to_owned();
        project.agents = fleet
            .hosts
            .iter()
            .map(|h| Agents::start(fleet, h, &project.flotilla, &key))
            .collect();
        project.flotilla_ok(&["server", "enroll"], &[]);
        project
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `flotilla ARGS` in the project with `env`, as a user at a terminal-less shell.
    pub fn flotilla(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        std::process::Command::new(&self.flotilla)
            .args(args)
            .current_dir(self.root())
            .env("DOCKER_HOST", &self.builder_docker_host)
            .env("NO_COLOR", "1")
            // The build's `docker login` writes here, not to the machine's ~/.docker.
            .env("DOCKER_CONFIG", self.root().join(".docker"))
            .env_remove("KAMAL_DESTINATION")
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

    pub fn agent_logs(&self) -> String {
        self.agents
            .iter()
            .map(|a| format!("--- executor on {}:\n{}", a.host.name, a.executor_log()))
            .collect()
    }
}
