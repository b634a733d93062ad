//! An accessory's container on its hosts (`accessory boot|reboot|start|stop|details|logs|exec|
//! remove|upgrade`), its `directories:` and `files:`. Kamal's `commands/accessory.rb` and
//! `configuration/accessory.rb`.

use super::app::Logs;
use super::{clear_env_args, filter_args, join, logging_args, option_args, quote, squote};
use crate::config::types::{self, Config};
use flotilla_protocol::names::{LABEL_SERVICE, NETWORK};

/// Kamal's restart policy for an accessory unless its `options:` set one.
const DEFAULT_RESTART: &str = "unless-stopped";
/// Kamal's mode for an uploaded file.
const FILE_MODE: &str = "755";
/// Lines `accessory logs -f` shows before following (Kamal's fixed `--tail 10`).
const FOLLOW_TAIL: u32 = 10;

/// The commands for one accessory.
#[derive(Clone, Copy, Debug)]
pub struct Accessory<'a> {
    config: &'a Config,
    accessory: &'a types::Accessory,
}

/// A `files:` entry: a local file uploaded to the host, mounted into the container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileMount {
    /// The local path as written (relative to the project); an `.erb` one is rendered first.
    pub local: String,
    /// Where it goes on the host, relative to the SSH user's home: `SERVICE/remote`.
    pub host_path: String,
    /// Where the container sees it.
    pub container_path: String,
    /// `chmod` mode after the upload.
    pub mode: &'static str,
    /// Docker's mount options (`ro`, `z`), when written.
    pub options: Option<String>,
}

/// A `directories:` entry: a host directory made before boot, mounted into the container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectoryMount {
    /// The host path for the shell: absolute as written, or `$PWD/SERVICE/local`.
    pub host_path: String,
    /// Where the container sees it.
    pub container_path: String,
    /// Docker's mount options (`ro`, `z`), when written.
    pub options: Option<String>,
}

impl<'a> Accessory<'a> {
    pub fn new(config: &'a Config, accessory: &'a types::Accessory) -> Self {
        Accessory { config, accessory }
    }

    /// The container's name and `service` label: `service:` or `SERVICE-NAME` (Kamal's).
    pub fn service_name(&self) -> String {
        self.accessory
            .service
            .clone()
            .unwrap_or_else(|| format!("{}-{}", self.config.service, self.accessory.name))
    }

    /// The image to run, its registry server included.
    pub fn image(&self) -> &str {
        &self.accessory.image
    }

    fn publish_args(&self) -> Option<String> {
        let port = self.accessory.port.as_ref()?;
        let port = if port.contains(':') {
            port.clone()
        } else {
            format!("{port}:{port}")
        };
        Some(format!("--publish {}", quote(&port)))
    }

    fn network_args(&self) -> String {
        format!(
            "--network {}",
            quote(self.accessory.network.as_deref().unwrap_or(NETWORK))
        )
    }

    /// The `files:` entries (`local:remote[:options]`).
    pub fn files(&self) -> Vec<FileMount> {
        self.accessory
            .files
            .iter()
            .filter_map(|f| {
                let mut parts = f.splitn(3, ':');
                let local = parts.next()?.to_owned();
                let remote = parts.next()?.to_owned();
                Some(FileMount {
                    host_path: format!("{}{}", self.service_name(), absolute(&remote)),
                    local,
                    container_path: remote,
                    mode: FILE_MODE,
                    options: parts.next().map(str::to_owned),
                })
            })
            .collect()
    }

    /// The `directories:` entries (`host:container[:options]`).
    pub fn directories(&self) -> Vec<DirectoryMount> {
        self.accessory
            .directories
            .iter()
            .filter_map(|d| {
                let mut parts = d.splitn(3, ':');
                let local = parts.next()?;
                let container_path = parts.next()?.to_owned();
                Some(DirectoryMount {
                    host_path: self.host_path(local),
                    container_path,
                    options: parts.next().map(str::to_owned),
                })
            })
            .collect()
    }

    /// A host path as the shell on the host should see it: absolute paths as written, the rest
    /// under `$PWD/SERVICE/` (the SSH user's home, where Kamal puts them).
    fn host_path(&self, path: &str) -> String {
        if path.starts_with('/') {
            quote(path)
        } else {
            format!(
                "\"$PWD\"/{}",
                quote(&format!("{}/{path}", self.service_name()))
            )
        }
    }

    fn volume_args(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .accessory
            .volumes
            .iter()
            .map(|v| format!("--volume {}", quote(v)))
            .collect();
        let with_options = |container: &str, options: &Option<String>| match options {
            Some(o) => quote(&format!("{container}:{o}")),
            None => quote(container),
        };
        for f in self.files() {
            out.push(format!(
                "--volume \"$PWD\"/{}:{}",
                quote(&f.host_path),
                with_options(&f.container_path, &f.options)
            ));
        }
        for d in self.directories() {
            out.push(format!(
                "--volume {}:{}",
                d.host_path,
                with_options(&d.container_path, &d.options)
            ));
        }
        out
    }

    fn restart_policy(&self) -> String {
        match self.accessory.options.get("restart") {
            Some(types::OptionValue::One(p)) => p.clone(),
            _ => DEFAULT_RESTART.to_owned(),
        }
    }

    fn labels(&self) -> Vec<String> {
        let mut labels = vec![(LABEL_SERVICE.to_owned(), self.service_name())];
        labels.extend(
            self.accessory
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        labels
            .into_iter()
            .map(|(k, v)| format!("--label {}", quote(&format!("{k}={v}"))))
            .collect()
    }

    /// `docker run` of the accessory on `host`; secret env in `env_file` (uploaded 0600).
    pub fn run(&self, host: &str, env_file: Option<&str>) -> String {
        let mut options = self.accessory.options.clone();
        options.remove("restart");
        let mut words = vec![
            "docker run".to_owned(),
            format!("--name {}", quote(&self.service_name())),
            "--detach".to_owned(),
            format!("--restart {}", quote(&self.restart_policy())),
            self.network_args(),
        ];
        words.extend(logging_args(self.config, None));
        words.extend(self.publish_args());
        words.push(format!("--env {}", quote(&format!("KAMAL_HOST={host}"))));
        words.extend(clear_env_args(&self.accessory.env));
        if let Some(f) = env_file {
            words.push(format!("--env-file {}", quote(f)));
        }
        words.extend(self.volume_args());
        words.extend(self.labels());
        words.extend(option_args(&options));
        words.push(quote(self.image()));
        words.extend(self.accessory.cmd.clone());
        join(words)
    }

    pub fn start(&self) -> String {
        format!("docker container start {}", quote(&self.service_name()))
    }

    pub fn stop(&self) -> String {
        format!("docker container stop {}", quote(&self.service_name()))
    }

    fn service_filter(&self) -> String {
        filter_args(&[format!("label={LABEL_SERVICE}={}", self.service_name())])
    }

    /// `docker ps` of the accessory; `all` includes stopped, `quiet` gives ids only.
    pub fn info(&self, all: bool, quiet: bool) -> String {
        join([
            "docker ps".to_owned(),
            if all { "-a".into() } else { String::new() },
            if quiet { "-q".into() } else { String::new() },
            self.service_filter(),
        ])
    }

    /// Log lines; following shows the last 10 first, as Kamal does.
    pub fn logs(&self, o: &Logs) -> String {
        let mut out = format!("docker logs {}", quote(&self.service_name()));
        if let Some(s) = &o.since {
            out.push_str(&format!(" --since {}", quote(s)));
        }
        let tail = if o.follow {
            o.lines.or(Some(FOLLOW_TAIL))
        } else {
            o.lines
        };
        if let Some(n) = tail {
            out.push_str(&format!(" --tail {n}"));
        }
        if o.timestamps {
            out.push_str(" --timestamps");
        }
        if o.follow {
            out.push_str(" --follow");
        }
        out.push_str(" 2>&1");
        if let Some(g) = &o.grep {
            out.push_str(&format!(" | grep {}", squote(g)));
            if let Some(opts) = &o.grep_options {
                out.push(' ');
                out.push_str(opts);
            }
        }
        out
    }

    /// `docker exec` in the running accessory.
    pub fn exec_existing(&self, command: &str, interactive: bool) -> String {
        join([
            "docker exec".to_owned(),
            if interactive {
                "-it".into()
            } else {
                String::new()
            },
            quote(&self.service_name()),
            command.to_owned(),
        ])
    }

    /// A one-off `docker run --rm` of the accessory's image with its env and volumes.
    pub fn exec_new(&self, command: &str, interactive: bool, env_file: Option<&str>) -> String {
        let mut options = self.accessory.options.clone();
        options.remove("restart");
        let mut words = vec![
            "docker run".to_owned(),
            if interactive {
                "-it".into()
            } else {
                String::new()
            },
            "--rm".to_owned(),
            self.network_args(),
        ];
        words.extend(clear_env_args(&self.accessory.env));
        if let Some(f) = env_file {
            words.push(format!("--env-file {}", quote(f)));
        }
        words.extend(self.volume_args());
        words.extend(option_args(&options));
        words.push(quote(self.image()));
        words.push(command.to_owned());
        join(words)
    }

    pub fn pull_image(&self) -> String {
        format!("docker image pull {}", quote(self.image()))
    }

    /// Removes the accessory's stopped container.
    pub fn remove_container(&self) -> String {
        format!("docker container prune --force {}", self.service_filter())
    }

    pub fn remove_image(&self) -> String {
        format!("docker image rm --force {}", quote(self.image()))
    }

    /// Removes the accessory's files and directories under the SSH user's home.
    pub fn remove_service_directory(&self) -> String {
        format!("rm -rf {}", quote(&self.service_name()))
    }

    /// `mkdir -p` of a host directory (already shell-ready, from [`Self::directories`]).
    pub fn make_directory(host_path: &str) -> String {
        format!("mkdir -p {host_path}")
    }
}

/// `/path` for a remote path written with or without its leading slash.
fn absolute(path: &str) -> String {
    if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    }
}
