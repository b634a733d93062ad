//! Building and pushing the app image with the local `docker` CLI, as `kamal build` does.
//! (`DOCKER_HOST` chooses the engine, as usual.) With the buildx plugin this runs Kamal's
//! own plan (`deploy::plan::build_plan`: create the builder if `docker buildx inspect` does
//! not find it, then one `docker buildx build --output=type=registry`); without it, the same
//! settings as `docker build` on the engine (`deploy::plan::engine_build`), BuildKit where a
//! setting needs it, and a manifest list for several architectures. Either way it logs in to
//! the registry here first, as Kamal's `build push` does.

use crate::exit::{USAGE, UserError};
use anyhow::{Context, bail};
use flotilla_deploy::Config;
use flotilla_deploy::plan::{BuildInputs, EngineCaps, build_plan, engine_build};
use std::path::Path;
use std::process::{Command, Stdio};

/// What a build produced: the pushed reference and its exact digest.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// `repo:version`
    pub image: String,
    /// `sha256:...`
    pub digest: String,
}

/// Build the project at `root` as `repository:version` (and Kamal's `latest` tag), push it,
/// and read back the registry digest.
pub fn build_and_push(
    config: &Config,
    root: &Path,
    version: &str,
    quiet: bool,
) -> anyhow::Result<Pushed> {
    let inputs = BuildInputs {
        version: version.to_owned(),
        local_arch: local_arch(),
        no_cache: false,
    };
    let image = format!("{}:{version}", config.repository());
    login_locally(config)?;
    let dir = crate::git_clone::build_directory(config, root)?;
    let root = dir.as_path();
    let secrets = SecretFiles::write(config)?;
    let digest = if has_buildx() {
        with_buildx(config, root, &inputs, &secrets, quiet)?
    } else {
        on_engine(config, root, &inputs, &secrets, quiet)?
    };
    Ok(Pushed { image, digest })
}

/// `docker login` here before the push, as Kamal's `build push` does (not for a local
/// registry, nor one without a username); the password on stdin.
fn login_locally(config: &Config) -> anyhow::Result<()> {
    let Some(command) = flotilla_deploy::commands::login(&config.registry) else {
        return Ok(());
    };
    let password = crate::commands::registry::password(&config.registry)?;
    crate::commands::registry::local(&command, &password)
}

/// Kamal's `docker_arch` from what this binary was built for.
pub fn local_arch() -> String {
    match std::env::consts::ARCH {
        "x86_64" => "amd64".into(),
        "aarch64" => "arm64".into(),
        other => other.into(),
    }
}

/// Whether the docker CLI has the buildx plugin.
pub fn has_buildx() -> bool {
    Command::new("docker")
        .args(["buildx", "version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Kamal's way: the buildx builder (created when missing), then one build that pushes every
/// platform and tag; the digest comes from buildx's metadata file.
fn with_buildx(
    config: &Config,
    root: &Path,
    inputs: &BuildInputs,
    secrets: &SecretFiles,
    quiet: bool,
) -> anyhow::Result<String> {
    let plan = build_plan(config, inputs);
    if let Some(name) = &plan.builder {
        let found = Command::new("docker")
            .args(["buildx", "inspect", name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            for argv in &plan.create {
                run(&mut command(argv, root, &plan.env), &argv.join(" "))?;
            }
        }
    }
    let metadata = secrets.dir.path().join("buildx-metadata.json");
    let mut argv = plan.build.clone();
    // Before the context, the last word: where buildx writes the pushed digest.
    let at = argv.len().saturating_sub(1);
    argv.insert(at, format!("--metadata-file={}", metadata.display()));
    if quiet {
        argv.insert(3, "--quiet".into());
    }
    let mut build = command(&argv, root, &plan.env);
    // `--secret id=NAME` reads the environment variable NAME.
    for (name, value) in &secrets.values {
        build.env(name, value);
    }
    run(&mut build, "docker buildx build")?;
    let text = std::fs::read_to_string(&metadata)
        .with_context(|| format!("reading {}", metadata.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).context("reading buildx's metadata file")?;
    json.get("containerimage.digest")
        .and_then(|d| d.as_str())
        .map(str::to_owned)
        .context("buildx reported no pushed digest in its metadata file")
}

/// Without buildx: `docker build` on the engine, pushes, and for several platforms a manifest
/// list; a setting that needs buildx (or BuildKit this CLI cannot run) is a usage error
/// naming it.
fn on_engine(
    config: &Config,
    root: &Path,
    inputs: &BuildInputs,
    secrets: &SecretFiles,
    quiet: bool,
) -> anyhow::Result<String> {
    let caps = engine_caps(config);
    let dir = secrets.dir.path().display().to_string();
    let build = engine_build(config, inputs, &caps, &dir).map_err(|e| UserError {
        message: format!("cannot build the image: {e}"),
        hint: Some(
            "install the docker buildx plugin (Debian: apt-get install docker-buildx), as Kamal \
             requires"
                .into(),
        ),
        code: USAGE,
    })?;
    for note in &build.notes {
        eprintln!("flotilla: note: {note}");
    }
    let mut digest = None;
    for step in &build.steps {
        let mut argv = step.argv.clone();
        if quiet && matches!(argv.get(1).map(String::as_str), Some("build" | "push")) {
            argv.insert(2, "-q".into());
        }
        let what = argv.join(" ");
        let mut cmd = command(&argv, root, &build.env);
        if step.prints_digest {
            let out = cmd
                .stderr(Stdio::inherit())
                .output()
                .with_context(|| format!("{what}: is the docker CLI installed?"))?;
            if !out.status.success() {
                bail!("{what} failed ({})", out.status);
            }
            digest = String::from_utf8_lossy(&out.stdout)
                .lines()
                .rev()
                .find(|l| l.starts_with("sha256:"))
                .map(str::to_owned);
        } else if step.may_fail {
            // Whatever happens, the next step says whether it mattered.
            let _ = cmd.stdout(Stdio::null()).stderr(Stdio::null()).status();
        } else {
            run(&mut cmd, &what)?;
        }
    }
    if let Some(d) = digest {
        return Ok(d);
    }
    let image = build
        .inspect
        .context("the build pushed no manifest list and names no image to inspect")?;
    let out = command(
        &[
            "docker".into(),
            "image".into(),
            "inspect".into(),
            "--format".into(),
            "{{range .RepoDigests}}{{println .}}{{end}}".into(),
            image.clone(),
        ],
        root,
        &build.env,
    )
    .output()
    .context("running docker image inspect")?;
    let repo = config.repository();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{repo}@")).map(str::to_owned))
        .with_context(|| {
            format!("docker did not report a registry digest for {image} after the push")
        })
}

/// What the local docker CLI and engine offer a build without buildx.
pub fn engine_caps(config: &Config) -> EngineCaps {
    EngineCaps {
        buildkit: cli_has_builtin_buildkit(),
        plain_http_registry: plain_http_registry(config),
    }
}

/// Docker CLIs before 23 run BuildKit themselves with `DOCKER_BUILDKIT=1`; later ones only
/// through buildx (they refuse the variable without the plugin).
fn cli_has_builtin_buildkit() -> bool {
    let Ok(out) = Command::new("docker").arg("--version").output() else {
        return false;
    };
    builtin_buildkit(&String::from_utf8_lossy(&out.stdout))
}

/// From `docker --version`'s "Docker version 20.10.24+dfsg1, build 297e128".
fn builtin_buildkit(version_line: &str) -> bool {
    version_line
        .strip_prefix("Docker version ")
        .and_then(|v| v.split('.').next())
        .and_then(|major| major.parse::<u32>().ok())
        .is_some_and(|major| major < 23)
}

/// Whether the engine lists the app's registry as insecure (plain HTTP).
fn plain_http_registry(config: &Config) -> bool {
    let Some(server) = config.registry.server.as_deref() else {
        return false;
    };
    let Ok(out) = Command::new("docker")
        .args(["info", "--format", "{{json .RegistryConfig.IndexConfigs}}"])
        .stderr(Stdio::null())
        .output()
    else {
        return false;
    };
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|v| v.get(server)?.get("Secure")?.as_bool())
        .is_some_and(|secure| !secure)
}

/// The build secrets (`builder.secrets`) from the secrets files: as files (mode 0600) in a
/// private directory removed after the build, for BuildKit's `--secret id=NAME,src=FILE`,
/// and as values for buildx, which reads them from the environment.
struct SecretFiles {
    dir: tempfile::TempDir,
    values: Vec<(String, String)>,
}

impl SecretFiles {
    fn write(config: &Config) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("flotilla-build-")
            .tempdir()
            .context("creating a directory for the build secrets")?;
        let mut values = Vec::new();
        for name in &config.builder.secrets {
            let value = config.secrets.get(name).with_context(|| {
                format!("builder secret {name} is not defined in the secrets files")
            })?;
            let path = dir.path().join(name);
            write_private(&path, value.expose())
                .with_context(|| format!("writing build secret {name}"))?;
            values.push((name.clone(), value.expose().to_owned()));
        }
        Ok(SecretFiles { dir, values })
    }
}

fn write_private(path: &Path, value: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(value.as_bytes())
}

/// `argv` in the project's directory (Kamal runs the build there: `--file` and the context are
/// relative to it) with `env` added.
fn command(argv: &[String], root: &Path, env: &[(String, String)]) -> Command {
    let mut c = Command::new(argv.first().map(String::as_str).unwrap_or("docker"));
    c.args(argv.iter().skip(1))
        .current_dir(root)
        .envs(env.iter().map(|(k, v)| (k, v)));
    c
}

fn run(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    // Docker's progress goes to stderr: stdout is for `--json` events only.
    let status = cmd
        .stdout(Stdio::from(std::io::stderr()))
        .status()
        .with_context(|| format!("{what}: is the docker CLI installed?"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// BuildKit through `DOCKER_BUILDKIT=1` is expected from docker 20.10 (Debian's) and not
    /// from 23 on, where the CLI needs buildx for it.
    #[test]
    fn builtin_buildkit_by_cli_version() {
        assert!(builtin_buildkit(
            "Docker version 20.10.24+dfsg1, build 297e128"
        ));
        assert!(!builtin_buildkit("Docker version 28.2.2, build e6534b4"));
        assert!(!builtin_buildkit("podman version 4.3.1"));
    }
}
