//! `flotilla build push` as a user runs it, against a stand-in `docker` on PATH that records
//! every call (its arguments, and what it was handed: build secrets in the environment or in
//! files) and answers as a docker CLI with or without the buildx plugin would. The real
//! builds run on the fleet (`tests/tests/e2e/builder.rs`); this pins which commands are run.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The stand-in: `STUB_BUILDX=1` has the plugin, `STUB_VERSION` is its version line.
const STUB: &str = r#"#!/bin/sh
echo "docker $*" >> "$STUB_LOG"
case "$1 $2" in
  "--version ") echo "$STUB_VERSION"; exit 0 ;;
  "buildx version") [ "$STUB_BUILDX" = 1 ] && exit 0; echo "docker: unknown command: docker buildx" >&2; exit 1 ;;
  "buildx inspect") exit 1 ;;
  "login ghcr.io") echo "  password on stdin: $(cat)" >> "$STUB_LOG"; echo "Login Succeeded" ;;
  "buildx build")
    echo "  env GITHUB_TOKEN=$GITHUB_TOKEN" >> "$STUB_LOG"
    for a in "$@"; do
      case "$a" in --metadata-file=*) echo '{"containerimage.digest": "sha256:b0b0"}' > "${a#--metadata-file=}" ;; esac
    done ;;
  "info --format") echo '{"ghcr.io":{"Secure":true}}' ;;
  "build --platform")
    echo "  in $(pwd): $(cat marker 2>/dev/null)" >> "$STUB_LOG"
    for a in "$@"; do
      case "$a" in id=*,src=*) echo "  secret file ${a%%,*}: $(cat "${a#*,src=}")" >> "$STUB_LOG" ;; esac
    done ;;
  "manifest push") echo "sha256:11575" ;;
  "image inspect") echo "localhost:5000/gitapp@sha256:c10e" ;;
esac
exit 0
"#;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/tests/fixtures")
        .join(name)
}

/// `flotilla build push --version v9` in `project` with the stand-in docker; returns the
/// output and the stand-in's log.
fn build_push(project: &str, buildx: bool, version_line: &str) -> (Output, String) {
    build(&["push", "--version", "v9"], project, buildx, version_line)
}

/// `flotilla build ARGS` in `project` with the stand-in docker.
fn build(args: &[&str], project: &str, buildx: bool, version_line: &str) -> (Output, String) {
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let docker = bin.join("docker");
    std::fs::write(&docker, STUB).unwrap();
    let mut perms = std::fs::metadata(&docker).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&docker, perms).unwrap();
    let log = tmp.path().join("docker.log");
    let out = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .arg("build")
        .args(args)
        .current_dir(fixture(project))
        .env_clear()
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .env("STUB_LOG", &log)
        .env("STUB_BUILDX", if buildx { "1" } else { "0" })
        .env("STUB_VERSION", version_line)
        .output()
        .unwrap();
    let calls = std::fs::read_to_string(&log).unwrap_or_default();
    (out, calls)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// With buildx, Kamal's way: a `docker login` here (password on stdin, never on the command
/// line), the builder created when `buildx inspect` does not find it,
/// then one `buildx build` pushes both platforms with every option; the build secret is in its
/// environment (buildx's `--secret id=NAME` reads it there) and the digest reported is the one
/// buildx wrote to its metadata file.
#[test]
fn with_buildx_runs_kamals_builder() {
    let (out, calls) = build_push("plan_build_local", true, "Docker version 28.2.2, build x");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "pushed ghcr.io/acme/web:v9@sha256:b0b0\n"
    );
    let lines: Vec<String> = calls
        .lines()
        .map(|l| match l.find("--metadata-file=") {
            Some(i) => {
                let end = l[i..].find(' ').map_or(l.len(), |e| i + e);
                format!("{}--metadata-file=FILE{}", &l[..i], &l[end..])
            }
            None => l.to_owned(),
        })
        .collect();
    assert_eq!(
        lines,
        [
            "docker login ghcr.io -u acme --password-stdin",
            "  password on stdin: t",
            "docker buildx version",
            "docker buildx inspect kamal-local-docker-container",
            "docker buildx create --name kamal-local-docker-container --driver=docker-container",
            "docker buildx build --output=type=registry --platform linux/amd64,linux/arm64 \
             --builder kamal-local-docker-container -t ghcr.io/acme/web:v9 \
             -t ghcr.io/acme/web:latest --cache-to type=registry,ref=ghcr.io/acme/web-build-cache,mode=max \
             --cache-from type=registry,ref=ghcr.io/acme/web-build-cache --label service=web \
             --build-arg RUBY_VERSION=3.3.5 --secret id=GITHUB_TOKEN --file Dockerfile.production \
             --target runtime --ssh default=$SSH_AUTH_SOCK --provenance false \
             --metadata-file=FILE ./app",
            "  env GITHUB_TOKEN=g",
        ]
    );
}

/// Without buildx, a docker CLI of 23 or later cannot run BuildKit: the build stops before
/// running anything, naming the setting that needs it (usage error, exit 64).
#[test]
fn without_buildx_a_new_cli_names_what_needs_buildkit() {
    let (out, calls) = build_push("plan_build_local", false, "Docker version 28.2.2, build x");
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(
            "flotilla: error: cannot build the image: build secrets (builder.secrets) needs \
             BuildKit, which this docker CLI runs only through the buildx plugin"
        ),
        "{}",
        text(&out.stderr)
    );
    assert!(
        !calls.contains("docker build "),
        "nothing was built: {calls}"
    );
}

/// Without buildx, docker 20.10 builds each platform with BuildKit, the secret handed over as
/// a file holding its value, and reports the digest of the pushed manifest list.
#[test]
fn without_buildx_docker_20_10_builds_per_platform_and_a_list() {
    let (out, calls) = build_push(
        "plan_build_local",
        false,
        "Docker version 20.10.24+dfsg1, build 297e128",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "pushed ghcr.io/acme/web:v9@sha256:11575\n"
    );
    assert!(
        text(&out.stderr).contains(
            "flotilla: note: builder.cache is not used for a multi-architecture build without buildx"
        ),
        "{}",
        text(&out.stderr)
    );
    let builds: Vec<&str> = calls
        .lines()
        .filter(|l| l.starts_with("docker build ") || l.starts_with("  secret"))
        .collect();
    assert_eq!(builds.len(), 4, "{calls}");
    assert!(
        builds[0].starts_with("docker build --platform linux/amd64 -t ghcr.io/acme/web:v9-amd64 ")
    );
    assert_eq!(builds[1], "  secret file id=GITHUB_TOKEN: g");
    assert!(
        builds[2].starts_with("docker build --platform linux/arm64 -t ghcr.io/acme/web:v9-arm64 ")
    );
    assert!(calls.contains(
        "docker manifest create ghcr.io/acme/web:v9 ghcr.io/acme/web:v9-amd64 ghcr.io/acme/web:v9-arm64\n"
    ));
    assert!(calls.contains("docker manifest push --purge ghcr.io/acme/web:latest\n"));
}

/// A project in a git repository without `builder.context` is built, as Kamal builds it, from a
/// clean clone at HEAD in `$TMPDIR/kamal-clones/`: the committed file, not the uncommitted
/// edit, reaches the build, and the user is told which changes were left out. A second build
/// resets the same clone to the new commit.
#[test]
fn git_project_builds_from_a_clean_clone() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("shop");
    let app = repo.join("app");
    std::fs::create_dir_all(app.join("config")).unwrap();
    std::fs::create_dir_all(app.join(".kamal")).unwrap();
    std::fs::write(app.join(".kamal/secrets"), "").unwrap();
    std::fs::write(
        app.join("config/deploy.yml"),
        "service: gitapp\nimage: gitapp\nservers: [10.1.0.1]\nregistry:\n  server: localhost:5000\nbuilder:\n  arch: amd64\n",
    )
    .unwrap();
    std::fs::write(app.join("marker"), "committed").unwrap();
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.test"])
            .args(args)
            .current_dir(&repo)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
    };
    git(&["init", "-q"]);
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "one"]);
    std::fs::write(app.join("marker"), "uncommitted").unwrap();

    let run = || {
        let bin = tmp.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let docker = bin.join("docker");
        std::fs::write(&docker, STUB).unwrap();
        let mut perms = std::fs::metadata(&docker).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&docker, perms).unwrap();
        let log = tmp.path().join("docker.log");
        let _ = std::fs::remove_file(&log);
        let out = Command::new(env!("CARGO_BIN_EXE_flotilla"))
            .args(["build", "push", "--version", "v1"])
            .current_dir(&app)
            .env_clear()
            .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
            .env("TMPDIR", tmp.path())
            .env("STUB_LOG", &log)
            .env("STUB_BUILDX", "0")
            .env("STUB_VERSION", "Docker version 28.2.2, build x")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        (text(&out.stderr), std::fs::read_to_string(&log).unwrap())
    };
    let (stderr, calls) = run();
    assert!(
        stderr.contains(
            "building from a local git clone, so ignoring these uncommitted changes:\n M app/marker"
        ),
        "{stderr}"
    );
    let built_in = calls
        .lines()
        .find_map(|l| l.strip_prefix("  in "))
        .unwrap_or_else(|| panic!("{calls}"));
    let clones = tmp.path().canonicalize().unwrap().join("kamal-clones");
    let (dir, marker) = built_in.split_once(": ").unwrap();
    assert!(
        dir.starts_with(&format!("{}/gitapp-", clones.display())) && dir.ends_with("/shop/app"),
        "{dir}"
    );
    assert_eq!(marker, "committed");

    // Commit the change: the next build resets the same clone to it.
    git(&["commit", "-q", "-am", "two"]);
    let (_, calls) = run();
    assert!(
        calls.contains(&format!("  in {dir}: uncommitted")),
        "{calls}"
    );
}

/// `build details` without buildx shows what `build push` will run on the engine (or why it
/// cannot), and `build create` has nothing to create.
#[test]
fn details_without_buildx_show_the_engine_build() {
    let (out, _) = build(
        &["details", "--version", "v9"],
        "plan_engine_classic",
        false,
        "Docker version 28.2.2, build x",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        shown.contains(
            "Runner: the Docker engine (no buildx plugin), with DOCKER_BUILDKIT=0\n\
             run: docker build --platform linux/amd64 -t registry.example.test:5000/team/shop:v9 "
        ),
        "{shown}"
    );
    assert!(
        shown.contains("run: docker push registry.example.test:5000/team/shop:latest\n"),
        "{shown}"
    );
    let (out, calls) = build(
        &["create"],
        "plan_engine_classic",
        false,
        "Docker version 28.2.2, build x",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("nothing to do: without the docker buildx plugin"));
    assert!(!calls.contains("buildx create"), "{calls}");
}
