//! The log's way onto `FLOTILLA_LOG`: every event, in order, once it is durable in sled, each
//! published with its event id as `Nats-Msg-Id`. Events go out in batches of up to
//! [`PUBLISH_BATCH`] sent back to back on the one connection (so the stream keeps their
//! order), whose acknowledgements are then awaited in order before the next batch: one round
//! trip per batch, not per event (one per event held a 1,000-host deploy's followers seconds
//! behind its log). After a restart, or a failure (it tries again until stopped), it starts
//! after the last event the stream has, so the stream is the log in the same order, with
//! nothing missing and nothing twice. Each acknowledged position goes to
//! [`crate::stored`], which rollouts wait on before they act.

use crate::stored::StoredSender;
use flotilla_events::log::TailError;
use flotilla_events::{Envelope, EventLog, LogError};
use flotilla_protocol::control::{self, LOG_STREAM};
use flotilla_protocol::wire::{self, WireError};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("event log")]
    Log(#[from] LogError),
    #[error("encoding event {seq}")]
    Encode {
        seq: u64,
        #[source]
        source: WireError,
    },
    #[error("publishing event {seq}")]
    Publish {
        seq: u64,
        #[source]
        source: async_nats::jetstream::context::PublishError,
    },
    #[error("reading the last event of {LOG_STREAM}")]
    Last(#[source] async_nats::jetstream::stream::RawMessageError),
    #[error("reading {LOG_STREAM}'s state")]
    Info(#[source] async_nats::jetstream::context::RequestError),
    #[error("the last message of {LOG_STREAM} is not an event")]
    Malformed(#[source] WireError),
    #[error("{LOG_STREAM} is missing")]
    Stream(#[source] async_nats::jetstream::context::GetStreamError),
}

/// The log position of the last event `FLOTILLA_LOG` holds (0 when it is empty).
pub async fn published_through(js: &async_nats::jetstream::Context) -> Result<u64, PublishError> {
    let mut stream = js
        .get_stream(LOG_STREAM)
        .await
        .map_err(PublishError::Stream)?;
    let last = stream
        .info()
        .await
        .map_err(PublishError::Info)?
        .state
        .last_sequence;
    if last == 0 {
        return Ok(0);
    }
    let message = stream
        .get_raw_message(last)
        .await
        .map_err(PublishError::Last)?;
    let event: Envelope = wire::decode(&message.payload).map_err(PublishError::Malformed)?;
    Ok(event.seq)
}

/// How long the publisher waits before it tries again after NATS failed it (a stream whose
/// leader was lost answers again once the cluster re-elects one, within seconds): short, since
/// rollouts hold while the stream is behind.
const PUBLISH_RETRY: std::time::Duration = std::time::Duration::from_millis(500);

/// Publishes from where the stream ends until `stop` fires, then what is left, telling
/// `stored` how far the stream holds the log. A failure (a publish not acknowledged while
/// the cluster loses a node) does not end it: it starts again after the last event the stream
/// has, so the stream never stays behind a leader that goes on running. Once `stop` fired,
/// the first failure is returned.
pub async fn run(
    log: Arc<dyn EventLog>,
    js: async_nats::jetstream::Context,
    observe: Arc<dyn Fn(&Envelope) + Send + Sync>,
    stored: StoredSender,
    stop: CancellationToken,
) -> Result<(), PublishError> {
    // Subscribed before reading, so nothing lands between the read and the tail.
    let mut tail = log.subscribe();
    let mut out = Out {
        js: &js,
        observe: observe.as_ref(),
        stored: &stored,
        observed: 0,
    };
    loop {
        match publish_until_stopped(log.as_ref(), &mut out, &mut tail, &stop).await {
            Ok(()) => return Ok(()),
            Err(e) if stop.is_cancelled() => return Err(e),
            Err(e) => {
                tracing::warn!(
                    error = %flotilla_protocol::text::error_chain(&e),
                    "publishing the log to {LOG_STREAM} failed; trying again after the last event it holds"
                );
                tokio::select! {
                    () = tokio::time::sleep(PUBLISH_RETRY) => {}
                    // One last attempt below publishes what is left.
                    () = stop.cancelled() => {}
                }
            }
        }
    }
}

/// Where events go and who hears of them.
struct Out<'a> {
    js: &'a async_nats::jetstream::Context,
    observe: &'a (dyn Fn(&Envelope) + Send + Sync),
    stored: &'a StoredSender,
    /// The last event handed to `observe` (each is handed over once, across attempts).
    observed: u64,
}

impl Out<'_> {
    /// The stream holds `event`: metrics see it (once), waiting rollouts hear of it.
    fn stored(&mut self, event: &Envelope) {
        if event.seq > self.observed {
            (self.observe)(event);
            self.observed = event.seq;
        }
        self.stored.stored_through(event.seq);
    }
}

/// One attempt: from the stream's end, what the log holds, then each event as it is appended,
/// until `stop` fires (then what is left).
async fn publish_until_stopped(
    log: &dyn EventLog,
    out: &mut Out<'_>,
    tail: &mut flotilla_events::log::Tail,
    stop: &CancellationToken,
) -> Result<(), PublishError> {
    let mut next = published_through(out.js).await? + 1;
    // What the stream already holds: metrics fold it (the first time), rollouts may act on it.
    if next > 1 {
        for event in log.read_from(out.observed + 1)? {
            let event = event?;
            if event.seq >= next {
                break;
            }
            out.stored(&event);
        }
        out.stored.stored_through(next - 1);
    }
    loop {
        next = catch_up(log, out, next).await?;
        tokio::select! {
            received = tail.recv() => match received {
                Ok(event) if event.seq == next => {
                    // Whatever else is already appended goes in the same batch.
                    let mut expected = event.seq + 1;
                    let mut batch = vec![event];
                    while batch.len() < PUBLISH_BATCH {
                        match tail.try_recv() {
                            Ok(Some(event)) if event.seq == expected => {
                                expected += 1;
                                batch.push(event);
                            }
                            // Empty, or a gap or lag the catch-up fills from the log.
                            _ => break,
                        }
                    }
                    next = publish_batch(out, next, batch.iter().map(|e| &**e)).await?;
                }
                // Already published, or a gap the catch-up fills.
                Ok(_) | Err(TailError::Lagged { .. }) => {}
                Err(TailError::Closed) => break,
            },
            () = stop.cancelled() => break,
        }
    }
    catch_up(log, out, next).await?;
    Ok(())
}

/// Publishes every event from `next` to the end of the log; the position after them.
async fn catch_up(
    log: &dyn EventLog,
    out: &mut Out<'_>,
    mut next: u64,
) -> Result<u64, PublishError> {
    if log.last_seq() < next {
        return Ok(next);
    }
    let pending: Vec<Envelope> = log.read_from(next)?.collect::<Result<_, _>>()?;
    for batch in pending.chunks(PUBLISH_BATCH) {
        next = publish_batch(out, next, batch.iter()).await?;
    }
    Ok(next)
}

/// Events sent to NATS back to back before their acknowledgements are awaited: enough to
/// cover a burst of reports from a 1,000-host batch in a few round trips, few enough that a
/// batch stays well inside the client's outgoing buffer and JetStream's pending-ack limits.
const PUBLISH_BATCH: usize = 256;

/// Publishes `events` (consecutive, in log order) back to back, then awaits each
/// acknowledgement in order and marks the event stored; the log position after the last
/// (`next` for none). An event whose acknowledgement fails stops the batch with its error:
/// the ones before it are on the stream, and the next attempt resumes after the last the
/// stream has.
async fn publish_batch<'e>(
    out: &mut Out<'_>,
    mut next: u64,
    events: impl Iterator<Item = &'e Envelope>,
) -> Result<u64, PublishError> {
    let mut sent = Vec::new();
    for event in events {
        sent.push((event, publish(out.js, event).await?));
    }
    for (event, ack) in sent {
        ack.await.map_err(|source| PublishError::Publish {
            seq: event.seq,
            source,
        })?;
        out.stored(event);
        next = event.seq + 1;
    }
    Ok(next)
}

/// Sends one event; the acknowledgement is awaited by the caller.
async fn publish(
    js: &async_nats::jetstream::Context,
    event: &Envelope,
) -> Result<async_nats::jetstream::context::PublishAckFuture, PublishError> {
    let seq = event.seq;
    let bytes = wire::encode(event).map_err(|source| PublishError::Encode { seq, source })?;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(
        async_nats::header::NATS_MESSAGE_ID,
        event.id.to_string().as_str(),
    );
    js.publish_with_headers(
        control::log_subject(event.deploy_id.as_str()),
        headers,
        bytes.into(),
    )
    .await
    .map_err(|source| PublishError::Publish { seq, source })
}
