//! The scheduler's side of the NATS contract (subjects and streams are defined once, in
//! `flotilla_protocol::subjects`): publish signed jobs, read heartbeats, consume one deploy's
//! events with explicit acks.
//!
//! The scheduler creates the heartbeats stream ([`HEARTBEATS_STREAM`]): it keeps each host's
//! latest heartbeat for a short while, so a deploy learns the fleet's keys at once instead of
//! waiting up to a heartbeat period for every executor to speak again.

use super::TransportError;
use async_nats::jetstream::{self, consumer::pull, stream::Stream};
use flotilla_protocol::nats::{consumer_config, stream_config_for};
use flotilla_protocol::subjects;
use flotilla_protocol::wire::{self, Heartbeat, SignedReport};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::time::Duration;

pub use subjects::{HEARTBEAT_KEPT, HEARTBEATS_STREAM};

fn nats<E: std::error::Error + Send + Sync + 'static>(e: E) -> TransportError {
    TransportError::Nats(Box::new(e))
}

/// How the scheduler authenticates to NATS, and which CA it pins.
#[derive(Clone, Default)]
pub struct NatsAuth {
    /// A `.creds` file (JWT + nkey seed) for a NATS of the user's own.
    pub creds: Option<std::path::PathBuf>,
    /// The operators' nkey seed, for the NATS `flotilla setup` boots.
    pub nkey_seed: Option<zeroize::Zeroizing<String>>,
    /// The one CA (PEM file) NATS's certificate must chain to: the project's own for the
    /// NATS setup boots, the user's `x-flotilla.nats.ca` for theirs. With it, a server
    /// without TLS or with any other certificate is refused.
    pub ca: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsAuth")
            .field("creds", &self.creds)
            .field("nkey_seed", &self.nkey_seed.as_ref().map(|_| ".."))
            .field("ca", &self.ca)
            .finish()
    }
}

impl NatsAuth {
    /// `options` with the nkey and the pinned CA (TLS required) set; the credentials file is
    /// read by the caller (async).
    pub fn apply(&self, mut options: async_nats::ConnectOptions) -> async_nats::ConnectOptions {
        if let Some(seed) = &self.nkey_seed {
            options = options.nkey(seed.to_string());
        }
        if let Some(ca) = &self.ca {
            // Given certificates replace the system's roots in async-nats: this CA alone.
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        options
    }
}

/// The config of `spec`'s stream on the NATS `js` is connected to: replicated on every
/// control host of a cluster (R3), one copy on a single server.
pub fn replicated(
    js: &jetstream::Context,
    spec: &flotilla_protocol::subjects::StreamSpec,
) -> async_nats::jetstream::stream::Config {
    let replicas = flotilla_protocol::nats::replicas(&js.client().server_info());
    stream_config_for(spec, replicas)
}

/// A connection to NATS with JetStream.
#[derive(Clone)]
pub struct Bus {
    client: async_nats::Client,
    js: jetstream::Context,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bus")
    }
}

impl Bus {
    /// Connects, optionally with a credentials file, and makes sure the streams exist.
    pub async fn connect(
        url: &str,
        creds: Option<&std::path::Path>,
    ) -> Result<Bus, TransportError> {
        let auth = NatsAuth {
            creds: creds.map(std::path::Path::to_path_buf),
            nkey_seed: None,
            ca: None,
        };
        Bus::connect_with(url, &auth).await
    }

    /// Connects with `auth` (a credentials file, or the operators' nkey that a NATS booted
    /// by `flotilla setup` admits), and makes sure the streams exist.
    pub async fn connect_with(url: &str, auth: &NatsAuth) -> Result<Bus, TransportError> {
        let mut opts = async_nats::ConnectOptions::new()
            .name("flotilla-scheduler")
            .ping_interval(flotilla_protocol::nats::PING_INTERVAL)
            .connection_timeout(Duration::from_secs(5));
        opts = auth.apply(opts);
        if let Some(path) = &auth.creds {
            opts = opts
                .credentials_file(path)
                .await
                .map_err(|e| TransportError::Connect {
                    url: url.to_owned(),
                    source: format!("credentials {}: {e}", path.display()).into(),
                })?;
        }
        let client = opts
            .connect(flotilla_protocol::nats::server_urls(url))
            .await
            .map_err(|e| TransportError::Connect {
                url: url.to_owned(),
                source: Box::new(e),
            })?;
        let js = jetstream::new(client.clone());
        js.get_or_create_stream(replicated(&js, &subjects::jobs_stream()))
            .await
            .map_err(nats)?;
        js.get_or_create_stream(replicated(&js, &subjects::events_stream()))
            .await
            .map_err(nats)?;
        // Only a shortcut: without it, heartbeats are waited for live.
        if let Err(e) = js
            .get_or_create_stream(replicated(&js, &subjects::heartbeats_stream()))
            .await
        {
            tracing::warn!(error = %e, "no heartbeat stream: waiting for live heartbeats");
        }
        Ok(Bus { client, js })
    }

    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// Every host's latest heartbeat: those the server kept from the last [`HEARTBEAT_KEPT`],
    /// then, for hosts without one, waits for the next (they come every few seconds).
    pub async fn heartbeats(
        &self,
        hosts: &[String],
        wait: Duration,
    ) -> Result<BTreeMap<String, Heartbeat>, TransportError> {
        let mut sub = self
            .client
            .subscribe(subjects::all_heartbeats())
            .await
            .map_err(nats)?;
        let wanted: BTreeMap<String, &String> =
            hosts.iter().map(|h| (subjects::token(h), h)).collect();
        let mut seen = BTreeMap::new();
        // Subscribed first, so a heartbeat sent while the kept ones are read is not missed.
        if let Err(e) = self.kept_heartbeats(&wanted, &mut seen).await {
            tracing::debug!(error = %e, "kept heartbeats not read: waiting for live ones");
        }
        let deadline = tokio::time::Instant::now() + wait;
        while seen.len() < wanted.len() {
            let msg = match tokio::time::timeout_at(deadline, sub.next()).await {
                Ok(Some(m)) => m,
                Ok(None) | Err(_) => break,
            };
            let Ok(hb) = wire::decode::<Heartbeat>(&msg.payload) else {
                tracing::warn!(subject = %msg.subject, "undecodable heartbeat ignored");
                continue;
            };
            if let Some(host) = wanted.get(&subjects::token(&hb.host)) {
                seen.insert((*host).clone(), hb);
            }
        }
        let silent: Vec<String> = hosts
            .iter()
            .filter(|h| !seen.contains_key(*h))
            .cloned()
            .collect();
        if silent.is_empty() {
            Ok(seen)
        } else {
            Err(TransportError::HostsSilent {
                hosts: silent,
                waited: wait,
            })
        }
    }

    /// Reads the heartbeats the server kept, latest per host, into `seen` (for wanted hosts).
    async fn kept_heartbeats(
        &self,
        wanted: &BTreeMap<String, &String>,
        seen: &mut BTreeMap<String, Heartbeat>,
    ) -> Result<(), TransportError> {
        let stream = self.js.get_stream(HEARTBEATS_STREAM).await.map_err(nats)?;
        let consumer: jetstream::consumer::PullConsumer = stream
            .create_consumer(consumer_config(&subjects::kept_heartbeats_spec()))
            .await
            .map_err(nats)?;
        let mut pending = consumer.cached_info().num_pending;
        while pending > 0 {
            let mut batch = consumer
                .fetch()
                .max_messages(usize::try_from(pending).unwrap_or(usize::MAX).min(1000))
                .messages()
                .await
                .map_err(nats)?;
            let mut got = 0;
            while let Some(msg) = batch.next().await {
                let msg = msg.map_err(TransportError::Nats)?;
                got += 1;
                if let Ok(hb) = wire::decode::<Heartbeat>(&msg.payload)
                    && let Some(host) = wanted.get(&subjects::token(&hb.host))
                {
                    seen.insert((*host).clone(), hb);
                }
            }
            if got == 0 {
                break;
            }
            pending = pending.saturating_sub(got);
        }
        Ok(())
    }

    /// Makes sure each host has its job consumer, filtering exactly its own subject: the
    /// scheduler owns the consumers (a host's credentials cannot make one). A consumer of that
    /// name with another filter (made by anyone else) is deleted and made again. Asked again
    /// for up to [`PUBLISH_RETRY_FOR`] when NATS does not answer (a node lost just now, or the
    /// jobs stream's re-election after it): making them twice is harmless.
    pub async fn ensure_job_consumers(&self, hosts: &[String]) -> Result<(), TransportError> {
        let deadline = tokio::time::Instant::now() + PUBLISH_RETRY_FOR;
        loop {
            match self.ensure_job_consumers_once(hosts).await {
                Err(e) if tokio::time::Instant::now() + PUBLISH_RETRY_EVERY < deadline => {
                    tracing::warn!(error = %flotilla_protocol::text::error_chain(&e), "making the job consumers failed; again");
                    tokio::time::sleep(PUBLISH_RETRY_EVERY).await;
                }
                done => return done,
            }
        }
    }

    /// [`crate::transport::Transport::settle_jobs`]: each host's job consumer asked until it
    /// has nothing pending or unacknowledged (one without a consumer has no job); a question
    /// NATS does not answer is asked again until `wait` runs out.
    pub async fn settle_jobs(
        &self,
        hosts: &[String],
        wait: Duration,
    ) -> Result<Vec<String>, TransportError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut busy: Vec<String> = hosts.to_vec();
        while !busy.is_empty() && tokio::time::Instant::now() < deadline {
            let mut still = Vec::new();
            for host in busy {
                if !self.job_settled(&host).await {
                    still.push(host);
                }
            }
            busy = still;
            if !busy.is_empty() {
                tokio::time::sleep(SETTLE_POLL).await;
            }
        }
        Ok(busy)
    }

    async fn job_settled(&self, host: &str) -> bool {
        use async_nats::jetstream::context::ConsumerInfoErrorKind;
        let Ok(stream) = self.js.get_stream(subjects::JOBS_STREAM).await else {
            return false;
        };
        match stream.consumer_info(subjects::job_consumer(host)).await {
            Ok(info) => info.num_pending == 0 && info.num_ack_pending == 0,
            Err(e) => match e.kind() {
                ConsumerInfoErrorKind::NotFound => true,
                ConsumerInfoErrorKind::JetStream(j) => {
                    j.error_code() == jetstream::ErrorCode::CONSUMER_NOT_FOUND
                }
                _ => false,
            },
        }
    }

    async fn ensure_job_consumers_once(&self, hosts: &[String]) -> Result<(), TransportError> {
        let stream = self
            .js
            .get_stream(subjects::JOBS_STREAM)
            .await
            .map_err(nats)?;
        for host in hosts {
            let spec = subjects::job_consumer_spec(host);
            let name = subjects::job_consumer(host);
            let config = consumer_config(&spec);
            let mut consumer: jetstream::consumer::PullConsumer = stream
                .get_or_create_consumer(&name, config.clone())
                .await
                .map_err(nats)?;
            let info = consumer.info().await.map_err(nats)?;
            if info.config.filter_subject != spec.filter_subject {
                tracing::warn!(consumer = %name, found = %info.config.filter_subject, want = %spec.filter_subject, "job consumer with a foreign filter: making it again");
                stream.delete_consumer(&name).await.map_err(nats)?;
                let _: jetstream::consumer::PullConsumer =
                    stream.create_consumer(config).await.map_err(nats)?;
            }
        }
        Ok(())
    }

    /// Publishes a signed job on its host's subject; JetStream drops a second copy with the
    /// same job id.
    pub async fn publish_job(
        &self,
        host: &str,
        job_id: &str,
        payload: Vec<u8>,
    ) -> Result<u64, TransportError> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", job_id);
        let payload: bytes::Bytes = payload.into();
        // A NATS restart mid-rollout loses the publish or its ack: publishing again is safe,
        // since the job id is the `Nats-Msg-Id` and a stored copy drops the second one.
        let deadline = tokio::time::Instant::now() + PUBLISH_RETRY_FOR;
        loop {
            let attempt = async {
                self.js
                    .publish_with_headers(
                        subjects::job_subject(host),
                        headers.clone(),
                        payload.clone(),
                    )
                    .await?
                    .await
            };
            match attempt.await {
                Ok(ack) => return Ok(ack.sequence),
                Err(e)
                    if transient(&e)
                        && tokio::time::Instant::now() + PUBLISH_RETRY_EVERY < deadline =>
                {
                    tracing::warn!(%host, job = %job_id, error = %e, "job publish failed; again");
                    tokio::time::sleep(PUBLISH_RETRY_EVERY).await;
                }
                Err(e) => return Err(nats(e)),
            }
        }
    }

    /// Deletes the jobs at these positions of the jobs stream; one already taken and
    /// acknowledged (gone from the work queue) is not an error.
    pub async fn delete_jobs(&self, seqs: &[u64]) -> Result<(), TransportError> {
        let stream = self
            .js
            .get_stream(subjects::JOBS_STREAM)
            .await
            .map_err(nats)?;
        for &seq in seqs {
            if let Err(e) = stream.delete_message(seq).await {
                tracing::debug!(seq, error = %e, "job not deleted (already taken)");
            }
        }
        Ok(())
    }

    /// A durable consumer of one deploy's events. Durable, so a scheduler that restarts
    /// (`flotilla replay --resume`) picks up what it had not yet acknowledged.
    pub async fn deploy_events(&self, deploy_id: &str) -> Result<DeployEvents, TransportError> {
        let stream: Stream = self
            .js
            .get_stream(subjects::EVENTS_STREAM)
            .await
            .map_err(nats)?;
        let spec = subjects::deploy_consumer_spec(deploy_id);
        let mut consumer: jetstream::consumer::PullConsumer = stream
            .get_or_create_consumer(
                &subjects::deploy_consumer(deploy_id),
                consumer_config(&spec),
            )
            .await
            .map_err(nats)?;
        // Reports stored before this subscription: not yet delivered, or delivered to a
        // scheduler that died before acknowledging them (they come again after the ack wait).
        let info = consumer.info().await.map_err(nats)?;
        let waiting = info.num_pending + u64::try_from(info.num_ack_pending).unwrap_or(0);
        let messages = consumer.messages().await.map_err(nats)?;
        Ok(DeployEvents { messages, waiting })
    }
}

impl Bus {
    /// Every heartbeat from now on (core NATS: liveness needs no history).
    pub async fn live_heartbeats(&self) -> Result<async_nats::Subscriber, TransportError> {
        self.client
            .subscribe(subjects::all_heartbeats())
            .await
            .map_err(nats)
    }

    /// Deletes the deploy's durable consumer (a finished deploy's reports are all durable).
    pub async fn forget_deploy_events(&self, deploy_id: &str) -> Result<(), TransportError> {
        let stream = self
            .js
            .get_stream(subjects::EVENTS_STREAM)
            .await
            .map_err(nats)?;
        stream
            .delete_consumer(&subjects::deploy_consumer(deploy_id))
            .await
            .map_err(nats)?;
        Ok(())
    }
}

/// One deploy's reports, in order; each must be acknowledged after it is durable.
pub struct DeployEvents {
    messages: pull::Stream,
    /// Reports already stored when the subscription was made.
    pub waiting: u64,
}

impl std::fmt::Debug for DeployEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeployEvents")
    }
}

/// A report and the handle to acknowledge it; dropped unacknowledged, it is NAKed so the
/// server delivers it again at once (wadm's `ScopedMessage`).
pub struct Delivery {
    pub report: Result<SignedReport, wire::WireError>,
    message: Option<jetstream::Message>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("report", &self.report)
            .finish()
    }
}

impl Delivery {
    /// Acknowledge: the report is durable in the event log (or deliberately dropped).
    pub async fn ack(mut self) -> Result<(), TransportError> {
        match self.message.take() {
            Some(message) => message.ack().await.map_err(TransportError::Nats),
            None => Ok(()),
        }
    }

    /// The host token of the subject the report arrived on (`flotilla.evt.<deploy>.<host>`).
    pub fn subject_host(&self) -> Option<&str> {
        let message = self.message.as_ref()?;
        message.subject.as_str().rsplit('.').next()
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        let Some(message) = self.message.take() else {
            return;
        };
        // Only inside a runtime (always, in practice); outside one the server's ack wait
        // redelivers it anyway.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                if let Err(e) = message.ack_with(jetstream::AckKind::Nak(None)).await {
                    tracing::debug!(error = %e, "nak of an unacknowledged report failed");
                }
            });
        }
    }
}

impl DeployEvents {
    /// The next report; `None` if the subscription ended.
    pub async fn next(&mut self) -> Option<Result<Delivery, TransportError>> {
        let msg = self.messages.next().await?;
        Some(match msg {
            Ok(message) => Ok(Delivery {
                report: wire::decode::<SignedReport>(&message.payload),
                message: Some(message),
            }),
            Err(e) => Err(nats(e)),
        })
    }
}

/// How long a job publish keeps trying through a NATS outage: a server restart takes a few
/// seconds, and the step timeout is the bound on anything longer.
const PUBLISH_RETRY_FOR: Duration = Duration::from_secs(30);
/// How often a host's job consumer is asked again while its job runs.
const SETTLE_POLL: Duration = Duration::from_millis(250);
/// Pause between two publish attempts: the client reconnects on its own meanwhile.
const PUBLISH_RETRY_EVERY: Duration = Duration::from_secs(1);

/// A publish that failed because the server was away (no ack, connection lost, JetStream
/// not answering yet), not because it refused the message.
fn transient(e: &jetstream::context::PublishError) -> bool {
    use jetstream::context::PublishErrorKind as K;
    matches!(e.kind(), K::TimedOut | K::BrokenPipe | K::StreamNotFound)
}
