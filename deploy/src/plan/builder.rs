//! The image build as Kamal runs it, as data: which buildx builder (local, remote over SSH,
//! hybrid, cloud, or the plain `docker` driver), the commands that create it, and the one
//! `docker buildx build --output=type=registry ...` that builds every architecture and pushes.
//! Learned from Kamal 2.12's `commands/builder/*.rb` and `configuration/builder.rb`; the CLI
//! runs these argv lists (the Kamal side joins them through a shell, hence no quoting here).

use serde::Serialize;

use crate::config::Config;

/// Kamal's default buildx driver.
const DEFAULT_DRIVER: &str = "docker-container";

/// Which of Kamal's builders a config selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BuilderKind {
    /// Every architecture on the local Docker.
    Local,
    /// Every architecture on a remote Docker reached through `builder.remote`.
    Remote,
    /// The local architecture here, the others on the remote, in one buildx builder.
    Hybrid,
    /// Docker Build Cloud (`driver: cloud ORG/NAME`).
    Cloud,
}

/// The whole build: create the builder if `inspect` fails, then run `build` with `env` and the
/// named build secrets in the environment, from a clone of the repository when `git_clone`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BuildPlan {
    pub kind: BuilderKind,
    /// `None` with the `docker` driver, which builds on the engine itself (no buildx builder).
    pub builder: Option<String>,
    /// Architectures built here and on the remote (Kamal's `local_arches`/`remote_arches`).
    pub local_arches: Vec<String>,
    pub remote_arches: Vec<String>,
    /// Commands that create the builder (and the remote's Docker context), in order.
    pub create: Vec<Vec<String>>,
    /// Commands that remove it again (`kamal build remove`).
    pub remove: Vec<Vec<String>>,
    /// Build and push every tag to the registry.
    pub build: Vec<String>,
    /// Extra environment for `build` (a remote builder takes no client token).
    pub env: Vec<(String, String)>,
    /// Secrets passed as `--secret id=NAME`: their values go in the build's environment.
    pub secrets: Vec<String>,
    /// Kamal builds a clean clone of the git repository at the commit when `builder.context`
    /// is not set, so uncommitted changes are not shipped.
    pub git_clone: bool,
    /// The tags pushed: `repository:version` and `repository:latest[-destination]`.
    pub tags: Vec<String>,
}

/// What the build needs beyond the config: the version tag and the architecture of the local
/// Docker (Kamal's `Kamal::Utils.docker_arch`), kept as inputs so planning stays pure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInputs {
    pub version: String,
    pub local_arch: String,
    /// Build without the cache (`--no-cache`).
    pub no_cache: bool,
}

/// Plan the build of `config` at `inputs.version`.
pub fn build_plan(config: &Config, inputs: &BuildInputs) -> BuildPlan {
    let b = &config.builder;
    let driver = b.driver.as_deref().unwrap_or(DEFAULT_DRIVER);
    let docker_driver = driver == "docker";
    let arches = b.arch.clone();
    let local_disabled = b.local == Some(false);
    let remote = b.remote.as_deref().filter(|r| !r.is_empty());
    let local_arches: Vec<String> = if local_disabled {
        Vec::new()
    } else if remote.is_some() {
        arches
            .iter()
            .filter(|a| **a == inputs.local_arch)
            .cloned()
            .collect()
    } else {
        arches.clone()
    };
    let remote_arches: Vec<String> = match remote {
        Some(_) => arches
            .iter()
            .filter(|a| !local_arches.contains(a))
            .cloned()
            .collect(),
        None => Vec::new(),
    };
    let is_remote = !remote_arches.is_empty();
    let is_local = !local_disabled && (arches.is_empty() || !local_arches.is_empty());
    let kind = if is_remote {
        if is_local {
            BuilderKind::Hybrid
        } else {
            BuilderKind::Remote
        }
    } else if driver.starts_with("cloud") {
        BuilderKind::Cloud
    } else {
        BuilderKind::Local
    };

    let local_registry = config.registry.is_local();
    let driver_opts: Vec<String> = if local_registry {
        vec!["--driver-opt".into(), "network=host".into()]
    } else {
        Vec::new()
    };
    let suffix = remote.map(|r| {
        let mut s: String = r
            .chars()
            .map(|c| {
                if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        if local_registry {
            s.push_str("-local-registry");
        }
        s
    });
    let builder = match (kind, &suffix) {
        (BuilderKind::Local, _) if docker_driver => None,
        (BuilderKind::Local, _) if local_registry => Some(format!("kamal-local-registry-{driver}")),
        (BuilderKind::Local, _) => Some(format!("kamal-local-{driver}")),
        (BuilderKind::Remote, Some(s)) => Some(format!("kamal-remote-{s}")),
        (BuilderKind::Hybrid, Some(s)) => Some(format!("kamal-hybrid-{driver}-{s}")),
        (BuilderKind::Cloud, _) => Some(driver.replace([' ', '/'], "-")),
        // Remote and hybrid always have a remote; kept total for the type checker.
        (_, None) => Some(format!("kamal-local-{driver}")),
    };

    let platforms = |arches: &[String]| -> Vec<String> {
        if arches.is_empty() {
            Vec::new()
        } else {
            let list: Vec<String> = arches.iter().map(|a| format!("linux/{a}")).collect();
            vec!["--platform".into(), list.join(",")]
        }
    };
    let docker = |args: &[&str]| -> Vec<String> {
        std::iter::once("docker")
            .chain(args.iter().copied())
            .map(str::to_string)
            .collect()
    };
    let name = builder.clone().unwrap_or_default();
    let context_name = format!("{name}-context");
    let remote_host = remote.unwrap_or_default();
    let create_context = docker(&[
        "context",
        "create",
        &context_name,
        "--description",
        &format!("{name} host"),
        "--docker",
        &format!("host={remote_host}"),
    ]);
    let (create, remove) = match kind {
        BuilderKind::Local if docker_driver => (Vec::new(), Vec::new()),
        BuilderKind::Local => {
            let mut c = docker(&["buildx", "create", "--name", &name]);
            c.push(format!("--driver={driver}"));
            c.extend(driver_opts.iter().cloned());
            (vec![c], vec![docker(&["buildx", "rm", &name])])
        }
        BuilderKind::Remote => {
            let mut c = docker(&["buildx", "create", "--name", &name]);
            c.extend(driver_opts.iter().cloned());
            c.push(context_name.clone());
            (
                vec![create_context, c],
                vec![
                    docker(&["context", "rm", &context_name]),
                    docker(&["buildx", "rm", &name]),
                ],
            )
        }
        BuilderKind::Hybrid => {
            let mut local = docker(&["buildx", "create"]);
            local.extend(platforms(&local_arches));
            local.extend(["--name".into(), name.clone(), format!("--driver={driver}")]);
            local.extend(driver_opts.iter().cloned());
            let mut append = docker(&["buildx", "create"]);
            append.extend(platforms(&remote_arches));
            append.extend(["--append".into(), "--name".into(), name.clone()]);
            append.extend(driver_opts.iter().cloned());
            append.push(context_name.clone());
            (
                vec![local, create_context, append],
                vec![
                    docker(&["context", "rm", &context_name]),
                    docker(&["buildx", "rm", &name]),
                ],
            )
        }
        BuilderKind::Cloud => (
            vec![docker(&["buildx", "create", "--driver", driver])],
            vec![docker(&["buildx", "rm", &name])],
        ),
    };

    let repository = config.repository();
    let latest = match &config.destination {
        Some(d) => format!("latest-{d}"),
        None => "latest".to_string(),
    };
    let tags = vec![
        format!("{repository}:{}", inputs.version),
        format!("{repository}:{latest}"),
    ];
    let mut build = docker(&["buildx", "build", "--output=type=registry"]);
    build.extend(platforms(&arches));
    if let Some(n) = builder.as_ref().filter(|_| !docker_driver) {
        build.extend(["--builder".into(), n.clone()]);
    }
    for t in &tags {
        build.extend(["-t".into(), t.clone()]);
    }
    if let Some((to, from)) = cache(config) {
        build.extend(["--cache-to".into(), to, "--cache-from".into(), from]);
    }
    build.extend(["--label".into(), format!("service={}", config.service)]);
    for (k, v) in &b.args {
        build.extend(["--build-arg".into(), format!("{k}={v}")]);
    }
    for s in &b.secrets {
        build.extend(["--secret".into(), format!("id={s}")]);
    }
    build.extend([
        "--file".into(),
        b.dockerfile.clone().unwrap_or_else(|| "Dockerfile".into()),
    ]);
    for (flag, value) in [
        ("--target", &b.target),
        ("--ssh", &b.ssh),
        ("--provenance", &b.provenance),
        ("--sbom", &b.sbom),
    ] {
        if let Some(v) = value.as_ref().filter(|v| !v.is_empty()) {
            build.extend([flag.to_string(), v.clone()]);
        }
    }
    if inputs.no_cache {
        build.push("--no-cache".into());
    }
    build.push(b.context.clone().unwrap_or_else(|| ".".into()));

    let env = if matches!(kind, BuilderKind::Remote | BuilderKind::Hybrid) {
        vec![("BUILDKIT_NO_CLIENT_TOKEN".to_string(), "1".to_string())]
    } else {
        Vec::new()
    };
    BuildPlan {
        kind,
        builder,
        local_arches,
        remote_arches,
        create,
        remove,
        build,
        env,
        secrets: b.secrets.clone(),
        git_clone: b.context.is_none(),
        tags,
    }
}

/// The image a `type: registry` cache lives in: `IMAGE-build-cache` beside the app's image
/// unless `image` is given, on the app's registry server.
pub(crate) fn registry_cache_image(config: &Config) -> Option<String> {
    let c = &config.builder.cache;
    if c.get("type").map(String::as_str) != Some("registry") {
        return None;
    }
    let image = c
        .get("image")
        .cloned()
        .unwrap_or_else(|| format!("{}-build-cache", config.image));
    Some(match &config.registry.server {
        Some(s) => format!("{s}/{image}"),
        None => image,
    })
}

/// `(--cache-to, --cache-from)` for `builder.cache`: `type: gha` (with its allowed options on
/// the from side) or `type: registry` (an image beside the app's, `IMAGE-build-cache` unless
/// `image` is given, on the app's registry server).
fn cache(config: &Config) -> Option<(String, String)> {
    let c = &config.builder.cache;
    let options = c.get("options").filter(|o| !o.is_empty());
    match c.get("type").map(String::as_str) {
        Some("gha") => {
            let allowed: Vec<&str> = options
                .map(|o| {
                    o.split(',')
                        .filter(|opt| {
                            ["url=", "url_v2=", "token=", "scope=", "timeout="]
                                .iter()
                                .any(|p| opt.starts_with(p))
                        })
                        .collect()
                })
                .unwrap_or_default();
            let from = std::iter::once("type=gha")
                .chain(allowed)
                .collect::<Vec<_>>()
                .join(",");
            let to = std::iter::once("type=gha")
                .chain(options.map(String::as_str))
                .collect::<Vec<_>>()
                .join(",");
            Some((to, from))
        }
        Some("registry") => {
            let reference = format!("ref={}", registry_cache_image(config)?);
            let from = format!("type=registry,{reference}");
            let to = match options {
                Some(o) => format!("type=registry,{reference},{o}"),
                None => format!("type=registry,{reference}"),
            };
            Some((to, from))
        }
        _ => None,
    }
}
