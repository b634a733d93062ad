//! Building and pushing the app image with the local `docker` CLI, as `kamal build` does.
//! (`DOCKER_HOST` chooses the engine, as usual.)

use anyhow::{Context, bail};
use flotilla_deploy::Config;
use std::path::Path;
use std::process::Command;

/// What a build produced: the pushed reference and its exact digest.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// `repo:version`
    pub image: String,
    /// `sha256:...`
    pub digest: String,
}

/// `docker build` the project at `root` as `repo:version` (labelled `service=...`), push it,
/// and read back the registry digest.
pub fn build_and_push(
    config: &Config,
    root: &Path,
    version: &str,
    quiet: bool,
) -> anyhow::Result<Pushed> {
    let image = format!("{}:{version}", config.repository());
    let context = root.join(config.builder.context.as_deref().unwrap_or("."));
    let mut build = docker();
    build
        .arg("build")
        .args(["-t", &image])
        .args(["--label", &format!("service={}", config.service)]);
    if let Some(f) = &config.builder.dockerfile {
        build.arg("-f").arg(root.join(f));
    }
    if let Some(t) = &config.builder.target {
        build.args(["--target", t]);
    }
    for (k, v) in &config.builder.args {
        build.args(["--build-arg", &format!("{k}={v}")]);
    }
    if quiet {
        build.arg("-q");
    }
    build.arg(&context);
    run(&mut build, &format!("docker build {}", context.display()))?;
    let mut push = docker();
    push.args(["push", &image]);
    if quiet {
        push.arg("-q");
    }
    run(&mut push, &format!("docker push {image}"))?;
    let out = docker()
        .args([
            "image",
            "inspect",
            "--format",
            "{{range .RepoDigests}}{{println .}}{{end}}",
            &image,
        ])
        .output()
        .context("running docker image inspect")?;
    let repo = config.repository();
    let digest = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{repo}@")).map(str::to_owned))
        .with_context(|| {
            format!("docker did not report a registry digest for {image} after the push")
        })?;
    Ok(Pushed { image, digest })
}

fn docker() -> Command {
    let mut c = Command::new("docker");
    // The classic builder: BuildKit needs the buildx plugin, which Debian's docker.io lacks.
    if std::env::var_os("DOCKER_BUILDKIT").is_none() {
        c.env("DOCKER_BUILDKIT", "0");
    }
    c
}

fn run(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    // Docker's progress goes to stderr: stdout is for `--json` events only.
    let status = cmd
        .stdout(std::process::Stdio::from(std::io::stderr()))
        .status()
        .with_context(|| format!("{what}: is the docker CLI installed?"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}
