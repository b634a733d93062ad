//! The typed admin client: what the executor and `flotilla proxy ...` call.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::protocol::{DeployRequest, Deployed, ErrorKind, Reply, Request, ServiceStatus};

/// Talking to the proxy failed, or the proxy refused the operation.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("connect to proxy admin socket {path}")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("proxy admin socket {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unexpected reply from proxy: {0}")]
    Protocol(String),
    /// The proxy answered with an error; `kind` says which.
    #[error("{message}")]
    Refused { kind: ErrorKind, message: String },
}

/// A client of one proxy's admin socket; each call opens its own connection.
#[derive(Debug, Clone)]
pub struct Client {
    path: PathBuf,
}

impl Client {
    pub fn new(path: impl AsRef<Path>) -> Self {
        Self {
            path: path.as_ref().to_owned(),
        }
    }

    /// Sends one request and returns the proxy's reply, error replies included.
    pub async fn request(&self, request: &Request) -> Result<Reply, AdminError> {
        let stream =
            UnixStream::connect(&self.path)
                .await
                .map_err(|source| AdminError::Connect {
                    path: self.path.clone(),
                    source,
                })?;
        let io = |source| AdminError::Io {
            path: self.path.clone(),
            source,
        };
        let (read, mut write) = stream.into_split();
        let mut line =
            serde_json::to_vec(request).map_err(|e| AdminError::Protocol(e.to_string()))?;
        line.push(b'\n');
        write.write_all(&line).await.map_err(io)?;
        let mut answer = String::new();
        BufReader::new(read)
            .read_line(&mut answer)
            .await
            .map_err(io)?;
        if answer.is_empty() {
            return Err(AdminError::Protocol(
                "connection closed without a reply".into(),
            ));
        }
        serde_json::from_str(&answer)
            .map_err(|e| AdminError::Protocol(format!("{e}: {}", answer.trim())))
    }

    async fn expect(&self, request: &Request) -> Result<Reply, AdminError> {
        match self.request(request).await? {
            Reply::Error { kind, message } => Err(AdminError::Refused { kind, message }),
            reply => Ok(reply),
        }
    }

    /// Health-gated switch of a service to a new target; returns after the old one drained.
    pub async fn deploy(&self, request: DeployRequest) -> Result<Deployed, AdminError> {
        match self.expect(&Request::Deploy(request)).await? {
            Reply::Deployed(d) => Ok(d),
            other => Err(unexpected(other)),
        }
    }

    pub async fn remove(&self, service: &str, drain_timeout_ms: u64) -> Result<(), AdminError> {
        let request = Request::Remove {
            service: service.to_owned(),
            drain_timeout_ms,
        };
        self.expect(&request).await.map(drop)
    }

    pub async fn list(&self) -> Result<Vec<ServiceStatus>, AdminError> {
        match self.expect(&Request::List).await? {
            Reply::Services { services } => Ok(services),
            other => Err(unexpected(other)),
        }
    }

    pub async fn maintenance(
        &self,
        service: &str,
        message: Option<String>,
    ) -> Result<(), AdminError> {
        let request = Request::Maintenance {
            service: service.to_owned(),
            message,
        };
        self.expect(&request).await.map(drop)
    }

    pub async fn live(&self, service: &str) -> Result<(), AdminError> {
        self.expect(&Request::Live {
            service: service.to_owned(),
        })
        .await
        .map(drop)
    }

    pub async fn pause(&self, service: &str, timeout_ms: u64) -> Result<(), AdminError> {
        let request = Request::Pause {
            service: service.to_owned(),
            timeout_ms,
        };
        self.expect(&request).await.map(drop)
    }

    pub async fn resume(&self, service: &str) -> Result<(), AdminError> {
        self.expect(&Request::Resume {
            service: service.to_owned(),
        })
        .await
        .map(drop)
    }
}

fn unexpected(reply: Reply) -> AdminError {
    AdminError::Protocol(format!("{reply:?}"))
}
