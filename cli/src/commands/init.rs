//! `flotilla init`: Kamal's project layout, without overwriting anything that exists.

use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;
use clap::Args;

/// Create config/deploy.yml, .kamal/secrets and sample hooks (existing files are kept)
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  flotilla init\n  flotilla config   # then check what was written"
)]
pub struct InitCmd {}

const DEPLOY_YML: &str = r#"# Flotilla (and Kamal) configuration. `flotilla docs` describes every key;
# `flotilla config` prints the resolved config with secrets redacted.

# Name of the service: lowercase letters, digits, `-` and `_`. Containers are named after it.
service: my-app

# Image name; the registry server below is prefixed when set.
image: my-user/my-app

# Hosts of each role. A plain list of hosts is the `web` role.
servers:
  web:
    - 192.168.0.1
  # job:
  #   hosts:
  #     - 192.168.0.1
  #   cmd: bin/jobs

# Routing through the host's proxy, with a health-gated switch between versions.
proxy:
  # ssl: true
  host: app.example.com
  # app_port: 3000
  # healthcheck:
  #   path: /up

# Registry credentials: a one-item list names a secret from .kamal/secrets.
registry:
  # server: registry.example.com
  username: my-user
  password:
    - KAMAL_REGISTRY_PASSWORD

# Container environment: clear values, and secrets looked up in .kamal/secrets.
env:
  # clear:
  #   DB_HOST: 192.168.0.2
  secret:
    - RAILS_MASTER_KEY

# Build for the servers' architecture.
builder:
  arch: amd64

# Aliases become commands: `flotilla console`.
# aliases:
#   console: app exec --interactive --reuse "bin/rails console"

# Accessories: databases and caches beside the app.
# accessories:
#   db:
#     image: postgres:16
#     host: 192.168.0.2
#     port: "127.0.0.1:5432:5432"
#     env:
#       secret:
#         - POSTGRES_PASSWORD
#     directories:
#       - data:/var/lib/postgresql/data

# Flotilla's own settings; Kamal ignores `x-` keys, so this file serves both tools.
# x-flotilla:
#   rollout:
#     canary: 1
#     max_parallel: 25%
#     max_failures: 0
#     auto_rollback: true
"#;

const SECRETS: &str = r#"# Secrets for config/deploy.yml, in dotenv syntax. Keep this file out of git.
# Values may read the environment ($VAR, ${VAR}) or run a command ($(command)):
#   KAMAL_REGISTRY_PASSWORD=$(op read "op://Vault/Registry/password")
# Never write secret values here in clear text if the file is committed.

KAMAL_REGISTRY_PASSWORD=$KAMAL_REGISTRY_PASSWORD
RAILS_MASTER_KEY=$RAILS_MASTER_KEY
"#;

/// Kamal's hook names; samples are inactive until renamed without `.sample`.
const HOOKS: &[(&str, &str)] = &[
    (
        "docker-setup",
        "after Docker is installed on a host by `server bootstrap`",
    ),
    ("pre-connect", "before connecting to the hosts"),
    (
        "pre-build",
        "before the image is built; a failure stops the deploy",
    ),
    (
        "pre-deploy",
        "after the image is pushed, before containers are started",
    ),
    ("pre-app-boot", "before each group of app containers boots"),
    ("post-app-boot", "after each group of app containers booted"),
    ("post-deploy", "after a successful deploy"),
    ("pre-proxy-reboot", "before the proxy is rebooted"),
    ("post-proxy-reboot", "after the proxy was rebooted"),
];

fn hook_sample(name: &str, when: &str) -> String {
    format!(
        "#!/bin/sh\n# Sample {name} hook: runs {when}.\n# Rename to `{name}` (without .sample) to enable it.\n#\n# Available: KAMAL_SERVICE, KAMAL_VERSION, KAMAL_SERVICE_VERSION, KAMAL_DESTINATION,\n# KAMAL_HOSTS, KAMAL_ROLES, KAMAL_COMMAND, KAMAL_SUBCOMMAND, KAMAL_PERFORMER, KAMAL_RECORDED_AT.\n\necho \"{name}: $KAMAL_SERVICE_VERSION on $KAMAL_HOSTS\"\n"
    )
}

pub fn run(_cmd: &InitCmd) -> anyhow::Result<()> {
    let root = std::env::current_dir().context("cannot read the current directory")?;
    let mut out = std::io::stdout().lock();
    let mut files: Vec<(String, String, bool)> = vec![
        ("config/deploy.yml".into(), DEPLOY_YML.into(), false),
        (".kamal/secrets".into(), SECRETS.into(), false),
    ];
    for (name, when) in HOOKS {
        files.push((
            format!(".kamal/hooks/{name}.sample"),
            hook_sample(name, when),
            true,
        ));
    }
    for (rel, content, executable) in files {
        let path = root.join(&rel);
        let line = if path.exists() {
            format!("kept    {rel} (already exists)")
        } else {
            write_new(&path, &content, executable)
                .with_context(|| format!("cannot write {rel}"))?;
            format!("created {rel}")
        };
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// Write a file that must not exist yet (`create_new`, so a race cannot overwrite one).
fn write_new(path: &Path, content: &str, executable: bool) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(if executable { 0o755 } else { 0o644 });
    }
    let mut f = opts.open(path)?;
    f.write_all(content.as_bytes())
}
