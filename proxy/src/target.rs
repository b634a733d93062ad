//! An upstream target and the requests in flight to it, so a switch can drain it.
//!
//! A request takes an [`InFlight`] guard while the routing table is read-locked
//! (see `router`), so once a switch has swapped the table every request that
//! could still reach the old target is already counted: draining waits for the
//! count to reach zero, and at the drain deadline cancels whatever is left.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// One upstream address with its version label and in-flight requests.
#[derive(Debug)]
pub struct Target {
    /// `ADDR:PORT` of the upstream.
    pub addr: String,
    /// `addr` parsed once, for building each upstream request's URI.
    pub authority: http::uri::Authority,
    /// The version label, for metrics.
    pub version: String,
    in_flight: AtomicUsize,
    idle: Notify,
    /// Cancelled at the drain deadline: requests still waiting on this target give up.
    cancel: CancellationToken,
}

/// Counts one request against its target until dropped.
#[derive(Debug)]
pub struct InFlight {
    target: Arc<Target>,
}

/// What draining a target found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// Requests that were still running at the drain deadline and were cancelled.
    pub cancelled: usize,
}

impl Target {
    /// A target for `addr`; an address that is no URI authority (specs are validated
    /// before this) routes to an unroutable placeholder rather than panicking.
    pub fn new(addr: impl Into<String>, version: impl Into<String>) -> Arc<Self> {
        let addr = addr.into();
        let authority = http::uri::Authority::try_from(addr.as_str())
            .unwrap_or_else(|_| http::uri::Authority::from_static("invalid.invalid:1"));
        Arc::new(Self {
            addr,
            authority,
            version: version.into(),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            cancel: CancellationToken::new(),
        })
    }

    /// Counts a request; call only while the routing table is read-locked.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight {
            target: Arc::clone(self),
        }
    }

    /// Requests currently running against this target.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Resolves when this target's requests must be abandoned.
    pub fn cancelled(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.cancel.cancelled()
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Waits until no request runs against this target, or until `deadline`,
    /// when the remaining requests are cancelled. Call after the target is out of the table.
    pub async fn drain(&self, deadline: Instant) -> Drained {
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            // Register before checking, so a guard dropped in between still wakes us.
            idle.as_mut().enable();
            let left = self.in_flight();
            if left == 0 {
                return Drained { cancelled: 0 };
            }
            tokio::select! {
                () = &mut idle => {}
                () = tokio::time::sleep_until(deadline) => {
                    // Count before cancelling: cancelled requests end (on other threads) at once.
                    let cancelled = self.in_flight();
                    self.cancel.cancel();
                    return Drained { cancelled };
                }
            }
        }
    }
}

impl InFlight {
    pub fn target(&self) -> &Arc<Target> {
        &self.target
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.target.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.target.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Draining returns as soon as the last in-flight request finishes.
    #[tokio::test(start_paused = true)]
    async fn drain_waits_for_in_flight() {
        let target = Target::new("127.0.0.1:1", "v1");
        let guard = target.begin();
        let t = Arc::clone(&target);
        let drain =
            tokio::spawn(async move { t.drain(Instant::now() + Duration::from_secs(30)).await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!drain.is_finished());
        drop(guard);
        assert_eq!(drain.await.unwrap(), Drained { cancelled: 0 });
        assert!(!target.is_cancelled());
    }

    /// At the drain deadline the remaining requests are cancelled and counted.
    #[tokio::test(start_paused = true)]
    async fn drain_deadline_cancels() {
        let target = Target::new("127.0.0.1:1", "v1");
        let _guard = target.begin();
        let drained = target.drain(Instant::now() + Duration::from_secs(2)).await;
        assert_eq!(drained, Drained { cancelled: 1 });
        assert!(target.is_cancelled());
    }
}
