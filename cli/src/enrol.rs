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

/// Reads `host`'s executor identity over SSH and records it if it is new; keys that differ
/// from the enrolled ones are refused unless `replace`.
pub async fn enroll_host(
    pool: &Pool,
    records: Records<'_>,
    actor: &str,
    host: &str,
    replace: bool,
) -> anyhow::Result<Outcome> {
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
    let text = String::from_utf8_lossy(&out.stdout);
    let identity = PublicIdentity::parse(&text)
        .with_context(|| format!("{host}: {path} is not an executor identity"))?;
    let fingerprint = session.host_key_fingerprint();
    let log = match records {
        Records::Local(log) => log,
        Records::Service(client) => {
            let enrolment = flotilla_protocol::control::Enrolment {
                host: host.to_owned(),
                ssh_host_key: fingerprint.to_owned(),
                identity: text.into_owned(),
                replace,
                actor: actor.to_owned(),
            };
            return crate::client::enroll(client, enrolment).await;
        }
    };
    let enrolled = flotilla_events::Enrolled::from_log(log).context("read the event log")?;
    let decision = enrolment::decide(&enrolled, host, fingerprint, &identity, replace).map_err(
        |refused| {
            let hint = format!(
                "if the host was reinstalled or its executor state was reset, accept the new keys: {}",
                refused.accept_command()
            );
            anyhow::Error::new(refused.clone()).context(UserError {
                message: format!("{host}: executor keys changed; refusing to trust them"),
                hint: Some(hint),
                code: FAILED,
            })
        },
    )?;
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
