//! The fleet's shared service, on the bridge address in the root namespace: a Docker
//! registry (plain HTTP, every engine trusts it with `--insecure-registry`). NATS is not
//! one: `flotilla server bootstrap` boots it on the control host, as for a user.

use super::error::FleetError;
use super::layout::{Layout, REGISTRY_PORT};
use super::sys::{Proc, wait_until};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const READY: Duration = Duration::from_secs(30);

fn spawn(program: &str, args: &[String], log: &Path) -> Result<Proc, FleetError> {
    use std::os::unix::process::CommandExt;
    let out = std::fs::File::create(log).map_err(FleetError::io(log))?;
    let err = out.try_clone().map_err(FleetError::io(log))?;
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(|e| FleetError::Command {
            command: program.to_owned(),
            status: "not started".into(),
            stderr: e.to_string(),
        })?;
    Proc::of(child.id()).ok_or_else(|| FleetError::NotReady {
        what: program.to_owned(),
        after: Duration::ZERO,
        log: log.to_owned(),
    })
}

/// A minimal HTTP GET returning the status code; enough for readiness probes.
pub fn http_status(addr: SocketAddr, path: &str) -> std::io::Result<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    buf.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("no HTTP status line"))
}

fn await_ready(
    proc: Proc,
    what: &str,
    log: &Path,
    probe: impl Fn() -> bool,
) -> Result<Proc, FleetError> {
    if wait_until(READY, || !proc.alive() || probe()) && proc.alive() {
        return Ok(proc);
    }
    proc.stop(Duration::from_secs(2));
    Err(FleetError::NotReady {
        what: what.to_owned(),
        after: READY,
        log: log.to_owned(),
    })
}

pub fn start_registry(l: &Layout) -> Result<Proc, FleetError> {
    let dir = l.dir().join("registry");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).map_err(FleetError::io(&data))?;
    let config = dir.join("config.yml");
    let text = format!(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  \
         delete:\n    enabled: true\nhttp:\n  addr: {}\n",
        data.display(),
        l.registry()
    );
    std::fs::write(&config, text).map_err(FleetError::io(&config))?;
    let log = dir.join("registry.log");
    let proc = spawn(
        "docker-registry",
        &["serve".into(), config.display().to_string()],
        &log,
    )?;
    let addr = SocketAddr::from((l.bridge_addr(), REGISTRY_PORT));
    await_ready(proc, "docker-registry", &log, || {
        http_status(addr, "/v2/").is_ok_and(|s| s == 200)
    })
}
