//! What Kamal's fleet commands share: `-h`/`-r`/`-p` pick hosts and roles, one command per
//! host (or per host and role) runs over the `ssh` pool in parallel, the output is printed per
//! host the way Kamal's `puts_by_host` does (or as JSON lines), a failure names its host and
//! what to do next. (State-changing commands are operations the executors run, under the
//! deploy lock the scheduler takes: `operate.rs`.)

use crate::exit::{FAILED, UserError};
use clap::Args;
use flotilla_deploy::Config;
use flotilla_deploy::config::types::Role;
use flotilla_deploy::plan::matches;
use flotilla_ssh::{Env, Output, Pool, Settings};

/// Kamal's host filters.
#[derive(Debug, Clone, Default, Args)]
pub struct Targets {
    /// Only these hosts (comma list, `*` wildcards)
    #[arg(short = 'h', long = "hosts", value_delimiter = ',')]
    pub hosts: Vec<String>,
    /// Only these roles (comma list, `*` wildcards)
    #[arg(short = 'r', long = "roles", value_delimiter = ',')]
    pub roles: Vec<String>,
    /// Only the primary host
    #[arg(short = 'p', long)]
    pub primary: bool,
    /// Print help
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
}

fn picked(patterns: &[String], name: &str) -> bool {
    patterns.is_empty() || patterns.iter().any(|p| matches(p, name))
}

impl Targets {
    /// The config's primary host: the first host of the primary role.
    pub fn primary_host(config: &Config) -> Option<&str> {
        config
            .role(&config.primary_role)
            .and_then(|r| r.hosts.first())
            .map(String::as_str)
    }

    /// Each picked host with each picked role it runs, in the config's order (Kamal's
    /// `on_roles`).
    pub fn host_roles<'c>(&self, config: &'c Config) -> Vec<(String, &'c Role)> {
        let primary = Self::primary_host(config);
        let mut out = Vec::new();
        for role in config
            .servers
            .iter()
            .filter(|r| picked(&self.roles, &r.name))
        {
            for host in role.hosts.iter().filter(|h| picked(&self.hosts, h)) {
                if self.primary && Some(host.as_str()) != primary {
                    continue;
                }
                out.push((host.clone(), role));
            }
        }
        out
    }

    /// The picked hosts, each once, in the config's order.
    pub fn hosts(&self, config: &Config) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (host, _) in self.host_roles(config) {
            if !out.contains(&host) {
                out.push(host);
            }
        }
        out
    }

    /// The one host an interactive command runs on: the only picked host, or the primary one.
    pub fn single_host<'c>(&self, config: &'c Config) -> anyhow::Result<(String, &'c Role)> {
        let picked = self.host_roles(config);
        let primary = Self::primary_host(config);
        picked
            .iter()
            .find(|(h, _)| Some(h.as_str()) == primary)
            .or_else(|| picked.first())
            .map(|(h, r)| (h.clone(), *r))
            .ok_or_else(|| no_hosts().into())
    }
}

/// No host matched the filters.
pub fn no_hosts() -> UserError {
    UserError {
        message: "no host matches the given -h/-r/-p filters".into(),
        hint: Some("check the hosts and roles in config/deploy.yml (`flotilla config`)".into()),
        code: crate::exit::USAGE,
    }
}

/// The SSH pool over the config's `ssh:` settings.
pub fn pool(config: &Config) -> Pool {
    Pool::new(Settings::from_kamal(
        &config.ssh,
        &config.sshkit,
        Env::from_process(),
    ))
}

/// One host's answer to one command.
pub struct HostRun {
    pub host: String,
    pub result: Result<Output, flotilla_ssh::Error>,
}

impl HostRun {
    pub fn stdout(&self) -> String {
        match &self.result {
            Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
            Err(_) => String::new(),
        }
    }

    pub fn ok(&self) -> bool {
        self.result.as_ref().is_ok_and(Output::success)
    }
}

/// Runs each `(host, command)` at once over the pool (a host's commands share its one
/// connection), answers in the given order.
pub async fn run_all(pool: &Pool, jobs: Vec<(String, String)>) -> Vec<HostRun> {
    let results = futures::future::join_all(jobs.iter().map(|(h, c)| pool.exec(h, c))).await;
    jobs.into_iter()
        .zip(results)
        .map(|((host, _), result)| HostRun { host, result })
        .collect()
}

/// What went wrong on a host, with the command that fixes an unknown host key.
pub fn failure_text(run: &HostRun) -> String {
    match &run.result {
        Ok(o) => {
            let stderr = String::from_utf8_lossy(&o.stderr);
            format!("exit {}: {}", o.exit, stderr.trim())
        }
        Err(e) => {
            let next = match e {
                flotilla_ssh::Error::HostKey(k) => k
                    .accept_command()
                    .map(|c| format!("\n  next: {c}"))
                    .unwrap_or_default(),
                _ => String::new(),
            };
            format!("unreachable: {e}{next}")
        }
    }
}

/// Kamal's `puts_by_host`: `KIND Host: HOST`, the output, a blank line; or one JSON object
/// per host (`host`, `exit`, `stdout`, `stderr`) with `--json`.
pub fn print_runs(kind: &str, runs: &[HostRun], json: bool) -> anyhow::Result<()> {
    let mut text = String::new();
    for run in runs {
        let (exit, stdout, stderr) = match &run.result {
            Ok(o) => (
                o.exit.to_string(),
                String::from_utf8_lossy(&o.stdout).into_owned(),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            ),
            Err(_) => ("unreachable".to_owned(), String::new(), failure_text(run)),
        };
        if json {
            let line = serde_json::json!({
                "host": run.host, "exit": exit, "stdout": stdout, "stderr": stderr,
            });
            text.push_str(&format!("{line}\n"));
        } else {
            if !run.ok() {
                eprintln!("{} Host: {}: {}", kind, run.host, failure_text(run));
            }
            text.push_str(&format!(
                "{kind} Host: {}\n{}\n\n",
                run.host,
                stdout.trim_end()
            ));
        }
    }
    crate::commands::write_stdout(&text)
}

/// An error naming every host where the command failed, or `Ok` when none did. The exit code
/// is the remote command's when every failed host agrees on one (so `app exec` passes it on).
pub fn check_runs(what: &str, runs: &[HostRun]) -> anyhow::Result<()> {
    let failed: Vec<&HostRun> = runs.iter().filter(|r| !r.ok()).collect();
    if failed.is_empty() {
        return Ok(());
    }
    let codes: Vec<Option<u32>> = failed
        .iter()
        .map(|r| match &r.result {
            Ok(Output {
                exit: flotilla_ssh::Exit::Status(n),
                ..
            }) => Some(*n),
            _ => None,
        })
        .collect();
    let code = match codes.first() {
        Some(Some(n)) if codes.iter().all(|c| *c == Some(*n)) => {
            i32::try_from(*n).unwrap_or(FAILED)
        }
        _ => FAILED,
    };
    let hosts: Vec<&str> = failed.iter().map(|r| r.host.as_str()).collect();
    Err(UserError {
        message: format!("{what} failed on {}", hosts.join(", ")),
        hint: Some(format!(
            "see each host's output above; {}",
            failed
                .iter()
                .map(|r| format!("{}: {}", r.host, failure_text(r)))
                .collect::<Vec<_>>()
                .join("; ")
        )),
        code,
    }
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_ssh::Exit;

    fn config() -> Config {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("config")).unwrap();
        std::fs::write(
            dir.path().join("config/deploy.yml"),
            "service: app\nimage: app\nservers:\n  web: [10.0.0.1, 10.0.0.2]\n  jobs: [10.0.0.2, 10.0.0.3]\nregistry:\n  server: localhost:5555\n",
        )
        .unwrap();
        let opts = flotilla_deploy::LoadOptions {
            env: Default::default(),
            ..flotilla_deploy::LoadOptions::new(dir.path())
        };
        flotilla_deploy::load(&opts).unwrap()
    }

    fn pairs(t: &Targets, c: &Config) -> Vec<(String, String)> {
        t.host_roles(c)
            .into_iter()
            .map(|(h, r)| (h, r.name.clone()))
            .collect()
    }

    /// `-h`, `-r` and `-p` pick hosts and roles as Kamal's do; a host of two roles is listed
    /// once per role for per-role commands and once for per-host ones.
    #[test]
    fn targets_pick_hosts_and_roles() {
        let c = config();
        let all = Targets::default();
        assert_eq!(all.hosts(&c), ["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
        assert_eq!(pairs(&all, &c).len(), 4);
        let jobs = Targets {
            roles: vec!["jobs".into()],
            ..Targets::default()
        };
        assert_eq!(jobs.hosts(&c), ["10.0.0.2", "10.0.0.3"]);
        let primary = Targets {
            primary: true,
            ..Targets::default()
        };
        assert_eq!(pairs(&primary, &c), [("10.0.0.1".into(), "web".into())]);
        let one = Targets {
            hosts: vec!["10.0.0.3".into()],
            ..Targets::default()
        };
        assert_eq!(one.single_host(&c).unwrap().0, "10.0.0.3");
        assert_eq!(all.single_host(&c).unwrap().0, "10.0.0.1");
        let none = Targets {
            hosts: vec!["10.9.9.9".into()],
            ..Targets::default()
        };
        assert!(none.single_host(&c).is_err());
    }

    fn run(host: &str, status: u32) -> HostRun {
        HostRun {
            host: host.into(),
            result: Ok(Output {
                exit: Exit::Status(status),
                stdout: Vec::new(),
                stderr: b"boom".to_vec(),
            }),
        }
    }

    /// A failure names every failed host; the exit code is the command's when the failed
    /// hosts agree on one, else 1.
    #[test]
    fn failures_name_hosts_and_pass_the_status_on() {
        assert!(check_runs("x", &[run("a", 0), run("b", 0)]).is_ok());
        let err = check_runs("the command", &[run("a", 3), run("b", 0), run("c", 3)]).unwrap_err();
        let user = err.downcast_ref::<UserError>().unwrap();
        assert_eq!(user.code, 3);
        assert_eq!(user.message, "the command failed on a, c");
        let err = check_runs("x", &[run("a", 3), run("b", 4)]).unwrap_err();
        assert_eq!(err.downcast_ref::<UserError>().unwrap().code, FAILED);
    }
}
