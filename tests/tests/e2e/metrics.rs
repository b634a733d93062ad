//! The scheduler's Prometheus metrics, scraped by a real Prometheus (Debian's `prometheus`)
//! during a real deploy on the fleet, and the scrape configuration `grafana/` ships.

use crate::project::{EXECUTOR_METRICS_PORT, PROXY_METRICS_PORT, Project};
use crate::support::fleet;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How often the test's Prometheus scrapes: the shipped 5s, shortened so a test waits less.
pub(crate) const SCRAPE_INTERVAL_SECS: u64 = 1;

/// A Prometheus server of our own: temp data dir, loopback listen, 1s scrapes of `target`
/// (the scheduler) and of `hosts`' proxies and executors, with the shipped alert rules.
pub(crate) struct Prometheus {
    child: Child,
    pub(crate) addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    pub(crate) fn start(target: SocketAddr, hosts: &[IpAddr]) -> Prometheus {
        let binary = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or_else(|| {
                panic!("prometheus not found: install the Debian package `prometheus`")
            });
        let dir = tempfile::tempdir().unwrap();
        // The shipped scrape config, aimed at this test's scheduler and scraping every second.
        let shipped = std::fs::read_to_string(
            flotilla_e2e::testapp::workspace_root().join("grafana/prometheus.yml"),
        )
        .unwrap();
        assert!(shipped.contains("127.0.0.1:9394"), "{shipped}");
        let list = |port: u16| {
            let targets: Vec<String> = hosts.iter().map(|h| format!("\"{h}:{port}\"")).collect();
            format!("[{}]", targets.join(", "))
        };
        let (proxies, executors) = (
            r#"["10.0.0.5:9395", "10.0.0.6:9395"]"#,
            r#"["10.0.0.5:9396", "10.0.0.6:9396"]"#,
        );
        assert!(
            shipped.contains(proxies) && shipped.contains(executors),
            "{shipped}"
        );
        let config = shipped
            .replace("127.0.0.1:9394", &target.to_string())
            .replace(proxies, &list(PROXY_METRICS_PORT))
            .replace(executors, &list(EXECUTOR_METRICS_PORT))
            .replace(
                "scrape_interval: 5s",
                &format!("scrape_interval: {SCRAPE_INTERVAL_SECS}s"),
            );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        std::fs::copy(
            flotilla_e2e::testapp::workspace_root().join("grafana/alerts.yml"),
            dir.path().join("alerts.yml"),
        )
        .unwrap();
        let addr = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(binary)
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let p = Prometheus {
            child,
            addr,
            _dir: dir,
        };
        p.wait_until("prometheus ready", || {
            matches!(http_get(p.addr, "/-/ready"), Ok((200, _)))
        });
        p
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// The value of an instant query returning one sample, if it returns one.
    pub(crate) fn query(&self, promql: &str) -> Option<f64> {
        let (status, body) = http_get(
            self.addr,
            &format!("/api/v1/query?query={}", encode(promql)),
        )
        .ok()?;
        assert_eq!(status, 200, "query {promql}: {body}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        let result = json["data"]["result"].as_array()?;
        if result.len() != 1 {
            return None;
        }
        result[0]["value"][1].as_str()?.parse().ok()
    }

    /// Prometheus scrapes every second or so; a series may take a few scrapes to show.
    pub(crate) fn wait_until(&self, what: &str, ok: impl FnMut() -> bool) {
        const SCRAPES_WAIT: Duration = Duration::from_secs(60);
        assert!(
            flotilla_e2e::fleet::wait_until(SCRAPES_WAIT, ok),
            "timed out waiting for {what}\nprometheus log:\n{}",
            self.log()
        );
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nobody listens on right now.
pub(crate) fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Percent-encodes a query parameter.
pub(crate) fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// HTTP/1.0 GET (no chunked bodies); returns (status, body).
pub(crate) fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let status = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line in {buf:?}")))?;
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_owned());
    Ok((status, body.unwrap_or_default()))
}

/// A post-deploy hook that holds every deploy but v1's open (its scheduler still serving
/// metrics) until the test writes `release-VERSION`, so no assertion races the deploy's exit.
fn hold_deploys_after_v1(root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let hooks = root.join(".kamal/hooks");
    std::fs::create_dir_all(&hooks).unwrap();
    let script = format!(
        "#!/bin/sh\n[ \"$KAMAL_VERSION\" = v1 ] && exit 0\n\
         i=0\nwhile [ ! -e '{}/release-'\"$KAMAL_VERSION\" ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done\n",
        root.display()
    );
    let hook = hooks.join("post-deploy");
    std::fs::write(&hook, script).unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Deploys `version`, waits (while its post-deploy hook holds it) until Prometheus counts
/// `deploys` succeeded deploys, runs `check`, then lets the deploy finish.
fn deploy_held(
    project: &Project,
    prometheus: &Prometheus,
    version: &str,
    deploys: f64,
    check: impl FnOnce(&dyn Fn(&str) -> Option<f64>),
) {
    std::thread::scope(|scope| {
        let deploy = scope.spawn(|| {
            project.flotilla(
                &["deploy", "--version", version],
                &[("APP_VERSION", version)],
            )
        });
        let succeeded =
            r#"sum(flotilla_deploys_total{service="testapp",kind="deploy",outcome="succeeded"})"#;
        prometheus.wait_until(&format!("{deploys} deploys counted as succeeded"), || {
            deploy.is_finished() || prometheus.query(succeeded) == Some(deploys)
        });
        if deploy.is_finished() {
            let out = deploy.join().unwrap();
            panic!(
                "deploy {version} ended before its post-deploy hook was released ({}):\n{}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr),
                project.agent_logs()
            );
        }
        check(&|promql| prometheus.query(promql));
        std::fs::write(project.root().join(format!("release-{version}")), "").unwrap();
        let out = deploy.join().unwrap();
        assert!(
            out.status.success(),
            "deploy {version} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// `flotilla metrics serve`, stopped when dropped.
pub(crate) struct Standby(pub(crate) Child);

impl Drop for Standby {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// With `x-flotilla.metrics.listen` set, a deploy's scheduler serves `/metrics` while it runs,
/// and a real Prometheus scraping it with `grafana/prometheus.yml` sees the deploys by
/// outcome (the earlier v1, folded from the log, and the v2 just finished), the host in the
/// succeeded state, a duration for each step, the deploy duration and the events appended:
/// what the Grafana dashboard plots. Then `flotilla metrics serve` keeps the address answered
/// between deploys: during a v3 deploy Prometheus sees v3's live metrics through it, and
/// after v3 ends, the events v3 recorded last (its post-deploy hook).
#[test]
fn prometheus_scrapes_a_live_deploy_and_the_standby_between_deploys() {
    let fleet = fleet(1);
    let metrics = free_port();
    let project = Project::new(&fleet, &format!("  metrics:\n    listen: {metrics}\n"));
    hold_deploys_after_v1(project.root());
    project.flotilla_ok(&["deploy", "--version", "v1"], &[("APP_VERSION", "v1")]);

    let prometheus = Prometheus::start(metrics, &[]);
    deploy_held(&project, &prometheus, "v2", 2.0, |q| {
        assert_eq!(
            q(r#"flotilla_hosts{service="testapp",state="succeeded"}"#),
            Some(1.0)
        );
        assert_eq!(
            q(r#"flotilla_hosts{service="testapp",state="running"}"#),
            Some(0.0)
        );
        for step in [
            "pull_image",
            "start_container",
            "await_healthy",
            "switch_proxy",
        ] {
            let count = q(&format!(
                r#"flotilla_step_duration_seconds_count{{step="{step}"}}"#
            ));
            assert_eq!(count, Some(2.0), "{step}: one per deploy on one host");
        }
        assert_eq!(
            q(r#"sum(flotilla_deploy_duration_seconds_count{service="testapp"})"#),
            Some(2.0)
        );
        assert!(q("sum(flotilla_deploy_duration_seconds_sum)").unwrap() > 0.0);
        assert_eq!(
            q(r#"sum(flotilla_events_appended_total{type="DeployCompleted"})"#),
            Some(2.0)
        );
        assert_eq!(q("flotilla_events_redelivered_total"), Some(0.0));
        assert_eq!(q(r#"up{job="flotilla-scheduler"}"#), Some(1.0));
    });
    // The run is over: its scheduler no longer serves metrics.
    assert!(TcpStream::connect_timeout(&metrics, Duration::from_secs(1)).is_err());

    let log = std::fs::File::create(project.root().join("metrics-serve.log")).unwrap();
    let _standby = Standby(
        Command::new(&project.flotilla)
            .args(["metrics", "serve"])
            .current_dir(project.root())
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let hooks_ran = r#"sum(flotilla_events_appended_total{type="HookRan"})"#;
    prometheus.wait_until("the standby folds v1 and v2's post-deploy hooks", || {
        prometheus.query(hooks_ran) == Some(2.0)
    });
    deploy_held(&project, &prometheus, "v3", 3.0, |q| {
        // v3 holds the log, so the standby cannot read it: the count of 3 deploys came from
        // v3's own scheduler, through the standby.
        assert_eq!(q(hooks_ran), Some(2.0));
        assert_eq!(
            q(r#"flotilla_hosts{service="testapp",state="succeeded"}"#),
            Some(1.0)
        );
    });
    prometheus.wait_until("the standby folds v3's post-deploy hook", || {
        prometheus.query(hooks_ran) == Some(3.0)
    });
}
