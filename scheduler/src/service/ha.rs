//! Several scheduler instances, one leader (HA, one instance per control host): each
//! follows `FLOTILLA_LOG` into its own log while it stands by, and competes for the leader
//! lease ([`super::lease`]). The instance that takes it first waits until every stream it
//! uses is led by a live NATS node ([`super::ready`]), catches its log up with everything the
//! stream holds, then serves as [`super::Service`] does, which resumes the
//! rollouts the lost leader was running from that log; it stops serving the moment it loses
//! the lease, and gives it up when stopped.

use super::follower::{self, FollowError};
use super::lease::{Contender, LeaseError};
use super::{Service, ServiceError, published_through, ready};
use crate::transport::Transport;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long a new leader keeps trying to read `FLOTILLA_LOG`'s end and catch its log up
/// before it gives up (and Docker's restart policy brings it back as a standby). When the
/// lost leader's host took a NATS node with it, the cluster needs about 6 s (route pings every
/// 2 s, three unanswered) to drop that node's routes; until then a stream read may be routed
/// to it and time out, and an ordered consumer may wait on it.
const CATCH_UP_FOR: Duration = Duration::from_secs(60);
/// One attempt at catching up: reading the stream's end and following it there. The standby
/// followed the stream all along, so an attempt that makes no end in this time is waiting on a
/// lost node, not reading a long log (what it appended stays; the next attempt goes on from it).
const CATCH_UP_ATTEMPT: Duration = Duration::from_secs(15);
/// The pause between attempts, short beside the cluster's own 6 s.
const CATCH_UP_RETRY: Duration = Duration::from_secs(1);

/// Why an instance stopped.
#[derive(Debug, thiserror::Error)]
pub enum HaError {
    #[error("following FLOTILLA_LOG")]
    Follow(#[source] FollowError),
    #[error("reading FLOTILLA_LOG's end")]
    End(#[source] super::publisher::PublishError),
    #[error("catching up with FLOTILLA_LOG made no end in {0:?}")]
    CatchUpTimedOut(Duration),
    #[error(transparent)]
    Lease(#[from] LeaseError),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

/// What an instance did before returning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// `shutdown` came while it stood by.
    AsStandby,
    /// It led, then `shutdown` came (the lease given up).
    AsLeader,
    /// It led and lost the lease (another instance leads now): it stopped serving at once.
    LostLease,
}

/// Runs one instance: standby until it holds the lease, then leader until `shutdown` or the
/// lease is lost.
pub async fn run<T: Transport + Clone + 'static>(
    service: Service<T>,
    contender: Contender,
    shutdown: CancellationToken,
) -> Result<Stopped, HaError> {
    let js = async_nats::jetstream::new(service.client.clone());
    // The stream must exist before anyone follows it.
    js.get_or_create_stream(crate::transport::bus::replicated(
        &js,
        &flotilla_protocol::control::log_stream(),
    ))
    .await
    .map_err(|source| {
        HaError::Service(ServiceError::Stream {
            stream: flotilla_protocol::control::LOG_STREAM,
            source,
        })
    })?;
    let stop_following = CancellationToken::new();
    let following = tokio::spawn(follower::follow(
        service.log.clone(),
        js.clone(),
        None,
        stop_following.clone(),
    ));
    let leadership = contender.acquire(&shutdown).await;
    stop_following.cancel();
    match following.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(HaError::Follow(e)),
        Err(join) => tracing::warn!(error = %join, "the log follower stopped"),
    }
    let Some(leadership) = leadership else {
        return Ok(Stopped::AsStandby);
    };
    tracing::info!("leading: catching up with FLOTILLA_LOG once its streams are led");
    let lost = leadership.lost();
    // A NATS node lost with the last leader may have led streams this one needs.
    let waited = tokio::time::Instant::now();
    let led = tokio::select! {
        led = ready::await_led(&js, &shutdown) => led,
        () = lost.cancelled() => false,
    };
    if led {
        tracing::info!(waited = ?waited.elapsed(), "leading: waited for the streams' leaders");
    }
    // Everything the lost leader published is in this log before anything is decided.
    if !led || !catch_up(&service, &js, &lost, &shutdown).await? {
        if lost.is_cancelled() {
            return Ok(Stopped::LostLease);
        }
        leadership.release().await;
        return Ok(Stopped::AsLeader);
    }
    let stop = shutdown.child_token();
    let serving = service.bind().await?.serve(stop.clone());
    tokio::pin!(serving);
    let stopped = tokio::select! {
        served = &mut serving => {
            served?;
            Stopped::AsLeader
        }
        () = lost.cancelled() => {
            // Another instance leads, and only one may write the log: stop at once, as a
            // crash would (nothing more is recorded or published here; the rollouts are
            // dropped where they are and the new leader resumes them from the log).
            return Ok(Stopped::LostLease);
        }
    };
    leadership.release().await;
    Ok(stopped)
}

/// Catches the log up with `FLOTILLA_LOG`'s end, trying again while the cluster recovers from a
/// lost node. `Ok(false)` when the lease was lost or `shutdown` came meanwhile.
async fn catch_up<T: Transport + Clone + 'static>(
    service: &Service<T>,
    js: &async_nats::jetstream::Context,
    lost: &CancellationToken,
    shutdown: &CancellationToken,
) -> Result<bool, HaError> {
    let deadline = tokio::time::Instant::now() + CATCH_UP_FOR;
    loop {
        let attempt = async {
            let end = published_through(js).await.map_err(HaError::End)?;
            follower::follow(
                service.log.clone(),
                js.clone(),
                Some(end),
                CancellationToken::new(),
            )
            .await
            .map_err(HaError::Follow)
        };
        let failed = tokio::select! {
            done = tokio::time::timeout(CATCH_UP_ATTEMPT, attempt) => match done {
                Ok(Ok(())) => return Ok(true),
                Ok(Err(e)) => Some(e),
                Err(_elapsed) => None,
            },
            () = lost.cancelled() => return Ok(false),
            () = shutdown.cancelled() => return Ok(false),
        };
        if tokio::time::Instant::now() >= deadline {
            return match failed {
                Some(e) => Err(e),
                None => Err(HaError::CatchUpTimedOut(CATCH_UP_FOR)),
            };
        }
        match &failed {
            Some(e) => tracing::warn!(
                error = %flotilla_protocol::text::error_chain(e),
                "catching up with FLOTILLA_LOG failed; trying again"
            ),
            None => tracing::warn!("catching up with FLOTILLA_LOG made no end; trying again"),
        }
        tokio::time::sleep(CATCH_UP_RETRY).await;
    }
}
