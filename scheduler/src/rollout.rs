//! The rollout policy as a pure state machine: which hosts start when, and when a rollout
//! stops. No I/O and no clock of its own: the caller passes `now`, so every decision is a
//! plain function of what happened, and tests drive it step by step.
//!
//! Kamal's semantics first: hosts of the primary role go first, and the other roles wait until
//! one primary host is healthy; `boot.limit` hosts at a time with `boot.wait` between batches.
//! Then what Kamal lacks: a canary group that must pass before anyone else starts, a cap on
//! hosts in flight, a failure budget after which no new host starts, and a step timeout after
//! which a silent host counts as failed.

use std::time::Duration;

/// How many of something: an absolute count or a share of the hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Amount {
    Count(usize),
    Percent(u8),
}

impl Amount {
    /// Resolves against `total`; a percentage rounds up and is at least 1 when non-zero.
    pub fn of(self, total: usize) -> usize {
        match self {
            Amount::Count(n) => n,
            Amount::Percent(p) => (total * usize::from(p)).div_ceil(100),
        }
    }
}

/// The policy knobs, from `boot:` and `x-flotilla.rollout:` in the config.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Kamal's `boot.limit`: hosts booted per batch (None: all at once).
    pub batch: Option<Amount>,
    /// Kamal's `boot.wait`: pause between batches.
    pub batch_wait: Duration,
    /// This many hosts first; the rest start only if they all succeed.
    pub canary: usize,
    /// At most this many hosts in flight at once.
    pub max_parallel: Option<usize>,
    /// More failures than this and no new host starts (None: any failure stops the rollout,
    /// Kamal's behaviour).
    pub max_failures: Option<Amount>,
    /// A host with no progress for this long is failed.
    pub step_timeout: Option<Duration>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            batch: None,
            batch_wait: Duration::ZERO,
            canary: 0,
            max_parallel: None,
            max_failures: None,
            step_timeout: None,
        }
    }
}

/// Where one host stands in the rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostStatus {
    Pending,
    Running,
    Succeeded,
    Failed,
    /// Never started because the rollout stopped first.
    Skipped,
}

/// One target of the rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub primary: bool,
}

/// What the caller should do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Start these hosts (dispatch their first steps).
    Start(Vec<String>),
    /// These hosts were silent past the step timeout: they now count as failed.
    TimedOut(Vec<String>),
    /// Nothing to start yet: ask again at this time, or when an event arrives.
    WaitUntil(Duration),
    /// Nothing to start until an event arrives.
    Wait,
    /// The rollout is over.
    Done(Outcome),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    /// Every host was tried; some failed, within the failure budget.
    Degraded {
        failed: Vec<String>,
    },
    /// Why it stopped, and which hosts failed.
    Failed {
        reason: String,
        failed: Vec<String>,
    },
}

#[derive(Debug, Clone)]
struct Slot {
    target: Target,
    status: HostStatus,
    /// Time of the host's last sign of life (start, or any event).
    last_seen: Duration,
}

/// The rollout of one deploy over its hosts. Times are offsets from the deploy's start.
#[derive(Debug, Clone)]
pub struct Rollout {
    policy: Policy,
    slots: Vec<Slot>,
    /// When the last batch started; the next may start `batch_wait` after it finished.
    batch_finished_at: Option<Duration>,
    batch: Vec<usize>,
    stopped: Option<String>,
}

impl Rollout {
    /// Primary-role hosts are ordered first; otherwise the given order is kept.
    pub fn new(mut targets: Vec<Target>, policy: Policy) -> Rollout {
        targets.sort_by_key(|t| !t.primary);
        Rollout {
            policy,
            slots: targets
                .into_iter()
                .map(|target| Slot {
                    target,
                    status: HostStatus::Pending,
                    last_seen: Duration::ZERO,
                })
                .collect(),
            batch_finished_at: None,
            batch: Vec::new(),
            stopped: None,
        }
    }

    pub fn status(&self, host: &str) -> Option<HostStatus> {
        self.slot(host).map(|s| s.status)
    }

    /// Hosts and their status, primary role first.
    pub fn hosts(&self) -> impl Iterator<Item = (&str, HostStatus)> {
        self.slots
            .iter()
            .map(|s| (s.target.host.as_str(), s.status))
    }

    fn slot(&self, host: &str) -> Option<&Slot> {
        self.slots.iter().find(|s| s.target.host == host)
    }

    fn slot_mut(&mut self, host: &str) -> Option<&mut Slot> {
        self.slots.iter_mut().find(|s| s.target.host == host)
    }

    /// A host made progress (any event from it): resets its step timeout.
    pub fn progressed(&mut self, host: &str, now: Duration) {
        if let Some(s) = self.slot_mut(host) {
            s.last_seen = now;
        }
    }

    /// A host finished all its steps.
    pub fn succeeded(&mut self, host: &str, now: Duration) {
        self.finish(host, HostStatus::Succeeded, now);
    }

    /// A host failed at some step.
    pub fn failed(&mut self, host: &str, now: Duration) {
        self.finish(host, HostStatus::Failed, now);
    }

    fn finish(&mut self, host: &str, status: HostStatus, now: Duration) {
        if let Some(s) = self.slot_mut(host)
            && s.status == HostStatus::Running
        {
            s.status = status;
            s.last_seen = now;
        }
        if !self.batch.is_empty()
            && self
                .batch
                .iter()
                .all(|&i| self.slots[i].status != HostStatus::Running)
        {
            self.batch.clear();
            self.batch_finished_at = Some(now);
        }
    }

    fn count(&self, status: HostStatus) -> usize {
        self.slots.iter().filter(|s| s.status == status).count()
    }

    fn over_budget(&self) -> bool {
        let failed = self.count(HostStatus::Failed);
        match self.policy.max_failures {
            None => failed > 0,
            Some(a) => failed > a.of(self.slots.len()),
        }
    }

    /// Decides what happens next. Call after every event and whenever a `WaitUntil` expires.
    pub fn decide(&mut self, now: Duration) -> Decision {
        if let Some(silent) = self.time_out(now) {
            return Decision::TimedOut(silent);
        }
        self.check_stop();
        let running = self.count(HostStatus::Running);
        if let Some(reason) = self.stopped.clone() {
            if running > 0 {
                return Decision::Wait;
            }
            for s in &mut self.slots {
                if s.status == HostStatus::Pending {
                    s.status = HostStatus::Skipped;
                }
            }
            return Decision::Done(Outcome::Failed {
                reason,
                failed: self.hosts_with(HostStatus::Failed),
            });
        }
        if self.count(HostStatus::Pending) == 0 {
            if running > 0 {
                return Decision::Wait;
            }
            let failed = self.hosts_with(HostStatus::Failed);
            return Decision::Done(if failed.is_empty() {
                Outcome::Succeeded
            } else {
                Outcome::Degraded { failed }
            });
        }
        // A batch in flight must finish, then `boot.wait` passes, before the next starts.
        if !self.batch.is_empty() {
            return Decision::Wait;
        }
        if let Some(done) = self.batch_finished_at {
            let ready = done + self.policy.batch_wait;
            if now < ready {
                return Decision::WaitUntil(ready);
            }
        }
        self.start_next(now, running)
    }

    /// Running hosts silent past the step timeout, now failed.
    fn time_out(&mut self, now: Duration) -> Option<Vec<String>> {
        let timeout = self.policy.step_timeout?;
        let silent: Vec<String> = self
            .slots
            .iter()
            .filter(|s| s.status == HostStatus::Running && now >= s.last_seen + timeout)
            .map(|s| s.target.host.clone())
            .collect();
        if silent.is_empty() {
            return None;
        }
        for h in &silent {
            self.failed(h, now);
        }
        Some(silent)
    }

    fn canary(&self) -> usize {
        self.policy.canary.min(self.slots.len())
    }

    /// Stops the rollout when a canary host failed or the failure budget is spent.
    fn check_stop(&mut self) {
        let canary = self.canary();
        // Any canary failure stops the rollout (canary hosts still running finish first).
        if self.stopped.is_none()
            && self.slots[..canary]
                .iter()
                .any(|s| s.status == HostStatus::Failed)
        {
            self.stopped = Some("a canary host failed".to_owned());
        }
        // Checked after the canary, whose failure is the more telling reason.
        if self.stopped.is_none() && self.over_budget() {
            self.stopped = Some(match self.policy.max_failures {
                None => "a host failed".to_owned(),
                Some(_) => "more hosts failed than max_failures allows".to_owned(),
            });
        }
    }

    /// The next hosts to start: canary first, then primaries until one is up (Kamal), within
    /// the batch size and `max_parallel`.
    fn start_next(&mut self, now: Duration, running: usize) -> Decision {
        let canary = self.canary();
        let canary_done = self.slots[..canary]
            .iter()
            .all(|s| s.status == HostStatus::Succeeded);
        let mut eligible: Vec<usize> = (0..self.slots.len())
            .filter(|&i| self.slots[i].status == HostStatus::Pending)
            .collect();
        if canary > 0 && !canary_done {
            eligible.retain(|&i| i < canary);
        }
        // Other roles wait for the first healthy primary host (Kamal).
        let any_primary = self.slots.iter().any(|s| s.target.primary);
        let primary_up = self
            .slots
            .iter()
            .any(|s| s.target.primary && s.status == HostStatus::Succeeded);
        if any_primary && !primary_up {
            eligible.retain(|&i| self.slots[i].target.primary);
        }
        let mut room = eligible.len();
        if let Some(b) = self.policy.batch {
            room = room.min(b.of(self.slots.len()).max(1));
        }
        if let Some(p) = self.policy.max_parallel {
            room = room.min(p.saturating_sub(running));
        }
        if room == 0 || eligible.is_empty() {
            return Decision::Wait;
        }
        let start: Vec<usize> = eligible.into_iter().take(room).collect();
        for &i in &start {
            self.slots[i].status = HostStatus::Running;
            self.slots[i].last_seen = now;
        }
        if self.policy.batch.is_some() || self.policy.batch_wait > Duration::ZERO {
            self.batch = start.clone();
        }
        Decision::Start(
            start
                .into_iter()
                .map(|i| self.slots[i].target.host.clone())
                .collect(),
        )
    }

    /// Stops the rollout (a cancel): no host starts after this; running hosts finish or time
    /// out, then [`Rollout::decide`] says `Done(Failed { reason })`. A stop already decided
    /// (a failed canary, the failure budget) keeps its own reason.
    pub fn stop(&mut self, reason: impl Into<String>) {
        if self.stopped.is_none() {
            self.stopped = Some(reason.into());
        }
    }

    /// Hosts with a given status, in rollout order.
    pub fn hosts_with(&self, status: HostStatus) -> Vec<String> {
        self.slots
            .iter()
            .filter(|s| s.status == status)
            .map(|s| s.target.host.clone())
            .collect()
    }
}
