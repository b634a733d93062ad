//! A real NATS server with JetStream for the scheduler's integration tests, on loopback.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub struct Nats {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Nats {
    /// Starts `nats-server -js` on a random loopback port. Fails (never skips) when the
    /// binary is missing: `scripts/test` installs Debian's `nats-server`.
    pub fn start() -> Nats {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new("nats-server")
            .args([
                "--jetstream",
                "--addr",
                "127.0.0.1",
                "--port",
                "-1",
                "--store_dir",
            ])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nats-server runs (apt-get install nats-server)");
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let url = loop {
            let line = lines
                .next()
                .expect("nats-server printed its listen address")
                .unwrap();
            if let Some(addr) = line.split("Listening for client connections on ").nth(1) {
                break format!("nats://{}", addr.trim());
            }
        };
        // Keep draining its log so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Nats {
            child,
            url,
            _dir: dir,
        }
    }

    pub async fn jetstream(&self) -> async_nats::jetstream::Context {
        let client = async_nats::connect(&self.url).await.unwrap();
        async_nats::jetstream::new(client)
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
