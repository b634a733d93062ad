//! The only module that talks to NATS: connects (and reconnects forever, with backoff),
//! makes sure the streams and this host's durable pull consumer exist, takes jobs one at a
//! time, acks each after its reports are durable in JetStream, terminates garbage, NAKs a
//! job interrupted by shutdown, and publishes heartbeats.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, Context, message::PublishMessage};
use futures::StreamExt as _;
use tokio::sync::{Mutex, watch};

use crate::job::{JobOutcome, Sink, SinkError, report_durably, run_job};
use crate::journal::Journal;
use crate::runtime::{Proxy, Runtime};
use crate::steps::Executor;
use flotilla_protocol::identity::ReportSigner;
use flotilla_protocol::signing::{Admission, JobVerifier};
use flotilla_protocol::subjects;
use flotilla_protocol::text::error_chain;
use flotilla_protocol::wire::{self, Heartbeat, Refusal, RefusalReason, Report, SignedReport};

/// How the executor reaches NATS.
#[derive(Clone)]
pub struct NatsSettings {
    pub url: String,
    /// A `.creds` file (JWT + nkey seed) for secured clusters.
    pub creds: Option<std::path::PathBuf>,
    /// The host's own NATS user seed (its enrolled nkey): what a Flotilla-booted NATS admits
    /// it by. Unused by a server without authorization.
    pub nkey_seed: Option<zeroize::Zeroizing<String>>,
    /// A CA certificate to trust for `tls://` URLs (the one setup made and pinned).
    pub ca: Option<std::path::PathBuf>,
    pub heartbeat_every: Duration,
}

impl std::fmt::Debug for NatsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSettings")
            .field("url", &self.url)
            .field("creds", &self.creds)
            .field("nkey_seed", &self.nkey_seed.as_ref().map(|_| ".."))
            .field("ca", &self.ca)
            .finish()
    }
}

/// The executor could not start at all (a reconnect never gives up; this is for bad settings).
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("nats credentials {path}: {source}")]
    Creds {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The longest pause between two reconnect attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long the executor waits between two attempts to connect to NATS: short, so a host
/// enrolled a moment ago gets in at once.
const CONNECT_RETRY: Duration = Duration::from_secs(1);
/// How often the executor looks again for its job consumer while there is none yet: the
/// scheduler makes it when it first deploys to the host, and the first job should not wait
/// long for the executor to notice.
const CONSUMER_WAIT: Duration = Duration::from_secs(1);
/// How often a running job tells the server it is still being worked on.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// How long a job waits before it is delivered again when this host could not take it
/// (its reports could not be published, or the journal could not be written).
const RETRY_DELIVERY: Duration = Duration::from_secs(1);

fn next_backoff(d: Duration) -> Duration {
    (d * 2).min(MAX_BACKOFF)
}

/// Runs the executor until `shutdown` turns true; then finishes or hands back the current job.
pub async fn run<R: Runtime, P: Proxy>(
    executor: Arc<Executor<R, P>>,
    verifier: JobVerifier,
    signer: ReportSigner,
    journal: Journal,
    settings: NatsSettings,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), TransportError> {
    let mut options = async_nats::ConnectOptions::new()
        .name(format!("flotilla-executor@{}", executor.host()))
        .max_reconnects(None)
        .ping_interval(flotilla_protocol::nats::PING_INTERVAL)
        .reconnect_delay_callback(|attempt| {
            Duration::from_millis(100 * 2u64.saturating_pow(attempt.min(7) as u32)).min(MAX_BACKOFF)
        })
        .event_callback(|event| async move { tracing::info!(%event, "nats") })
        // Replies (JetStream acks, pulled jobs) on this host's own inbox prefix: the only
        // subjects its NATS credentials may subscribe to.
        .custom_inbox_prefix(flotilla_protocol::access::host_inbox_prefix(
            executor.host(),
        ));
    if let Some(seed) = &settings.nkey_seed {
        options = options.nkey(seed.to_string());
    }
    if let Some(ca) = &settings.ca {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let Some(path) = &settings.creds {
        options = options
            .credentials_file(path)
            .await
            .map_err(|source| TransportError::Creds {
                path: path.clone(),
                source,
            })?;
    }
    let Some(client) = connect(&options, &settings.url, &mut shutdown).await else {
        return Ok(());
    };
    let heartbeat = tokio::spawn(heartbeats(
        executor.clone(),
        client.clone(),
        settings.heartbeat_every,
    ));
    let js = jetstream::new(client.clone());
    let journal = Mutex::new(journal);
    let sink = JetStreamSink {
        js: js.clone(),
        signer,
    };
    let mut backoff = Duration::from_millis(200);
    while !*shutdown.borrow() {
        match consume(&executor, &verifier, &journal, &sink, &mut shutdown).await {
            Ok(()) => break,
            Err(ConsumeError::NoConsumer(name)) => {
                tracing::info!(consumer = %name, "no job consumer yet: the scheduler makes it with the first deploy here");
                tokio::select! {
                    _ = tokio::time::sleep(CONSUMER_WAIT) => {}
                    _ = shutdown.changed() => {}
                }
            }
            Err(ConsumeError::Nats(e)) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "job consumer lost, rebinding");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => {}
                }
                backoff = next_backoff(backoff);
            }
        }
    }
    heartbeat.abort();
    // The last ack (a NAK handing back an interrupted job) must reach the server before exit.
    if let Err(e) = client.flush().await {
        tracing::warn!(error = %e, "could not flush the last acks");
    }
    tracing::info!("executor stopped");
    Ok(())
}

/// Why the job consumer was left (other than shutdown).
#[derive(Debug)]
enum ConsumeError {
    /// The scheduler has not made this host's consumer yet.
    NoConsumer(String),
    /// NATS failed or the consumer is not what it must be; rebind after a backoff.
    Nats(String),
}

impl std::fmt::Display for ConsumeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConsumeError::NoConsumer(name) => write!(f, "no consumer {name}"),
            ConsumeError::Nats(e) => f.write_str(e),
        }
    }
}

impl From<String> for ConsumeError {
    fn from(e: String) -> Self {
        ConsumeError::Nats(e)
    }
}

impl From<&str> for ConsumeError {
    fn from(e: &str) -> Self {
        ConsumeError::Nats(e.to_owned())
    }
}

/// Whether looking the consumer up failed because it (or its stream) does not exist yet.
fn not_made_yet(e: &jetstream::stream::ConsumerError) -> bool {
    use jetstream::ErrorCode;
    matches!(
        e.kind(),
        jetstream::stream::ConsumerErrorKind::JetStream(j)
            if j.error_code() == ErrorCode::CONSUMER_NOT_FOUND
                || j.error_code() == ErrorCode::STREAM_NOT_FOUND
    )
}

/// Connects, retried forever until shutdown (`None`): an unreachable server and one that does
/// not admit this host yet (a NATS booted by setup admits a host once it is enrolled, and
/// async-nats gives up for good on an authorization error) both come right later. Once
/// connected, the client reconnects by itself.
async fn connect(
    options: &async_nats::ConnectOptions,
    url: &str,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<async_nats::Client> {
    loop {
        match options
            .clone()
            .connect(flotilla_protocol::nats::server_urls(url))
            .await
        {
            Ok(c) => return Some(c),
            Err(e) => {
                let admitted = !matches!(
                    e.kind(),
                    async_nats::ConnectErrorKind::AuthorizationViolation
                        | async_nats::ConnectErrorKind::Authentication
                );
                if admitted {
                    tracing::warn!(%url, error = %e, "nats connect failed, retrying");
                } else {
                    tracing::warn!(%url, "NATS does not admit this host's key yet (enrol it: flotilla setup, or flotilla server enroll HOST); retrying");
                }
                tokio::select! {
                    _ = tokio::time::sleep(CONNECT_RETRY) => {}
                    _ = shutdown.changed() => return None,
                }
            }
        }
    }
}

/// Binds the consumer and handles jobs until shutdown (Ok) or a NATS failure (Err). The
/// executor makes no stream and no consumer: the scheduler does, and a host's credentials
/// allow neither; it only looks its own consumer up and checks what it filters.
async fn consume<R: Runtime, P: Proxy>(
    executor: &Executor<R, P>,
    verifier: &JobVerifier,
    journal: &Mutex<Journal>,
    sink: &JetStreamSink,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), ConsumeError> {
    let host = executor.host();
    let js = &sink.js;
    let name = subjects::job_consumer(host);
    let consumer: jetstream::consumer::PullConsumer = match js
        .get_consumer_from_stream(&name, subjects::JOBS_STREAM)
        .await
    {
        Ok(c) => c,
        Err(e) if not_made_yet(&e) => return Err(ConsumeError::NoConsumer(name)),
        Err(e) => return Err(ConsumeError::Nats(format!("consumer {name}: {e}"))),
    };
    // A consumer of this name made by someone else with another filter would feed this host
    // nothing (or another host's jobs): refuse to bind rather than wait silently.
    let want = subjects::job_subject(host);
    let filter = consumer.cached_info().config.filter_subject.clone();
    if filter != want {
        return Err(ConsumeError::Nats(format!(
            "consumer {} filters {filter:?}, not this host's jobs {want:?}: refusing to bind \
             (delete it with `nats consumer rm {} {}`; the scheduler recreates it)",
            subjects::job_consumer(host),
            subjects::JOBS_STREAM,
            subjects::job_consumer(host)
        )));
    }
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(1)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await
        .map_err(|e| format!("pull: {e}"))?;
    tracing::info!(consumer = %subjects::job_consumer(host), subject = %subjects::job_subject(host), "waiting for jobs");
    loop {
        let message = tokio::select! {
            _ = shutdown.changed() => return Ok(()),
            m = messages.next() => m,
        };
        let message = match message {
            None => return Err("message stream ended".into()),
            Some(Err(e)) => return Err(format!("pull: {e}").into()),
            Some(Ok(m)) => m,
        };
        handle(executor, verifier, journal, sink, &message, shutdown).await?;
        if *shutdown.borrow() {
            return Ok(());
        }
    }
}

async fn handle<R: Runtime, P: Proxy>(
    executor: &Executor<R, P>,
    verifier: &JobVerifier,
    journal: &Mutex<Journal>,
    sink: &JetStreamSink,
    message: &jetstream::Message,
    shutdown: &watch::Receiver<bool>,
) -> Result<(), String> {
    let ack = |kind: AckKind| async move {
        message
            .ack_with(kind)
            .await
            .map_err(|e| format!("ack: {e}"))
    };
    let now = flotilla_events::Timestamp::now();
    let job = match verifier.admit(&message.payload, now) {
        Admission::Garbage(e) => {
            tracing::warn!(subject = %message.subject, bytes = message.payload.len(), error = %e, "terminating a message that is not a job");
            return ack(AckKind::Term).await;
        }
        Admission::Refuse(refusal) if !refusal.reason.job_was_signed() => {
            // Not the scheduler's: its deploy and job ids are whatever the sender wrote, so
            // reporting it would let anyone fail a deploy. Logged here, never published.
            tracing::warn!(subject = %message.subject, reason = ?refusal.reason, detail = %refusal.detail, "terminating a message the scheduler did not sign");
            return ack(AckKind::Term).await;
        }
        Admission::Refuse(refusal) => return refuse(sink, refusal, ack).await,
        Admission::Accept(job) => job,
    };
    let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
    // A job is the same job only with the same id *and* issue time: a scheduler that re-issues
    // a job under the same id (a resume) gets it run again, a copy of the same signed bytes not.
    let key = format!("{}@{}", job.id, job.issued_at.unix_ms());
    if let Some(reports) = journal.lock().await.finished(&key) {
        tracing::info!(job = %job.id, reports = reports.len(), "job already ran here: re-sending its reports");
        for bytes in reports {
            if let Ok(report) = wire::decode::<Report>(&bytes)
                && let Err(e) = report_durably(sink, &report).await
            {
                tracing::warn!(error = %error_chain(&e), "re-sending failed");
                return ack(AckKind::Nak(Some(RETRY_DELIVERY))).await;
            }
        }
        return ack(AckKind::Ack).await;
    }
    let admitted = journal.lock().await.begin(&job.scope, job.generation);
    match admitted {
        Ok(Ok(())) => {}
        Ok(Err(stale)) => {
            let refusal = Refusal {
                job_id: job.id.clone(),
                deploy_id: job.deploy_id.to_string(),
                host: executor.host().to_owned(),
                reason: RefusalReason::Stale,
                detail: stale.to_string(),
                at: now,
            };
            return refuse(sink, refusal, ack).await;
        }
        Err(e) => {
            // Fail closed: a job whose generation cannot be remembered could be replayed.
            tracing::error!(job = %job.id, error = %e, "cannot write the job journal: not running the job");
            return ack(AckKind::Nak(Some(RETRY_DELIVERY))).await;
        }
    }
    tracing::info!(job = %job.id, deploy = %job.deploy_id, steps = job.steps.len(), delivered, "job accepted");
    let taken = flotilla_events::Timestamp::now();
    let run = run_job(executor, &job, sink, shutdown);
    tokio::pin!(run);
    let mut progress = tokio::time::interval(PROGRESS_EVERY);
    progress.tick().await;
    let outcome = loop {
        tokio::select! {
            r = &mut run => break r,
            _ = progress.tick() => {
                if let Err(e) = message.ack_with(AckKind::Progress).await {
                    tracing::warn!(error = %e, "in-progress ack failed");
                }
            }
        }
    };
    match outcome {
        Ok(JobOutcome::Finished(reports)) => {
            let encoded: Vec<Vec<u8>> = reports
                .iter()
                .filter_map(|r| wire::encode(r).ok())
                .collect();
            if let Err(e) = journal.lock().await.record(&key, job.expires_at, &encoded) {
                // Unremembered, a redelivery would run it again (steps are idempotent, but
                // the journal is what makes that a rule): hand it back rather than ack.
                tracing::error!(job = %job.id, error = %e, "could not record the finished job; handing it back");
                return ack(AckKind::Nak(Some(RETRY_DELIVERY))).await;
            }
            tracing::info!(job = %job.id, "job finished");
            crate::telemetry::job_finished(&job, &reports, taken);
            ack(AckKind::Ack).await
        }
        Ok(JobOutcome::Interrupted) => ack(AckKind::Nak(None)).await,
        Err(e) => {
            tracing::warn!(job = %job.id, error = %error_chain(&e), "reports not published; job handed back");
            ack(AckKind::Nak(Some(RETRY_DELIVERY))).await
        }
    }
}

/// Reports a refusal of a job the scheduler signed, then terminates it.
async fn refuse<F, Fut>(sink: &JetStreamSink, refusal: Refusal, ack: F) -> Result<(), String>
where
    F: Fn(AckKind) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    tracing::warn!(job = %refusal.job_id, reason = ?refusal.reason, detail = %refusal.detail, "job refused");
    if let Err(e) = report_durably(sink, &Report::Refused(refusal)).await {
        tracing::warn!(error = %error_chain(&e), "could not report refusal; will see the job again");
        return ack(AckKind::Nak(Some(RETRY_DELIVERY))).await;
    }
    ack(AckKind::Term).await
}

/// Publishes reports, signed with the host's key, to the events stream and waits for the
/// stream's ack.
struct JetStreamSink {
    js: Context,
    signer: ReportSigner,
}

impl Sink for JetStreamSink {
    async fn report(&self, report: &Report) -> Result<(), SinkError> {
        let (subject, id) = match report {
            Report::Event(e) => (
                subjects::event_subject(
                    e.event.deploy_id.as_str(),
                    e.event.host.as_deref().unwrap_or_default(),
                ),
                e.event.id.to_string(),
            ),
            Report::Refused(r) => (
                subjects::event_subject(&r.deploy_id, &r.host),
                format!("refused-{}-{}", r.job_id, r.at.unix_ms()),
            ),
        };
        let report = wire::encode(report).map_err(|e| SinkError(e.into()))?;
        let signature = self.signer.sign(&report);
        let payload =
            wire::encode(&SignedReport { report, signature }).map_err(|e| SinkError(e.into()))?;
        let publish = PublishMessage::build()
            .payload(payload.into())
            .message_id(id);
        self.js
            .send_publish(subject, publish)
            .await
            .map_err(|e| SinkError(e.into()))?
            .await
            .map_err(|e| SinkError(e.into()))?;
        Ok(())
    }
}

async fn heartbeats<R: Runtime, P: Proxy>(
    executor: Arc<Executor<R, P>>,
    client: async_nats::Client,
    every: Duration,
) {
    let subject = subjects::heartbeat_subject(executor.host());
    let mut docker_version = String::new();
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        if docker_version.is_empty() {
            docker_version = executor.runtime.version().await.unwrap_or_default();
        }
        let containers = executor
            .runtime
            .list(&[], false)
            .await
            .map(|all| {
                all.into_iter()
                    .filter(|c| c.labels.contains_key("service"))
                    .map(|c| c.name)
                    .collect()
            })
            .unwrap_or_default();
        let beat = Heartbeat {
            host: executor.host().to_owned(),
            executor_version: env!("CARGO_PKG_VERSION").to_owned(),
            docker_version: docker_version.clone(),
            containers,
            at: flotilla_events::Timestamp::now(),
            period_ms: u64::try_from(every.as_millis()).unwrap_or(u64::MAX),
        };
        if let Ok(bytes) = wire::encode(&beat)
            && let Err(e) = client.publish(subject.clone(), bytes.into()).await
        {
            tracing::debug!(error = %e, "heartbeat not sent");
        }
    }
}
