//! One machine of the fleet: a network namespace on the fleet bridge, a private mount and UTS
//! namespace (so whoever logs in sees this machine's `/var/lib/docker`, `/var/run/docker.sock`
//! and hostname), its own `dockerd`, and, for hosts, its own `sshd`.

use super::error::FleetError;
use super::layout::{Layout, Role};
use super::sys::{Proc, cmd, run, wait_until};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const DOCKERD_READY: Duration = Duration::from_secs(60);
const SSHD_READY: Duration = Duration::from_secs(15);

/// Creates the namespace, the veth pair and the machine's address.
pub fn create_network(l: &Layout, role: Role) -> Result<(), FleetError> {
    let ns = l.netns(role);
    let peer = format!("{ns}p");
    run(cmd("ip", ["netns", "add", &ns]))?;
    run(cmd(
        "ip",
        ["link", "add", &ns, "type", "veth", "peer", "name", &peer],
    ))?;
    run(cmd("ip", ["link", "set", &ns, "master", &l.bridge(), "up"]))?;
    run(cmd("ip", ["link", "set", &peer, "netns", &ns]))?;
    let addr = format!("{}/24", l.addr(role));
    let gw = l.bridge_addr().to_string();
    let script = format!(
        "ip link set {peer} name eth0 && ip addr add {addr} dev eth0 && ip link set eth0 up \
         && ip link set lo up && ip route add default via {gw}"
    );
    run(in_netns(l, role).args(["sh", "-c", &script]))?;
    Ok(())
}

/// Debian's stock `~/.bashrc`. The fleet's hosts share this machine's `/root`, whose
/// `.bashrc` may do far more than a server's (here it runs `pyenv init`, 0.1 s of CPU on every
/// SSH command, as bash reads it for commands over SSH too): each host sees the stock one, as
/// a fresh Debian server would have.
const STOCK_BASHRC: &str = "/usr/share/base-files/dot.bashrc";

/// Creates the persistent mount and UTS namespaces: tmpfs on `/run`, the machine's data
/// directory on `/var/lib/docker`, its own `/etc/docker` (the engine's identity key lives
/// there, so each engine has its own ID), its own (empty) `/etc/flotilla` and
/// `/var/lib/flotilla` (what `flotilla setup` writes; a host starts bare), Debian's stock
/// `/root/.bashrc` ([`STOCK_BASHRC`]), its name as hostname.
pub fn create_mount_ns(l: &Layout, role: Role) -> Result<(), FleetError> {
    let dir = l.machine_dir(role);
    let data = dir.join("docker-data");
    let etc = dir.join("etc-docker");
    let flotilla_etc = dir.join("etc-flotilla");
    let flotilla_state = dir.join("var-lib-flotilla");
    for d in [&data, &etc, &flotilla_etc, &flotilla_state] {
        std::fs::create_dir_all(d).map_err(FleetError::io(d))?;
    }
    for d in [
        "/var/lib/docker",
        "/etc/docker",
        "/etc/flotilla",
        "/var/lib/flotilla",
    ] {
        std::fs::create_dir_all(d).map_err(FleetError::io(d))?;
    }
    for f in [l.mnt_ns_file(role), l.uts_ns_file(role)] {
        std::fs::write(&f, b"").map_err(FleetError::io(&f))?;
    }
    let script = format!(
        "hostname {name} && mount -t tmpfs -o mode=755 tmpfs /run && mkdir -p /run/sshd \
         && mount --bind {data} /var/lib/docker && mount --bind {etc} /etc/docker \
         && mount --bind {fetc} /etc/flotilla && mount --bind {fstate} /var/lib/flotilla \
         && {{ [ ! -f {STOCK_BASHRC} ] || [ ! -f /root/.bashrc ] \
               || mount --bind {STOCK_BASHRC} /root/.bashrc; }}",
        name = l.name(role),
        data = data.display(),
        etc = etc.display(),
        fetc = flotilla_etc.display(),
        fstate = flotilla_state.display(),
    );
    run(cmd(
        "unshare",
        [
            format!("--mount={}", l.mnt_ns_file(role).display()),
            format!("--uts={}", l.uts_ns_file(role).display()),
            "--propagation".into(),
            "private".into(),
            "sh".into(),
            "-c".into(),
            script,
        ],
    ))?;
    Ok(())
}

/// `nsenter` into the machine's network namespace only.
/// Takes the machine's link down (`up` false: as a pulled cable or a failed switch port
/// does, every connection through it stalls) or up again with its default route, which the
/// kernel dropped with the link.
pub fn set_link(l: &Layout, role: Role, up: bool) -> Result<(), FleetError> {
    let script = if up {
        format!(
            "ip link set eth0 up && ip route replace default via {}",
            l.bridge_addr()
        )
    } else {
        "ip link set eth0 down".to_owned()
    };
    run(in_netns(l, role).args(["sh", "-c", &script]))?;
    Ok(())
}

fn in_netns(l: &Layout, role: Role) -> Command {
    cmd(
        "nsenter",
        [format!("--net={}", l.netns_file(role).display())],
    )
}

/// `nsenter` into all of the machine's namespaces: what a process on that machine sees.
pub fn on_machine(l: &Layout, role: Role) -> Command {
    cmd(
        "nsenter",
        [
            format!("--net={}", l.netns_file(role).display()),
            format!("--mount={}", l.mnt_ns_file(role).display()),
            format!("--uts={}", l.uts_ns_file(role).display()),
        ],
    )
}

/// Starts a daemon on the machine in its own process group (so it outlives a demo command
/// and ignores the terminal's Ctrl-C), logging to `log`.
fn spawn_daemon(l: &Layout, role: Role, args: &[String], log: &Path) -> Result<Proc, FleetError> {
    use std::os::unix::process::CommandExt;
    let out = std::fs::File::create(log).map_err(FleetError::io(log))?;
    let err = out.try_clone().map_err(FleetError::io(log))?;
    let mut c = on_machine(l, role);
    c.arg("--")
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    let child = c.spawn().map_err(|e| FleetError::Command {
        command: args.join(" "),
        status: "not started".into(),
        stderr: e.to_string(),
    })?;
    Proc::of(child.id()).ok_or_else(|| FleetError::NotReady {
        what: args.first().cloned().unwrap_or_default(),
        after: Duration::ZERO,
        log: log.to_owned(),
    })
}

/// Starts the machine's Docker engine and waits until it answers `/_ping`.
pub fn start_dockerd(l: &Layout, role: Role) -> Result<Proc, FleetError> {
    let dir = l.machine_dir(role);
    let config = dir.join("daemon.json");
    // An empty config file of our own, so /etc/docker/daemon.json cannot conflict with flags.
    std::fs::write(&config, b"{}\n").map_err(FleetError::io(&config))?;
    let socket = l.docker_socket(role);
    let _ = std::fs::remove_file(&socket);
    let args: Vec<String> = vec![
        "dockerd".into(),
        format!("--config-file={}", config.display()),
        "--data-root=/var/lib/docker".into(),
        "--exec-root=/run/docker".into(),
        "--pidfile=/run/docker.pid".into(),
        "-H".into(),
        "unix:///run/docker.sock".into(),
        "-H".into(),
        format!("unix://{}", socket.display()),
        format!("--bip={}", l.docker_bip(role)),
        format!("--default-address-pool={}", l.address_pool()),
        format!("--insecure-registry={}", l.registry()),
        format!("--cgroup-parent={}", l.cgroup_parent(role)),
        // Containers get a short grace on shutdown so `down` stays quick.
        "--shutdown-timeout=2".into(),
    ];
    let log = dir.join("dockerd.log");
    let proc = spawn_daemon(l, role, &args, &log)?;
    let ready = wait_until(DOCKERD_READY, || {
        !proc.alive() || docker_ping(&socket).is_ok()
    });
    if !ready || !proc.alive() {
        proc.stop(Duration::from_secs(2));
        return Err(FleetError::NotReady {
            what: format!("dockerd on {}", l.name(role)),
            after: DOCKERD_READY,
            log,
        });
    }
    Ok(proc)
}

/// One `GET /_ping` over the Docker socket; Ok when the engine answers `OK`.
pub fn docker_ping(socket: &Path) -> std::io::Result<()> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    if buf.starts_with("HTTP/1.0 200") || buf.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "unexpected answer: {buf:.60}"
        )))
    }
}

/// Writes the host's sshd config and key, starts sshd and waits until port 22 accepts.
pub fn start_sshd(l: &Layout, role: Role) -> Result<Proc, FleetError> {
    let dir = l.machine_dir(role);
    let host_key = dir.join("ssh_host_ed25519_key");
    if !host_key.exists() {
        run(cmd("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C"])
            .arg(l.name(role))
            .arg("-f")
            .arg(&host_key))?;
    }
    let config = dir.join("sshd_config");
    let text = format!(
        "ListenAddress {addr}:22\nHostKey {key}\nAuthorizedKeysFile {auth}\n\
         PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
         KbdInteractiveAuthentication no\nUsePAM no\nPidFile none\n\
         AllowTcpForwarding yes\nAllowStreamLocalForwarding yes\nX11Forwarding no\n\
         PrintMotd no\nAcceptEnv LANG LC_*\nSubsystem sftp internal-sftp\n",
        addr = l.addr(role),
        key = host_key.display(),
        auth = l.dir().join("authorized_keys").display(),
    );
    std::fs::write(&config, text).map_err(FleetError::io(&config))?;
    let log = dir.join("sshd.log");
    let args = vec![
        "/usr/sbin/sshd".to_owned(),
        "-D".into(),
        "-e".into(),
        "-f".into(),
        config.display().to_string(),
    ];
    let proc = spawn_daemon(l, role, &args, &log)?;
    let target = std::net::SocketAddr::from((l.addr(role), 22));
    let ready = wait_until(SSHD_READY, || {
        !proc.alive()
            || std::net::TcpStream::connect_timeout(&target, Duration::from_millis(500)).is_ok()
    });
    if !ready || !proc.alive() {
        proc.stop(Duration::from_secs(2));
        return Err(FleetError::NotReady {
            what: format!("sshd on {}", l.name(role)),
            after: SSHD_READY,
            log,
        });
    }
    Ok(proc)
}

/// The host's public key line for the fleet's known_hosts file.
pub fn known_hosts_line(l: &Layout, role: Role) -> Result<String, FleetError> {
    let path = l.machine_dir(role).join("ssh_host_ed25519_key.pub");
    let key = std::fs::read_to_string(&path).map_err(FleetError::io(&path))?;
    let mut parts = key.split_whitespace();
    let (kind, b64) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    Ok(format!("{} {kind} {b64}\n", l.addr(role)))
}
