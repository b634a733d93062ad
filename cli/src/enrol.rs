//! Enrolment over SSH: reads an executor's public identity through the host's pinned SSH
//! connection and records it (`HostEnrolled`) when the scheduler's rules say so. Used by
//! `flotilla server enroll` and by `flotilla setup`.

use anyhow::Context as _;
use flotilla_events::EventLog;
use flotilla_protocol::identity::{PUBLIC_FILE, PublicIdentity};
use flotilla_scheduler::enrolment::{self, Decision};
use flotilla_ssh::Pool;

use crate::exit::{FAILED, UserError};

/// Where the executor keeps its state on a host (bound into its container at the same path).
pub const EXECUTOR_STATE_DIR: &str = "/var/lib/flotilla/executor";

/// What enrolling one host did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Recorded now (first enrolment, a new SSH host key, or `--replace`).
    Enrolled { signing_key: String },
    /// Already enrolled with these keys.
    Unchanged,
}

/// Where enrolments are recorded: the project's own log (embedded mode), or the scheduler
/// service's (service mode: the service is the log's only writer and applies the rule).
#[derive(Clone, Copy)]
pub enum Records<'a> {
    Local(&'a dyn EventLog),
    Service(&'a async_nats::Client),
}

impl Records<'_> {
    /// The hosts enrolled so far.
    pub async fn enrolled(&self) -> anyhow::Result<flotilla_events::Enrolled> {
        match self {
            Records::Local(log) => {
                flotilla_events::Enrolled::from_log(*log).context("read the event log")
            }
            Records::Service(client) => {
                let log = crate::client::mirror_with(client).await?;
                flotilla_events::Enrolled::from_log(&log)
                    .context("read the scheduler service's log")
            }
        }
    }
}

/// Enrols `hosts`: their identities are read over SSH all at once (one pooled connection
/// each: on many hosts a read one after another costs a round trip and a remote shell per
/// host), then recorded one by one in the given order. One result per host, in that order.
pub async fn enroll_hosts(
    pool: &Pool,
    records: Records<'_>,
    actor: &str,
    hosts: &[String],
    replace: bool,
) -> Vec<(String, anyhow::Result<Outcome>)> {
    let read = futures::future::join_all(hosts.iter().map(|h| read_identity(pool, h))).await;
    let mut outcomes = Vec::with_capacity(hosts.len());
    for (host, identity) in hosts.iter().zip(read) {
        let outcome = match identity {
            Ok(identity) => record(records, actor, host, identity, replace).await,
            Err(e) => Err(e),
        };
        outcomes.push((host.clone(), outcome));
    }
    outcomes
}

/// An executor's identity as read from its host.
struct ReadIdentity {
    /// `identity.pub` as the host has it (the service parses it again).
    text: String,
    identity: PublicIdentity,
    /// The SSH host key of the connection it was read over.
    fingerprint: String,
}

/// `host`'s executor identity, read over its pinned SSH connection.
async fn read_identity(pool: &Pool, host: &str) -> anyhow::Result<ReadIdentity> {
    let session = pool.session(host).await.map_err(|e| ssh_error(host, e))?;
    let path = format!("{EXECUTOR_STATE_DIR}/{PUBLIC_FILE}");
    let out = session
        .exec(&format!("cat {path}"))
        .await
        .map_err(|e| ssh_error(host, e))?;
    if !out.success() {
        return Err(UserError {
            message: format!("{host} has no executor identity ({path} is missing)"),
            hint: Some(format!(
                "start the executor there first: flotilla server bootstrap -h {host}"
            )),
            code: FAILED,
        }
        .into());
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let identity = PublicIdentity::parse(&text)
        .with_context(|| format!("{host}: {path} is not an executor identity"))?;
    Ok(ReadIdentity {
        text,
        identity,
        fingerprint: session.host_key_fingerprint().to_owned(),
    })
}

/// Records `read` as `host`'s identity if it is new; keys that differ from the enrolled ones
/// are refused unless `replace`.
async fn record(
    records: Records<'_>,
    actor: &str,
    host: &str,
    read: ReadIdentity,
    replace: bool,
) -> anyhow::Result<Outcome> {
    let log = match records {
        Records::Local(log) => log,
        Records::Service(client) => {
            let enrolment = flotilla_protocol::control::Enrolment {
                host: host.to_owned(),
                ssh_host_key: read.fingerprint,
                identity: read.text,
                replace,
                actor: actor.to_owned(),
            };
            return crate::client::enroll(client, enrolment).await;
        }
    };
    let enrolled = flotilla_events::Enrolled::from_log(log).context("read the event log")?;
    let decision = enrolment::decide(&enrolled, host, &read.fingerprint, &read.identity, replace)
        .map_err(|refused| {
        let hint = format!(
            "if the host was reinstalled or its executor state was reset, accept the new keys: {}",
            refused.accept_command()
        );
        anyhow::Error::new(refused.clone()).context(UserError {
            message: format!("{host}: executor keys changed; refusing to trust them"),
            hint: Some(hint),
            code: FAILED,
        })
    })?;
    match decision {
        Decision::Unchanged => Ok(Outcome::Unchanged),
        Decision::Enrol(e) => {
            let signing_key = e.signing_key.clone();
            log.append(enrolment::event(host, actor, e))
                .with_context(|| format!("record the enrolment of {host}"))?;
            Ok(Outcome::Enrolled { signing_key })
        }
    }
}

fn ssh_error(host: &str, e: flotilla_ssh::Error) -> anyhow::Error {
    let hint = match &e {
        flotilla_ssh::Error::HostKey(k) => k.accept_command().map(str::to_owned),
        _ => Some(format!("check that {host} is reachable over SSH")),
    };
    anyhow::Error::new(e).context(UserError {
        message: format!("{host}: cannot enrol over SSH"),
        hint,
        code: FAILED,
    })
}
