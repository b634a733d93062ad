//! Handing the listening sockets to a successor, so replacing the proxy resets no queued
//! connection.
//!
//! With `--listeners-socket PATH`, a starting proxy first asks whoever serves PATH for its
//! listening sockets (`SCM_RIGHTS` over a unix socket) and serves those same sockets instead
//! of binding new ones; then it serves PATH itself (bound like the admin socket: mode 0600,
//! renamed into place). The old proxy, stopped afterwards, only closes its own descriptors:
//! the sockets, and every connection queued on them, live on in the new process. Without
//! this, a SO_REUSEPORT listener closing resets the connections in its accept queue.
//! Nobody answering PATH (first start, or an older proxy) just means binding as usual.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::net::TcpListener;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::Duration;
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;

/// Listening sockets of one proxy, as its workers use them (one per worker per port).
#[derive(Debug)]
pub struct Listeners {
    pub http: Vec<TcpListener>,
    pub https: Vec<TcpListener>,
}

/// Most sockets one message carries: two ports times the most worker threads a host has.
const MAX_FDS: usize = 512;
/// How long a taker waits for the old proxy's answer: it answers at once, from memory.
const TAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Takes the listening sockets from the proxy serving `path`; `None` when nobody answers.
pub fn take(path: &Path) -> std::io::Result<Option<Listeners>> {
    let stream = match std::os::unix::net::UnixStream::connect(path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    stream.set_read_timeout(Some(TAKE_TIMEOUT))?;
    let mut header = [0u8; 4];
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = rustix::net::RecvAncillaryBuffer::new(&mut space);
    let received = rustix::net::recvmsg(
        &stream,
        &mut [IoSliceMut::new(&mut header)],
        &mut control,
        rustix::net::RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds: Vec<OwnedFd> = Vec::new();
    for message in control.drain() {
        if let rustix::net::RecvAncillaryMessage::ScmRights(rights) = message {
            fds.extend(rights);
        }
    }
    let n_http = usize::from(u16::from_le_bytes([header[0], header[1]]));
    let n_https = usize::from(u16::from_le_bytes([header[2], header[3]]));
    if received.bytes != header.len() || fds.len() != n_http + n_https || n_http == 0 {
        return Err(std::io::Error::other(format!(
            "{}: expected {n_http}+{n_https} listening sockets, got {}",
            path.display(),
            fds.len()
        )));
    }
    let mut listeners = fds.into_iter().map(TcpListener::from);
    let http: Vec<TcpListener> = listeners.by_ref().take(n_http).collect();
    let https: Vec<TcpListener> = listeners.collect();
    for l in http.iter().chain(&https) {
        l.set_nonblocking(true)?;
    }
    Ok(Some(Listeners { http, https }))
}

/// Serves `listeners` (duplicates of the workers' sockets) to any successor that asks on
/// `listener`, until `stop`.
pub async fn offer(listener: UnixListener, listeners: Listeners, stop: CancellationToken) {
    loop {
        let stream = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "listeners socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        match send(&stream, &listeners) {
            Ok(()) => tracing::info!("listening sockets handed to a new proxy"),
            Err(e) => tracing::warn!(error = %e, "listeners socket: hand-over failed"),
        }
    }
}

fn send(stream: &impl AsFd, listeners: &Listeners) -> std::io::Result<()> {
    let fds: Vec<_> = listeners
        .http
        .iter()
        .chain(&listeners.https)
        .map(AsFd::as_fd)
        .collect();
    let count = |n: usize| u16::try_from(n).unwrap_or(u16::MAX).to_le_bytes();
    let (h, s) = (count(listeners.http.len()), count(listeners.https.len()));
    let header = [h[0], h[1], s[0], s[1]];
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    let mut control = rustix::net::SendAncillaryBuffer::new(&mut space);
    if !control.push(rustix::net::SendAncillaryMessage::ScmRights(&fds)) {
        return Err(std::io::Error::other("too many sockets for one message"));
    }
    rustix::net::sendmsg(
        stream,
        &[IoSlice::new(&header)],
        &mut control,
        rustix::net::SendFlags::empty(),
    )?;
    Ok(())
}

/// Duplicates of `listeners` (same sockets, new descriptors) to offer to a successor.
pub fn duplicate(http: &[TcpListener], https: &[TcpListener]) -> std::io::Result<Listeners> {
    Ok(Listeners {
        http: http
            .iter()
            .map(TcpListener::try_clone)
            .collect::<Result<_, _>>()?,
        https: https
            .iter()
            .map(TcpListener::try_clone)
            .collect::<Result<_, _>>()?,
    })
}
