//! The app's containers on a host: listing, versions, logs, exec, start/stop, removal.
//! Kamal's `commands/app.rb` and its `app/` modules.

use super::{clear_env_args, filter_args, join, logging_args, option_args, quote, squote};
use crate::config::types::{Config, Role};
use flotilla_protocol::names::{LABEL_DESTINATION, LABEL_ROLE, LABEL_SERVICE, NETWORK};

/// Docker statuses of a container that is (or is about to be) serving: Kamal's
/// `ACTIVE_DOCKER_STATUSES`.
const ACTIVE_STATUSES: [&str; 2] = ["running", "restarting"];

/// The app's commands for one role (or, without a role, for the whole service on a host).
#[derive(Clone, Copy, Debug)]
pub struct App<'a> {
    config: &'a Config,
    role: Option<&'a Role>,
}

/// What `app logs` asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Logs {
    /// A container id to read instead of the role's current one.
    pub container_id: Option<String>,
    /// Docker's `--timestamps` (Kamal's default; `-T` turns it off).
    pub timestamps: bool,
    /// `--since` (a timestamp or a relative time such as `42m`).
    pub since: Option<String>,
    /// `--tail`.
    pub lines: Option<u32>,
    /// Only lines matching this (grep's basic regex).
    pub grep: Option<String>,
    /// Extra grep options, passed through as words the user wrote.
    pub grep_options: Option<String>,
    /// Keep streaming (`--follow`).
    pub follow: bool,
}

/// A one-off container of the app's image (`app exec` without `--reuse`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewContainer<'c> {
    /// The host it runs on (`KAMAL_HOST`, the role's tag env).
    pub host: &'c str,
    /// Kamal's version, part of the container's name.
    pub version: &'c str,
    /// The image reference to run.
    pub image: &'c str,
    /// A suffix that makes the name unique (Kamal: 3 random bytes in hex); chosen by the caller
    /// so rendering stays pure.
    pub suffix: &'c str,
    /// The command, as the user wrote it (run by the image's shell-less entrypoint as words).
    pub command: &'c str,
    /// `-it`: a terminal for an interactive command.
    pub interactive: bool,
    /// `--env K=V` given on the command line.
    pub env: &'c [(String, String)],
    /// An env file on the host holding the role's secret env (written mode 0600 by the
    /// caller), so no secret is on the command line.
    pub env_file: Option<&'c str>,
}

impl<'a> App<'a> {
    /// Commands for `role`, or for every role of the service when `None`.
    pub fn new(config: &'a Config, role: Option<&'a Role>) -> Self {
        App { config, role }
    }

    /// Kamal's `service-role[-destination]`, what every container name of the role starts with.
    pub fn container_prefix(&self) -> String {
        let role = self.role.map(|r| r.name.as_str()).unwrap_or("");
        flotilla_protocol::names::proxy_service(
            &self.config.service,
            role,
            self.config.destination.as_deref(),
        )
    }

    /// The role's env on `host` (its tags' env merged in); empty without a role.
    pub fn env(&self, host: &str) -> crate::config::types::Env {
        self.role
            .map(|r| crate::plan::build::host_env(r, host))
            .unwrap_or_default()
    }

    /// The role's container for `version`.
    pub fn container_name(&self, version: &str) -> String {
        format!("{}-{version}", self.container_prefix())
    }

    fn filters(&self, statuses: &[&str]) -> String {
        let mut f = vec![format!("label={LABEL_SERVICE}={}", self.config.service)];
        if let Some(d) = &self.config.destination {
            f.push(format!("label={LABEL_DESTINATION}={d}"));
        }
        if let Some(r) = self.role {
            f.push(format!("label={LABEL_ROLE}={}", r.name));
        }
        f.extend(statuses.iter().map(|s| format!("status={s}")));
        filter_args(&f)
    }

    /// `app details`: the role's containers that are running.
    pub fn info(&self) -> String {
        format!("docker ps {}", self.filters(&[]))
    }

    /// `app containers`: every container of the service, stopped ones too.
    pub fn list_containers(&self) -> String {
        format!("docker container ls --all {}", self.filters(&[]))
    }

    /// `app images`: the images of the app's repository on the host.
    pub fn list_images(&self) -> String {
        format!("docker image ls {}", quote(&self.config.repository()))
    }

    /// The id of the role's newest running (or restarting) container; empty when none.
    pub fn current_running_container_id(&self) -> String {
        format!(
            "docker ps --latest --quiet {}",
            self.filters(&ACTIVE_STATUSES)
        )
    }

    /// Kamal's `extract_version_from_name`: names on stdin, versions out.
    fn extract_version(&self) -> String {
        format!(
            "while read line; do echo ${{line#{}-}}; done",
            self.container_prefix()
        )
    }

    /// The version the role's newest running container runs; empty when none.
    pub fn current_running_version(&self) -> String {
        format!(
            "docker ps --latest --format '{{{{.Names}}}}' {} | {}",
            self.filters(&ACTIVE_STATUSES),
            self.extract_version()
        )
    }

    /// The version of the role's newest container, running or stopped; empty when none.
    pub fn latest_version(&self) -> String {
        format!(
            "docker ps --latest --all --format '{{{{.Names}}}}' {} | {}",
            self.filters(&[]),
            self.extract_version()
        )
    }

    /// The image reference the role's newest running container was started from (a tag or a
    /// digest, as the deploy gave it); empty when none.
    pub fn current_running_image(&self) -> String {
        format!(
            "docker ps --latest --format '{{{{.Image}}}}' {}",
            self.filters(&ACTIVE_STATUSES)
        )
    }

    /// Versions of the role's containers with these statuses (any with none), newest first.
    pub fn list_versions(&self, statuses: &[&str]) -> String {
        format!(
            "docker ps {} --format '{{{{.Names}}}}' | {}",
            self.filters(statuses),
            self.extract_version()
        )
    }

    /// The id of the container of exactly this name (stopped too); empty when none.
    pub fn container_id_for(&self, version: &str) -> String {
        format!(
            "docker container ls --all --filter {} --quiet",
            squote(&format!("name=^{}$", self.container_name(version)))
        )
    }

    /// Log lines of the role's current container (or `container_id`), with stderr merged.
    pub fn logs(&self, o: &Logs) -> String {
        let source = match &o.container_id {
            Some(id) => format!("echo {}", quote(id)),
            None => self.current_running_container_id(),
        };
        let mut docker = String::from("xargs docker logs");
        if o.timestamps {
            docker.push_str(" --timestamps");
        }
        if let Some(s) = &o.since {
            docker.push_str(&format!(" --since {}", quote(s)));
        }
        if let Some(n) = o.lines {
            docker.push_str(&format!(" --tail {n}"));
        }
        if o.follow {
            docker.push_str(" --follow");
        }
        docker.push_str(" 2>&1");
        let mut out = format!("{source} | {docker}");
        if let Some(g) = &o.grep {
            out.push_str(&format!(" | grep {}", squote(g)));
            if let Some(opts) = &o.grep_options {
                out.push(' ');
                out.push_str(opts);
            }
        }
        out
    }

    /// `docker exec` in the role's running container of `version` (`app exec --reuse`).
    pub fn exec_existing(
        &self,
        version: &str,
        command: &str,
        interactive: bool,
        env: &[(String, String)],
    ) -> String {
        join([
            "docker exec".to_owned(),
            interactive_args(interactive),
            env_args(env),
            self.container_name(version),
            command.to_owned(),
        ])
    }

    /// `docker run --rm` of the app's image as the role runs it: env, logging, volumes, options.
    pub fn exec_new(&self, c: &NewContainer<'_>) -> String {
        let name = format!(
            "{}-exec-{}-{}",
            self.container_prefix(),
            c.version,
            c.suffix
        );
        let mut words = vec![
            "docker run".to_owned(),
            interactive_args(c.interactive),
            "--rm".to_owned(),
            format!("--name {}", quote(&name)),
            format!("--network {NETWORK}"),
        ];
        if let Some(role) = self.role {
            words.extend(clear_env_args(&crate::plan::build::host_env(role, c.host)));
        }
        if let Some(f) = c.env_file {
            words.push(format!("--env-file {}", quote(f)));
        }
        words.push(env_args(c.env));
        words.extend(logging_args(self.config, self.role));
        words.extend(
            self.config
                .volumes
                .iter()
                .map(|v| format!("--volume {}", quote(v))),
        );
        if let Some(role) = self.role {
            words.extend(option_args(&role.options));
        }
        words.push(quote(c.image));
        words.push(c.command.to_owned());
        join(words)
    }

    /// Pulls the app's image of `version` (Kamal's `build pull`).
    pub fn pull_image(&self, version: &str) -> String {
        format!(
            "docker image pull {}",
            quote(&format!("{}:{version}", self.config.repository()))
        )
    }

    /// Starts the role's existing container of `version`.
    pub fn start(&self, version: &str) -> String {
        format!("docker start {}", quote(&self.container_name(version)))
    }

    /// Starts the role's newest container (stopped by `app stop`); nothing when there is none.
    pub fn start_latest(&self) -> String {
        format!(
            "docker ps --latest --all --quiet {} | xargs -r docker start",
            self.filters(&[])
        )
    }

    /// Stops the role's container of `version`, or its current one; `-t` from `stop_timeout`.
    pub fn stop(&self, version: Option<&str>) -> String {
        let source = match version {
            Some(v) => self.container_id_for(v),
            None => self.current_running_container_id(),
        };
        let timeout = self
            .role
            .and_then(|r| r.stop_timeout)
            .or(self.config.stop_timeout)
            .map(|t| format!(" -t {t}"))
            .unwrap_or_default();
        format!("{source} | xargs docker stop{timeout}")
    }

    /// Removes the role's stopped containers (Kamal's `remove_containers`).
    pub fn remove_containers(&self) -> String {
        format!("docker container prune --force {}", self.filters(&[]))
    }

    /// Removes the service's unused images (Kamal's `remove_images`).
    pub fn remove_images(&self) -> String {
        format!(
            "docker image prune --all --force {}",
            filter_args(&[format!("label={LABEL_SERVICE}={}", self.config.service)])
        )
    }
}

/// `-it` for a terminal: Kamal's `docker_interactive_args`.
fn interactive_args(interactive: bool) -> String {
    if interactive {
        "-it".to_owned()
    } else {
        String::new()
    }
}

/// `--env K=V` for each pair given on the command line.
fn env_args(env: &[(String, String)]) -> String {
    env.iter()
        .map(|(k, v)| format!("--env {}", quote(&format!("{k}={v}"))))
        .collect::<Vec<_>>()
        .join(" ")
}
