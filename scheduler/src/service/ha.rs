//! Several scheduler instances, one leader (HA, one instance per control host): each
//! follows `FLOTILLA_LOG` into its own log while it stands by, and competes for the leader
//! lease ([`super::lease`]). The instance that takes it first catches its log up with
//! everything the stream holds, then serves as [`super::Service`] does, which resumes the
//! rollouts the lost leader was running from that log; it stops serving the moment it loses
//! the lease, and gives it up when stopped.

use super::follower::{self, FollowError};
use super::lease::{Contender, LeaseError};
use super::{Service, ServiceError, published_through};
use crate::transport::Transport;
use tokio_util::sync::CancellationToken;

/// Why an instance stopped.
#[derive(Debug, thiserror::Error)]
pub enum HaError {
    #[error("following FLOTILLA_LOG")]
    Follow(#[source] FollowError),
    #[error("reading FLOTILLA_LOG's end")]
    End(#[source] super::publisher::PublishError),
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
    tracing::info!("leading: catching up with FLOTILLA_LOG");
    // Everything the lost leader published is in this log before anything is decided.
    let end = published_through(&js).await.map_err(HaError::End)?;
    follower::follow(service.log.clone(), js, Some(end), CancellationToken::new())
        .await
        .map_err(HaError::Follow)?;
    let lost = leadership.lost();
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
