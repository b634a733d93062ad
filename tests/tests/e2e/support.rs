//! Helpers shared by the end-to-end tests.

use flotilla_e2e::fleet::{Fleet, FleetSpec, Host};
use std::process::Output;

/// Brings up a fleet of `n` hosts owned by this test; it is taken down when dropped.
pub fn fleet(n: u8) -> Fleet {
    match Fleet::up(&FleetSpec::hosts(n)) {
        Ok(f) => f,
        Err(e) => panic!("fleet up failed: {e}"),
    }
}

/// Runs a command on a host over SSH and returns its stdout; fails the test on error.
pub fn ssh_ok(fleet: &Fleet, host: &Host, command: &str) -> String {
    let out = fleet.ssh(host, command).expect("ssh runs");
    assert_success(&out, &format!("ssh {} {command:?}", host.name));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

pub fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `GET http://ADDR:PORT/PATH` with a plain TCP client; returns (status, body).
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    http_get_host(addr, &addr.to_string(), path)
}

/// `GET http://HOST/PATH` sent to `addr`: what a browser does for a name that resolves there.
pub fn http_get_host(
    addr: std::net::SocketAddr,
    host: &str,
    path: &str,
) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let status = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line in {buf:?}")))?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// The `flotilla-fleet` binary built alongside these tests.
pub fn fleet_bin() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_flotilla-fleet"))
}
