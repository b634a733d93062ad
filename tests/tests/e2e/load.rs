//! Continuous HTTP load on the fleet's hosts, to prove a rollout drops no request.

use crate::support::http_get;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

#[derive(Debug, Default)]
pub struct Stats {
    pub ok: usize,
    /// Each failed request: address and what went wrong.
    pub failed: Vec<String>,
}

pub struct Load {
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<Stats>>,
}

/// Starts `clients` looping clients per address, each sending `GET /version` back to back.
pub fn start(addrs: &[SocketAddr], clients: usize) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for &addr in addrs {
        for _ in 0..clients {
            let stop = stop.clone();
            workers.push(std::thread::spawn(move || {
                let mut stats = Stats::default();
                while !stop.load(Ordering::Relaxed) {
                    match http_get(addr, "/version") {
                        Ok((200, _)) => stats.ok += 1,
                        Ok((status, body)) => stats.failed.push(format!("{addr}: {status} {body}")),
                        Err(e) => stats.failed.push(format!("{addr}: {e}")),
                    }
                }
                stats
            }));
        }
    }
    Load { stop, workers }
}

impl Load {
    /// Stops the clients and adds up what they saw.
    pub fn stop(self) -> Stats {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = Stats::default();
        for w in self.workers {
            let s = w.join().expect("load worker");
            total.ok += s.ok;
            total.failed.extend(s.failed);
        }
        total
    }
}
