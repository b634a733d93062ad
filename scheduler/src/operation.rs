//! Operations that are not rollouts and still run over SSH, recorded in the event log: Kamal's
//! `accessory VERB`, `proxy VERB` (those the executors run, `app stale_containers --stop` and
//! `prune` among them, are `procedure::operate`'s). The CLI runs their Docker commands over SSH (as
//! Kamal does) under the deploy lock; this module is what makes them history: an `OperationStarted` naming the operation
//! and its hosts, each host's outcome, and `OperationFinished`, under one id of their own, so
//! `flotilla audit`, `events` and `replay ID` show who did what where, and how it ended.
//!
//! The events say what the operation is (`Operation::AppStop` for a stop), never the name
//! of a deploy step.

use flotilla_events::event::{
    Operation, OperationFailed, OperationFinished, OperationStarted, OperationSucceeded,
};
use flotilla_events::{DeployId, EventLog, LogError, NewEvent};

/// One operation being recorded; each method appends (durably) before it returns.
pub struct Recorder<'l> {
    log: &'l dyn EventLog,
    id: DeployId,
    actor: String,
    operation: Operation,
    failed: Vec<String>,
}

/// What one host answered.
pub type HostOutcome<'a> = (&'a str, Result<(), String>);

impl<'l> Recorder<'l> {
    /// Records that `actor` started `operation` on `hosts`.
    pub fn start(
        log: &'l dyn EventLog,
        actor: &str,
        operation: Operation,
        service: &str,
        destination: Option<&str>,
        hosts: &[String],
    ) -> Result<Recorder<'l>, LogError> {
        let id = DeployId::new();
        log.append(NewEvent::new(
            id.clone(),
            actor,
            OperationStarted {
                operation: operation.clone(),
                service: service.to_owned(),
                destination: destination.map(str::to_owned),
                hosts: hosts.to_vec(),
            },
        ))?;
        Ok(Recorder {
            log,
            id,
            actor: actor.to_owned(),
            operation,
            failed: Vec::new(),
        })
    }

    /// The id the operation's events share (`flotilla replay ID`).
    pub fn id(&self) -> &DeployId {
        &self.id
    }

    /// Records each host's outcome, in one durable batch.
    pub fn hosts(&mut self, outcomes: &[HostOutcome<'_>]) -> Result<(), LogError> {
        let events = outcomes
            .iter()
            .map(|(host, outcome)| {
                let event = match outcome {
                    Ok(()) => NewEvent::new(
                        self.id.clone(),
                        &self.actor,
                        OperationSucceeded {
                            operation: self.operation.clone(),
                        },
                    ),
                    Err(reason) => {
                        self.failed.push((*host).to_owned());
                        NewEvent::new(
                            self.id.clone(),
                            &self.actor,
                            OperationFailed {
                                operation: self.operation.clone(),
                                reason: reason.clone(),
                            },
                        )
                    }
                };
                event.on_host(*host)
            })
            .collect();
        self.log.append_batch(events).map(|_| ())
    }

    /// Records the end: the hosts that failed, if any.
    pub fn finish(self) -> Result<(), LogError> {
        self.log
            .append(NewEvent::new(
                self.id,
                self.actor,
                OperationFinished {
                    operation: self.operation,
                    failed: self.failed,
                },
            ))
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_events::event::Operation;
    use flotilla_events::{Event, MemoryLog};

    /// A stop on two hosts, one failing, reads back as a stop: started with its hosts, each
    /// host's outcome on that host, and the end naming the failed host.
    #[test]
    fn an_operation_is_recorded_as_itself() {
        let log = MemoryLog::default();
        let hosts = vec!["h1".to_owned(), "h2".to_owned()];
        let mut r = Recorder::start(
            &log,
            "alice@laptop",
            Operation::AppStop,
            "app",
            None,
            &hosts,
        )
        .unwrap();
        let id = r.id().clone();
        r.hosts(&[
            ("h1", Ok(())),
            ("h2", Err("exit 1: no such container".into())),
        ])
        .unwrap();
        r.finish().unwrap();
        let events = log.read_deploy(&id).unwrap();
        let names: Vec<(&str, Option<&str>)> = events
            .iter()
            .map(|e| (e.type_name(), e.host.as_deref()))
            .collect();
        assert_eq!(
            names,
            [
                ("OperationStarted", None),
                ("OperationSucceeded", Some("h1")),
                ("OperationFailed", Some("h2")),
                ("OperationFinished", None),
            ]
        );
        assert!(events.iter().all(|e| e.actor == "alice@laptop"));
        match &events[3].event {
            Event::OperationFinished(f) => {
                assert_eq!(f.operation, Operation::AppStop);
                assert_eq!(f.failed, ["h2"]);
            }
            other => panic!("{other:?}"),
        }
    }
}
