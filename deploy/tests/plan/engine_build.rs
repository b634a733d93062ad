//! The build without the buildx plugin, planned as data: `docker build` on the engine (the
//! classic builder, or BuildKit where a setting needs it), pushes, and for several platforms
//! a manifest list; settings only buildx can honour are errors naming them.

use flotilla_deploy::config::{LoadOptions, load};
use flotilla_deploy::plan::{BuildInputs, EngineBuild, EngineCaps, NeedsBuilder, engine_build};
use std::collections::BTreeMap;

use super::fixture;

const BUILDKIT: EngineCaps = EngineCaps {
    buildkit: true,
    plain_http_registry: false,
};
const NO_BUILDKIT: EngineCaps = EngineCaps {
    buildkit: false,
    plain_http_registry: false,
};

fn engine(name: &str, local_arch: &str, caps: &EngineCaps) -> Result<EngineBuild, NeedsBuilder> {
    let opts = LoadOptions {
        env: BTreeMap::from([("PATH".to_owned(), "/usr/bin:/bin".to_owned())]),
        ..LoadOptions::new(fixture(name))
    };
    let config = load(&opts).unwrap_or_else(|e| panic!("{name} loads:\n{e}"));
    engine_build(
        &config,
        &BuildInputs {
            version: "v7".into(),
            local_arch: local_arch.into(),
            no_cache: false,
        },
        caps,
        "/run/secrets-dir",
    )
}

fn argv(line: &str) -> Vec<String> {
    line.split(' ').map(str::to_string).collect()
}

fn commands(b: &EngineBuild) -> Vec<String> {
    b.steps
        .iter()
        .map(|s| {
            let mut line = s.argv.join(" ");
            if s.may_fail {
                line.push_str("  # may fail");
            }
            if s.prints_digest {
                line.push_str("  # digest");
            }
            line
        })
        .collect()
}

/// One architecture and nothing BuildKit-only builds on any engine with the classic builder:
/// both of Kamal's tags, label, args, file, target and context, then a push of each tag, and
/// the version's registry digest read back; the buildx driver is reported as not used.
#[test]
fn one_arch_builds_with_the_classic_builder() {
    let b = engine("plan_engine_classic", "amd64", &NO_BUILDKIT).unwrap();
    assert_eq!(b.env, [("DOCKER_BUILDKIT".to_string(), "0".to_string())]);
    assert_eq!(
        commands(&b),
        [
            "docker build --platform linux/amd64 -t registry.example.test:5000/team/shop:v7 \
             -t registry.example.test:5000/team/shop:latest --label service=shop \
             --build-arg APP_ENV=production --build-arg BUILD_NO=17 --file Containerfile \
             --target release ./web",
            "docker push registry.example.test:5000/team/shop:v7",
            "docker push registry.example.test:5000/team/shop:latest",
        ]
    );
    assert_eq!(
        b.inspect.as_deref(),
        Some("registry.example.test:5000/team/shop:v7")
    );
    assert_eq!(
        b.notes,
        [
            "builder.driver docker-container is a buildx driver: the image is built on the Docker engine itself"
        ]
    );
}

/// Two architectures with BuildKit: one image per platform (`VERSION-ARCH`), each pushed,
/// then a manifest list for each tag (a stale local list removed first, failure allowed),
/// the version's list printing the release digest; secrets are read from files in the
/// secrets directory, ssh forwarded; the registry cache is reported as unused.
#[test]
fn two_arches_become_a_manifest_list() {
    let b = engine("plan_build_local", "amd64", &BUILDKIT).unwrap();
    assert_eq!(b.env, [("DOCKER_BUILDKIT".to_string(), "1".to_string())]);
    let common = "--label service=web --build-arg RUBY_VERSION=3.3.5 \
                  --secret id=GITHUB_TOKEN,src=/run/secrets-dir/GITHUB_TOKEN \
                  --file Dockerfile.production --target runtime --ssh default=$SSH_AUTH_SOCK ./app";
    assert_eq!(
        commands(&b),
        [
            format!("docker build --platform linux/amd64 -t ghcr.io/acme/web:abc123-amd64 {common}")
                .replace("abc123", "v7"),
            "docker push ghcr.io/acme/web:v7-amd64".into(),
            format!("docker build --platform linux/arm64 -t ghcr.io/acme/web:v7-arm64 {common}"),
            "docker push ghcr.io/acme/web:v7-arm64".into(),
            "docker manifest rm ghcr.io/acme/web:v7  # may fail".into(),
            "docker manifest create ghcr.io/acme/web:v7 ghcr.io/acme/web:v7-amd64 ghcr.io/acme/web:v7-arm64".into(),
            "docker manifest push --purge ghcr.io/acme/web:v7  # digest".into(),
            "docker manifest rm ghcr.io/acme/web:latest  # may fail".into(),
            "docker manifest create ghcr.io/acme/web:latest ghcr.io/acme/web:v7-amd64 ghcr.io/acme/web:v7-arm64".into(),
            "docker manifest push --purge ghcr.io/acme/web:latest".into(),
        ]
    );
    assert_eq!(b.inspect, None);
    assert_eq!(
        b.notes,
        ["builder.cache is not used for a multi-architecture build without buildx"]
    );
}

/// A registry the engine reaches over plain HTTP gets `--insecure` on the manifest commands,
/// which decide that on the client side.
#[test]
fn plain_http_registry_manifests_are_insecure() {
    let caps = EngineCaps {
        buildkit: true,
        plain_http_registry: true,
    };
    let b = engine("plan_build_local", "amd64", &caps).unwrap();
    let lines = commands(&b);
    assert!(lines.contains(&"docker manifest create --insecure ghcr.io/acme/web:v7 ghcr.io/acme/web:v7-amd64 ghcr.io/acme/web:v7-arm64".to_string()), "{lines:#?}");
    assert!(
        lines.contains(
            &"docker manifest push --purge --insecure ghcr.io/acme/web:latest".to_string()
        ),
        "{lines:#?}"
    );
}

/// Without BuildKit (a docker CLI of 23 or later and no buildx), the first setting that needs
/// it is named in the error, rather than the build silently leaving it out.
#[test]
fn buildkit_settings_without_buildkit_are_refused() {
    let e = engine("plan_build_local", "amd64", &NO_BUILDKIT).unwrap_err();
    assert_eq!(
        e.to_string(),
        "build secrets (builder.secrets) needs BuildKit, which this docker CLI runs only through \
         the buildx plugin (docker CLIs before 23 run it with DOCKER_BUILDKIT=1)"
    );
    assert_eq!(
        engine("plan_engine_classic", "arm64", &NO_BUILDKIT)
            .unwrap_err()
            .to_string(),
        "building for linux/amd64 needs BuildKit, which this docker CLI runs only through the \
         buildx plugin (docker CLIs before 23 run it with DOCKER_BUILDKIT=1)"
    );
}

/// A remote builder for an architecture the local machine lacks builds on the remote engine
/// (`DOCKER_HOST` = `builder.remote`) with BuildKit, the registry cache inline in its own
/// image, pushed beside the release.
#[test]
fn remote_builder_builds_on_the_remote_engine() {
    let b = engine("plan_engine_remote", "arm64", &BUILDKIT).unwrap();
    assert_eq!(
        b.env,
        [
            ("DOCKER_BUILDKIT".to_string(), "1".to_string()),
            (
                "DOCKER_HOST".to_string(),
                "ssh://builder@10.7.0.9".to_string()
            )
        ]
    );
    assert_eq!(
        b.steps[0].argv,
        argv(
            "docker build --platform linux/amd64 -t team/shop:v7 -t team/shop:latest \
             -t team/shop-cache --cache-from team/shop-cache --build-arg BUILDKIT_INLINE_CACHE=1 \
             --label service=shop --secret id=NPM_TOKEN,src=/run/secrets-dir/NPM_TOKEN \
             --file Dockerfile ."
        )
    );
    assert_eq!(
        commands(&b)[1..],
        [
            "docker push team/shop:v7",
            "docker push team/shop:latest",
            "docker push team/shop-cache"
        ]
    );
}

/// What only a buildx builder does is refused by name: the GitHub Actions cache, a hybrid
/// local+remote builder.
#[test]
fn buildx_only_settings_are_refused() {
    assert_eq!(
        engine("plan_engine_needs_buildx", "amd64", &BUILDKIT)
            .unwrap_err()
            .to_string(),
        "the GitHub Actions cache (builder.cache.type: gha) needs the docker buildx plugin, \
         which this docker CLI lacks"
    );
    assert_eq!(
        engine("plan_build_remote", "arm64", &BUILDKIT)
            .unwrap_err()
            .to_string(),
        "a hybrid build (arm64 here, amd64 on builder.remote) needs the docker buildx plugin, \
         which this docker CLI lacks"
    );
}
