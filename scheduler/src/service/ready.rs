//! What a new leader waits for before it acts: every JetStream stream it uses led by a live
//! NATS node. When the lost leader's host took a NATS node with it, the streams and the
//! JetStream meta group that node led stay leaderless until their Raft groups notice (an
//! election timeout of several seconds, which may end after the lease's ttl): a request to
//! them meanwhile is not answered, so a takeover that started at once would fail the
//! rollout it resumes on its first consumer or lock request, and an executor's report would
//! find no stream to land in.

use async_nats::jetstream;
use flotilla_protocol::{control, subjects};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long a new leader waits for the streams to be led before it goes on anyway (and a
/// request that still finds no leader fails the rollout with its error, to be resumed): well
/// beyond NATS's election timeouts (at most about 10 s) plus the route pings that notice a
/// lost node (2 s, three unanswered).
pub const LED_WAIT: Duration = Duration::from_secs(45);
/// How often an unanswered stream is asked again: each ask already waits up to
/// [`LED_ASK_TIMEOUT`], so this only spaces out the quick refusals.
const LED_POLL: Duration = Duration::from_millis(250);
/// How long one ask waits for its answer: a live leader answers in milliseconds, a lost one
/// never does. With the client's 5 s request timeout, asks that went to the lost node held
/// a fleet takeover about 10 s past the re-election; a short one ends the wait within about
/// a second of it.
const LED_ASK_TIMEOUT: Duration = Duration::from_secs(1);

/// The streams the service and its rollouts use.
fn streams() -> [String; 6] {
    [
        control::LOG_STREAM.to_owned(),
        control::rollout_bucket_stream().name,
        subjects::JOBS_STREAM.to_owned(),
        subjects::EVENTS_STREAM.to_owned(),
        subjects::HEARTBEATS_STREAM.to_owned(),
        subjects::lock_bucket_stream().name,
    ]
}

/// Whether JetStream answers for `stream` with a leader (a stream on one server has none to
/// name, and is led by that server). A stream that does not exist yet (the first leader of a
/// new cluster makes some) has nothing to wait for.
async fn led(js: &jetstream::Context, stream: &str) -> bool {
    use async_nats::jetstream::context::GetStreamErrorKind;
    let mut handle = match js.get_stream(stream).await {
        Ok(handle) => handle,
        Err(e) => {
            return matches!(e.kind(), GetStreamErrorKind::JetStream(j)
                if j.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND);
        }
    };
    match handle.info().await {
        Ok(info) => info.cluster.as_ref().is_none_or(|c| c.leader.is_some()),
        Err(_) => false,
    }
}

/// Whether the JetStream meta group answers (read as plain JSON: the account info's shape
/// changes between server versions).
async fn meta_led(js: &jetstream::Context) -> bool {
    let answer: Result<serde_json::Value, _> = js.request("INFO", b"").await;
    answer.is_ok_and(|a| a.get("error").is_none())
}

/// Waits until the JetStream meta group and every stream the service uses answer with a
/// leader, up to [`LED_WAIT`]; `false` when `stop` came first. A wait that runs out is
/// logged and given up: the rollouts then fail with their own errors, which say what to do.
pub async fn await_led(js: &jetstream::Context, stop: &CancellationToken) -> bool {
    let mut asking = js.clone();
    asking.set_timeout(LED_ASK_TIMEOUT);
    let js = &asking;
    let deadline = tokio::time::Instant::now() + LED_WAIT;
    let all = async {
        // The meta group answers account requests (and makes consumers).
        while !meta_led(js).await {
            if tokio::time::Instant::now() >= deadline {
                return Err("the JetStream meta group".to_owned());
            }
            tokio::time::sleep(LED_POLL).await;
        }
        for stream in streams() {
            while !led(js, &stream).await {
                if tokio::time::Instant::now() >= deadline {
                    return Err(stream);
                }
                tokio::time::sleep(LED_POLL).await;
            }
        }
        Ok(())
    };
    tokio::select! {
        waited = all => {
            if let Err(unled) = waited {
                tracing::warn!(
                    stream = %unled,
                    waited = ?LED_WAIT,
                    "still without a JetStream leader; leading anyway"
                );
            }
            true
        }
        () = stop.cancelled() => false,
    }
}
