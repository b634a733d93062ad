//! Live subscription to a log's appends, for views that follow a deploy.
//!
//! A tokio broadcast channel: usable from async code (`recv().await`) and from
//! threads (`blocking_recv`). Appends never wait for slow tails; a tail that
//! falls more than [`CAPACITY`] events behind is told how many it missed and
//! re-reads them from the log.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::envelope::Envelope;

/// Events a tail may fall behind before it lags.
pub const CAPACITY: usize = 4096;

/// Why a tail produced no event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TailError {
    /// The tail fell behind and `missed` events were dropped for it; read them
    /// with `EventLog::read_from(last seen + 1)`.
    #[error("live view fell behind by {missed} events")]
    Lagged {
        /// How many events it missed.
        missed: u64,
    },
    /// The log was closed.
    #[error("event log closed")]
    Closed,
}

/// The sending side, owned by a log.
#[derive(Debug)]
pub(crate) struct TailSender(broadcast::Sender<Arc<Envelope>>);

impl TailSender {
    pub(crate) fn new() -> Self {
        Self(broadcast::channel(CAPACITY).0)
    }

    pub(crate) fn subscribe(&self) -> Tail {
        Tail(self.0.subscribe())
    }

    /// Whether any tail listens (so appends can skip copying events).
    pub(crate) fn is_listened(&self) -> bool {
        self.0.receiver_count() > 0
    }

    /// Publish durable events.
    pub(crate) fn publish(&self, events: impl IntoIterator<Item = Envelope>) {
        for event in events {
            // An error only means every tail went away meanwhile.
            let _ = self.0.send(Arc::new(event));
        }
    }
}

/// A live view of appended events, in log order.
#[derive(Debug)]
pub struct Tail(broadcast::Receiver<Arc<Envelope>>);

fn convert(e: broadcast::error::RecvError) -> TailError {
    match e {
        broadcast::error::RecvError::Lagged(missed) => TailError::Lagged { missed },
        broadcast::error::RecvError::Closed => TailError::Closed,
    }
}

impl Tail {
    /// The next event, waiting for it.
    pub async fn recv(&mut self) -> Result<Arc<Envelope>, TailError> {
        self.0.recv().await.map_err(convert)
    }

    /// The next event, blocking this thread (not for use inside async code).
    pub fn blocking_recv(&mut self) -> Result<Arc<Envelope>, TailError> {
        self.0.blocking_recv().map_err(convert)
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Result<Option<Arc<Envelope>>, TailError> {
        use broadcast::error::TryRecvError;
        match self.0.try_recv() {
            Ok(event) => Ok(Some(event)),
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Lagged(missed)) => Err(TailError::Lagged { missed }),
            Err(TryRecvError::Closed) => Err(TailError::Closed),
        }
    }
}
