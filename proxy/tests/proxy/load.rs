//! Continuous load: dozens of keep-alive clients asking `/version` until told to stop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::support::{Got, get, http_client};

/// One request of the load.
#[derive(Debug)]
pub struct Sample {
    pub started: Instant,
    pub result: Result<Got, String>,
}

/// A running load; `done` counts finished requests so a test can wait for progress.
pub struct Load {
    pub done: Arc<AtomicUsize>,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<Vec<Sample>>>,
}

/// Longest a load runs even if nobody stops it, so a failing test cannot hang.
const MAX_LOAD: Duration = Duration::from_secs(120);

impl Load {
    pub fn start(proxy: SocketAddr, host: &str, clients: usize) -> Load {
        let done = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let tasks = (0..clients)
            .map(|_| {
                let (done, stop, host) = (Arc::clone(&done), stop.clone(), host.to_owned());
                tokio::spawn(async move {
                    let client = http_client();
                    let begun = Instant::now();
                    let mut samples = Vec::new();
                    while !stop.is_cancelled() && begun.elapsed() < MAX_LOAD {
                        let started = Instant::now();
                        let result = get(&client, proxy, &host, "/version").await;
                        samples.push(Sample { started, result });
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    samples
                })
            })
            .collect();
        Load { done, stop, tasks }
    }

    /// Waits until `more` further requests have finished.
    pub async fn progress(&self, more: usize) {
        let target = self.done.load(Ordering::Relaxed) + more;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.done.load(Ordering::Relaxed) < target {
            assert!(Instant::now() < deadline, "load made no progress");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub async fn stop(self) -> Vec<Sample> {
        self.stop.cancel();
        let mut all = Vec::new();
        for t in self.tasks {
            all.extend(t.await.unwrap());
        }
        all
    }
}

/// Requests that did not get a 200, with what they got.
pub fn failures(samples: &[Sample]) -> Vec<String> {
    samples
        .iter()
        .filter_map(|s| match &s.result {
            Ok(g) if g.status == 200 => None,
            Ok(g) => Some(format!(
                "{} {:?} {}",
                g.status,
                g.headers.get("x-flotilla-proxy"),
                g.body.trim()
            )),
            Err(e) => Some(e.clone()),
        })
        .collect()
}

/// The body of every successful response, trimmed.
pub fn versions<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> Vec<String> {
    samples
        .into_iter()
        .filter_map(|s| s.result.as_ref().ok().map(|g| g.body.trim().to_owned()))
        .collect()
}
