//! How far the event log is stored beyond this process: in service mode, the last event
//! `FLOTILLA_LOG` acknowledged. The engine waits on it before it acts (a job published) and
//! before it acknowledges a report, so a scheduler taking over from a lost leader finds in
//! the stream every event the fleet acted on: nothing is acted on that a successor cannot see.
//! Embedded mode has no such wait (its log is the only copy).

use std::time::Duration;
use tokio::sync::watch;

/// The publishing side: told each log position once the stream holds it.
#[derive(Debug)]
pub struct StoredSender(watch::Sender<u64>);

impl StoredSender {
    /// The stream holds every event through `seq`.
    pub fn stored_through(&self, seq: u64) {
        self.0.send_if_modified(|through| {
            let moved = seq > *through;
            if moved {
                *through = seq;
            }
            moved
        });
    }
}

/// The waiting side (cloned into each procedure).
#[derive(Debug, Clone)]
pub struct Stored(watch::Receiver<u64>);

/// A pair, starting at log position `through`.
pub fn channel(through: u64) -> (StoredSender, Stored) {
    let (tx, rx) = watch::channel(through);
    (StoredSender(tx), Stored(rx))
}

/// The stream did not catch up with the log in time.
#[derive(Debug, thiserror::Error)]
#[error(
    "the event stream holds the log only through event {stored}, not {wanted}, after {}s: \
     the scheduler does not act on events a successor could not see",
    waited.as_secs()
)]
pub struct NotStored {
    pub wanted: u64,
    pub stored: u64,
    pub waited: Duration,
}

impl Stored {
    /// Waits, up to `wait`, until the stream holds every event through `seq`.
    pub async fn through(&self, seq: u64, wait: Duration) -> Result<(), NotStored> {
        let mut rx = self.0.clone();
        let reached = tokio::time::timeout(wait, rx.wait_for(|through| *through >= seq)).await;
        match reached {
            Ok(Ok(_)) => Ok(()),
            // Timed out, or the publisher is gone (its service is stopping).
            Ok(Err(_)) | Err(_) => Err(NotStored {
                wanted: seq,
                stored: *self.0.borrow(),
                waited: wait,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A wait returns once the publisher reports the position, and not before.
    #[tokio::test(start_paused = true)]
    async fn a_wait_ends_when_the_stream_holds_the_position() {
        let (tx, stored) = channel(3);
        assert!(stored.through(3, Duration::ZERO).await.is_ok());
        let waiting = tokio::spawn({
            let stored = stored.clone();
            async move { stored.through(5, Duration::from_secs(10)).await }
        });
        tx.stored_through(4);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        tx.stored_through(5);
        assert!(waiting.await.expect("joins").is_ok());
    }

    /// A stream that stays behind fails the wait with how far it got; a position never
    /// moves back.
    #[tokio::test(start_paused = true)]
    async fn a_stream_left_behind_fails_the_wait() {
        let (tx, stored) = channel(0);
        tx.stored_through(7);
        tx.stored_through(2);
        let err = stored
            .through(9, Duration::from_secs(1))
            .await
            .expect_err("never stored");
        assert_eq!((err.wanted, err.stored), (9, 7));
    }
}
