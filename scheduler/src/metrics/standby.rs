//! Metrics between deploys, for `flotilla metrics serve`: a long-running process that Prometheus
//! scrapes all day, while deploys come and go.
//!
//! The sled log has one process at a time, so the standby cannot keep it open: a deploy must be
//! able to take it. On each scrape it does one of two things:
//! - a deploy is running and serves its live metrics on a loopback port it wrote to the
//!   hand-off file (it could not listen on the configured address: the standby has it): the
//!   standby forwards the scrape there, so Grafana sees the rollout live;
//! - otherwise, if the log changed since the last look, it opens the log for the few
//!   milliseconds needed to fold the new events, and closes it again.
//!
//! Both are folds of the same log, so the series stay continuous across the switch.

use super::Metrics;
use flotilla_events::{EventLog, LogError, SledLog};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Where a running deploy says it serves its metrics when the configured address is taken:
/// `.flotilla/events` gives `.flotilla/events.metrics-addr`.
pub fn handoff_path(log_dir: &Path) -> PathBuf {
    let mut name = log_dir.file_name().unwrap_or_default().to_os_string();
    name.push(".metrics-addr");
    log_dir.with_file_name(name)
}

/// The standby's fold of the log in `log_dir`.
#[derive(Debug)]
pub struct Standby {
    log_dir: PathBuf,
    metrics: Metrics,
    /// The log's modification stamp at the last fold; `None` before the first.
    folded: Mutex<Option<SystemTime>>,
}

impl Standby {
    pub fn new(log_dir: impl Into<PathBuf>) -> Self {
        Self {
            log_dir: log_dir.into(),
            metrics: Metrics::new(),
            folded: Mutex::new(None),
        }
    }

    /// The body of a scrape: a running deploy's live metrics, or the fold of the log.
    pub async fn scrape(self: Arc<Self>) -> Vec<u8> {
        if let Some(addr) = read_handoff(&handoff_path(&self.log_dir))
            && let Ok(body) = fetch(addr).await
        {
            return body;
        }
        let me = self.clone();
        match tokio::task::spawn_blocking(move || me.refresh()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "metrics: reading the event log"),
            Err(e) => tracing::warn!(error = %e, "metrics: reading the event log"),
        }
        self.metrics.render()
    }

    /// Folds the events appended since the last fold, if the log changed and is free.
    pub fn refresh(&self) -> Result<(), LogError> {
        let mut folded = self.folded.lock().unwrap_or_else(|p| p.into_inner());
        if !self.log_dir.exists() {
            return Ok(());
        }
        let now = stamp(&self.log_dir);
        if folded.is_some() && *folded == now {
            return Ok(());
        }
        let log = match SledLog::open(&self.log_dir) {
            Ok(log) => log,
            // A deploy without metrics (or a `flotilla events`) has it: next scrape.
            Err(LogError::Locked { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        for event in log.read_from(self.metrics.last_seq() + 1)? {
            self.metrics.observe(&event?);
        }
        drop(log);
        // Taken after closing: opening may touch the files, and that is no news.
        *folded = stamp(&self.log_dir);
        Ok(())
    }
}

/// The latest modification time of the log's files, the writer lock aside (a deploy taking
/// the log writes it before appending anything).
fn stamp(dir: &Path) -> Option<SystemTime> {
    fn walk(dir: &Path, latest: &mut Option<SystemTime>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            if entry.file_name() == "writer.lock" {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                walk(&entry.path(), latest);
            } else if let Ok(m) = meta.modified() {
                *latest = (*latest).max(Some(m));
            }
        }
    }
    let mut latest = None;
    walk(dir, &mut latest);
    latest
}

fn read_handoff(path: &Path) -> Option<SocketAddr> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `GET /metrics` from a deploy's loopback server, with a short deadline.
async fn fetch(addr: SocketAddr) -> std::io::Result<Vec<u8>> {
    let get = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        let split = out
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| std::io::Error::other("no end of headers"))?;
        if !out.starts_with(b"HTTP/1.0 200") && !out.starts_with(b"HTTP/1.1 200") {
            return Err(std::io::Error::other("not 200"));
        }
        Ok(out.split_off(split + 4))
    };
    tokio::time::timeout(Duration::from_secs(2), get)
        .await
        .map_err(|_| std::io::Error::other("timed out"))?
}
