//! The test app image: the static `flotilla-testapp` binary in a `FROM scratch` image, with
//! its version baked in (`APP_VERSION`), built on the fleet's builder engine and pushed to the
//! fleet registry. No public registry is involved.

use crate::fleet::{Fleet, FleetError};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root (this crate lives in `tests/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Cargo's target directory (`CARGO_TARGET_DIR`, else the workspace's `target/`), where the
/// test builds land and `scripts/lib.sh` installs the test-only tools.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Builds the static test app binary (a std-only crate: seconds) and returns its path.
pub fn build_static_binary() -> Result<PathBuf, FleetError> {
    let root = workspace_root();
    let target = "x86_64-unknown-linux-gnu";
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&root)
        .args(["build", "-q", "-p", "flotilla-testapp", "--target", target])
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .status()
        .map_err(FleetError::io("cargo"))?;
    if !status.success() {
        return Err(FleetError::Command {
            command: "cargo build -p flotilla-testapp (static)".into(),
            status: status.to_string(),
            stderr: "see the cargo output above".into(),
        });
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    Ok(target_dir
        .join(target)
        .join("debug")
        .join("flotilla-testapp"))
}

/// Builds `REGISTRY/REPO:VERSION` from `binary` on the builder engine, pushes it, and returns
/// the pushed reference. `extra` adds Dockerfile lines (a different `ENV` makes a different
/// digest for the same version, as a re-pushed tag would).
pub fn build_and_push(
    fleet: &Fleet,
    binary: &Path,
    repo: &str,
    version: &str,
    extra: &str,
) -> Result<String, FleetError> {
    let context = fleet.dir().join("build").join(format!("{repo}-{version}"));
    std::fs::create_dir_all(&context).map_err(FleetError::io(&context))?;
    std::fs::copy(binary, context.join("app")).map_err(FleetError::io(binary))?;
    let dockerfile = format!(
        "FROM scratch\nCOPY app /app\nENV APP_VERSION={version} PORT=80\nEXPOSE 80\n{extra}\n\
         ENTRYPOINT [\"/app\"]\n"
    );
    std::fs::write(context.join("Dockerfile"), dockerfile)
        .map_err(FleetError::io(context.join("Dockerfile")))?;
    let image = format!("{}/{repo}:{version}", fleet.registry());
    run_docker(
        fleet
            .builder_docker()
            .args(["build", "-q", "-t", &image])
            .arg(&context),
    )?;
    run_docker(fleet.builder_docker().args(["push", "-q", &image]))?;
    Ok(image)
}

fn run_docker(c: &mut Command) -> Result<String, FleetError> {
    let out = c.output().map_err(FleetError::io("docker"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(FleetError::Command {
            command: format!("{c:?}"),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}
