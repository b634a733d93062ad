//! The crate's errors: what failed, on which host, and for host keys what to do about it.

use std::path::PathBuf;
use std::time::Duration;

/// A host key that is not trusted. Each variant carries the host as known_hosts names it, the
/// key's SHA256 fingerprint in OpenSSH's format (`SHA256:...`) and the exact command that
/// accepts it, so the caller can print them and stop.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostKeyError {
    #[error(
        "host key of {host} is not known: the server offers {algorithm} {fingerprint}; \
         if the server's owner confirms this fingerprint, accept it with: {accept}"
    )]
    Unknown {
        host: String,
        algorithm: String,
        fingerprint: String,
        accept: String,
    },
    #[error(
        "host key of {host} changed: {known_at} holds a different {algorithm} key, the server \
         offers {fingerprint}; this may be an attack. If the change is expected, replace the \
         old key with: {accept}"
    )]
    Changed {
        host: String,
        algorithm: String,
        fingerprint: String,
        /// `FILE:LINE` of each known key of the same algorithm.
        known_at: String,
        accept: String,
    },
    #[error("host key of {host} ({fingerprint}) is marked @revoked at {revoked_at}")]
    Revoked {
        host: String,
        fingerprint: String,
        revoked_at: String,
    },
}

impl HostKeyError {
    /// The host key's fingerprint as OpenSSH prints it (`SHA256:...`).
    pub fn fingerprint(&self) -> &str {
        match self {
            HostKeyError::Unknown { fingerprint, .. }
            | HostKeyError::Changed { fingerprint, .. }
            | HostKeyError::Revoked { fingerprint, .. } => fingerprint,
        }
    }

    /// The shell command that makes this key trusted, when one exists (not for a revoked key).
    pub fn accept_command(&self) -> Option<&str> {
        match self {
            HostKeyError::Unknown { accept, .. } | HostKeyError::Changed { accept, .. } => {
                Some(accept)
            }
            HostKeyError::Revoked { .. } => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    HostKey(#[from] HostKeyError),
    #[error("{host}: the server presented a host certificate; flotilla checks plain host keys")]
    HostCertificate { host: String },
    #[error("connect to {host}:{port}")]
    Connect {
        host: String,
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("connect to {host}:{port} timed out after {after:?}")]
    ConnectTimeout {
        host: String,
        port: u16,
        after: Duration,
    },
    #[error("ssh handshake with {host} did not finish within {after:?}")]
    HandshakeTimeout { host: String, after: Duration },
    #[error("ssh handshake with {host}")]
    Handshake {
        host: String,
        #[source]
        source: Box<russh::Error>,
    },
    #[error("{user}@{host}: permission denied, no key was accepted (tried: {tried})")]
    AuthFailed {
        host: String,
        user: String,
        tried: String,
    },
    #[error("read private key {path}")]
    Key {
        path: PathBuf,
        #[source]
        source: Box<russh::keys::Error>,
    },
    #[error("decode ssh/key_data entry {index}")]
    KeyData {
        index: usize,
        #[source]
        source: Box<russh::keys::Error>,
    },
    #[error("start proxy command `{command}`")]
    ProxyCommand {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("proxy host `{spec}` is not [user@]host[:port]")]
    BadJump { spec: String },
    #[error("read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Config {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{host}: ssh channel")]
    Channel {
        host: String,
        #[source]
        source: Box<russh::Error>,
    },
    #[error("{host}: the connection closed before `{command}` reported an exit status")]
    NoExitStatus { host: String, command: String },
    #[error("{host}: read the input for `{command}`")]
    Stdin {
        host: String,
        command: String,
        #[source]
        source: Box<russh::Error>,
    },
    #[error("{host}: `{command}` failed with {exit}: {stderr}")]
    Remote {
        host: String,
        command: String,
        exit: crate::Exit,
        stderr: String,
    },
    #[error("bind a local port for a forward to {to}")]
    Bind {
        to: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// True when the connection itself is gone (the pool reconnects and retries once).
    pub(crate) fn is_dead_connection(&self) -> bool {
        match self {
            Error::Channel { source, .. } => matches!(
                **source,
                russh::Error::SendError
                    | russh::Error::Disconnect
                    | russh::Error::HUP
                    | russh::Error::ConnectionTimeout
                    | russh::Error::KeepaliveTimeout
                    | russh::Error::InactivityTimeout
            ),
            _ => false,
        }
    }
}
