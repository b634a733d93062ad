//! How the host proxy's container runs: Kamal 2's `proxy.run`, as far as it applies to
//! Flotilla's proxy. Pure data shared by `flotilla setup` (which renders it as a `docker run`
//! over SSH), the planner (`proxy boot|reboot` as steps) and the executor (which creates the
//! container through the Docker API), so all three run the proxy the same way.
//!
//! The settings a container was started with are kept in its label [`RUN_LABEL`], so both
//! `flotilla setup` and `proxy boot` see when `proxy.run` changed.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where the agents share sockets on a host: the proxy's admin socket and its listeners'.
pub const RUN_DIR: &str = "/run/flotilla";
/// The proxy's admin socket: a new proxy takes it over once its listeners are bound, so its
/// file changing is the sign a hand-over may stop the old proxy.
pub const PROXY_SOCKET: &str = "/run/flotilla/proxy.sock";
/// Where a running proxy hands its listening sockets to its successor.
pub const PROXY_LISTENERS: &str = "/run/flotilla/proxy-listeners.sock";
/// The proxy's saved routes and certificates.
pub const PROXY_STATE: &str = "/var/lib/flotilla/proxy";
/// Label every agent container carries.
pub const AGENT_LABEL: &str = "flotilla.agent";

/// Label holding the settings a proxy container runs with ([`ProxyRun::label`]).
pub const RUN_LABEL: &str = "flotilla.proxy-run";

/// How the proxy runs: Kamal 2's `proxy.run` keys that apply to Flotilla's proxy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
    pub fn docker_options(&self) -> Vec<String> {
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
    pub fn proxy_args(&self) -> Vec<String> {
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

impl ProxyRun {
    /// The label's first field of a label value (`ports=...`), as [`ProxyRun::ports`] gives
    /// it; `None` when the label has none.
    pub fn ports_of_label(label: &str) -> Option<&str> {
        label.split(';').next().filter(|p| p.starts_with("ports="))
    }

    /// The proxy's command line after its image: `proxy run`, the listeners' hand-over
    /// socket and the settings' flags.
    pub fn command(&self) -> Vec<String> {
        let mut v: Vec<String> = ["proxy", "run", "--listeners-socket", PROXY_LISTENERS]
            .map(String::from)
            .to_vec();
        v.extend(self.proxy_args());
        v
    }

    /// The proxy container's bind mounts.
    pub fn volumes() -> Vec<String> {
        vec![
            format!("{RUN_DIR}:{RUN_DIR}"),
            format!("{PROXY_STATE}:{PROXY_STATE}"),
        ]
    }

    /// The proxy container's labels: the agents' and the settings'.
    pub fn labels(&self) -> Vec<(String, String)> {
        vec![
            (AGENT_LABEL.to_owned(), "1".to_owned()),
            (RUN_LABEL.to_owned(), self.label()),
        ]
    }

    /// The proxy container's environment.
    pub fn env(&self) -> Vec<(String, String)> {
        match self.debug {
            true => vec![("RUST_LOG".to_owned(), "debug".to_owned())],
            false => Vec::new(),
        }
    }
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

    /// What the executor creates is what setup's `docker run` says.
    #[test]
    fn container_parts() {
        let (r, _) = run(&[("metrics_port", "9395"), ("debug", "true")]).unwrap();
        assert_eq!(
            r.command().join(" "),
            "proxy run --listeners-socket /run/flotilla/proxy-listeners.sock --http-port 80 \
             --https-port 443 --metrics-listen 0.0.0.0:9395"
        );
        assert_eq!(r.env(), vec![("RUST_LOG".into(), "debug".into())]);
        assert_eq!(ProxyRun::ports_of_label(&r.label()), Some("ports=80,443"));
        assert_eq!(ProxyRun::ports_of_label(""), None);
    }
}
