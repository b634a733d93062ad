//! The log's way onto `FLOTILLA_LOG`: every event, in order, once it is durable in sled, each
//! published with its event id as `Nats-Msg-Id` and acknowledged by JetStream before the
//! next. After a restart it starts after the last event the stream has, so the stream is the
//! log in the same order, with nothing missing and nothing twice.

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

/// Publishes from where the stream ends until `stop` fires, then what is left.
pub async fn run(
    log: Arc<dyn EventLog>,
    js: async_nats::jetstream::Context,
    observe: Arc<dyn Fn(&Envelope) + Send + Sync>,
    stop: CancellationToken,
) -> Result<(), PublishError> {
    // Subscribed before reading, so nothing lands between the read and the tail.
    let mut tail = log.subscribe();
    let mut next = published_through(&js).await? + 1;
    // Metrics fold the whole log once, then each event as it is published.
    for event in log.read_from(1)? {
        let event = event?;
        if event.seq >= next {
            break;
        }
        observe(&event);
    }
    loop {
        next = catch_up(log.as_ref(), &js, observe.as_ref(), next).await?;
        tokio::select! {
            received = tail.recv() => match received {
                Ok(event) if event.seq == next => {
                    publish(&js, &event).await?;
                    observe(&event);
                    next += 1;
                }
                // Already published, or a gap the catch-up fills.
                Ok(_) | Err(TailError::Lagged { .. }) => {}
                Err(TailError::Closed) => break,
            },
            () = stop.cancelled() => break,
        }
    }
    catch_up(log.as_ref(), &js, observe.as_ref(), next).await?;
    Ok(())
}

/// Publishes every event from `next` to the end of the log; the position after them.
async fn catch_up(
    log: &dyn EventLog,
    js: &async_nats::jetstream::Context,
    observe: &(dyn Fn(&Envelope) + Send + Sync),
    mut next: u64,
) -> Result<u64, PublishError> {
    if log.last_seq() < next {
        return Ok(next);
    }
    let pending: Vec<Envelope> = log.read_from(next)?.collect::<Result<_, _>>()?;
    for event in pending {
        publish(js, &event).await?;
        observe(&event);
        next = event.seq + 1;
    }
    Ok(next)
}

async fn publish(
    js: &async_nats::jetstream::Context,
    event: &Envelope,
) -> Result<(), PublishError> {
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
    .map_err(|source| PublishError::Publish { seq, source })?
    .await
    .map_err(|source| PublishError::Publish { seq, source })?;
    Ok(())
}
