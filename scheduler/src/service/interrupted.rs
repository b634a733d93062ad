//! An app operation (`app stop|start|remove`, `prune`, ... through `procedure::operate`) that a
//! lost scheduler left open, finished by the one taking over. It is not run again: the
//! running procedure records its hosts' outcomes only at its end, so a rerun under the same id
//! would record `OperationStarted` twice, and the jobs the lost scheduler published may still
//! run on their hosts. Instead the log gets the honest end: each host's outcome as far as the
//! log knows it (the executor's `HostSucceeded`/`HostFailed` for that host), every other host
//! failed as interrupted, `OperationFinished`, and the deploy lock released; the operator
//! runs the command again where it did not succeed (each of these operations is idempotent).

use crate::transport::lock::LockInfo;
use crate::transport::{HeldLock, Transport};
use flotilla_events::event::{
    LockReleased, Operation, OperationFailed, OperationFinished, OperationSucceeded,
};
use flotilla_events::{Envelope, Event, EventLog, LogError, NewEvent, Timestamp};
use flotilla_protocol::control::Rollout;

/// Why a host of an interrupted operation failed when the log holds no outcome for it.
pub const INTERRUPTED: &str = "interrupted: the scheduler running it was lost before this \
    host's outcome was recorded; run the command again";

/// What became of an operation found in the rollout bucket at takeover.
#[derive(Debug, PartialEq, Eq)]
pub enum Finish {
    /// It was still open: its end is now recorded.
    Finished { failed: Vec<String> },
    /// It had ended already, or never recorded its start: nothing to record.
    Nothing,
}

/// Records the end of operation `rollout` if the log shows it started and did not finish.
pub async fn finish_operation<T: Transport>(
    log: &dyn EventLog,
    transport: &T,
    rollout: &Rollout,
    operation: &Operation,
) -> Result<Finish, LogError> {
    let id = &rollout.deploy_id;
    let history = log.read_deploy(id)?;
    let Some((service, destination, hosts)) = history.iter().find_map(|e| match &e.event {
        Event::OperationStarted(s) => {
            Some((s.service.clone(), s.destination.clone(), s.hosts.clone()))
        }
        _ => None,
    }) else {
        return Ok(Finish::Nothing);
    };
    if history
        .iter()
        .any(|e| matches!(e.event, Event::OperationFinished(_)))
    {
        return Ok(Finish::Nothing);
    }
    let actor = &rollout.actor;
    let mut events = Vec::new();
    let mut failed = Vec::new();
    for host in &hosts {
        let event: Event = match outcome(&history, host) {
            Some(Ok(())) => OperationSucceeded {
                operation: operation.clone(),
            }
            .into(),
            Some(Err(reason)) => {
                failed.push(host.clone());
                OperationFailed {
                    operation: operation.clone(),
                    reason,
                }
                .into()
            }
            None => {
                failed.push(host.clone());
                OperationFailed {
                    operation: operation.clone(),
                    reason: INTERRUPTED.to_owned(),
                }
                .into()
            }
        };
        events.push(NewEvent::new(id.clone(), actor, event).on_host(host));
    }
    events.push(NewEvent::new(
        id.clone(),
        actor,
        OperationFinished {
            operation: operation.clone(),
            failed: failed.clone(),
        },
    ));
    // The lost scheduler held the deploy lock as this operation: taking it over (a lock held
    // by the same id is taken over, as a resumed deploy does) and releasing it frees the
    // service for the next deploy. A lock someone else holds now is theirs: left alone.
    let key = flotilla_protocol::names::lock_key(&service, destination.as_deref());
    let info = LockInfo {
        holder: actor.clone(),
        message: operation.to_string(),
        acquired_at: Timestamp::now().to_string(),
        machine: rollout.machine.clone(),
        version: None,
        deploy_id: Some(id.to_string()),
        expires_at_ms: None,
    };
    match transport.acquire_lock(&key, &info, None).await {
        Ok(lock) => match lock.release().await {
            Ok(()) => events.push(NewEvent::new(
                id.clone(),
                actor,
                LockReleased {
                    holder: actor.clone(),
                },
            )),
            Err(e) => {
                tracing::warn!(error = %e, deploy = %id, "releasing an interrupted operation's lock")
            }
        },
        Err(e) => {
            tracing::info!(error = %e, deploy = %id, "an interrupted operation's lock is not its own any more")
        }
    }
    log.append_batch(events)?;
    Ok(Finish::Finished { failed })
}

/// The last outcome the log holds for `host`: its executor's `HostSucceeded`, or the error
/// of its `HostFailed`.
fn outcome(history: &[Envelope], host: &str) -> Option<Result<(), String>> {
    history
        .iter()
        .rev()
        .filter(|e| e.host.as_deref() == Some(host))
        .find_map(|e| match &e.event {
            Event::HostSucceeded(_) => Some(Ok(())),
            Event::HostFailed(f) => Some(Err(f.error.clone())),
            _ => None,
        })
}
