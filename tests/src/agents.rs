//! Flotilla's host agents on fleet hosts: `flotilla proxy run` on port 80 and
//! `flotilla executor run`, each started inside the host's namespaces as a process on that
//! host would be (until `flotilla server bootstrap` installs them over SSH).

use crate::fleet::{Fleet, Host};
use crate::testapp::workspace_root;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long a host's agents may take to start (a loaded machine starts them in seconds).
const AGENTS_READY: Duration = Duration::from_secs(30);

/// Builds the `flotilla` binary if needed and returns its path.
pub fn flotilla_binary() -> PathBuf {
    let root = workspace_root();
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&root)
        .args(["build", "-q", "-p", "flotilla"])
        .status();
    assert!(
        status.is_ok_and(|s| s.success()),
        "cargo build -p flotilla failed"
    );
    crate::testapp::target_dir().join("debug/flotilla")
}

/// The port each host's proxy serves `/metrics` on, at the host's address (as
/// `grafana/prometheus.yml` expects).
pub const PROXY_METRICS_PORT: u16 = 9395;
/// The port each host's executor serves `/metrics` on, at the host's address.
pub const EXECUTOR_METRICS_PORT: u16 = 9396;

/// One host's proxy and executor. Dropping it stops both.
#[derive(Debug)]
pub struct Agents {
    pub host: Host,
    /// Logs, state and sockets of both agents.
    pub dir: PathBuf,
    executor: Option<Child>,
    proxy: Child,
    flotilla: PathBuf,
    nats_url: String,
    scheduler_key: String,
    on_host: Command,
    detached: bool,
    /// Extra `flotilla executor run` flags for the next (re)start (`--otlp-endpoint`, ...).
    executor_args: Vec<String>,
}

impl Agents {
    /// Starts the proxy (port 80, no HTTPS) and the executor (trusting `scheduler_key`, the
    /// base64 public key of the scheduler) on `host`, and waits for the proxy's socket.
    pub fn start(fleet: &Fleet, host: &Host, flotilla: &Path, scheduler_key: &str) -> Agents {
        let dir = fleet.dir().join(format!("agents-{}", host.name));
        std::fs::create_dir_all(&dir).expect("agents dir");
        let log = std::fs::File::create(dir.join("proxy.log")).expect("proxy log");
        let proxy = spawn(
            fleet.on_host(host),
            flotilla,
            |c| {
                c.args(["proxy", "run", "--http-port", "80", "--https-port", "off"])
                    .arg("--state-file")
                    .arg(dir.join("proxy-state.json"))
                    .arg("--admin-socket")
                    .arg(dir.join("proxy.sock"))
                    .arg("--metrics-listen")
                    .arg(format!("{}:{PROXY_METRICS_PORT}", host.addr));
            },
            log,
        );
        let mut agents = Agents {
            host: host.clone(),
            dir,
            executor: None,
            proxy,
            flotilla: flotilla.to_owned(),
            nats_url: fleet.nats_url(),
            scheduler_key: scheduler_key.to_owned(),
            on_host: fleet.on_host(host),
            detached: false,
            executor_args: Vec::new(),
        };
        agents.start_executor();
        // Ready when the proxy has its socket and the executor has published its identity
        // (what `flotilla server enroll` reads over SSH).
        let socket = agents.dir.join("proxy.sock");
        let identity = host.flotilla_state.join("executor/identity.pub");
        let ready = crate::fleet::wait_until(AGENTS_READY, || socket.exists() && identity.exists());
        assert!(
            ready,
            "agents on {} not ready in {AGENTS_READY:?} (proxy socket {}, identity {})",
            host.name,
            socket.exists(),
            identity.exists()
        );
        agents
    }

    /// Flags the executor gets from its next start on (see [`Agents::start_executor`]).
    pub fn set_executor_args(&mut self, args: &[&str]) {
        self.executor_args = args.iter().map(|a| (*a).to_owned()).collect();
    }

    /// (Re)starts the executor; its log is appended to `executor.log`.
    pub fn start_executor(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("executor.log"))
            .expect("executor log");
        let on_host = clone_command(&self.on_host);
        let (dir, host, nats, key, extra) = (
            self.dir.clone(),
            self.host.addr.to_string(),
            self.nats_url.clone(),
            self.scheduler_key.clone(),
            self.executor_args.clone(),
        );
        self.executor = Some(spawn(
            on_host,
            &self.flotilla,
            |c| {
                c.args(["executor", "run", "--host-id", &host, "--nats", &nats])
                    .args(["--scheduler-key", &key, "--heartbeat-secs", "1"])
                    .arg("--metrics-listen")
                    .arg(format!("{host}:{EXECUTOR_METRICS_PORT}"))
                    // The host's own /var/lib/flotilla (a bind in its mount namespace), where
                    // enrolment reads the executor's identity.
                    .args(["--state-dir", "/var/lib/flotilla/executor"])
                    .arg("--proxy-socket")
                    .arg(dir.join("proxy.sock"))
                    .args(&extra)
                    .env("FLOTILLA_EXECUTOR_CONFIG", dir.join("none.conf"))
                    .env("NO_COLOR", "1");
            },
            log,
        ));
    }

    /// Kills the executor with SIGKILL, as a crash would.
    pub fn kill_executor(&mut self) {
        if let Some(mut e) = self.executor.take() {
            let _ = e.kill();
            let _ = e.wait();
        }
    }

    /// Leaves both agents running after this value is gone (the demo's fleet keeps them; the
    /// fleet's `down` stops every process on the host).
    pub fn detach(mut self) {
        self.executor = None;
        self.detached = true;
    }

    pub fn executor_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("executor.log")).unwrap_or_default()
    }
}

impl Drop for Agents {
    fn drop(&mut self) {
        if self.detached {
            return;
        }
        self.kill_executor();
        let _ = self.proxy.kill();
        let _ = self.proxy.wait();
    }
}

fn clone_command(c: &Command) -> Command {
    let mut n = Command::new(c.get_program());
    n.args(c.get_args());
    n
}

fn spawn(
    mut on_host: Command,
    flotilla: &Path,
    args: impl FnOnce(&mut Command),
    log: std::fs::File,
) -> Child {
    use std::os::unix::process::CommandExt as _;
    on_host.arg(flotilla);
    args(&mut on_host);
    let err = log.try_clone().expect("log handle");
    on_host
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .process_group(0)
        .spawn()
        .expect("agent starts")
}
