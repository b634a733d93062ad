//! A real `nats-server` (JetStream) on loopback for the executor's integration tests.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a freshly started nats-server may take to listen.
const LISTEN_WAIT: Duration = Duration::from_secs(10);

pub struct Server {
    child: Child,
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Server {
    /// `nats-server -js` on `port`, storing in `store`.
    pub fn start(port: u16, store: &std::path::Path) -> Server {
        let mut c = Command::new("nats-server");
        c.args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store);
        Self::spawn(c, port)
    }

    /// `nats-server -c FILE` with `conf` (which must set JetStream and whatever else) on `port`.
    pub fn start_with_config(port: u16, dir: &std::path::Path, conf: &str) -> Server {
        let file = dir.join("nats.conf");
        let text = format!(
            "listen: \"127.0.0.1:{port}\"\njetstream {{ store_dir: {:?} }}\n{conf}",
            dir.join("js").display().to_string()
        );
        std::fs::write(&file, text).unwrap();
        let mut c = Command::new("nats-server");
        c.arg("-c").arg(&file);
        Self::spawn(c, port)
    }

    fn spawn(mut c: Command, port: u16) -> Server {
        let child = c
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run nats-server ({e}): install the Debian package `nats-server`")
            });
        let deadline = Instant::now() + LISTEN_WAIT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Server { child }
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}
