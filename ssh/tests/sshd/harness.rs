//! Real OpenSSH servers for the tests: Debian's `sshd` as a child process on loopback
//! addresses with a random port, its own host key, config and authorized keys in a temp dir,
//! killed by pid when dropped.
//!
//! The fleet's hosts share this machine's `/root`, whose `.bashrc` runs `pyenv init` (about a
//! second) for every command bash starts over SSH. The sshd config sets `SetEnv HOME=<temp
//! dir>`: bash finds `~/.bashrc` through `$HOME`, so commands start in an empty home and pay
//! nothing, while the server still logs in root the normal way (no ForceCommand, no extra
//! system user, nothing changed outside the temp dir).

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use flotilla_deploy::config::types::{Ssh, SshConfig, Sshkit};
use flotilla_ssh::{Env, Pool, Settings};

/// sshd binds its sockets in milliseconds; allow for a loaded machine.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// sshd keeps at most 16 listening sockets (MAX_LISTEN_SOCKS), so one process serves 15
/// addresses at most here.
pub const ADDRS_PER_SSHD: usize = 15;

pub fn addr(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, n)
}

pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run command");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub fn keygen(path: &Path) -> String {
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "test", "-f"])
        .arg(path));
    std::fs::read_to_string(path.with_extension("pub")).unwrap()
}

/// A temp dir with a client key pair, a home for the client (`home/.ssh`) and a home for the
/// remote commands.
pub struct Lab {
    pub dir: tempfile::TempDir,
    pub key: PathBuf,
    pub key_pub: String,
}

impl Lab {
    pub fn new() -> Lab {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("home/.ssh")).unwrap();
        std::fs::create_dir_all(dir.path().join("remote-home")).unwrap();
        let key = dir.path().join("id_ed25519");
        let key_pub = keygen(&key);
        Lab { dir, key, key_pub }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn home(&self) -> PathBuf {
        self.path().join("home")
    }

    pub fn known_hosts(&self) -> PathBuf {
        self.home().join(".ssh/known_hosts")
    }

    pub fn env(&self) -> Env {
        Env {
            home: self.home(),
            auth_sock: None,
            system_config: self.path().join("no-system-ssh-config"),
            global_known_hosts: self.path().join("no-global-known-hosts"),
        }
    }

    /// Kamal's defaults plus the lab's key, no OpenSSH config, no agent.
    pub fn ssh(&self) -> Ssh {
        Ssh {
            keys: vec![self.key.display().to_string()],
            keys_only: Some(true),
            config: Some(SshConfig::Use(false)),
            ..Ssh::default()
        }
    }

    pub fn settings(&self, ssh: &Ssh) -> Settings {
        Settings::from_kamal(ssh, &Sshkit::default(), self.env())
    }

    /// A pool with the lab's settings on `sshd`'s port.
    pub fn pool(&self, sshd: &Sshd) -> Pool {
        Pool::new(self.settings(&Ssh {
            port: sshd.port,
            ..self.ssh()
        }))
    }

    /// Puts every address of `sshd` in the lab's known_hosts.
    pub fn trust(&self, sshd: &Sshd) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.known_hosts())
            .unwrap();
        for a in &sshd.addrs {
            writeln!(f, "[{a}]:{} {}", sshd.port, sshd.host_pub.trim()).unwrap();
        }
    }

    /// Starts an sshd on `addrs` accepting the lab's key, with `extra` config lines.
    pub fn sshd(&self, name: &str, addrs: &[Ipv4Addr], extra: &str) -> Sshd {
        Sshd::start(self, name, addrs, extra, None)
    }

    /// An sshd on a given port (one that other sshds on other addresses already use).
    pub fn sshd_on_port(&self, name: &str, addrs: &[Ipv4Addr], port: u16) -> Sshd {
        Sshd::start(self, name, addrs, "", Some(port))
    }
}

pub struct Sshd {
    child: Child,
    pub port: u16,
    pub addrs: Vec<Ipv4Addr>,
    pub host_pub: String,
    pub host_key: PathBuf,
}

impl Sshd {
    fn start(lab: &Lab, name: &str, addrs: &[Ipv4Addr], extra: &str, fixed: Option<u16>) -> Sshd {
        assert!(addrs.len() <= ADDRS_PER_SSHD);
        // sshd refuses to start without its privilege separation directory.
        std::fs::create_dir_all("/run/sshd").unwrap();
        let dir = lab.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let host_key = dir.join("ssh_host_ed25519_key");
        let host_pub = keygen(&host_key);
        let auth = dir.join("authorized_keys");
        std::fs::write(&auth, &lab.key_pub).unwrap();
        // A free port is chosen by the kernel and released; another process may take it
        // before sshd binds, so a failed bind retries with a new port.
        for _attempt in 0..5 {
            let port = fixed.unwrap_or_else(|| {
                std::net::TcpListener::bind((addrs[0], 0))
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port()
            });
            let listen: String = addrs
                .iter()
                .map(|a| format!("ListenAddress {a}:{port}\n"))
                .collect();
            let config = dir.join("sshd_config");
            std::fs::write(
                &config,
                // sshd keeps the first value of a keyword, so `extra` goes first to override.
                format!(
                    "{extra}\n{listen}HostKey {key}\nAuthorizedKeysFile {auth}\nPidFile none\n\
                     StrictModes no\nUsePAM no\nPasswordAuthentication no\n\
                     KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
                     AllowTcpForwarding yes\nAllowStreamLocalForwarding yes\n\
                     MaxStartups 300\nMaxSessions 64\nPrintMotd no\n\
                     SetEnv HOME={home}\n",
                    key = host_key.display(),
                    auth = auth.display(),
                    home = lab.path().join("remote-home").display(),
                ),
            )
            .unwrap();
            let mut child = Command::new("/usr/sbin/sshd")
                .arg("-D")
                .arg("-e")
                .arg("-f")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start /usr/sbin/sshd (apt-get install openssh-server)");
            let stderr = child.stderr.take().unwrap();
            let (tx, rx) = mpsc::channel();
            // Drains sshd's log for its whole life (a full pipe would block it) and reports
            // each listening socket as it is bound.
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
            let mut listening = 0;
            let mut log = String::new();
            let ok = loop {
                match rx.recv_timeout(READY_TIMEOUT) {
                    Ok(line) => {
                        log.push_str(&line);
                        log.push('\n');
                        if line.starts_with("Server listening on") {
                            listening += 1;
                            if listening == addrs.len() {
                                break true;
                            }
                        }
                    }
                    Err(_) => break false,
                }
            };
            if ok {
                return Sshd {
                    child,
                    port,
                    addrs: addrs.to_vec(),
                    host_pub,
                    host_key,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
            assert!(
                fixed.is_none() && log.contains("Address already in use"),
                "sshd {name} did not start:\n{log}"
            );
        }
        panic!("sshd {name}: no free port after 5 attempts");
    }

    /// For the benchmark's CPU accounting (the tests do not need it).
    #[allow(dead_code)]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `host` names for the pool: the addresses as strings.
    pub fn hosts(&self) -> Vec<String> {
        self.addrs.iter().map(|a| a.to_string()).collect()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        // Child::kill signals this child's pid only; the per-connection sshd processes exit
        // when their client connections close.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// 100 hosts: loopback addresses 127.0.0.2..=127.0.0.101, served by 7 sshds of up to 15
/// addresses each (sshd listens on 16 sockets at most), all on one port so the pool's
/// Kamal-style single `ssh.port` reaches every host.
pub fn hundred_hosts(lab: &Lab) -> (Vec<Sshd>, u16) {
    let addrs: Vec<_> = (2..=101u8).map(addr).collect();
    let first = lab.sshd("h0", &addrs[..ADDRS_PER_SSHD], "");
    let port = first.port;
    let mut all = vec![first];
    for (i, chunk) in addrs[ADDRS_PER_SSHD..].chunks(ADDRS_PER_SSHD).enumerate() {
        all.push(lab.sshd_on_port(&format!("h{}", i + 1), chunk, port));
    }
    for s in &all {
        lab.trust(s);
    }
    (all, port)
}
