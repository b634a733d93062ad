//! One SSH connection: the stream (TCP, a jump host's direct-tcpip channel, or a proxy
//! command's stdin/stdout), the handshake with the host key checked against known_hosts, and
//! public-key authentication (inline keys, key files, the agent, default key files).

use std::pin::Pin;
use std::sync::{Arc, Mutex};

use russh::client::{self, Handle};
use russh::keys::agent::AgentIdentity;
use russh::keys::agent::client::AgentClient;
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::process::Command;

use crate::known_hosts::{KnownHosts, fingerprint};
use crate::settings::{Settings, Target, Via};
use crate::{Error, HostKeyError};

/// The key files OpenSSH tries when none is configured, in its order (DSA is gone).
const DEFAULT_IDENTITIES: [&str; 3] = [".ssh/id_ed25519", ".ssh/id_ecdsa", ".ssh/id_rsa"];

/// What a finished handshake hands back besides the handle.
pub(crate) struct Connected {
    pub handle: Handle<Client>,
    pub fingerprint: String,
}

/// The russh client handler: it only judges the host key.
pub(crate) struct Client {
    known: KnownHosts,
    /// The fingerprint of the key that was accepted, for the caller to record.
    accepted: Arc<Mutex<Option<String>>>,
}

/// The handler's error: russh's own, or our verdict on the host key (kept typed so it
/// reaches the caller as [`HostKeyError`], not as a generic handshake failure).
#[derive(Debug)]
pub(crate) enum HandshakeError {
    Ssh(russh::Error),
    HostKey(HostKeyError),
    Certificate,
}

impl From<russh::Error> for HandshakeError {
    fn from(e: russh::Error) -> Self {
        HandshakeError::Ssh(e)
    }
}

impl client::Handler for Client {
    type Error = HandshakeError;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => {
                self.known.check(key).map_err(HandshakeError::HostKey)?;
                if let Ok(mut slot) = self.accepted.lock() {
                    *slot = Some(fingerprint(key));
                }
                Ok(true)
            }
            // Certificates are never requested (`host_key_certificates` stays empty), so a
            // server sending one is refused rather than half-checked.
            PublicKeyOrCertificate::Certificate(_) => Err(HandshakeError::Certificate),
        }
    }
}

/// Opens the stream a target's session runs over: through `jump` (the pool supplies the jump
/// host's pooled session), a proxy command, or TCP.
pub(crate) async fn open_stream(
    settings: &Settings,
    target: &Target,
    jump: Option<crate::Session>,
) -> Result<Box<dyn StreamBox>, Error> {
    match (&target.via, jump) {
        (_, Some(jump)) => {
            let ch = jump.open_tcp(&target.hostname, target.port).await?;
            Ok(Box::new(ch))
        }
        (Via::Command(cmd), None) => {
            let mut child = Command::new("/bin/sh")
                .arg("-c")
                .arg(cmd)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .map_err(|source| Error::ProxyCommand {
                    command: cmd.clone(),
                    source,
                })?;
            let (Some(stdout), Some(stdin)) = (child.stdout.take(), child.stdin.take()) else {
                return Err(Error::ProxyCommand {
                    command: cmd.clone(),
                    source: std::io::Error::other("no stdin/stdout pipe"),
                });
            };
            Ok(Box::new(CommandStream {
                io: tokio::io::join(stdout, stdin),
                _child: child,
            }))
        }
        _ => {
            let addr = (target.hostname.as_str(), target.port);
            let tcp = tokio::time::timeout(
                settings.connect_timeout,
                tokio::net::TcpStream::connect(addr),
            )
            .await
            .map_err(|_| Error::ConnectTimeout {
                host: target.hostname.clone(),
                port: target.port,
                after: settings.connect_timeout,
            })?
            .map_err(|source| Error::Connect {
                host: target.hostname.clone(),
                port: target.port,
                source,
            })?;
            // SSH sends many small packets (channel requests, keystrokes): no Nagle delay.
            let _ = tcp.set_nodelay(true);
            Ok(Box::new(tcp))
        }
    }
}

/// An object-safe stream so the three kinds share one session type.
pub(crate) trait StreamBox: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> StreamBox for T {}

/// A proxy command's pipes; the child is killed when the connection drops.
struct CommandStream {
    io: tokio::io::Join<tokio::process::ChildStdout, tokio::process::ChildStdin>,
    _child: tokio::process::Child,
}

impl AsyncRead for CommandStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for CommandStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Handshake and authentication over `stream`.
pub(crate) async fn handshake(
    settings: &Settings,
    target: &Target,
    stream: Box<dyn StreamBox>,
) -> Result<Connected, Error> {
    let direct = matches!(target.via, Via::Direct);
    let user_file = target
        .user_known_hosts
        .first()
        .cloned()
        .unwrap_or_else(|| settings.env.home.join(".ssh/known_hosts"));
    let mut files = target.user_known_hosts.clone();
    files.push(settings.env.global_known_hosts.clone());
    let known = KnownHosts::load(&files, &target.hostname, target.port, &user_file, direct)?;

    let mut config = client::Config {
        keepalive_interval: Some(settings.keepalive_interval),
        ..Default::default()
    };
    // Offer the algorithms known_hosts already holds for this host first, as OpenSSH does.
    let known_algs = known.known_algorithms();
    if !known_algs.is_empty() {
        let mut keys = known_algs;
        for a in config.preferred.key.iter() {
            if !keys.contains(a) {
                keys.push(a.clone());
            }
        }
        config.preferred.key = keys.into();
    }
    let accepted = Arc::new(Mutex::new(None));
    let handler = Client {
        known,
        accepted: accepted.clone(),
    };
    let host = target.name.clone();
    let mut handle = client::connect_stream(Arc::new(config), stream, handler)
        .await
        .map_err(|e| match e {
            HandshakeError::HostKey(k) => Error::HostKey(k),
            HandshakeError::Certificate => Error::HostCertificate { host: host.clone() },
            HandshakeError::Ssh(source) => Error::Handshake {
                host: host.clone(),
                source: Box::new(source),
            },
        })?;
    let fingerprint = accepted
        .lock()
        .ok()
        .and_then(|s| s.clone())
        .unwrap_or_default();
    authenticate(settings, target, &mut handle).await?;
    Ok(Connected {
        handle,
        fingerprint,
    })
}

async fn authenticate(
    settings: &Settings,
    target: &Target,
    handle: &mut Handle<Client>,
) -> Result<(), Error> {
    let user = &target.user;
    let host = &target.name;
    let ssh_err = |source| Error::Handshake {
        host: host.clone(),
        source: Box::new(source),
    };
    let mut tried: Vec<String> = Vec::new();

    for (index, data) in settings.key_data.iter().enumerate() {
        let key = russh::keys::decode_secret_key(data.expose(), None).map_err(|source| {
            Error::KeyData {
                index,
                source: Box::new(source),
            }
        })?;
        tried.push(format!("key_data[{index}]"));
        if try_key(handle, user, key).await.map_err(ssh_err)? {
            return Ok(());
        }
    }
    for path in &target.identity_files {
        let key = match russh::keys::load_secret_key(path, None) {
            Ok(k) => k,
            // An encrypted key cannot be used without a passphrase prompt; the agent may
            // hold it, so go on and say so in the final error.
            Err(russh::keys::Error::KeyIsEncrypted) => {
                tried.push(format!("{} (encrypted, skipped)", path.display()));
                continue;
            }
            Err(source) => {
                return Err(Error::Key {
                    path: path.clone(),
                    source: Box::new(source),
                });
            }
        };
        tried.push(path.display().to_string());
        if try_key(handle, user, key).await.map_err(ssh_err)? {
            return Ok(());
        }
    }
    if target.use_agent
        && let Some(sock) = &settings.env.auth_sock
    {
        match AgentClient::connect_uds(sock).await {
            Ok(mut agent) => match agent.request_identities().await {
                Ok(ids) => {
                    for id in ids {
                        let AgentIdentity::PublicKey { key, comment } = id else {
                            continue;
                        };
                        tried.push(format!("agent key {comment}"));
                        let hash = rsa_hash(handle, &key.algorithm()).await.map_err(ssh_err)?;
                        match handle
                            .authenticate_publickey_with(user, key, hash, &mut agent)
                            .await
                        {
                            Ok(r) if r.success() => return Ok(()),
                            Ok(_) => {}
                            Err(e) => tracing::debug!(host, error = %e, "agent could not sign"),
                        }
                    }
                }
                Err(e) => tracing::debug!(host, error = %e, "ssh-agent lists no identities"),
            },
            Err(e) => {
                tracing::debug!(host, socket = %sock.display(), error = %e, "ssh-agent unreachable")
            }
        }
    }
    if target.default_identities {
        for rel in DEFAULT_IDENTITIES {
            let path = settings.env.home.join(rel);
            let key = match russh::keys::load_secret_key(&path, None) {
                Ok(k) => k,
                Err(e) => {
                    tracing::debug!(path = %path.display(), error = %e, "default key not used");
                    continue;
                }
            };
            tried.push(path.display().to_string());
            if try_key(handle, user, key).await.map_err(ssh_err)? {
                return Ok(());
            }
        }
    }
    Err(Error::AuthFailed {
        host: host.clone(),
        user: user.clone(),
        tried: if tried.is_empty() {
            "no keys: set ssh/keys or ssh/key_data, or start ssh-agent".into()
        } else {
            tried.join(", ")
        },
    })
}

async fn try_key(
    handle: &mut Handle<Client>,
    user: &str,
    key: PrivateKey,
) -> Result<bool, russh::Error> {
    let hash = rsa_hash(handle, &key.algorithm()).await?;
    let key = PrivateKeyWithHashAlg::new(Arc::new(key), hash);
    Ok(handle.authenticate_publickey(user, key).await?.success())
}

/// For RSA keys, the SHA-2 signature the server announced (`server-sig-algs`).
async fn rsa_hash(
    handle: &Handle<Client>,
    alg: &russh::keys::Algorithm,
) -> Result<Option<russh::keys::HashAlg>, russh::Error> {
    if !alg.clone().is_rsa() {
        return Ok(None);
    }
    Ok(handle.best_supported_rsa_hash().await?.flatten())
}
