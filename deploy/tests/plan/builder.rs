//! The image build as Kamal runs it, planned as data: the builder, the commands that create
//! it and the exact `docker buildx build` argv, per builder kind.

use flotilla_deploy::config::{LoadOptions, load};
use flotilla_deploy::plan::{BuildInputs, BuildPlan, BuilderKind, build_plan};
use std::collections::BTreeMap;

use super::fixture;

fn plan_build(name: &str, local_arch: &str, env: &[(&str, &str)]) -> BuildPlan {
    let mut vars = BTreeMap::from([("PATH".to_owned(), "/usr/bin:/bin".to_owned())]);
    vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let opts = LoadOptions {
        env: vars,
        ..LoadOptions::new(fixture(name))
    };
    let config = load(&opts).unwrap_or_else(|e| panic!("{name} loads:\n{e}"));
    build_plan(
        &config,
        &BuildInputs {
            version: "abc123".into(),
            local_arch: local_arch.into(),
            no_cache: false,
        },
    )
}

fn argv(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

/// A local multi-arch build: a `docker-container` buildx builder, both platforms in one
/// `buildx build` that pushes both tags to the registry, with cache, label, args, secrets,
/// dockerfile, target, ssh, provenance and context in Kamal's order.
#[test]
fn local_multi_arch_with_every_option() {
    let p = plan_build("plan_build_local", "amd64", &[]);
    assert_eq!(p.kind, BuilderKind::Local);
    assert_eq!(p.builder.as_deref(), Some("kamal-local-docker-container"));
    assert_eq!(
        p.create,
        [argv(&[
            "docker",
            "buildx",
            "create",
            "--name",
            "kamal-local-docker-container",
            "--driver=docker-container"
        ])]
    );
    assert_eq!(
        p.build,
        argv(&[
            "docker",
            "buildx",
            "build",
            "--output=type=registry",
            "--platform",
            "linux/amd64,linux/arm64",
            "--builder",
            "kamal-local-docker-container",
            "-t",
            "ghcr.io/acme/web:abc123",
            "-t",
            "ghcr.io/acme/web:latest",
            "--cache-to",
            "type=registry,ref=ghcr.io/acme/web-build-cache,mode=max",
            "--cache-from",
            "type=registry,ref=ghcr.io/acme/web-build-cache",
            "--label",
            "service=web",
            "--build-arg",
            "RUBY_VERSION=3.3.5",
            "--secret",
            "id=GITHUB_TOKEN",
            "--file",
            "Dockerfile.production",
            "--target",
            "runtime",
            "--ssh",
            "default=$SSH_AUTH_SOCK",
            "--provenance",
            "false",
            "./app",
        ])
    );
    assert_eq!(p.secrets, ["GITHUB_TOKEN"]);
    assert!(p.env.is_empty());
    assert!(!p.git_clone, "an explicit context builds that directory");
}

/// A remote builder with both arches from an arm64 machine is a hybrid: arm64 here, amd64 on
/// the remote through a Docker context over SSH, appended to one builder; the build takes no
/// client token. From an amd64 machine the same config builds amd64 here and arm64 remotely.
#[test]
fn remote_builder_is_hybrid_by_local_arch() {
    let p = plan_build("plan_build_remote", "arm64", &[]);
    assert_eq!(p.kind, BuilderKind::Hybrid);
    let name = "kamal-hybrid-docker-container-ssh---builder-10-9-0-50";
    assert_eq!(p.builder.as_deref(), Some(name));
    assert_eq!(
        (p.local_arches.as_slice(), p.remote_arches.as_slice()),
        (&["arm64".to_string()][..], &["amd64".to_string()][..])
    );
    let context = format!("{name}-context");
    assert_eq!(
        p.create,
        [
            argv(&[
                "docker",
                "buildx",
                "create",
                "--platform",
                "linux/arm64",
                "--name",
                name,
                "--driver=docker-container"
            ]),
            argv(&[
                "docker",
                "context",
                "create",
                &context,
                "--description",
                &format!("{name} host"),
                "--docker",
                "host=ssh://builder@10.9.0.50"
            ]),
            argv(&[
                "docker",
                "buildx",
                "create",
                "--platform",
                "linux/amd64",
                "--append",
                "--name",
                name,
                &context
            ]),
        ]
    );
    assert_eq!(
        p.build[..12],
        argv(&[
            "docker",
            "buildx",
            "build",
            "--output=type=registry",
            "--platform",
            "linux/amd64,linux/arm64",
            "--builder",
            name,
            "-t",
            "acme/web:abc123",
            "-t",
            "acme/web:latest",
        ])
    );
    assert_eq!(
        p.build[12..16],
        argv(&[
            "--cache-to",
            "type=gha,url=http://cache,scope=web,mode=max",
            "--cache-from",
            "type=gha,url=http://cache,scope=web",
        ])
    );
    assert_eq!(p.build.last().map(String::as_str), Some("."));
    assert!(p.git_clone, "no context: Kamal builds a clean clone");
    assert_eq!(
        p.env,
        [("BUILDKIT_NO_CLIENT_TOKEN".to_string(), "1".to_string())]
    );
    let p = plan_build("plan_build_remote", "amd64", &[]);
    assert_eq!(
        (p.local_arches.as_slice(), p.remote_arches.as_slice()),
        (&["amd64".to_string()][..], &["arm64".to_string()][..])
    );
}

/// With a single arch the remote builds it all when the local machine differs: a remote
/// builder, its context and a builder on that context.
#[test]
fn remote_only_when_no_arch_is_local() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    std::fs::write(
        dir.path().join("config/deploy.yml"),
        "service: web\nimage: acme/web\nservers: [10.9.0.1]\nbuilder:\n  arch: amd64\n  remote: ssh://root@b\n",
    )
    .unwrap();
    let config = load(&LoadOptions {
        env: BTreeMap::new(),
        ..LoadOptions::new(dir.path())
    })
    .unwrap();
    let p = build_plan(
        &config,
        &BuildInputs {
            version: "v1".into(),
            local_arch: "arm64".into(),
            no_cache: true,
        },
    );
    assert_eq!(p.kind, BuilderKind::Remote);
    assert_eq!(p.builder.as_deref(), Some("kamal-remote-ssh---root-b"));
    assert_eq!(
        p.create[1],
        argv(&[
            "docker",
            "buildx",
            "create",
            "--name",
            "kamal-remote-ssh---root-b",
            "kamal-remote-ssh---root-b-context"
        ])
    );
    assert_eq!(p.build[p.build.len() - 2..], argv(&["--no-cache", "."]));
}

/// The plain `docker` driver builds on the engine: no builder to create, no `--builder`; a
/// local registry names the image after its server.
#[test]
fn docker_driver_builds_on_the_engine() {
    let p = plan_build("plan_build_docker_driver", "amd64", &[]);
    assert_eq!((p.kind, p.builder.as_deref()), (BuilderKind::Local, None));
    assert!(p.create.is_empty());
    assert_eq!(
        p.build,
        argv(&[
            "docker",
            "buildx",
            "build",
            "--output=type=registry",
            "--platform",
            "linux/amd64",
            "-t",
            "localhost:5555/acme/web:abc123",
            "-t",
            "localhost:5555/acme/web:latest",
            "--label",
            "service=web",
            "--file",
            "Dockerfile",
            "."
        ])
    );
}
