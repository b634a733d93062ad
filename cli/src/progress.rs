//! What the user sees while a deploy runs: one live line per host on a terminal, one plain
//! line per event otherwise, or one JSON event per line with `--json`. Everything shown is a
//! fold of the events as they land in the log (the `DeployState` projection).

use flotilla_events::event::{AccessoryAction, Operation};
use flotilla_events::projection::{DeployState, HostStatus, Projection};
use flotilla_events::{DeployId, Envelope, Event};
use flotilla_protocol::text::printable;
use std::io::{IsTerminal, Write};
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Redrawn per-host lines.
    Live,
    /// One line per event, for logs and pipes.
    Plain,
    /// One JSON object per event (the `flotilla events --json` format).
    Json,
    /// Nothing but the summary.
    Quiet,
}

impl Mode {
    pub fn choose(json: bool, quiet: bool) -> Mode {
        if json {
            Mode::Json
        } else if quiet {
            Mode::Quiet
        } else if std::io::stdout().is_terminal()
            && std::env::var_os("TERM").is_some_and(|t| t != "dumb")
        {
            Mode::Live
        } else {
            Mode::Plain
        }
    }
}

/// Colours only on a terminal and only without `NO_COLOR`.
pub fn color_enabled() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stdout().is_terminal()
}

pub struct Progress {
    mode: Mode,
    state: DeployState,
    started: Instant,
    drawn: usize,
    color: bool,
    /// Hosts that reported `AccessoryBooted`: an accessory boot that succeeded on another
    /// host found its container there and left it (Kamal's skip, said as Kamal says it).
    booted: std::collections::BTreeSet<String>,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress")
            .field("mode", &self.mode)
            .finish()
    }
}

impl Progress {
    pub fn new(mode: Mode, deploy_id: DeployId) -> Progress {
        Progress {
            mode,
            state: DeployState::new(deploy_id),
            started: Instant::now(),
            drawn: 0,
            color: color_enabled(),
            booted: Default::default(),
        }
    }

    pub fn state(&self) -> &DeployState {
        &self.state
    }

    /// Takes one event that just landed in the log.
    pub fn on_event(&mut self, e: &Envelope) {
        self.state.apply(e);
        match (&e.event, e.host.as_deref()) {
            (Event::AccessoryBooted(_), Some(host)) => {
                self.booted.insert(host.to_owned());
            }
            // Not a failure (the accessory is gone), but the operator asked for the image to
            // go and should know why it stays.
            (Event::ImageKept(i), Some(host)) => {
                eprintln!(
                    "warning: image {} kept on {}: a container still uses it ({})",
                    printable(&i.image),
                    printable(host),
                    printable(first_line(&i.reason))
                );
            }
            (Event::OperationSucceeded(o), Some(host)) => {
                if let Operation::Accessory {
                    name,
                    action: AccessoryAction::Boot,
                } = &o.operation
                    && !self.booted.contains(host)
                {
                    eprintln!(
                        "Skipping booting `{}` on {}, a container already exists",
                        printable(name),
                        printable(host)
                    );
                }
            }
            _ => {}
        }
        // Output errors (a closed pipe) must not stop the deploy: they are ignored here.
        let mut out = std::io::stdout().lock();
        let _ = match self.mode {
            Mode::Quiet => Ok(()),
            Mode::Json => flotilla_events::jsonl::write_line(e, &mut out)
                .map_err(|e| std::io::Error::other(e.to_string())),
            Mode::Plain => writeln!(
                out,
                "{}",
                plain_line(e, self.started.elapsed().as_secs_f64())
            ),
            Mode::Live => self.redraw(&mut out),
        };
        let _ = out.flush();
    }

    fn redraw(&mut self, out: &mut impl Write) -> std::io::Result<()> {
        if self.drawn > 0 {
            write!(out, "\x1b[{}A", self.drawn)?;
        }
        let now = flotilla_events::Timestamp::now();
        let mut lines = 0;
        for (host, h) in &self.state.hosts {
            let elapsed = h
                .started_at
                .map(|s| h.finished_at.unwrap_or(now).millis_since(s) as f64 / 1000.0)
                .unwrap_or(0.0);
            let step = h
                .step
                .map(|s| format!("{s:?}"))
                .unwrap_or_else(|| "waiting".into());
            let (status, paint) = match &h.status {
                HostStatus::Pending => ("pending".to_owned(), "2"),
                HostStatus::Running => ("running".to_owned(), "33"),
                HostStatus::Succeeded => ("done".to_owned(), "32"),
                HostStatus::Failed { error, .. } => {
                    (format!("FAILED: {}", printable(first_line(error))), "31")
                }
            };
            let status = if self.color {
                format!("\x1b[{paint}m{status}\x1b[0m")
            } else {
                status
            };
            let host = printable(host);
            writeln!(
                out,
                "\x1b[2K  {host:<22} {step:<18} {elapsed:>6.1}s  {status}"
            )?;
            lines += 1;
        }
        self.drawn = lines;
        Ok(())
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// `  3.2s  10.0.0.1  ImagePulled  registry/app:v2 sha256:...`
pub fn plain_line(e: &Envelope, elapsed_s: f64) -> String {
    let host = printable(e.host.as_deref().unwrap_or("-"));
    format!(
        "{elapsed_s:>6.1}s  {host:<16} {:<20} {}",
        e.type_name(),
        detail(&e.event)
    )
}

/// The interesting part of an event, in a few words, safe to print on a terminal.
pub fn detail(event: &Event) -> String {
    printable(&raw_detail(event)).into_owned()
}

fn raw_detail(event: &Event) -> String {
    match event {
        Event::DeployRequested(r) => {
            format!("{} {} on {} host(s)", r.service, r.version, r.hosts.len())
        }
        Event::ImagePulled(p) if p.image.contains('@') => {
            format!("{} ({} ms)", p.image, p.duration_ms)
        }
        Event::ImagePulled(p) => format!("{} {} ({} ms)", p.image, p.digest, p.duration_ms),
        Event::ImagePushed(p) => format!("{} {}", p.image, p.digest),
        Event::ContainerStarted(c) => format!("{} ({})", c.name, c.role),
        Event::HealthPassed(h) => format!("after {} attempt(s), {} ms", h.attempts, h.duration_ms),
        Event::HealthFailed(h) => {
            format!("after {} attempt(s): {}", h.attempts, first_line(&h.error))
        }
        Event::ProxySwitched(p) => format!("{} -> {}", p.from.as_deref().unwrap_or("none"), p.to),
        Event::OldContainerStopped(o) => o.name.clone(),
        Event::HostFailed(f) => format!("at {:?}: {}", f.step, first_line(&f.error)),
        Event::DeployFailed(f) => f.reason.clone(),
        Event::HookRan(h) => format!("{} exit {}", h.name, h.exit_code),
        Event::LockAcquired(l) => l.holder.clone(),
        Event::RollbackStarted(r) => format!("to {} ({})", r.to_version, r.reason),
        Event::OperationStarted(o) => {
            format!("{} on {} host(s)", o.operation, o.hosts.len())
        }
        Event::OperationSucceeded(o) => o.operation.to_string(),
        Event::OperationFailed(o) => format!("{}: {}", o.operation, first_line(&o.reason)),
        Event::ImageRemoved(i) => i.image.clone(),
        Event::ImageKept(i) => format!("{}: {}", i.image, first_line(&i.reason)),
        Event::OperationFinished(o) if o.failed.is_empty() => o.operation.to_string(),
        Event::OperationFinished(o) => {
            format!("{}, failed on {}", o.operation, o.failed.join(", "))
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_events::NewEvent;
    use flotilla_events::event::{FailureCause, HostFailed, Step};

    /// An app that prints escape sequences (to retitle the window, clear the screen) into a
    /// failure's text cannot reach the operator's terminal through a deploy's output.
    #[test]
    fn event_text_is_printed_without_control_characters() {
        let event = NewEvent::new(
            DeployId::new(),
            "executor",
            HostFailed {
                step: Step::AwaitHealthy,
                error: "boom \u{1b}]0;owned\u{7}\u{1b}[2J".into(),
                cause: FailureCause::StepFailed,
            },
        )
        .on_host("web\u{1b}[31m-1")
        .into_envelope(1);
        let line = plain_line(&event, 1.0);
        assert!(!line.chars().any(|c| c.is_control()), "{line:?}");
        assert!(line.contains("boom"), "{line}");
    }
}
