//! Connection settings: Kamal's `ssh:` and `sshkit:` sections, the user's OpenSSH config when
//! `ssh.config` asks for it, and the environment (home directory, `SSH_AUTH_SOCK`), resolved
//! per host into a [`Target`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use flotilla_deploy::config::secrets::Secret;
use flotilla_deploy::config::types::{Ssh, SshConfig, Sshkit};

use crate::Error;
use crate::openssh_config::{self, expand_tilde};

/// A TCP connect to a host that does not answer fails after this long (OpenSSH has no default;
/// Net::SSH, which Kamal uses, waits forever unless told; 30 s covers a slow cloud network).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// The whole handshake (version, key exchange, authentication) must finish in this time, so a
/// server that accepts TCP but never answers does not hold a handshake slot forever.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);
/// Keepalives every 30 s and three unanswered ones close the connection, so a pooled
/// connection to a host that vanished is noticed and replaced instead of hanging a command.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// What this process knows of its machine: an input, so tests can point it elsewhere and
/// nothing is read behind the caller's back.
#[derive(Clone, Debug)]
pub struct Env {
    /// The user's home: `~` in paths, `~/.ssh/config`, `~/.ssh/known_hosts`, default keys.
    pub home: PathBuf,
    /// The ssh-agent socket (`SSH_AUTH_SOCK`), if any.
    pub auth_sock: Option<PathBuf>,
    /// The system-wide client config read after the user's (`/etc/ssh/ssh_config`).
    pub system_config: PathBuf,
    /// The system-wide known hosts file (`/etc/ssh/ssh_known_hosts`).
    pub global_known_hosts: PathBuf,
}

impl Env {
    /// The environment of this process: `HOME`, `SSH_AUTH_SOCK` and the system files.
    pub fn from_process() -> Env {
        Env {
            home: std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/")),
            auth_sock: std::env::var_os("SSH_AUTH_SOCK")
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            system_config: PathBuf::from("/etc/ssh/ssh_config"),
            global_known_hosts: PathBuf::from("/etc/ssh/ssh_known_hosts"),
        }
    }
}

/// How to reach every host: Kamal's settings plus the environment. Build it with
/// [`Settings::from_kamal`]; [`Settings::target`] resolves one host.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `ssh.user`; `None` when deploy.yml leaves Kamal's default (`root`), so that an
    /// OpenSSH `User` for the host applies first (then `root`).
    pub user: Option<String>,
    /// `ssh.port`; `None` for Kamal's default 22, for the same reason.
    pub port: Option<u16>,
    /// `ssh.proxy`: a jump host `[user@]host[:port]`.
    pub proxy: Option<String>,
    /// `ssh.proxy_command`, with `%h` and `%p` replaced by the host and port.
    pub proxy_command: Option<String>,
    /// `ssh.keys`: private key files, tried before the agent.
    pub keys: Vec<String>,
    /// `ssh.key_data`: private keys inline, tried first.
    pub key_data: Vec<Secret>,
    /// `ssh.keys_only`: only the keys above (no agent, no default key files).
    pub keys_only: bool,
    /// OpenSSH config files to read (empty: none), from `ssh.config`.
    pub config_files: Vec<PathBuf>,
    /// `ssh.log_level` (Net::SSH's levels): `debug` logs each connection step at info level.
    pub log_level: Option<String>,
    /// `sshkit.max_concurrent_starts`: handshakes in flight at once across the pool.
    pub max_concurrent_starts: usize,
    /// `sshkit.pool_idle_timeout`: an unused pooled connection is closed after this long.
    pub idle_timeout: Duration,
    pub connect_timeout: Duration,
    pub handshake_timeout: Duration,
    pub keepalive_interval: Duration,
    pub env: Env,
}

impl Settings {
    /// Kamal's `ssh:` and `sshkit:` sections read with `env`. `ssh.config` absent means
    /// `true`, as in Kamal: `~/.ssh/config` then the system config.
    pub fn from_kamal(ssh: &Ssh, sshkit: &Sshkit, env: Env) -> Settings {
        let defaults = Ssh::default();
        let config_files = match &ssh.config {
            None | Some(SshConfig::Use(true)) => {
                vec![env.home.join(".ssh/config"), env.system_config.clone()]
            }
            Some(SshConfig::Use(false)) => Vec::new(),
            Some(SshConfig::Files(files)) => {
                files.iter().map(|f| expand_tilde(f, &env.home)).collect()
            }
        };
        Settings {
            user: (ssh.user != defaults.user).then(|| ssh.user.clone()),
            port: (ssh.port != defaults.port).then_some(ssh.port),
            proxy: ssh.proxy.clone(),
            proxy_command: ssh.proxy_command.clone(),
            keys: ssh.keys.clone(),
            key_data: ssh.key_data.clone(),
            keys_only: ssh.keys_only.unwrap_or(false),
            config_files,
            log_level: ssh.log_level.clone(),
            max_concurrent_starts: usize::try_from(sshkit.max_concurrent_starts)
                .unwrap_or(usize::MAX)
                .max(1),
            idle_timeout: Duration::from_secs(sshkit.pool_idle_timeout),
            connect_timeout: CONNECT_TIMEOUT,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            keepalive_interval: KEEPALIVE_INTERVAL,
            env,
        }
    }

    /// Where and how to connect to `host` (a name from deploy.yml). The `ssh:` section wins
    /// over the OpenSSH config where it sets something; the config fills the rest.
    pub fn target(&self, host: &str) -> Result<Target, Error> {
        self.resolve(host, true)
    }

    /// A jump host (`[user@]host[:port]`): reached directly, with the OpenSSH config's
    /// settings for it, Kamal's user and keys, but not Kamal's port or proxy (those are for
    /// the fleet's hosts).
    pub fn jump_target(&self, spec: &str) -> Result<Target, Error> {
        self.resolve(spec, false)
    }

    fn resolve(&self, host: &str, fleet: bool) -> Result<Target, Error> {
        let (user, host_part, port) = match split_user_host_port(host) {
            Some(parts) => parts,
            None => return Err(Error::BadJump { spec: host.into() }),
        };
        let oc = openssh_config::lookup(&self.config_files, host_part, &self.env.home)?;
        let port = port
            .or(self.port.filter(|_| fleet))
            .or(oc.port)
            .unwrap_or(22);
        let user = user
            .or_else(|| self.user.clone())
            .or(oc.user.clone())
            .unwrap_or_else(|| "root".into());
        let hostname = match &oc.hostname {
            Some(h) => expand_tokens(h, host_part, port, &user, &self.env.home),
            None => host_part.to_owned(),
        };
        let mut identity_files: Vec<PathBuf> = self
            .keys
            .iter()
            .map(|k| expand_tilde(k, &self.env.home))
            .collect();
        identity_files.extend(oc.identity_files.iter().map(|f| {
            expand_tilde(
                &expand_tokens(f, host_part, port, &user, &self.env.home),
                &self.env.home,
            )
        }));
        let via = if !fleet {
            Via::Direct
        } else if let Some(cmd) = &self.proxy_command {
            Via::Command(expand_tokens(cmd, &hostname, port, &user, &self.env.home))
        } else if let Some(jump) = &self.proxy {
            Via::Jump(jump.clone())
        } else if let Some(cmd) = oc.proxy_command.as_deref().filter(|c| *c != "none") {
            Via::Command(expand_tokens(cmd, &hostname, port, &user, &self.env.home))
        } else if let Some(jump) = oc.proxy_jump.as_deref().filter(|j| *j != "none") {
            Via::Jump(jump.to_owned())
        } else {
            Via::Direct
        };
        let user_known_hosts: Vec<PathBuf> = match &oc.user_known_hosts_files {
            Some(files) => files
                .iter()
                .map(|f| {
                    expand_tilde(
                        &expand_tokens(f, host_part, port, &user, &self.env.home),
                        &self.env.home,
                    )
                })
                .collect(),
            None => vec![
                self.env.home.join(".ssh/known_hosts"),
                self.env.home.join(".ssh/known_hosts2"),
            ],
        };
        if let Some(s) = &oc.strict_host_key_checking
            && !matches!(s.to_ascii_lowercase().as_str(), "yes" | "ask")
        {
            tracing::warn!(
                host,
                setting = %s,
                "StrictHostKeyChecking {s} is ignored: flotilla never trusts an unknown or changed host key"
            );
        }
        Ok(Target {
            name: host.to_owned(),
            hostname,
            port,
            user,
            identity_files,
            default_identities: !self.keys_only || self.keys.is_empty(),
            use_agent: !self.keys_only,
            via,
            user_known_hosts,
        })
    }
}

/// One host resolved: what to dial, as whom, with which keys, through what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The host as deploy.yml names it (the pool's key).
    pub name: String,
    /// The address to dial (`HostName`, or the name itself); known_hosts is checked for it.
    pub hostname: String,
    pub port: u16,
    pub user: String,
    /// `ssh.keys` then the config's `IdentityFile`s, in that order.
    pub identity_files: Vec<PathBuf>,
    /// Whether `~/.ssh/id_ed25519`, `id_ecdsa` and `id_rsa` are tried after the others.
    pub default_identities: bool,
    pub use_agent: bool,
    pub via: Via,
    /// `UserKnownHostsFile` (default `~/.ssh/known_hosts`, `~/.ssh/known_hosts2`); the first
    /// is where accept commands append.
    pub user_known_hosts: Vec<PathBuf>,
}

/// How the TCP stream to the target is made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Via {
    Direct,
    /// Through a jump host (`[user@]host[:port]`, OpenSSH's `ProxyJump`; a comma-separated
    /// chain is followed left to right).
    Jump(String),
    /// A shell command whose stdin and stdout carry the connection, tokens already expanded.
    Command(String),
}

/// `[user@]host[:port]` (an IPv6 host in brackets: `[::1]:22`).
pub(crate) fn split_user_host_port(spec: &str) -> Option<(Option<String>, &str, Option<u16>)> {
    let (user, rest) = match spec.rsplit_once('@') {
        Some((u, r)) if !u.is_empty() => (Some(u.to_owned()), r),
        Some(_) => return None,
        None => (None, spec),
    };
    let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
        let (h, after) = inner.split_once(']')?;
        match after.strip_prefix(':') {
            Some(p) => (h, Some(p.parse().ok()?)),
            None if after.is_empty() => (h, None),
            None => return None,
        }
    } else {
        match rest.split_once(':') {
            Some((h, p)) if !p.contains(':') => (h, Some(p.parse().ok()?)),
            // A bare IPv6 address has several colons and no port.
            Some(_) => (rest, None),
            None => (rest, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    Some((user, host, port))
}

/// OpenSSH's `%h`, `%p`, `%r`, `%d` and `%%` tokens.
pub(crate) fn expand_tokens(s: &str, host: &str, port: u16, user: &str, home: &Path) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('h') => out.push_str(host),
            Some('p') => out.push_str(&port.to_string()),
            Some('r') => out.push_str(user),
            Some('d') => out.push_str(&home.display().to_string()),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(home: &Path) -> Env {
        Env {
            home: home.to_owned(),
            auth_sock: None,
            system_config: home.join("no-system-config"),
            global_known_hosts: home.join("no-global-known-hosts"),
        }
    }

    /// Kamal's `ssh:` section wins where it sets something; the OpenSSH config fills the rest
    /// (HostName, User, Port, IdentityFile, ProxyJump, UserKnownHostsFile).
    #[test]
    fn kamal_section_wins_over_openssh_config() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(".ssh")).unwrap();
        std::fs::write(
            dir.path().join(".ssh/config"),
            "Host web*\n  HostName %h.internal\n  User deploy\n  Port 2200\n  \
             IdentityFile ~/.ssh/web_%r\n  ProxyJump bastion\n  UserKnownHostsFile ~/kh\n",
        )
        .unwrap();
        let defaults = Settings::from_kamal(&Ssh::default(), &Sshkit::default(), env(dir.path()));
        let t = defaults.target("web1").unwrap();
        assert_eq!(t.hostname, "web1.internal");
        assert_eq!((t.user.as_str(), t.port), ("deploy", 2200));
        assert_eq!(t.identity_files, [dir.path().join(".ssh/web_deploy")]);
        assert_eq!(t.via, Via::Jump("bastion".into()));
        assert_eq!(t.user_known_hosts, [dir.path().join("kh")]);

        let ssh = Ssh {
            user: "app".into(),
            port: 2022,
            proxy_command: Some("nc -x proxy %h %p".into()),
            keys: vec!["~/k1".into()],
            keys_only: Some(true),
            ..Ssh::default()
        };
        let kamal = Settings::from_kamal(&ssh, &Sshkit::default(), env(dir.path()));
        let t = kamal.target("web1").unwrap();
        assert_eq!((t.user.as_str(), t.port), ("app", 2022));
        assert_eq!(t.via, Via::Command("nc -x proxy web1.internal 2022".into()));
        assert_eq!(t.identity_files[0], dir.path().join("k1"));
        assert!(!t.use_agent && !t.default_identities);
    }

    /// `config: false` reads no OpenSSH config; defaults are root on port 22, direct.
    #[test]
    fn config_false_ignores_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(".ssh")).unwrap();
        std::fs::write(dir.path().join(".ssh/config"), "Host *\n  User nobody\n").unwrap();
        let ssh = Ssh {
            config: Some(SshConfig::Use(false)),
            ..Ssh::default()
        };
        let t = Settings::from_kamal(&ssh, &Sshkit::default(), env(dir.path()))
            .target("10.0.0.1")
            .unwrap();
        assert_eq!((t.user.as_str(), t.port), ("root", 22));
        assert_eq!(t.via, Via::Direct);
        assert!(t.use_agent && t.default_identities);
    }

    #[test]
    fn user_host_port_specs() {
        assert_eq!(
            split_user_host_port("me@jump:2222"),
            Some((Some("me".into()), "jump", Some(2222)))
        );
        assert_eq!(split_user_host_port("jump"), Some((None, "jump", None)));
        assert_eq!(
            split_user_host_port("[::1]:22"),
            Some((None, "::1", Some(22)))
        );
        assert_eq!(
            split_user_host_port("fe80::1"),
            Some((None, "fe80::1", None))
        );
        assert_eq!(split_user_host_port("jump:http"), None);
        assert_eq!(split_user_host_port("@jump"), None);
    }
}
