//! The image build without the buildx plugin (Debian's docker.io has none): Kamal's builder
//! settings run as `docker build` on the fleet's builder engine, and several architectures
//! pushed as one manifest list, as `docker buildx build --platform a,b` would push.

use crate::support::{assert_success, fleet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;

/// The manifest list media type a multi-platform push leaves in the registry.
const LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// A single image's manifest (asked for too, or the registry would convert it to schema 1).
const IMAGE: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// `GET /v2/REPO/manifests/TAG` from a plain-HTTP registry, as a manifest list or an image
/// manifest: the `Docker-Content-Digest` header and the JSON body.
fn manifest(registry: &str, repo: &str, tag: &str) -> (String, serde_json::Value) {
    let mut s = TcpStream::connect(registry).unwrap();
    write!(
        s,
        "GET /v2/{repo}/manifests/{tag} HTTP/1.1\r\nHost: {registry}\r\nAccept: {LIST}, {IMAGE}\r\n\
         Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let digest = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("docker-content-digest")
                .then(|| v.trim().to_owned())
        })
        .unwrap();
    (digest, serde_json::from_str(body).unwrap())
}

/// A directory whose `docker` is Debian's docker 20.10 CLI (BuildKit built in), first on PATH.
fn docker_20_10_first_on_path(dir: &Path) -> String {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink("/usr/bin/docker", bin.join("docker")).unwrap();
    format!("{}:{}", bin.display(), std::env::var("PATH").unwrap())
}

/// `builder.arch: [amd64, arm64]` without buildx: `flotilla build push` builds a FROM-scratch
/// image per platform with BuildKit (target stage and build args applied), pushes them, and
/// pushes one manifest list per tag (version and `latest`) listing both platforms; the digest
/// it reports is the version's list in the registry, which is what hosts pull.
#[test]
fn multi_arch_without_buildx_pushes_a_manifest_list() {
    let fleet = fleet(1);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("config")).unwrap();
    std::fs::create_dir_all(root.join(".kamal")).unwrap();
    std::fs::write(
        root.join(".kamal/secrets"),
        "KAMAL_REGISTRY_PASSWORD=unused-by-this-registry\n",
    )
    .unwrap();
    std::fs::write(
        root.join("config/deploy.yml"),
        format!(
            "service: multi
image: multi
servers: [{}]
registry:
  server: {}
  username: flotilla
  password: [KAMAL_REGISTRY_PASSWORD]
builder:
  arch: [amd64, arm64]
  target: slim
  args:
    FLAVOUR: lean
",
            fleet.hosts[0].addr,
            fleet.registry()
        ),
    )
    .unwrap();
    std::fs::write(root.join("payload"), "payload\n").unwrap();
    std::fs::write(
        root.join("Dockerfile"),
        "FROM scratch AS slim\nARG FLAVOUR\nLABEL flavour=$FLAVOUR\nCOPY payload /payload\n\
         FROM slim AS full\nCOPY payload /more\n",
    )
    .unwrap();
    let path = docker_20_10_first_on_path(root);
    let out = std::process::Command::new(flotilla_e2e::bare::build_static_flotilla().unwrap())
        .args(["build", "push", "--version", "v1"])
        .current_dir(root)
        .env("PATH", &path)
        .env("DOCKER_HOST", fleet.builder_docker_host())
        .env("HOME", root)
        .output()
        .unwrap();
    assert_success(&out, "flotilla build push");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let reported = stdout
        .trim()
        .strip_prefix(&format!("pushed {}/multi:v1@", fleet.registry()))
        .unwrap_or_else(|| panic!("{stdout}"));

    let (digest, list) = manifest(&fleet.registry(), "multi", "v1");
    assert_eq!(reported, digest, "the reported digest is the pushed list's");
    assert_eq!(list["mediaType"], LIST);
    let platforms: Vec<String> = list["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["platform"]["os"].as_str().unwrap(),
                m["platform"]["architecture"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
    let (latest, _) = manifest(&fleet.registry(), "multi", "latest");
    assert_eq!(latest, digest, "latest is the same list");

    // The arm64 image is the target stage with the build arg: one layer, the label set.
    let arm = format!("{}/multi:v1-arm64", fleet.registry());
    let inspect = fleet
        .builder_docker()
        .args([
            "image",
            "inspect",
            &arm,
            "--format",
            "{{.Architecture}} {{len .RootFS.Layers}} {{index .Config.Labels \"flavour\"}} {{index .Config.Labels \"service\"}}",
        ])
        .output()
        .unwrap();
    assert_success(&inspect, "docker image inspect");
    assert_eq!(
        String::from_utf8_lossy(&inspect.stdout).trim(),
        "arm64 1 lean multi"
    );
}

/// `builder.remote` without buildx: the image is built by the remote engine over SSH
/// (`DOCKER_HOST=ssh://...` through the user's ssh and its config) with BuildKit, a build
/// secret handed over as a file, and pushed from there; the local engine builds nothing.
#[test]
fn remote_builder_without_buildx_builds_on_the_remote_engine() {
    let fleet = fleet(1);
    let host = &fleet.hosts[0];
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("config")).unwrap();
    std::fs::create_dir_all(root.join(".kamal")).unwrap();
    std::fs::write(
        root.join(".kamal/secrets"),
        "KAMAL_REGISTRY_PASSWORD=unused-by-this-registry\nBUILD_TOKEN=tok-3f1\n",
    )
    .unwrap();
    std::fs::write(
        root.join("config/deploy.yml"),
        format!(
            "service: far
image: far
servers: [{addr}]
registry:
  server: {registry}
  username: flotilla
  password: [KAMAL_REGISTRY_PASSWORD]
builder:
  arch: amd64
  local: false
  remote: ssh://root@{addr}
  secrets: [BUILD_TOKEN]
",
            addr = host.addr,
            registry = fleet.registry()
        ),
    )
    .unwrap();
    std::fs::write(root.join("payload"), "payload\n").unwrap();
    std::fs::write(
        root.join("Dockerfile"),
        "FROM scratch\nCOPY payload /payload\n",
    )
    .unwrap();
    let path = docker_20_10_first_on_path(root);
    // The user's ssh config (ssh reads ~/.ssh from the passwd entry, not $HOME): the fleet's.
    let ssh = root.join("bin/ssh");
    std::fs::write(
        &ssh,
        format!(
            "#!/bin/sh\nexec /usr/bin/ssh -F {} \"$@\"\n",
            fleet.ssh_config().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&ssh, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = std::process::Command::new(flotilla_e2e::bare::build_static_flotilla().unwrap())
        .args(["build", "push", "--version", "v1"])
        .current_dir(root)
        .env("PATH", &path)
        .env("DOCKER_HOST", fleet.builder_docker_host())
        .env("HOME", root)
        .output()
        .unwrap();
    assert_success(&out, "flotilla build push");
    let image = format!("{}/far:v1", fleet.registry());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let reported = stdout
        .trim()
        .strip_prefix(&format!("pushed {image}@"))
        .unwrap_or_else(|| panic!("{stdout}"));
    let (digest, _) = manifest(&fleet.registry(), "far", "v1");
    assert_eq!(reported, digest);
    let on_host = fleet
        .host_docker(host)
        .args([
            "image",
            "inspect",
            "--format",
            "{{.Os}}/{{.Architecture}}",
            &image,
        ])
        .output()
        .unwrap();
    assert_success(&on_host, "docker image inspect on the remote");
    assert_eq!(
        String::from_utf8_lossy(&on_host.stdout).trim(),
        "linux/amd64"
    );
    let here = fleet
        .builder_docker()
        .args(["image", "inspect", &image])
        .output()
        .unwrap();
    assert!(!here.status.success(), "the local engine built nothing");
}
