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

/// Reads `host`'s executor identity over SSH and records it if it is new; keys that differ
/// from the enrolled ones are refused unless `replace`.
pub async fn enroll_host(
    pool: &Pool,
    log: &dyn EventLog,
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
    let enrolled = enrolled(log)?;
    let decision = enrolment::decide(
        &enrolled,
        host,
        session.host_key_fingerprint(),
        &identity,
        replace,
    )
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

/// Every host's enrolment, folded from the log.
pub fn enrolled(log: &dyn EventLog) -> anyhow::Result<flotilla_events::Enrolled> {
    use flotilla_events::Projection as _;
    let mut state = flotilla_events::Enrolled::default();
    for event in log.read_all().context("read the event log")? {
        state.apply(&event.context("read the event log")?);
    }
    Ok(state)
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
