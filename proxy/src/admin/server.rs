//! Serves admin requests on the unix socket, one JSON line in, one JSON line out.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use super::protocol::{ErrorKind, Reply, Request};
use crate::control::Control;

/// Longest admin request line accepted; anything longer is refused, not buffered.
const MAX_LINE: usize = 1 << 20;

/// Binding the admin socket failed.
#[derive(Debug, thiserror::Error)]
#[error("admin socket {path}: {source}")]
pub struct BindError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Binds the socket (replacing a stale one), restricted to the owner from the start: it is
/// bound inside a fresh 0700 directory, set to 0600, then renamed into place, so there is no
/// moment when another user could connect.
pub fn bind(path: &Path) -> Result<UnixListener, BindError> {
    use std::os::unix::fs::DirBuilderExt;
    let err = |source| BindError {
        path: path.to_owned(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(err)?;
    let private = dir.join(format!(".flotilla-proxy-admin-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&private);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .map_err(err)?;
    let staged = private.join("admin.sock");
    let bound = (|| {
        let listener = UnixListener::bind(&staged)?;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&staged, path)?;
        Ok(listener)
    })();
    let _ = std::fs::remove_dir_all(&private);
    bound.map_err(err)
}

/// Accepts admin connections until `stop` is cancelled.
pub async fn serve(listener: UnixListener, control: Arc<Control>, stop: CancellationToken) {
    loop {
        let stream = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let control = Arc::clone(&control);
        tokio::spawn(async move {
            if let Err(e) = connection(stream, &control).await {
                tracing::debug!(error = %e, "admin connection ended");
            }
        });
    }
}

async fn connection(stream: UnixStream, control: &Control) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 {
            return Ok(());
        }
        let too_long = line.len() > MAX_LINE;
        let reply = if too_long {
            bad_request(format!("request longer than {MAX_LINE} bytes"))
        } else {
            match serde_json::from_slice::<Request>(&line) {
                Ok(request) => control.apply(request).await,
                Err(e) => bad_request(format!("malformed request: {e}")),
            }
        };
        let mut out = serde_json::to_vec(&reply).unwrap_or_else(|_| b"{}".to_vec());
        out.push(b'\n');
        write.write_all(&out).await?;
        if too_long {
            return Ok(());
        }
    }
}

fn bad_request(message: String) -> Reply {
    Reply::Error {
        kind: ErrorKind::BadRequest,
        message,
    }
}
