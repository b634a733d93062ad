//! The build when the docker CLI has no buildx plugin (Debian's docker.io has none): the same
//! settings Kamal hands to `docker buildx build`, run as `docker build` on the engine, then
//! `docker push`. BuildKit (`DOCKER_BUILDKIT=1`, built into docker CLIs before 23) carries
//! `secrets`, `ssh`, the registry cache (inline) and foreign platforms; several platforms
//! become one image per platform and a manifest list (`docker manifest create` + `push`), the
//! list buildx would have pushed. What only a buildx builder can do (Docker Build Cloud, the
//! `gha` cache, provenance and SBOM attestations, a hybrid local+remote builder) is a
//! [`NeedsBuilder`] error naming the setting, never silently dropped.

use thiserror::Error;

use super::builder::{BuildInputs, BuildPlan, BuilderKind, build_plan, registry_cache_image};
use crate::config::Config;

/// What the local docker CLI and engine offer, detected by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineCaps {
    /// `docker build` runs BuildKit with `DOCKER_BUILDKIT=1` (a CLI before 23, or one with
    /// buildx: newer CLIs refuse BuildKit without the plugin).
    pub buildkit: bool,
    /// The engine reaches the app's registry over plain HTTP (its insecure registries):
    /// `docker manifest` decides this on the client side, so it must be told (`--insecure`).
    pub plain_http_registry: bool,
}

/// A setting the engine's `docker build` cannot honour.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NeedsBuilder {
    /// Only a buildx builder does this.
    #[error("{what} needs the docker buildx plugin, which this docker CLI lacks")]
    Buildx { what: String },
    /// BuildKit does this, and this docker CLI runs BuildKit only through buildx.
    #[error(
        "{what} needs BuildKit, which this docker CLI runs only through the buildx plugin \
         (docker CLIs before 23 run it with DOCKER_BUILDKIT=1)"
    )]
    BuildKit { what: String },
}

/// One command of an engine build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineStep {
    pub argv: Vec<String>,
    /// A failure is expected and harmless (removing a local manifest list that is not there).
    pub may_fail: bool,
    /// Its standard output's last line is the digest of the version's pushed manifest list.
    pub prints_digest: bool,
}

/// The engine build: every command in order, under `env`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineBuild {
    /// `DOCKER_BUILDKIT` (1 when a setting needs BuildKit, else 0: the classic builder, which
    /// every engine has), and `DOCKER_HOST` for a remote builder.
    pub env: Vec<(String, String)>,
    pub steps: Vec<EngineStep>,
    /// With one platform, the pushed `repository:version` whose registry digest is read back
    /// (`docker image inspect`); with several, a step prints it instead.
    pub inspect: Option<String>,
    /// Settings a buildx builder would use that do not apply here, each a sentence for the
    /// user (the build still gives the same image).
    pub notes: Vec<String>,
}

/// The build of `config` as `docker build` commands. `secrets_dir` is where the caller writes
/// each build secret as a file named after it (mode 0600): BuildKit in docker 20.10 reads a
/// secret only from a file.
pub fn engine_build(
    config: &Config,
    inputs: &BuildInputs,
    caps: &EngineCaps,
    secrets_dir: &str,
) -> Result<EngineBuild, NeedsBuilder> {
    let plan: BuildPlan = build_plan(config, inputs);
    let b = &config.builder;
    let buildx = |what: &str| NeedsBuilder::Buildx { what: what.into() };
    match plan.kind {
        BuilderKind::Cloud => return Err(buildx("Docker Build Cloud (builder.driver: cloud)")),
        BuilderKind::Hybrid => {
            return Err(buildx(&format!(
                "a hybrid build ({} here, {} on builder.remote)",
                plan.local_arches.join(", "),
                plan.remote_arches.join(", ")
            )));
        }
        BuilderKind::Local | BuilderKind::Remote => {}
    }
    if b.cache.get("type").map(String::as_str) == Some("gha") {
        return Err(buildx("the GitHub Actions cache (builder.cache.type: gha)"));
    }
    for (key, value) in [("provenance", &b.provenance), ("sbom", &b.sbom)] {
        if let Some(v) = value.as_ref().filter(|v| v.as_str() != "false") {
            return Err(buildx(&format!("attestations (builder.{key}: {v})")));
        }
    }

    let arches: Vec<String> = if plan.kind == BuilderKind::Remote {
        plan.remote_arches.clone()
    } else {
        b.arch.clone()
    };
    let foreign = arches.len() > 1 || arches.iter().any(|a| *a != inputs.local_arch);
    let mut needs_buildkit = Vec::new();
    if !b.secrets.is_empty() {
        needs_buildkit.push("build secrets (builder.secrets)".to_string());
    }
    if b.ssh.as_ref().is_some_and(|s| !s.is_empty()) {
        needs_buildkit.push("SSH forwarding (builder.ssh)".to_string());
    }
    let cache = registry_cache_image(config);
    if cache.is_some() {
        needs_buildkit.push("the registry cache (builder.cache)".to_string());
    }
    // The remote engine's architecture is unknown here: its platform is asked for explicitly,
    // which the classic builder cannot honour for a foreign one.
    if foreign || (plan.kind == BuilderKind::Remote && !arches.is_empty()) {
        needs_buildkit.push(format!("building for {}", platforms(&arches)));
    }
    if !caps.buildkit
        && let Some(what) = needs_buildkit.first()
    {
        return Err(NeedsBuilder::BuildKit { what: what.clone() });
    }

    let mut env = vec![(
        "DOCKER_BUILDKIT".to_string(),
        if needs_buildkit.is_empty() { "0" } else { "1" }.to_string(),
    )];
    if plan.kind == BuilderKind::Remote
        && let Some(r) = &b.remote
    {
        env.push(("DOCKER_HOST".into(), r.clone()));
    }
    let mut notes = Vec::new();
    if let Some(d) = b.driver.as_deref().filter(|d| *d != "docker") {
        notes.push(format!(
            "builder.driver {d} is a buildx driver: the image is built on the Docker engine itself"
        ));
    }

    let version_tag = plan.tags.first().cloned().unwrap_or_default();
    let mut steps = Vec::new();
    let run = |argv: Vec<String>| EngineStep {
        argv,
        may_fail: false,
        prints_digest: false,
    };
    let common = |build: &mut Vec<String>| {
        build.extend(["--label".into(), format!("service={}", config.service)]);
        for (k, v) in &b.args {
            build.extend(["--build-arg".into(), format!("{k}={v}")]);
        }
        for s in &b.secrets {
            build.extend(["--secret".into(), format!("id={s},src={secrets_dir}/{s}")]);
        }
        build.extend([
            "--file".into(),
            b.dockerfile.clone().unwrap_or_else(|| "Dockerfile".into()),
        ]);
        for (flag, value) in [("--target", &b.target), ("--ssh", &b.ssh)] {
            if let Some(v) = value.as_ref().filter(|v| !v.is_empty()) {
                build.extend([flag.to_string(), v.clone()]);
            }
        }
        if inputs.no_cache {
            build.push("--no-cache".into());
        }
    };
    let context = b.context.clone().unwrap_or_else(|| ".".into());

    if arches.len() <= 1 {
        let mut build = words(&["docker", "build"]);
        if let Some(a) = arches.first() {
            build.extend(["--platform".into(), format!("linux/{a}")]);
        }
        for t in &plan.tags {
            build.extend(["-t".into(), t.clone()]);
        }
        let cache_image = cache.clone();
        if let Some(image) = &cache_image {
            // BuildKit's inline cache: the cache metadata travels in the cache image itself,
            // the engine's equivalent of buildx's `--cache-to type=registry`.
            build.extend([
                "-t".into(),
                image.clone(),
                "--cache-from".into(),
                image.clone(),
                "--build-arg".into(),
                "BUILDKIT_INLINE_CACHE=1".into(),
            ]);
        }
        common(&mut build);
        build.push(context);
        steps.push(run(build));
        for t in plan.tags.iter().chain(cache_image.as_ref()) {
            steps.push(run(words(&["docker", "push", t])));
        }
        return Ok(EngineBuild {
            env,
            steps,
            inspect: Some(version_tag),
            notes,
        });
    }

    // Several platforms: one image per platform, tagged `VERSION-ARCH`, then a manifest list
    // for each of the release's tags.
    if cache.is_some() {
        notes
            .push("builder.cache is not used for a multi-architecture build without buildx".into());
    }
    let per_arch: Vec<String> = arches
        .iter()
        .map(|a| format!("{version_tag}-{a}"))
        .collect();
    for (arch, tag) in arches.iter().zip(&per_arch) {
        let mut build = words(&["docker", "build", "--platform"]);
        build.push(format!("linux/{arch}"));
        build.extend(["-t".into(), tag.clone()]);
        common(&mut build);
        build.push(context.clone());
        steps.push(run(build));
        steps.push(run(words(&["docker", "push", tag])));
    }
    let insecure = config.registry.is_local() || caps.plain_http_registry;
    for (i, list) in plan.tags.iter().enumerate() {
        steps.push(EngineStep {
            argv: words(&["docker", "manifest", "rm", list]),
            may_fail: true,
            prints_digest: false,
        });
        let mut create = words(&["docker", "manifest", "create"]);
        if insecure {
            create.push("--insecure".into());
        }
        create.push(list.clone());
        create.extend(per_arch.iter().cloned());
        steps.push(run(create));
        let mut push = words(&["docker", "manifest", "push", "--purge"]);
        if insecure {
            push.push("--insecure".into());
        }
        push.push(list.clone());
        steps.push(EngineStep {
            argv: push,
            may_fail: false,
            prints_digest: i == 0,
        });
    }
    Ok(EngineBuild {
        env,
        steps,
        inspect: None,
        notes,
    })
}

fn platforms(arches: &[String]) -> String {
    arches
        .iter()
        .map(|a| format!("linux/{a}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn words(w: &[&str]) -> Vec<String> {
    w.iter().map(|s| s.to_string()).collect()
}
