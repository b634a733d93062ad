//! A standby's way to keep its own log: every event of `FLOTILLA_LOG` after its own last
//! position, appended in stream order (the stream is the leader's log in order, each event
//! under its own id, so the standby's log is the leader's, position for position). Appends
//! are idempotent by event id, so reading an event twice is harmless.

use flotilla_events::{Envelope, EventLog, LogError, NewEvent};
use flotilla_protocol::control::{LOG_PREFIX, LOG_STREAM};
use flotilla_protocol::wire::{self, WireError};
use futures::StreamExt;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error("event log")]
    Log(#[from] LogError),
    #[error("{LOG_STREAM} is missing")]
    Stream(#[source] async_nats::jetstream::context::GetStreamError),
    #[error("reading {LOG_STREAM}")]
    Consumer(#[source] async_nats::jetstream::stream::ConsumerError),
    #[error("reading {LOG_STREAM}")]
    Messages(#[source] async_nats::jetstream::consumer::StreamError),
    #[error("reading {LOG_STREAM}")]
    Next(#[source] async_nats::jetstream::consumer::pull::OrderedError),
    #[error("{LOG_STREAM} holds something that is not an event")]
    Malformed(#[source] WireError),
    #[error(
        "{LOG_STREAM} skips from position {have} to {got}: this log cannot follow it (rebuild \
         it from the stream: move the state's events/ aside)"
    )]
    Gap { have: u64, got: u64 },
}

/// Appends what `FLOTILLA_LOG` holds after `log`'s last position; returns once `stop` is
/// cancelled, or, with `until`, once the log reached that position.
pub async fn follow(
    log: Arc<dyn EventLog>,
    js: async_nats::jetstream::Context,
    until: Option<u64>,
    stop: CancellationToken,
) -> Result<(), FollowError> {
    use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
    if until.is_some_and(|u| log.last_seq() >= u) {
        return Ok(());
    }
    let stream = js
        .get_stream(LOG_STREAM)
        .await
        .map_err(FollowError::Stream)?;
    // Stream positions and log positions may differ (a stream made again is republished
    // from the log): read it all and skip what the log has, by event position.
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: format!("{LOG_PREFIX}.>"),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(FollowError::Consumer)?;
    let mut messages = consumer.messages().await.map_err(FollowError::Messages)?;
    loop {
        let message = tokio::select! {
            m = messages.next() => m,
            () = stop.cancelled() => return Ok(()),
        };
        let Some(message) = message else {
            return Ok(());
        };
        let message = message.map_err(FollowError::Next)?;
        let event: Envelope = wire::decode(&message.payload).map_err(FollowError::Malformed)?;
        let have = log.last_seq();
        if event.seq <= have {
            continue;
        }
        if event.seq != have + 1 {
            return Err(FollowError::Gap {
                have,
                got: event.seq,
            });
        }
        log.append(NewEvent::from(event))?;
        if until.is_some_and(|u| log.last_seq() >= u) {
            return Ok(());
        }
    }
}
