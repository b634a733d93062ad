//! The `flotilla-proxy` container as Kamal's `proxy` commands see it: how it runs (Kamal 2's
//! `proxy.run`, as far as it applies to Flotilla's proxy) and the shell commands of `proxy
//! boot`, `reboot`, `start`, `stop`, `restart`, `details`, `logs` and `remove`. Pure: the
//! CLI runs these over SSH on each host.
//!
//! The settings a container was started with are kept in its label [`RUN_LABEL`], so both
//! `flotilla setup` and `proxy boot` see when `proxy.run` changed. Replacing a running proxy
//! hands its listening sockets over (`host.rs`'s hand-over, the one `setup` uses for a new
//! image), unless the ports changed: sockets on other ports cannot be handed over, so the
//! old proxy is stopped (it drains) and the new one binds.

use std::collections::BTreeMap;

use crate::plan::{self, PROXY, PROXY_NEXT, STOP_TIMEOUT_SECS};
use flotilla_ssh::shell_quote;

/// Label holding the settings a proxy container runs with ([`ProxyRun::label`]).
pub const RUN_LABEL: &str = "flotilla.proxy-run";

/// In a rendered command, this argv element stands for the image the host's agents run
/// (found at run time, see [`IMAGE_ON_HOST`]); it is written unquoted.
const IMAGE_VAR: &str = "\"$img\"";

/// Finds the agents' image on the host: the proxy's own, else the executor's (a proxy that
/// was removed). Neither means setup never ran there.
/// (`docker inspect` of a missing container still prints an empty line, so each inspect
/// sets the variable on its own.)
const IMAGE_ON_HOST: &str = "img=$(docker inspect -f '{{.Config.Image}}' flotilla-proxy 2>/dev/null) \
     || img=$(docker inspect -f '{{.Config.Image}}' flotilla-executor 2>/dev/null); \
     [ -n \"$img\" ] || { echo 'no flotilla agent image on this host: run flotilla setup first' >&2; exit 1; }";

/// How the proxy runs: Kamal 2's `proxy.run` keys that apply to Flotilla's proxy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyRun {
    /// `--http-port` (a port, or ADDR:PORT with `bind_ips`).
    pub http: String,
    /// `--https-port`.
    pub https: String,
    /// `--metrics-listen`, when `metrics_port` is set (Kamal: metrics off by default).
    pub metrics: Option<String>,
    /// Docker's json-file cap for the proxy's log (`log_max_size`, Kamal's default 10m).
    pub log_max_size: String,
    /// `debug: true`: the proxy logs at debug level.
    pub debug: bool,
}

impl Default for ProxyRun {
    fn default() -> Self {
        ProxyRun {
            http: "80".into(),
            https: "443".into(),
            metrics: None,
            log_max_size: "10m".into(),
            debug: false,
        }
    }
}

/// A `proxy.run` value Flotilla's proxy cannot honour.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyRunError {
    #[error("proxy/run/{key}: {value:?} is not a port (1-65535)")]
    Port { key: &'static str, value: String },
    #[error(
        "proxy/run/bind_ips: {value:?}: Flotilla's proxy listens on one address per port, \
         so at most one IP can be given"
    )]
    BindIps { value: String },
    #[error("proxy/run/{key}: {value:?} is not true or false")]
    Bool { key: &'static str, value: String },
}

impl ProxyRun {
    /// Reads `proxy.run` (as the config crate keeps it: flat text, lists joined by commas).
    /// Returns the settings and a warning for each key that does not apply to Flotilla's
    /// proxy (another proxy image, Docker options, unpublished ports under host networking).
    pub fn from_kamal(
        run: &BTreeMap<String, String>,
    ) -> Result<(ProxyRun, Vec<String>), ProxyRunError> {
        let mut out = ProxyRun::default();
        let mut warnings = Vec::new();
        let port = |key: &'static str, value: &str| match value.trim().parse::<u16>() {
            Ok(p) if p > 0 => Ok(p),
            _ => Err(ProxyRunError::Port {
                key,
                value: value.to_owned(),
            }),
        };
        let bind = match run.get("bind_ips").map(|v| v.trim()) {
            None | Some("") => None,
            Some(v) if v.contains(',') => {
                return Err(ProxyRunError::BindIps { value: v.into() });
            }
            Some(v) => Some(v.to_owned()),
        };
        let at = |p: u16| match &bind {
            Some(ip) if ip.contains(':') => format!("[{ip}]:{p}"),
            Some(ip) => format!("{ip}:{p}"),
            None => p.to_string(),
        };
        let http = run
            .get("http_port")
            .map(|v| port("http_port", v))
            .transpose()?;
        let https = run
            .get("https_port")
            .map(|v| port("https_port", v))
            .transpose()?;
        out.http = at(http.unwrap_or(80));
        out.https = at(https.unwrap_or(443));
        if let Some(v) = run.get("metrics_port") {
            let p = port("metrics_port", v)?;
            out.metrics = Some(match &bind {
                Some(_) => at(p),
                None => format!("0.0.0.0:{p}"),
            });
        }
        if let Some(v) = run.get("log_max_size") {
            out.log_max_size = v.trim().to_owned();
        }
        if let Some(v) = run.get("debug") {
            out.debug = match v.trim() {
                "true" => true,
                "false" => false,
                _ => {
                    return Err(ProxyRunError::Bool {
                        key: "debug",
                        value: v.clone(),
                    });
                }
            };
        }
        for (key, value) in run {
            let why = match key.as_str() {
                "http_port" | "https_port" | "metrics_port" | "log_max_size" | "debug"
                | "bind_ips" => continue,
                "publish" if value == "true" => continue,
                "publish" => "the proxy uses host networking, its ports are the host's",
                "image" | "version" | "registry" | "repository" => {
                    "Flotilla's proxy runs from the agents' image (`flotilla setup`)"
                }
                k if k == "options" || k.starts_with("options/") => {
                    "Docker options of kamal-proxy's container do not apply"
                }
                _ => "not a proxy run setting Flotilla knows",
            };
            warnings.push(format!("proxy/run/{key} is ignored: {why}"));
        }
        Ok((out, warnings))
    }

    /// The settings as one label value; its first field is the ports (what a hand-over
    /// cannot change).
    pub fn label(&self) -> String {
        format!(
            "{};metrics={};log={};debug={}",
            self.ports(),
            self.metrics.as_deref().unwrap_or(""),
            self.log_max_size,
            u8::from(self.debug)
        )
    }

    /// The label's first field: the listening addresses.
    pub fn ports(&self) -> String {
        format!("ports={},{}", self.http, self.https)
    }

    /// Docker options of the proxy's container.
    pub(crate) fn docker_options(&self) -> Vec<String> {
        let mut v = vec![
            "--log-opt".to_owned(),
            format!("max-size={}", self.log_max_size),
            "--label".to_owned(),
            format!("{RUN_LABEL}={}", self.label()),
        ];
        if self.debug {
            v.extend(["-e".to_owned(), "RUST_LOG=debug".to_owned()]);
        }
        v
    }

    /// `flotilla proxy run` flags.
    pub(crate) fn proxy_args(&self) -> Vec<String> {
        let mut v = vec![
            "--http-port".to_owned(),
            self.http.clone(),
            "--https-port".to_owned(),
            self.https.clone(),
        ];
        if let Some(m) = &self.metrics {
            v.extend(["--metrics-listen".to_owned(), m.clone()]);
        }
        v
    }
}

/// Renders `docker ARGV`, the image placeholder left for the shell to fill in.
fn docker(argv: &[String]) -> String {
    std::iter::once("docker".to_owned())
        .chain(argv.iter().map(|a| match a.as_str() {
            IMAGE_VAR => a.clone(),
            _ => shell_quote(a),
        }))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A new proxy (of the image the host runs) replacing the running one: handed over when the
/// ports are the same (nothing queued is reset), else stopped (it drains) and replaced; a
/// proxy that is not running is replaced at once.
fn replace(run: &ProxyRun) -> String {
    let fresh = docker(&plan::proxy_argv(PROXY, IMAGE_VAR, run));
    let handover =
        crate::host::handover_command(&docker(&plan::proxy_argv(PROXY_NEXT, IMAGE_VAR, run)));
    format!(
        "now=$(docker inspect -f '{{{{.State.Running}}}} {{{{index .Config.Labels \"{RUN_LABEL}\"}}}}' {PROXY} 2>/dev/null); \
         ports=${{now#* }}; ports=${{ports%%;*}}; [ -n \"$ports\" ] || ports='{default}'; \
         if [ \"${{now%% *}}\" = true ] && [ \"$ports\" = {want} ]; then {handover}; \
         else docker stop -t {STOP_TIMEOUT_SECS} {PROXY} >/dev/null 2>&1; docker rm -f {PROXY} {PROXY_NEXT} >/dev/null 2>&1; \
         {fresh} >/dev/null; fi",
        default = ProxyRun::default().ports(),
        want = shell_quote(&run.ports()),
    )
}

/// `proxy boot`: run the proxy where it is missing, start it where it is stopped, replace it
/// where it runs with other settings (handed over, see [`replace`]); a current one is left
/// alone. Prints what it did.
pub fn boot_command(run: &ProxyRun) -> String {
    let want = shell_quote(&run.label());
    format!(
        "{IMAGE_ON_HOST}; \
         now=$(docker inspect -f '{{{{.State.Running}}}} {{{{index .Config.Labels \"{RUN_LABEL}\"}}}}' {PROXY} 2>/dev/null); \
         if [ \"$now\" = \"true \"{want} ]; then echo '{PROXY} is already running'; \
         elif [ \"$now\" = \"false \"{want} ]; then docker start {PROXY} >/dev/null && echo 'started {PROXY}'; \
         else {{ {replace}; }} && echo 'booted {PROXY}'; fi",
        replace = replace(run),
    )
}

/// `proxy reboot`: a new proxy container with the current settings replaces the one running
/// (handed over: see [`replace`]).
pub fn reboot_command(run: &ProxyRun) -> String {
    format!(
        "{IMAGE_ON_HOST}; {{ {}; }} && echo 'rebooted {PROXY}'",
        replace(run)
    )
}

/// `proxy start`: the existing container, as it is.
pub fn start_command() -> String {
    format!("docker start {PROXY} >/dev/null && echo 'started {PROXY}'")
}

/// `proxy stop`: SIGTERM (the proxy stops accepting and drains), then Docker's stop timeout.
pub fn stop_command() -> String {
    format!("docker stop -t {STOP_TIMEOUT_SECS} {PROXY} >/dev/null && echo 'stopped {PROXY}'")
}

/// `proxy restart`: stop, then start the same container.
pub fn restart_command() -> String {
    format!(
        "docker stop -t {STOP_TIMEOUT_SECS} {PROXY} >/dev/null && docker start {PROXY} >/dev/null \
         && echo 'restarted {PROXY}'"
    )
}

/// `proxy details`: Kamal's `docker ps` of the proxy container.
pub fn details_command() -> String {
    format!("docker ps --filter name=^{PROXY}$")
}

/// What `proxy logs` reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Logs {
    pub since: Option<String>,
    pub lines: Option<u32>,
    pub grep: Option<String>,
    pub grep_options: Option<String>,
    pub timestamps: bool,
    pub follow: bool,
}

/// `proxy logs`: Kamal's `docker logs` of the proxy, stderr included, optionally grepped.
pub fn logs_command(l: &Logs) -> String {
    let mut cmd = format!("docker logs {PROXY}");
    if l.timestamps {
        cmd.push_str(" --timestamps");
    }
    if let Some(s) = &l.since {
        cmd.push_str(&format!(" --since {}", shell_quote(s)));
    }
    if let Some(n) = l.lines {
        cmd.push_str(&format!(" --tail {n}"));
    }
    if l.follow {
        cmd.push_str(" --follow");
    }
    cmd.push_str(" 2>&1");
    if let Some(g) = &l.grep {
        cmd.push_str(" | grep");
        if let Some(o) = &l.grep_options {
            cmd.push_str(&format!(" {o}"));
        }
        cmd.push_str(&format!(" {}", shell_quote(g)));
    }
    cmd
}

/// `proxy remove`: the proxy's containers. Its saved routes (`/var/lib/flotilla/proxy`) stay,
/// so a later `proxy boot` serves the deployed apps again; the agents' image stays (the
/// executor runs it). `flotilla remove` takes everything.
pub fn remove_command() -> String {
    format!("docker rm -f {PROXY} {PROXY_NEXT} >/dev/null 2>&1; echo 'removed {PROXY}'")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(pairs: &[(&str, &str)]) -> Result<(ProxyRun, Vec<String>), ProxyRunError> {
        ProxyRun::from_kamal(
            &pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    /// No `proxy.run`: Kamal's defaults (80, 443, no metrics, logs capped at 10m).
    #[test]
    fn defaults_are_kamals() {
        let (r, w) = run(&[]).unwrap();
        assert_eq!(r, ProxyRun::default());
        assert!(w.is_empty());
        assert_eq!(r.label(), "ports=80,443;metrics=;log=10m;debug=0");
        assert_eq!(r.proxy_args().join(" "), "--http-port 80 --https-port 443");
    }

    /// Ports, one bind IP, metrics, log size and debug become the proxy's flags and its
    /// container's options; keys for another proxy image are warned about, not fatal.
    #[test]
    fn run_settings_become_flags_and_options() {
        let (r, w) = run(&[
            ("http_port", "8080"),
            ("https_port", "8443"),
            ("metrics_port", "9395"),
            ("bind_ips", "10.0.0.5"),
            ("log_max_size", "50m"),
            ("debug", "true"),
            ("image", "basecamp/kamal-proxy"),
            ("options/cpus", "1"),
        ])
        .unwrap();
        assert_eq!(
            r.proxy_args().join(" "),
            "--http-port 10.0.0.5:8080 --https-port 10.0.0.5:8443 --metrics-listen 10.0.0.5:9395"
        );
        assert_eq!(
            r.docker_options().join(" "),
            "--log-opt max-size=50m --label flotilla.proxy-run=ports=10.0.0.5:8080,10.0.0.5:8443;\
             metrics=10.0.0.5:9395;log=50m;debug=1 -e RUST_LOG=debug"
        );
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].starts_with("proxy/run/image is ignored"), "{w:?}");
        assert!(
            w[1].starts_with("proxy/run/options/cpus is ignored"),
            "{w:?}"
        );
    }

    /// What cannot be honoured is an error naming the key.
    #[test]
    fn bad_values_are_errors() {
        assert_eq!(
            run(&[("http_port", "eighty")]).unwrap_err().to_string(),
            "proxy/run/http_port: \"eighty\" is not a port (1-65535)"
        );
        assert!(matches!(
            run(&[("bind_ips", "10.0.0.1,10.0.0.2")]),
            Err(ProxyRunError::BindIps { .. })
        ));
        assert!(matches!(
            run(&[("debug", "yes")]),
            Err(ProxyRunError::Bool { .. })
        ));
    }

    /// Boot and reboot run the image the host's agents run, hand the sockets over when the
    /// ports stay, and start the new proxy with the settings.
    #[test]
    fn boot_and_reboot_commands() {
        let r = ProxyRun::default();
        let boot = boot_command(&r);
        assert!(boot.starts_with(IMAGE_ON_HOST), "{boot}");
        assert!(
            boot.contains("if [ \"$now\" = \"true \"'ports=80,443;metrics=;log=10m;debug=0' ]"),
            "{boot}"
        );
        let reboot = reboot_command(&r);
        assert!(reboot.contains("--listeners-socket"), "{reboot}");
        assert!(
            reboot.contains("docker 'run' '-d' '--name' 'flotilla-proxy-next'"),
            "{reboot}"
        );
        assert!(
            reboot.contains(" \"$img\" 'proxy' 'run' '--listeners-socket'"),
            "{reboot}"
        );
        assert!(
            reboot.contains("[ \"$ports\" = 'ports=80,443' ]"),
            "{reboot}"
        );
    }

    /// Logs read as Kamal's: timestamps, tail, since, grep.
    #[test]
    fn logs_command_reads_as_kamals() {
        let l = Logs {
            since: Some("5m".into()),
            lines: Some(20),
            grep: Some("switched".into()),
            grep_options: None,
            timestamps: true,
            follow: false,
        };
        assert_eq!(
            logs_command(&l),
            "docker logs flotilla-proxy --timestamps --since '5m' --tail 20 2>&1 | grep 'switched'"
        );
    }
}
