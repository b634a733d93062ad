//! State-changing fleet commands still run over SSH, as history: `proxy boot|reboot` are
//! recorded in the project's event log through
//! `flotilla_scheduler::operation` (started, each host's outcome, finished), so `flotilla
//! audit`, `events` and `replay ID` show them. The log is opened before the first Docker
//! command runs: a command that cannot be recorded does not run. (`app start|stop|remove|
//! maintenance|live`, `app stale_containers --stop`, `prune containers|images|all`,
//! `accessory boot|reboot|upgrade|start|stop|restart|remove` and `proxy start|stop|restart|
//! remove` are steps the executors run and the scheduler records: `operate.rs`.)
//!
//! In service mode (`x-flotilla.scheduler.mode: service`) the log is the service's and no
//! request records these: they are then not recorded (a warning says so).

use crate::commands::fanout::{HostRun, failure_text};
use crate::session::performer;
use anyhow::Context as _;
use flotilla_deploy::Config;
use flotilla_deploy::config::SchedulerMode;
use flotilla_events::SledLog;
use flotilla_events::event::Operation;
use flotilla_scheduler::operation::Recorder;
use std::path::PathBuf;
use std::sync::Mutex;

/// Longest failure text kept in an event: the reason, not a container's output.
const REASON_CHARS: usize = 300;

/// The project's event log, where `flotilla deploy` writes (`FLOTILLA_EVENT_LOG`, else
/// `.flotilla/events`); `None` in service mode.
pub fn open_log(config: &Config) -> anyhow::Result<Option<SledLog>> {
    if config.flotilla.scheduler_mode() == SchedulerMode::Service {
        eprintln!(
            "flotilla: warning: not recorded in the event log: the scheduler service does not \
             record operations other than rollouts yet"
        );
        return Ok(None);
    }
    let path = std::env::var_os("FLOTILLA_EVENT_LOG")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".flotilla/events"));
    SledLog::open(&path)
        .map(Some)
        .with_context(|| format!("opening the event log {} to record this", path.display()))
}

/// One operation being recorded: hosts' outcomes are gathered as its commands finish (a
/// failure on a host sticks) and written with the end.
pub struct Recording<'l> {
    recorder: Option<Recorder<'l>>,
    outcomes: Mutex<Vec<(String, Result<(), String>)>>,
}

impl<'l> Recording<'l> {
    /// Records the start of `operation` on `hosts` (nothing without a log).
    pub fn start(
        log: Option<&'l SledLog>,
        config: &Config,
        operation: Operation,
        hosts: &[String],
    ) -> anyhow::Result<Recording<'l>> {
        let mut unique: Vec<String> = Vec::new();
        for h in hosts {
            if !unique.contains(h) {
                unique.push(h.clone());
            }
        }
        let recorder = match log {
            Some(log) => Some(
                Recorder::start(
                    log,
                    &performer(),
                    operation,
                    &config.service,
                    config.destination.as_deref(),
                    &unique,
                )
                .context("recording the operation in the event log")?,
            ),
            None => None,
        };
        Ok(Recording {
            recorder,
            outcomes: Mutex::new(Vec::new()),
        })
    }

    /// Notes what each host answered.
    pub fn note(&self, runs: &[HostRun]) {
        for run in runs {
            let outcome = if run.ok() {
                Ok(())
            } else {
                Err(failure_text(run))
            };
            self.note_host(&run.host, outcome);
        }
    }

    /// Notes one host's outcome; a failure sticks.
    pub fn note_host(&self, host: &str, outcome: Result<(), String>) {
        let Ok(mut outcomes) = self.outcomes.lock() else {
            return;
        };
        let outcome = outcome.map_err(|e| e.chars().take(REASON_CHARS).collect());
        match outcomes.iter_mut().find(|(h, _)| h == host) {
            Some((_, now)) if now.is_ok() => *now = outcome,
            Some(_) => {}
            None => outcomes.push((host.to_owned(), outcome)),
        }
    }

    /// Writes the outcome and passes the command's own result on (a failure to record is an
    /// error too, after the command's).
    pub fn end(self, result: anyhow::Result<()>) -> anyhow::Result<()> {
        let written = self.finish();
        result.and(written)
    }

    /// Writes each host's outcome and the end.
    fn finish(self) -> anyhow::Result<()> {
        let Some(mut recorder) = self.recorder else {
            return Ok(());
        };
        let outcomes = self.outcomes.into_inner().unwrap_or_default();
        let borrowed: Vec<(&str, Result<(), String>)> = outcomes
            .iter()
            .map(|(h, o)| (h.as_str(), o.clone()))
            .collect();
        recorder
            .hosts(&borrowed)
            .and_then(|()| recorder.finish())
            .context("recording the operation's outcome in the event log")
    }
}
