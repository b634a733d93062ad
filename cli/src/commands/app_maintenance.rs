//! `flotilla app maintenance [--message]` and `app live`: every proxied role's service on its
//! hosts answers 503 (with the message) instead of forwarding, or forwards again. The request
//! goes to each host's proxy admin socket through an SSH tunnel (direct-streamlocal), the
//! proxy's own JSON-lines protocol, so nothing is installed or run on the host.

use crate::commands::fanout::{self, Targets};
use crate::commands::record::Recording;
use crate::exit::{FAILED, UserError};
use flotilla_deploy::Config;
use flotilla_events::event::Operation;
use flotilla_proxy::admin::{Reply, Request};
use flotilla_ssh::Pool;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Puts (`Some(message)`) or takes (`None`) the app's proxied roles in or out of maintenance on
/// every picked host; the caller holds the deploy lock.
pub(crate) async fn set(
    config: &Config,
    targets: &Targets,
    socket: &str,
    maintenance: Option<Option<String>>,
) -> anyhow::Result<()> {
    let operation = match &maintenance {
        Some(message) => Operation::AppMaintenance {
            message: message.clone(),
        },
        None => Operation::AppLive,
    };
    let hosts = targets.hosts(config);
    let log = crate::commands::record::open_log(config)?;
    let recording = Recording::start(log.as_ref(), config, operation, &hosts)?;
    let result = ask_all(config, targets, socket, maintenance, &recording).await;
    recording.end(result)
}

async fn ask_all(
    config: &Config,
    targets: &Targets,
    socket: &str,
    maintenance: Option<Option<String>>,
    recording: &Recording<'_>,
) -> anyhow::Result<()> {
    let pairs: Vec<(String, String)> = targets
        .host_roles(config)
        .into_iter()
        .filter(|(_, role)| role.proxy.is_some())
        .map(|(host, role)| {
            let service = flotilla_protocol::names::proxy_service(
                &config.service,
                &role.name,
                config.destination.as_deref(),
            );
            (host, service)
        })
        .collect();
    if pairs.is_empty() {
        return Err(UserError {
            message: "no proxied role on the picked hosts".into(),
            hint: Some("maintenance applies to roles with a proxy: section".into()),
            code: crate::exit::USAGE,
        }
        .into());
    }
    let pool = fanout::pool(config);
    let results = futures::future::join_all(pairs.iter().map(|(host, service)| {
        let request = match &maintenance {
            Some(message) => Request::Maintenance {
                service: service.clone(),
                message: message.clone(),
            },
            None => Request::Live {
                service: service.clone(),
            },
        };
        ask(&pool, host, socket, request)
    }))
    .await;
    pool.close().await;
    let mut failed = Vec::new();
    let mut text = String::new();
    for ((host, service), result) in pairs.iter().zip(results) {
        recording.note_host(
            host,
            result.as_ref().map(|_| ()).map_err(|e| format!("{e:#}")),
        );
        match result {
            Ok(()) => text.push_str(&format!(
                "App Host: {host}\n{service}: {}\n\n",
                if maintenance.is_some() {
                    "maintenance"
                } else {
                    "live"
                }
            )),
            Err(e) => failed.push(format!("{host}: {e}")),
        }
    }
    crate::commands::write_stdout(&text)?;
    if failed.is_empty() {
        return Ok(());
    }
    Err(UserError {
        message: format!(
            "the proxy refused or was unreachable: {}",
            failed.join("; ")
        ),
        hint: Some(format!(
            "check that `flotilla proxy run` serves its admin socket at {socket} on those hosts \
             (--proxy-socket or FLOTILLA_PROXY_SOCKET names another path)"
        )),
        code: FAILED,
    }
    .into())
}

/// One request over a tunnel to `socket` on `host`, one reply line back.
async fn ask(pool: &Pool, host: &str, socket: &str, request: Request) -> anyhow::Result<()> {
    let session = pool.session(host).await?;
    let tunnel = session.open_unix(socket).await?;
    let (read, mut write) = tokio::io::split(tunnel);
    let mut line = serde_json::to_vec(&request)?;
    line.push(b'\n');
    write.write_all(&line).await?;
    write.flush().await?;
    let mut answer = String::new();
    BufReader::new(read).read_line(&mut answer).await?;
    match serde_json::from_str::<Reply>(&answer) {
        Ok(Reply::Done { .. }) => Ok(()),
        Ok(Reply::Error { message, .. }) => Err(anyhow::anyhow!("{message}")),
        Ok(other) => Err(anyhow::anyhow!("unexpected reply {other:?}")),
        Err(e) => Err(anyhow::anyhow!("unreadable reply {:?}: {e}", answer.trim())),
    }
}
