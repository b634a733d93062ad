//! The scheduler service on a fleet host: `flotilla scheduler run`, started inside the host's
//! namespaces as a process on that host would be. `flotilla setup` will boot it as a
//! container instead; [`SchedulerService::start`] is the one place that starts it, so the
//! fleet tests switch with it.

use crate::fleet::{Fleet, Host, wait_until};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

/// How long the service may take to open its log, reach NATS and subscribe.
const SERVICE_READY: Duration = Duration::from_secs(30);
/// The port the service serves `/metrics` on, at its host's address.
pub const SERVICE_METRICS_PORT: u16 = 9394;
/// What the service prints once it answers requests.
const READY_LINE: &str = "flotilla: scheduler service on";

/// A running `flotilla scheduler run`; dropping it stops it with SIGTERM (its clean stop).
#[derive(Debug)]
pub struct SchedulerService {
    pub host: Host,
    /// Its state: `events/` (the log), `scheduler.key`, `service.key`, and `service.log`.
    pub state: PathBuf,
    child: Option<Child>,
}

impl SchedulerService {
    /// Starts the service on `host` with the state directory `state`, which must already
    /// hold `scheduler.key` (the key the executors trust) and may hold `events/` (a log to
    /// continue); waits until it answers.
    pub fn start(fleet: &Fleet, host: &Host, flotilla: &Path, state: &Path) -> SchedulerService {
        use std::os::unix::process::CommandExt as _;
        let log_path = state.join("service.log");
        let log = std::fs::File::create(&log_path).expect("service log");
        let err = log.try_clone().expect("log handle");
        let child = fleet
            .on_host(host)
            .arg(flotilla)
            .args(["scheduler", "run", "--nats", &fleet.nats_url()])
            .arg("--state")
            .arg(state)
            .arg("--metrics")
            .arg(format!("{}:{SERVICE_METRICS_PORT}", host.addr))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0)
            .spawn()
            .expect("scheduler service starts");
        let mut service = SchedulerService {
            host: host.clone(),
            state: state.to_owned(),
            child: Some(child),
        };
        let ready = wait_until(SERVICE_READY, || service.log().contains(READY_LINE));
        assert!(
            ready,
            "scheduler service on {} not ready in {SERVICE_READY:?}:\n{}",
            host.name,
            service.log()
        );
        if let Some(c) = service.child.as_mut() {
            assert!(c.try_wait().ok().flatten().is_none(), "{}", service.log());
        }
        service
    }

    /// What the service printed.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.state.join("service.log")).unwrap_or_default()
    }

    /// Stops it with SIGTERM and waits: running deploys are cancelled cleanly.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(-pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            let _ = child.wait();
        }
    }
}

impl Drop for SchedulerService {
    fn drop(&mut self) {
        self.stop();
    }
}
