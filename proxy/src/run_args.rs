//! The flags of `flotilla proxy run`, shared by the CLI and the standalone binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::acme::AcmeConfig;
use crate::server::ProxyConfig;

/// Let's Encrypt's production ACME directory, the default as with Kamal's proxy.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// Where the proxy listens and keeps its state.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Plain-HTTP listen port (on all addresses), or ADDR:PORT
    #[arg(long, default_value = "80", value_name = "PORT|ADDR:PORT")]
    pub http_port: String,
    /// HTTPS listen port (on all addresses), or ADDR:PORT; "off" disables HTTPS
    #[arg(long, default_value = "443", value_name = "PORT|ADDR:PORT")]
    pub https_port: String,
    /// The admin socket (mode 0600) that `flotilla proxy deploy` and the executor talk to
    #[arg(long, env = "FLOTILLA_PROXY_SOCKET", default_value = crate::DEFAULT_ADMIN_SOCKET)]
    pub admin_socket: PathBuf,
    /// Take the listening sockets over from the proxy serving this unix socket (replacing it
    /// then resets no queued connection), and serve this proxy's own there
    #[arg(long, value_name = "PATH")]
    pub listeners_socket: Option<PathBuf>,
    /// Routes are saved here after every change and restored at start
    #[arg(long, default_value = "/var/lib/flotilla/proxy/state.json")]
    pub state_file: PathBuf,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_listen: Option<SocketAddr>,
    /// Client connections served at once (split evenly across workers)
    #[arg(long, default_value_t = 10_000)]
    pub max_connections: usize,
    /// Connections one client address may hold open at once (default: no cap)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections_per_client: Option<u64>,
    /// Seconds a new client connection has to send its first request (TLS handshake included)
    #[arg(long, value_name = "SECONDS", default_value_t = crate::conns::FIRST_REQUEST_TIMEOUT.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..))]
    pub first_request_timeout: u64,
    /// Seconds a client connection may stay open with no request in progress
    #[arg(long, value_name = "SECONDS", default_value_t = crate::conns::IDLE_TIMEOUT.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout: u64,
    /// Data-plane worker threads (0: one per core)
    #[arg(long, default_value_t = 0)]
    pub workers: usize,
    /// Seconds in-flight requests may run after SIGTERM
    #[arg(long, default_value_t = 30)]
    pub grace_period: u64,
    /// ACME directory URL for automatic certificates; "off" disables ACME
    #[arg(long, value_name = "URL", default_value = LETS_ENCRYPT)]
    pub acme_directory: String,
    /// Contact e-mail given to the ACME server
    #[arg(long)]
    pub acme_email: Option<String>,
    /// Where ACME account and certificates are cached
    #[arg(long, default_value = "/var/lib/flotilla/proxy/certs")]
    pub acme_cache: PathBuf,
    /// PEM file of the CA that signed the ACME server's own HTTPS certificate (test servers)
    #[arg(long, value_name = "PEM")]
    pub acme_server_ca: Option<PathBuf>,
}

/// A flag value that is not a port or address.
#[derive(Debug, thiserror::Error)]
#[error("--{flag} {value:?}: expected a port, ADDR:PORT or \"off\"")]
pub struct BadListen {
    pub flag: &'static str,
    pub value: String,
}

fn listen(flag: &'static str, value: &str) -> Result<Option<SocketAddr>, BadListen> {
    if value == "off" {
        return Ok(None);
    }
    if let Ok(port) = value.parse::<u16>() {
        return Ok(Some(SocketAddr::from(([0, 0, 0, 0], port))));
    }
    value.parse().map(Some).map_err(|_| BadListen {
        flag,
        value: value.to_owned(),
    })
}

impl RunArgs {
    pub fn into_config(self) -> Result<ProxyConfig, BadListen> {
        let http = listen("http-port", &self.http_port)?.ok_or(BadListen {
            flag: "http-port",
            value: self.http_port.clone(),
        })?;
        Ok(ProxyConfig {
            http,
            https: listen("https-port", &self.https_port)?,
            admin_socket: self.admin_socket,
            state_file: self.state_file,
            metrics: self.metrics_listen,
            max_connections: self.max_connections,
            max_connections_per_client: self
                .max_connections_per_client
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            timeouts: crate::ClientTimeouts {
                first_request: Duration::from_secs(self.first_request_timeout),
                idle: Duration::from_secs(self.idle_timeout),
            },
            grace_period: Duration::from_secs(self.grace_period),
            workers: self.workers,
            listeners_socket: self.listeners_socket,
            acme: (self.acme_directory != "off").then(|| AcmeConfig {
                directory_url: self.acme_directory,
                cache_dir: self.acme_cache,
                contact: self.acme_email.map(|e| format!("mailto:{e}")),
                server_ca: self.acme_server_ca,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ports, addresses and "off" are understood; anything else names the flag.
    #[test]
    fn listen_values() {
        assert_eq!(
            listen("http-port", "8080").unwrap(),
            Some("0.0.0.0:8080".parse().unwrap())
        );
        assert_eq!(
            listen("http-port", "127.0.0.1:81").unwrap(),
            Some("127.0.0.1:81".parse().unwrap())
        );
        assert_eq!(listen("https-port", "off").unwrap(), None);
        assert!(
            listen("https-port", "eighty")
                .unwrap_err()
                .to_string()
                .contains("--https-port")
        );
    }
}
