//! `flotilla proxy ...`: run the host proxy, and drive it through its admin socket.

use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use flotilla_proxy::admin::{AdminError, Client, DeployRequest, ErrorKind};
use flotilla_proxy::{HealthCheck, RunArgs, ServiceSpec, TlsSpec};

use crate::commands::proxy_fleet::{self, Verb};
use crate::exit::{FAILED, USAGE, UserError};

const EXAMPLES: &str = "On the servers (Kamal's `kamal proxy`, over SSH):
  flotilla proxy details
  flotilla proxy logs -f
  flotilla proxy reboot --rolling
  flotilla proxy stop -h 10.0.0.5 && flotilla proxy start -h 10.0.0.5

On this host (the proxy's admin socket):
  flotilla proxy run --http-port 80 --https-port 443 --metrics-listen 127.0.0.1:9100
  flotilla proxy deploy web --target 127.0.0.1:3001 --host app.example.com --app-version v2
  flotilla proxy deploy web --target 127.0.0.1:3001 --host app.example.com --tls
  flotilla proxy list --json
  flotilla proxy maintenance web --message \"Back at 10:00\"
  flotilla proxy pause web --timeout 30s && docker restart web && flotilla proxy resume web";

/// The host proxy: Kamal's `proxy` commands on the servers, and the proxy itself
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct ProxyArgs {
    #[command(subcommand)]
    command: ProxyCommand,
}

#[derive(Debug, Subcommand)]
enum ProxyCommand {
    /// Boot the proxy on the servers: run it where missing, start it where stopped, replace
    /// it (handing its sockets over) where `proxy.run` changed
    #[command(
        disable_help_flag = true,
        after_help = "Examples:\n  flotilla proxy boot\n  flotilla proxy boot -h 10.0.0.5"
    )]
    Boot(proxy_fleet::FleetArgs),
    /// Replace the proxy container on the servers without dropping a request (the new one
    /// takes the old one's listening sockets; then the old one drains)
    #[command(
        disable_help_flag = true,
        after_help = "Examples:\n  flotilla proxy reboot\n  flotilla proxy reboot --rolling"
    )]
    Reboot(proxy_fleet::RebootArgs),
    /// Start the existing proxy container on the servers
    #[command(
        disable_help_flag = true,
        after_help = "Examples:\n  flotilla proxy start\n  flotilla proxy start -h 10.0.0.5"
    )]
    Start(proxy_fleet::FleetArgs),
    /// Stop the proxy container on the servers (it drains in-flight requests first)
    #[command(
        disable_help_flag = true,
        after_help = "Examples:\n  flotilla proxy stop -h 10.0.0.5"
    )]
    Stop(proxy_fleet::FleetArgs),
    /// Stop, then start the existing proxy container on the servers
    #[command(
        disable_help_flag = true,
        after_help = "Examples:\n  flotilla proxy restart"
    )]
    Restart(proxy_fleet::FleetArgs),
    /// Show the proxy container on each server
    #[command(
        disable_help_flag = true,
        after_help = "Examples:\n  flotilla proxy details\n  flotilla proxy details --json"
    )]
    Details(proxy_fleet::FleetArgs),
    /// Show log lines from the proxy on each server (`-f` follows one host)
    #[command(
        disable_help_flag = true,
        after_help = "Examples:\n  flotilla proxy logs\n  flotilla proxy logs -n 20 --grep switched\n  flotilla proxy logs -f -h 10.0.0.5"
    )]
    Logs(proxy_fleet::LogsArgs),
    /// Run the proxy in the foreground (SIGTERM drains and exits)
    #[command(
        after_help = "Examples:\n  flotilla proxy run\n  flotilla proxy run --http-port 8080 --https-port off --state-file ./proxy-state.json --admin-socket ./proxy.sock"
    )]
    Run(Box<RunArgs>),
    /// Health-check a new target, switch the service to it, drain the old one
    #[command(
        after_help = "Examples:\n  flotilla proxy deploy web --target 127.0.0.1:3001 --host app.example.com\n  flotilla proxy deploy api --target 10.0.0.5:8080 --host example.com --path-prefix /api --strip-path-prefix"
    )]
    Deploy(Box<DeployArgs>),
    /// Show how the proxy runs on each server and how `proxy.run` asks it to (`get`); `set`
    /// and `reset` are `proxy.run` in config/deploy.yml, then `proxy reboot`
    #[command(
        name = "boot_config",
        alias = "boot-config",
        disable_help_flag = true,
        after_help = "Examples:\n  flotilla proxy boot_config get"
    )]
    BootConfig(proxy_fleet::BootConfigArgs),
    /// Remove the proxy container from the servers (its saved routes stay for the next
    /// boot); with SERVICE, stop routing that service on this host's proxy instead
    #[command(
        disable_help_flag = true,
        after_help = "Examples:\n  flotilla proxy remove              # the container, on every server\n  flotilla proxy remove web --socket /run/flotilla/proxy.sock   # one service, this host"
    )]
    Remove(RemoveArgs),
    /// List services, their targets and state
    #[command(after_help = "Examples:\n  flotilla proxy list\n  flotilla proxy list --json")]
    List {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Answer a service's requests with a 503 maintenance page
    #[command(
        after_help = "Examples:\n  flotilla proxy maintenance web --message \"Back at 10:00\""
    )]
    Maintenance {
        service: String,
        /// Text of the maintenance page
        #[arg(long)]
        message: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// End maintenance: forward requests again
    #[command(after_help = "Examples:\n  flotilla proxy live web")]
    Live {
        service: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Hold a service's new requests (for a fast restart) until resumed or the timeout
    #[command(after_help = "Examples:\n  flotilla proxy pause web --timeout 30s")]
    Pause {
        service: String,
        /// Longest each request is held before it gets a 503
        #[arg(long, default_value = "30s", value_parser = duration)]
        timeout: Duration,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Release a paused service's held requests
    #[command(after_help = "Examples:\n  flotilla proxy resume web")]
    Resume {
        service: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Debug, Args)]
struct RemoveArgs {
    /// A service to stop routing on this host's proxy (its in-flight requests drain first)
    service: Option<String>,
    /// How long the service's in-flight requests may still run
    #[arg(long, default_value = "30s", value_parser = duration)]
    drain_timeout: Duration,
    #[command(flatten)]
    admin: AdminArgs,
    #[command(flatten)]
    fleet: proxy_fleet::FleetArgs,
}

#[derive(Debug, Args)]
struct AdminArgs {
    /// The proxy's admin socket
    #[arg(long, env = "FLOTILLA_PROXY_SOCKET", default_value = flotilla_proxy::DEFAULT_ADMIN_SOCKET)]
    socket: std::path::PathBuf,
}

#[derive(Debug, Args)]
struct DeployArgs {
    /// The service name
    service: String,
    /// The new target, ADDR:PORT
    #[arg(long)]
    target: String,
    /// Host names routed to the service (repeat for several; none: every unclaimed host)
    #[arg(long = "host")]
    hosts: Vec<String>,
    /// Route only paths under this prefix
    #[arg(long)]
    path_prefix: Option<String>,
    /// Remove the prefix before forwarding
    #[arg(long, requires = "path_prefix")]
    strip_path_prefix: bool,
    /// Serve the hosts over HTTPS (ACME certificates unless a certificate path is given)
    #[arg(long)]
    tls: bool,
    /// Static certificate chain (PEM) for the hosts
    #[arg(long, requires_all = ["tls", "tls_private_key_path"])]
    tls_certificate_path: Option<String>,
    /// Static private key (PEM) for the hosts
    #[arg(long, requires = "tls_certificate_path")]
    tls_private_key_path: Option<String>,
    /// Redirect plain HTTP to HTTPS
    #[arg(long, requires = "tls")]
    tls_redirect: bool,
    /// Keep X-Forwarded-* headers sent by the client (the proxy is behind another proxy)
    #[arg(long)]
    forward_headers: bool,
    /// Version label of the new target, shown in metrics and `list`
    #[arg(long)]
    app_version: Option<String>,
    /// Path that answers 2xx when the target is healthy
    #[arg(long, default_value = "/up")]
    health_path: String,
    #[arg(long, default_value = "1s", value_parser = duration)]
    health_interval: Duration,
    #[arg(long, default_value = "5s", value_parser = duration)]
    health_timeout: Duration,
    /// The target must be healthy within this time, or nothing changes
    #[arg(long, default_value = "30s", value_parser = duration)]
    deploy_timeout: Duration,
    /// How long the old target's in-flight requests may run
    #[arg(long, default_value = "30s", value_parser = duration)]
    drain_timeout: Duration,
    /// How long the target may take to answer a request (504 after)
    #[arg(long, default_value = "30s", value_parser = duration)]
    response_timeout: Duration,
    /// Largest request body in bytes (413 above)
    #[arg(long, default_value_t = flotilla_proxy::spec::DEFAULT_MAX_BODY_BYTES)]
    max_body_size: u64,
    #[command(flatten)]
    admin: AdminArgs,
}

/// `500ms`, `2s`, `1m`, or a bare number of seconds.
fn duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 500ms, 2s or 1m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("{s:?} is not a duration like 500ms, 2s or 1m")),
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pub fn run(args: ProxyArgs) -> anyhow::Result<()> {
    let on_servers = !matches!(
        args.command,
        ProxyCommand::Run(_)
            | ProxyCommand::Deploy(_)
            | ProxyCommand::Remove(RemoveArgs {
                service: Some(_),
                ..
            })
            | ProxyCommand::List { .. }
            | ProxyCommand::Maintenance { .. }
            | ProxyCommand::Live { .. }
            | ProxyCommand::Pause { .. }
            | ProxyCommand::Resume { .. }
    );
    if on_servers {
        // Kamal's commands on the servers: SSH fan-out and terminal streaming, as `app`'s.
        return crate::block_on(dispatch(args.command));
    }
    // The proxy's data plane runs its own worker threads; the admin side needs one thread.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    runtime.block_on(dispatch(args.command))
}

async fn dispatch(command: ProxyCommand) -> anyhow::Result<()> {
    match command {
        ProxyCommand::Run(args) => serve(*args).await,
        ProxyCommand::Deploy(args) => deploy(*args).await,
        ProxyCommand::Boot(a) => proxy_fleet::run(Verb::Boot(&a)).await,
        ProxyCommand::Reboot(a) => proxy_fleet::run(Verb::Reboot(&a)).await,
        ProxyCommand::Start(a) => proxy_fleet::run(Verb::Start(&a)).await,
        ProxyCommand::Stop(a) => proxy_fleet::run(Verb::Stop(&a)).await,
        ProxyCommand::Restart(a) => proxy_fleet::run(Verb::Restart(&a)).await,
        ProxyCommand::Details(a) => proxy_fleet::run(Verb::Details(&a)).await,
        ProxyCommand::Logs(a) => proxy_fleet::run(Verb::Logs(&a)).await,
        ProxyCommand::BootConfig(a) => proxy_fleet::run(Verb::BootConfig(&a)).await,
        ProxyCommand::Remove(RemoveArgs {
            service: None,
            fleet,
            ..
        }) => proxy_fleet::run(Verb::Remove(&fleet)).await,
        ProxyCommand::Remove(RemoveArgs {
            service: Some(service),
            drain_timeout,
            admin,
            ..
        }) => {
            let client = Client::new(&admin.socket);
            client
                .remove(&service, ms(drain_timeout))
                .await
                .map_err(admin_error)?;
            println!("{service}: removed");
            Ok(())
        }
        ProxyCommand::List { json, admin } => list(&Client::new(&admin.socket), json).await,
        ProxyCommand::Maintenance {
            service,
            message,
            admin,
        } => {
            Client::new(&admin.socket)
                .maintenance(&service, message)
                .await
                .map_err(admin_error)?;
            println!("{service}: in maintenance");
            Ok(())
        }
        ProxyCommand::Live { service, admin } => {
            Client::new(&admin.socket)
                .live(&service)
                .await
                .map_err(admin_error)?;
            println!("{service}: live");
            Ok(())
        }
        ProxyCommand::Pause {
            service,
            timeout,
            admin,
        } => {
            Client::new(&admin.socket)
                .pause(&service, ms(timeout))
                .await
                .map_err(admin_error)?;
            println!("{service}: paused");
            Ok(())
        }
        ProxyCommand::Resume { service, admin } => {
            Client::new(&admin.socket)
                .resume(&service)
                .await
                .map_err(admin_error)?;
            println!("{service}: resumed");
            Ok(())
        }
    }
}

async fn serve(args: RunArgs) -> anyhow::Result<()> {
    crate::lifecycle::init_tracing("info");
    let config = args.into_config().map_err(|e| UserError {
        message: e.to_string(),
        hint: Some("see `flotilla proxy run --help`".into()),
        code: USAGE,
    })?;
    flotilla_proxy::run(config, flotilla_proxy::shutdown_signal())
        .await
        .context("run the proxy")
}

async fn deploy(args: DeployArgs) -> anyhow::Result<()> {
    let tls = match (
        args.tls,
        args.tls_certificate_path,
        args.tls_private_key_path,
    ) {
        (false, _, _) => None,
        (true, Some(cert_path), Some(key_path)) => Some(TlsSpec::Static {
            cert_path,
            key_path,
        }),
        (true, _, _) => Some(TlsSpec::Acme),
    };
    let service = ServiceSpec {
        version: args.app_version,
        path_prefix: args.path_prefix,
        strip_prefix: args.strip_path_prefix,
        tls,
        redirect_https: args.tls_redirect,
        forward_headers: args.forward_headers,
        response_timeout_ms: ms(args.response_timeout),
        max_body_bytes: args.max_body_size,
        ..ServiceSpec::new(args.service, args.target, args.hosts)
    };
    let request = DeployRequest {
        service,
        health: HealthCheck {
            path: args.health_path,
            interval_ms: ms(args.health_interval),
            timeout_ms: ms(args.health_timeout),
        },
        deploy_timeout_ms: ms(args.deploy_timeout),
        drain_timeout_ms: ms(args.drain_timeout),
    };
    let deployed = Client::new(&args.admin.socket)
        .deploy(request)
        .await
        .map_err(admin_error)?;
    match deployed.from {
        Some(from) => println!(
            "{}: switched {from} -> {} ({})",
            deployed.service, deployed.to, deployed.version
        ),
        None => println!(
            "{}: now served by {} ({})",
            deployed.service, deployed.to, deployed.version
        ),
    }
    if deployed.drain_cancelled > 0 {
        println!(
            "{}: {} request(s) cancelled at the drain deadline",
            deployed.service, deployed.drain_cancelled
        );
    }
    Ok(())
}

async fn list(client: &Client, json: bool) -> anyhow::Result<()> {
    let services = client.list().await.map_err(admin_error)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&services).context("encode the service list")?
        );
        return Ok(());
    }
    println!(
        "{:<20} {:<22} {:<12} {:<30} STATE",
        "SERVICE", "TARGET", "VERSION", "HOSTS"
    );
    for s in services {
        let state = match (&s.maintenance, s.paused) {
            (Some(_), _) => "maintenance",
            (None, true) => "paused",
            (None, false) => "live",
        };
        let hosts = if s.spec.hosts.is_empty() {
            "*".to_owned()
        } else {
            s.spec.hosts.join(",")
        };
        println!(
            "{:<20} {:<22} {:<12} {:<30} {state}",
            s.spec.name,
            s.spec.target,
            s.spec.version_label(),
            hosts
        );
    }
    Ok(())
}

/// Turns admin failures into user errors with the exit code and next step they deserve.
fn admin_error(e: AdminError) -> anyhow::Error {
    let (code, hint) = match &e {
        AdminError::Connect { .. } => (
            FAILED,
            "is `flotilla proxy run` running on this host? pass its socket with --socket or FLOTILLA_PROXY_SOCKET",
        ),
        AdminError::Refused {
            kind: ErrorKind::BadRequest,
            ..
        } => (USAGE, "fix the arguments and run again"),
        AdminError::Refused {
            kind: ErrorKind::NotFound,
            ..
        } => (USAGE, "see the services with `flotilla proxy list`"),
        AdminError::Refused {
            kind: ErrorKind::Unhealthy,
            ..
        } => (
            FAILED,
            "check the new container's logs and its health path; the old target is still serving",
        ),
        AdminError::Refused {
            kind: ErrorKind::Tls,
            ..
        } => (
            USAGE,
            "check the certificate and key paths and that they form a pair",
        ),
        AdminError::Refused {
            kind: ErrorKind::State,
            ..
        } => (FAILED, "check that the proxy can write its --state-file"),
        AdminError::Io { .. } | AdminError::Protocol(_) => (FAILED, "check the proxy's log"),
    };
    let message = match e.source_chain() {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    };
    UserError {
        message,
        hint: Some(hint.to_owned()),
        code,
    }
    .into()
}

trait SourceChain {
    fn source_chain(&self) -> Option<String>;
}

impl SourceChain for AdminError {
    fn source_chain(&self) -> Option<String> {
        std::error::Error::source(self).map(ToString::to_string)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Durations are read the way people write them.
    #[test]
    fn durations() {
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(duration("1m"), Ok(Duration::from_secs(60)));
        assert!(duration("soon").is_err());
        assert!(duration("5h").is_err());
    }
}
