//! SSH for Flotilla: the only code in the project that speaks SSH (russh 0.65, aws-lc-rs).
//!
//! ```text
//! Settings::from_kamal(&config.ssh, &config.sshkit, Env::from_process())
//!    -> Pool::new(settings)
//!    -> pool.session("web1").await? : Session (one pooled connection per host)
//!         .exec(cmd) / .exec_with_stdin(cmd, reader) / .check(cmd) -> Output {exit, stdout, stderr}
//!         .upload(reader, path, 0o600)                -> () (cat to a temp file, chmod, mv)
//!         .exec_pty(cmd, &Pty) -> Interactive          (send, resize, eof, next -> Event)
//!         .open_tcp(host, port) / .open_unix(path) -> Tunnel (AsyncRead + AsyncWrite)
//!         .forward_tcp(host, port) / .forward_unix(path) -> Forward (127.0.0.1:PORT, ssh -L)
//!         .host_key_fingerprint() -> "SHA256:..."     (what enrolment records)
//! ```
//!
//! Layout: `settings` (Kamal's `ssh:`/`sshkit:` plus the environment, resolved per host into
//! a `Target`), `openssh_config` (the subset of `ssh_config(5)` that matters), `known_hosts`
//! (host key verdicts), `connect` (stream, handshake, authentication), `pool`, `session`
//! (operations on one connection), `error`.
//!
//! Key decisions:
//! - No silent trust, ever: a host key must be in known_hosts (`UserKnownHostsFile`, default
//!   `~/.ssh/known_hosts`, then `/etc/ssh/ssh_known_hosts`). Unknown, changed and revoked keys
//!   stop the handshake with a [`HostKeyError`] carrying the host, the SHA256 fingerprint and
//!   the command that accepts the key. `StrictHostKeyChecking no`/`accept-new` are ignored
//!   with a warning. Nothing here ever writes known_hosts.
//! - Precedence: Kamal's `ssh:` section wins where it sets something; because Flotilla's
//!   config type cannot tell `user: root`/`port: 22` from Kamal's defaults, those two values
//!   count as unset and an OpenSSH `User`/`Port` for the host applies first.
//! - Keys are tried in this order: `ssh.key_data`, `ssh.keys`, the config's `IdentityFile`s,
//!   the agent (`SSH_AUTH_SOCK`), then `~/.ssh/id_ed25519`, `id_ecdsa`, `id_rsa`;
//!   `keys_only` drops the agent and (when keys are given) the default files. Encrypted key
//!   files are skipped (no passphrase prompt): load them into the agent.
//! - One connection per host: every command opens a channel on it, at most 10 at once
//!   (OpenSSH's default `MaxSessions`; more wait for a free one). At most
//!   `sshkit.max_concurrent_starts` handshakes run at once; a connection unused for
//!   `sshkit.pool_idle_timeout` is closed; a dead one is replaced on next use, and
//!   [`Pool::exec`] retries once when the connection died before the command started.
//! - No sftp: uploads stream into `cat` (needs only a POSIX shell on the host).
#![forbid(unsafe_code)]

mod connect;
mod error;
pub mod known_hosts;
pub mod openssh_config;
mod pool;
mod session;
pub mod settings;

pub use error::{Error, HostKeyError};
pub use pool::{Pool, PoolStats};
pub use session::{Event, Exit, Forward, Interactive, Output, Pty, Session, Tunnel, shell_quote};
pub use settings::{Env, Settings, Target, Via};
