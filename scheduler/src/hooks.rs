//! Kamal's hooks: executables in `.kamal/hooks/` (or `hooks_path`) run locally at fixed
//! points of a deploy with Kamal's `KAMAL_*` variables. A hook that exits non-zero stops the
//! deploy, and its output is shown to the user.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The hooks Flotilla runs, in Kamal's names.
pub const HOOKS: &[&str] = &[
    "pre-connect",
    "pre-build",
    "pre-deploy",
    "post-deploy",
    "pre-app-boot",
    "post-app-boot",
    "pre-proxy-reboot",
    "post-proxy-reboot",
];

/// What a hook is told about the deploy, as `KAMAL_*` environment variables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HookContext {
    pub service: String,
    pub version: String,
    pub destination: Option<String>,
    pub hosts: Vec<String>,
    pub roles: Vec<String>,
    pub command: String,
    pub subcommand: Option<String>,
    pub performer: String,
    /// RFC 3339 time the deploy was recorded.
    pub recorded_at: String,
    /// Whole seconds the command took (post-deploy only).
    pub runtime: Option<u64>,
}

impl HookContext {
    /// The variables, exactly as Kamal names them.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let service_version = match &self.destination {
            Some(d) => format!("{}@{}-{d}", self.service, self.version),
            None => format!("{}@{}", self.service, self.version),
        };
        let mut env = vec![
            ("KAMAL_RECORDED_AT", self.recorded_at.clone()),
            ("KAMAL_PERFORMER", self.performer.clone()),
            ("KAMAL_SERVICE", self.service.clone()),
            ("KAMAL_VERSION", self.version.clone()),
            ("KAMAL_SERVICE_VERSION", service_version),
            ("KAMAL_HOSTS", self.hosts.join(",")),
            ("KAMAL_COMMAND", self.command.clone()),
        ];
        if let Some(d) = &self.destination {
            env.push(("KAMAL_DESTINATION", d.clone()));
        }
        if !self.roles.is_empty() {
            env.push(("KAMAL_ROLES", self.roles.join(",")));
        }
        if let Some(s) = &self.subcommand {
            env.push(("KAMAL_SUBCOMMAND", s.clone()));
        }
        if let Some(r) = self.runtime {
            env.push(("KAMAL_RUNTIME", r.to_string()));
        }
        env
    }
}

/// A hook that ran to completion with status 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookRun {
    pub name: String,
    pub output: String,
    pub duration: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The output is shown to the user ([`HookError::output`]), never stored: a hook may
    /// print a token, and events live forever.
    #[error("hook {name} failed with exit code {code}")]
    Failed {
        name: String,
        code: i32,
        output: String,
    },
    #[error("hook {path} could not be run: {source}")]
    Spawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl HookError {
    /// What a failed hook printed, for the terminal only.
    pub fn output(&self) -> Option<&str> {
        match self {
            HookError::Failed { output, .. } => Some(output),
            HookError::Spawn { .. } => None,
        }
    }

    /// The exit code a failed hook gave (-1 when killed by a signal), for the `HookRan` event.
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            HookError::Failed { code, .. } => Some(*code),
            HookError::Spawn { .. } => None,
        }
    }
}

/// How often a hook that is busy being written (ETXTBSY) is tried, and the pause between
/// tries: the writer's fork execs within milliseconds.
const HOOK_BUSY_ATTEMPTS: u32 = 5;
const HOOK_BUSY_PAUSE: std::time::Duration = std::time::Duration::from_millis(20);

/// Runs `hooks_dir/name` if it exists (Kamal skips missing hooks), from `project_dir`, with
/// the process environment plus the context's variables. Returns `Ok(None)` when there is no
/// such hook.
pub async fn run(
    hooks_dir: &Path,
    project_dir: &Path,
    name: &str,
    ctx: &HookContext,
) -> Result<Option<HookRun>, HookError> {
    let path = hooks_dir.join(name);
    if !path.is_file() {
        return Ok(None);
    }
    let started = tokio::time::Instant::now();
    let mut attempt = 1;
    let out = loop {
        let result = tokio::process::Command::new(&path)
            .current_dir(project_dir)
            .envs(ctx.env())
            .stdin(std::process::Stdio::null())
            .output()
            .await;
        match result {
            // A hook written a moment ago (by a CI step, an editor, a test) can still be open
            // for writing in a process forked meanwhile, until that one execs: the kernel
            // refuses to run it (ETXTBSY) for that instant.
            Err(e)
                if e.kind() == std::io::ErrorKind::ExecutableFileBusy
                    && attempt < HOOK_BUSY_ATTEMPTS =>
            {
                attempt += 1;
                tokio::time::sleep(HOOK_BUSY_PAUSE).await;
            }
            other => {
                break other.map_err(|source| HookError::Spawn {
                    path: path.clone(),
                    source,
                })?;
            }
        }
    };
    let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
    output.push_str(&String::from_utf8_lossy(&out.stderr));
    if out.status.success() {
        Ok(Some(HookRun {
            name: name.to_owned(),
            output,
            duration: started.elapsed(),
        }))
    } else {
        Err(HookError::Failed {
            name: name.to_owned(),
            code: out.status.code().unwrap_or(-1),
            output,
        })
    }
}
