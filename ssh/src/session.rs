//! What runs over a connection: commands (with optional streamed stdin), interactive commands
//! on a PTY, direct-tcpip and direct-streamlocal tunnels, local port forwards, and uploads.

use std::fmt;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use russh::client::{Handle, Msg};
use russh::{ChannelMsg, ChannelReadHalf, ChannelStream, ChannelWriteHalf};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::Error;
use crate::connect::Client;

/// After a failed `accept` (out of file descriptors, say) the forward waits this long before
/// accepting again, instead of spinning on the error.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Session channels (commands) open at once on one connection. OpenSSH's `MaxSessions`
/// defaults to 10 and refuses the 11th; more commands for one host wait for a free channel
/// instead of failing.
pub(crate) const MAX_SESSIONS_PER_CONNECTION: usize = 10;

/// sshd frees a finished session's slot only after it has processed our close, and may read
/// our next channel open in the same batch, so a channel opened right after another closed
/// can be refused although the count is within `MaxSessions`. Such an open (the command has
/// not started) is retried this many times, waiting `SESSION_RETRY_BACKOFF` times the
/// attempt number in between.
const SESSION_OPEN_ATTEMPTS: u32 = 5;
const SESSION_RETRY_BACKOFF: Duration = Duration::from_millis(20);

/// One authenticated connection. Owned by the pool; [`Session`]s share it.
pub(crate) struct Connection {
    pub(crate) handle: Handle<Client>,
    pub(crate) host: String,
    pub(crate) fingerprint: String,
    /// When the last session handle was dropped: the idle clock of the pool.
    pub(crate) last_used: std::sync::Mutex<Instant>,
    /// One permit per session channel (see [`MAX_SESSIONS_PER_CONNECTION`]); tunnels are
    /// not sessions and do not count.
    pub(crate) sessions: Arc<Semaphore>,
    /// The jump host's connection, kept open while this one lives.
    pub(crate) _jump: Option<Session>,
}

/// A handle on one host's pooled connection. Cheap to clone; every command, tunnel and
/// forward opens its own channel on the same connection. The connection stays open while a
/// `Session` (or a tunnel or forward made from it) exists.
#[derive(Clone)]
pub struct Session {
    pub(crate) conn: Arc<Connection>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("host", &self.conn.host)
            .field("fingerprint", &self.conn.fingerprint)
            .finish()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Ok(mut t) = self.conn.last_used.lock() {
            *t = Instant::now();
        }
    }
}

/// How a remote command ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    Status(u32),
    /// Killed by a signal (OpenSSH's name without `SIG`, e.g. `KILL`).
    Signal(String),
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Status(s) => write!(f, "exit status {s}"),
            Exit::Signal(s) => write!(f, "signal {s}"),
        }
    }
}

/// A finished command's exit and output.
#[derive(Clone, Debug)]
pub struct Output {
    pub exit: Exit,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub fn success(&self) -> bool {
        self.exit == Exit::Status(0)
    }
}

/// The terminal an interactive command gets.
#[derive(Clone, Debug)]
pub struct Pty {
    /// `TERM`, e.g. `xterm-256color`.
    pub term: String,
    pub cols: u32,
    pub rows: u32,
}

impl Session {
    /// The host as deploy.yml names it.
    pub fn host(&self) -> &str {
        &self.conn.host
    }

    /// The SHA256 fingerprint (`SHA256:...`) of the host key this connection accepted.
    pub fn host_key_fingerprint(&self) -> &str {
        &self.conn.fingerprint
    }

    /// The semaphore is never closed, so this always holds a permit.
    async fn session_permit(&self) -> Option<OwnedSemaphorePermit> {
        self.conn.sessions.clone().acquire_owned().await.ok()
    }

    async fn open_session(&self) -> Result<russh::Channel<Msg>, Error> {
        let mut attempt = 1;
        loop {
            match self.conn.handle.channel_open_session().await {
                Err(russh::Error::ChannelOpenFailure(
                    russh::ChannelOpenFailure::ConnectFailed
                    | russh::ChannelOpenFailure::AdministrativelyProhibited
                    | russh::ChannelOpenFailure::ResourceShortage,
                )) if attempt < SESSION_OPEN_ATTEMPTS => {
                    tracing::debug!(host = %self.conn.host, attempt, "session channel refused, retrying");
                    tokio::time::sleep(SESSION_RETRY_BACKOFF * attempt).await;
                    attempt += 1;
                }
                other => return other.map_err(self.channel_err()),
            }
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.conn.handle.is_closed()
    }

    fn channel_err(&self) -> impl Fn(russh::Error) -> Error + '_ {
        move |source| Error::Channel {
            host: self.conn.host.clone(),
            source: Box::new(source),
        }
    }

    /// Runs `command` (through the remote user's shell) with no input.
    pub async fn exec(&self, command: &str) -> Result<Output, Error> {
        self.run(command, None::<tokio::io::Empty>).await
    }

    /// Runs `command` with `stdin` streamed to it (flow-controlled, so a `docker load`
    /// archive of any size is never held in memory), then end-of-file.
    pub async fn exec_with_stdin<R>(&self, command: &str, stdin: R) -> Result<Output, Error>
    where
        R: AsyncRead + Unpin + Send,
    {
        self.run(command, Some(stdin)).await
    }

    async fn run<R>(&self, command: &str, stdin: Option<R>) -> Result<Output, Error>
    where
        R: AsyncRead + Unpin + Send,
    {
        let _permit = self.session_permit().await;
        let channel = self.open_session().await?;
        channel
            .exec(true, command)
            .await
            .map_err(self.channel_err())?;
        let (mut read, write) = channel.split();
        let mut writing = pin!(async {
            if let Some(r) = stdin {
                write.data(r).await?;
            }
            write.eof().await
        });
        let mut write_done = false;
        let mut stdin_err = None;
        let (mut stdout, mut stderr, mut exit) = (Vec::new(), Vec::new(), None);
        loop {
            tokio::select! {
                r = &mut writing, if !write_done => {
                    write_done = true;
                    if let Err(e) = r {
                        stdin_err = Some(e);
                    }
                }
                msg = read.wait() => match msg {
                    None | Some(ChannelMsg::Close) => break,
                    Some(ChannelMsg::Data { data }) => stdout.extend_from_slice(&data),
                    Some(ChannelMsg::ExtendedData { data, ext: 1 }) => {
                        stderr.extend_from_slice(&data)
                    }
                    Some(ChannelMsg::ExitStatus { exit_status }) => {
                        exit = Some(Exit::Status(exit_status))
                    }
                    Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                        exit = Some(Exit::Signal(signal_name_of(&signal_name)))
                    }
                    Some(ChannelMsg::Failure) if exit.is_none() => {
                        return Err(Error::Channel {
                            host: self.conn.host.clone(),
                            source: Box::new(russh::Error::RequestDenied),
                        });
                    }
                    Some(_) => {}
                }
            }
        }
        // Reading the local input failed: the command saw a truncated stream, whatever it
        // answered. A send error after the remote side closed is only the command not
        // reading all of its input, and its exit status says how that went.
        if let Some(e @ russh::Error::IO(_)) = stdin_err {
            return Err(Error::Stdin {
                host: self.conn.host.clone(),
                command: command.into(),
                source: Box::new(e),
            });
        }
        match exit {
            Some(exit) => Ok(Output {
                exit,
                stdout,
                stderr,
            }),
            None => Err(Error::NoExitStatus {
                host: self.conn.host.clone(),
                command: command.into(),
            }),
        }
    }

    /// Runs `command` and fails unless it exits 0 (the error carries its stderr).
    pub async fn check(&self, command: &str) -> Result<Output, Error> {
        let out = self.exec(command).await?;
        ensure_success(&self.conn.host, command, out)
    }

    /// Writes `content` to `path` with `mode` (e.g. `0o600`): streamed to `cat` into a
    /// temporary file beside it, then renamed, so readers never see a partial file.
    pub async fn upload<R>(&self, content: R, path: &str, mode: u32) -> Result<(), Error>
    where
        R: AsyncRead + Unpin + Send,
    {
        let tmp = format!("{path}.flotilla-upload");
        let command = format!(
            "umask 077 && cat > {t} && chmod {mode:o} {t} && mv -f {t} {p}",
            t = shell_quote(&tmp),
            p = shell_quote(path),
        );
        let out = self.exec_with_stdin(&command, content).await?;
        ensure_success(&self.conn.host, &command, out).map(|_| ())
    }

    /// Runs `command` on a PTY, for a user at a terminal (`app exec -i`).
    pub async fn exec_pty(&self, command: &str, pty: &Pty) -> Result<Interactive, Error> {
        let permit = self.session_permit().await;
        let channel = self.open_session().await?;
        channel
            .request_pty(true, &pty.term, pty.cols, pty.rows, 0, 0, &[])
            .await
            .map_err(self.channel_err())?;
        channel
            .exec(true, command)
            .await
            .map_err(self.channel_err())?;
        let (read, write) = channel.split();
        Ok(Interactive {
            read,
            write,
            session: self.clone(),
            _permit: permit,
        })
    }

    /// A direct-tcpip channel to `host:port` as seen from the remote host.
    pub async fn open_tcp(&self, host: &str, port: u16) -> Result<Tunnel, Error> {
        let ch = self
            .conn
            .handle
            .channel_open_direct_tcpip(host, u32::from(port), "127.0.0.1", 0)
            .await
            .map_err(self.channel_err())?;
        Ok(Tunnel {
            stream: ch.into_stream(),
            _session: self.clone(),
        })
    }

    /// A direct-streamlocal channel to the remote unix socket `path`
    /// (e.g. `/var/run/docker.sock`).
    pub async fn open_unix(&self, path: &str) -> Result<Tunnel, Error> {
        let ch = self
            .conn
            .handle
            .channel_open_direct_streamlocal(path)
            .await
            .map_err(self.channel_err())?;
        Ok(Tunnel {
            stream: ch.into_stream(),
            _session: self.clone(),
        })
    }

    /// Listens on `127.0.0.1:0` and carries every accepted connection to `host:port` on the
    /// remote side (`ssh -L`). Stops when the [`Forward`] is dropped.
    pub async fn forward_tcp(&self, host: &str, port: u16) -> Result<Forward, Error> {
        self.forward(Remote::Tcp(host.to_owned(), port)).await
    }

    /// As [`Session::forward_tcp`], to a remote unix socket.
    pub async fn forward_unix(&self, path: &str) -> Result<Forward, Error> {
        self.forward(Remote::Unix(path.to_owned())).await
    }

    async fn forward(&self, remote: Remote) -> Result<Forward, Error> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|source| Error::Bind {
                to: remote.to_string(),
                source,
            })?;
        let local = listener.local_addr().map_err(|source| Error::Bind {
            to: remote.to_string(),
            source,
        })?;
        let session = self.clone();
        let task = tokio::spawn(async move {
            loop {
                let (mut tcp, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "forward: accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                };
                let session = session.clone();
                let remote = remote.clone();
                tokio::spawn(async move {
                    let tunnel = match &remote {
                        Remote::Tcp(h, p) => session.open_tcp(h, *p).await,
                        Remote::Unix(path) => session.open_unix(path).await,
                    };
                    match tunnel {
                        Ok(mut t) => {
                            if let Err(e) = tokio::io::copy_bidirectional(&mut tcp, &mut t).await {
                                tracing::debug!(%peer, to = %remote, error = %e, "forward: connection ended");
                            }
                        }
                        Err(e) => {
                            tracing::warn!(%peer, to = %remote, error = %e, "forward: channel refused")
                        }
                    }
                });
            }
        });
        Ok(Forward { local, task })
    }
}

fn ensure_success(host: &str, command: &str, out: Output) -> Result<Output, Error> {
    if out.success() {
        return Ok(out);
    }
    Err(Error::Remote {
        host: host.to_owned(),
        command: command.to_owned(),
        exit: out.exit,
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    })
}

fn signal_name_of(sig: &russh::Sig) -> String {
    match sig {
        russh::Sig::Custom(s) => s.clone(),
        other => format!("{other:?}"),
    }
}

/// Single-quotes `s` for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[derive(Clone, Debug)]
enum Remote {
    Tcp(String, u16),
    Unix(String),
}

impl fmt::Display for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Remote::Tcp(h, p) => write!(f, "{h}:{p}"),
            Remote::Unix(p) => write!(f, "{p}"),
        }
    }
}

/// A local port forward; dropping it stops accepting (connections already carried end when
/// either side closes).
#[derive(Debug)]
pub struct Forward {
    local: SocketAddr,
    task: JoinHandle<()>,
}

impl Forward {
    /// The loopback address to connect to (`127.0.0.1:PORT`).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A byte stream to a remote TCP port or unix socket, over the connection's channel.
/// Shutting down the write side sends EOF to the remote end.
pub struct Tunnel {
    stream: ChannelStream<Msg>,
    _session: Session,
}

impl fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tunnel")
            .field("session", &self._session)
            .finish()
    }
}

impl AsyncRead for Tunnel {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tunnel {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// What an interactive command produced next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Terminal output (stdout and stderr are one stream on a PTY).
    Output(Vec<u8>),
    Exit(Exit),
}

/// A command running on a PTY: write keystrokes, resize, read output until it exits.
pub struct Interactive {
    read: ChannelReadHalf,
    write: ChannelWriteHalf<Msg>,
    session: Session,
    _permit: Option<OwnedSemaphorePermit>,
}

impl fmt::Debug for Interactive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Interactive")
            .field("session", &self.session)
            .finish()
    }
}

impl Interactive {
    /// Sends input (keystrokes) to the command.
    pub async fn send(&self, bytes: &[u8]) -> Result<(), Error> {
        self.write
            .data(bytes)
            .await
            .map_err(self.session.channel_err())
    }

    /// Tells the remote terminal its new size.
    pub async fn resize(&self, cols: u32, rows: u32) -> Result<(), Error> {
        self.write
            .window_change(cols, rows, 0, 0)
            .await
            .map_err(self.session.channel_err())
    }

    /// Ends the input.
    pub async fn eof(&self) -> Result<(), Error> {
        self.write.eof().await.map_err(self.session.channel_err())
    }

    /// The next output or the exit; `None` once the channel closed. On a PTY, output can
    /// still follow the exit (sshd drains the terminal after the command ended), so read
    /// until `None`.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            match self.read.wait().await? {
                ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, .. } => {
                    return Some(Event::Output(data.to_vec()));
                }
                ChannelMsg::ExitStatus { exit_status } => {
                    return Some(Event::Exit(Exit::Status(exit_status)));
                }
                ChannelMsg::ExitSignal { signal_name, .. } => {
                    return Some(Event::Exit(Exit::Signal(signal_name_of(&signal_name))));
                }
                ChannelMsg::Close => return None,
                _ => {}
            }
        }
    }
}
