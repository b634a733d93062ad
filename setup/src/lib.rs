//! From bare hosts to serving hosts, over SSH only (crate `flotilla-setup`).
//!
//! ```text
//! AgentImage::prepare(binary)            the flotilla image, a `docker load` archive (image.rs)
//! plan::HostSpec + plan::Facts -> Steps  what a host should run, what it runs, the difference
//! bootstrap(pool, specs, image, report)  per host in parallel: probe, plan, steps, identity
//! remove(pool, hosts, spec, report)      everything Flotilla and the app put on the hosts
//! ```
//!
//! Layout: `image` (the archive, streamed, digests computed in one pass), `plan` (pure: probe
//! command and its parsing, steps, `docker run` argv, the rendered files), `host` (steps over
//! an SSH session), this file (the hosts in parallel, progress).
//!
//! Key decisions:
//! - Planning is data (`plan::plan` returns `Vec<Step>`), so "a current host changes nothing"
//!   is a unit test: a host whose containers run the wanted image with the wanted settings
//!   gets no step, and nothing restarts.
//! - The agents and NATS use host networking: the proxy listens on the host's 80/443 and
//!   reaches app containers at their addresses on the `kamal` network, as a host process
//!   would; a new proxy can bind beside the old one (SO_REUSEPORT) while the old one drains.
//! - NATS setup boots speaks TLS only, with a certificate from the project's own CA
//!   (`tls`); every host gets that CA as the one its executor trusts for NATS.
//! - Only `flotilla-ssh` is used to reach hosts; nothing here knows the event log or NATS.
//!   Enrolment hands the executor's identity and the host key fingerprint back to the caller.
#![forbid(unsafe_code)]

pub mod host;
pub mod image;
pub mod plan;
pub mod proxy;
pub mod tls;

pub use host::HostError;
pub use image::{AgentImage, ImageError};
pub use plan::{HostSpec, NatsSettings, NatsSpec, NatsTls, RemoveSpec, SchedulerSpec, Step};
pub use proxy::{ProxyRun, ProxyRunError};
pub use tls::{ProjectCa, ServerCert, TlsError};

use flotilla_ssh::Pool;

/// What a bootstrap reports while it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Connected and probed; `steps` are what will run (empty: the host is current).
    Planned { host: String, steps: Vec<String> },
    /// A step finished.
    StepDone { host: String, step: String },
    /// The host is done.
    Done { host: String, changed: bool },
}

/// A host's result: what changed, and the executor's identity read back over SSH.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bootstrapped {
    pub host: String,
    /// Steps that ran (empty: nothing changed).
    pub steps: Vec<String>,
    /// The SSH host key's fingerprint (`SHA256:...`), what enrolment records.
    pub fingerprint: String,
    /// The executor's `identity.pub`, as written.
    pub identity: String,
    /// The scheduler service's sealing key (`service.pub`), on the host that runs it.
    pub service_key: Option<String>,
}

/// Bootstraps every host in `specs` in parallel; one result per host, in order.
pub async fn bootstrap(
    pool: &Pool,
    specs: &[HostSpec],
    image: &AgentImage,
    report: &(dyn Fn(Progress) + Sync),
) -> Vec<Result<Bootstrapped, HostError>> {
    futures::future::join_all(
        specs
            .iter()
            .map(|spec| bootstrap_host(pool, spec, image, report)),
    )
    .await
}

/// Bootstraps one host: probe, plan, run the steps, read the executor's identity.
pub async fn bootstrap_host(
    pool: &Pool,
    spec: &HostSpec,
    image: &AgentImage,
    report: &(dyn Fn(Progress) + Sync),
) -> Result<Bootstrapped, HostError> {
    let host = spec.host.clone();
    let session = pool.session(&host).await.map_err(|source| HostError::Ssh {
        host: host.clone(),
        source: Box::new(source),
    })?;
    let facts = host::probe(&session, &image.tag).await?;
    let renewed = renewed_certificate(spec, &facts).map_err(|source| HostError::Certificate {
        host: host.clone(),
        source,
    })?;
    let steps = plan::plan(spec, &facts, renewed.as_ref());
    let names: Vec<String> = steps.iter().map(Step::describe).collect();
    report(Progress::Planned {
        host: host.clone(),
        steps: names.clone(),
    });
    for step in &steps {
        host::run_step(&session, image, &facts, step).await?;
        report(Progress::StepDone {
            host: host.clone(),
            step: step.describe(),
        });
    }
    let identity = host::read_identity(&session).await?;
    let service_key = match &spec.scheduler {
        Some(_) => Some(host::read_service_key(&session).await?),
        None => None,
    };
    report(Progress::Done {
        host: host.clone(),
        changed: !steps.is_empty(),
    });
    Ok(Bootstrapped {
        host,
        steps: names,
        fingerprint: session.host_key_fingerprint().to_owned(),
        identity,
        service_key,
    })
}

/// NATS's new server certificate when the one on the host is missing, not this CA's, names
/// other names or nears its end; `None` when it is current (or setup boots no NATS here).
fn renewed_certificate(
    spec: &HostSpec,
    facts: &plan::Facts,
) -> Result<Option<ServerCert>, TlsError> {
    let Some(tls) = spec.nats.as_ref().and_then(|n| n.tls.as_ref()) else {
        return Ok(None);
    };
    let names = tls.names_for(facts);
    let current = facts
        .nats_cert
        .as_deref()
        .is_some_and(|c| tls.ca.is_current(c, &names, std::time::SystemTime::now()));
    if current {
        return Ok(None);
    }
    tls.ca.issue(&names).map(Some)
}

/// Removes Flotilla, the app and their state from every host, in parallel.
pub async fn remove(
    pool: &Pool,
    hosts: &[String],
    spec: &RemoveSpec,
) -> Vec<Result<(), HostError>> {
    futures::future::join_all(hosts.iter().map(|h| async move {
        let session = pool.session(h).await.map_err(|source| HostError::Ssh {
            host: h.clone(),
            source: Box::new(source),
        })?;
        host::remove(&session, spec).await
    }))
    .await
}
