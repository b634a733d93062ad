//! What a service is, as the admin API and the state file spell it.
//!
//! Durations are whole milliseconds in fields named `*_ms`, so the JSON stays
//! plain numbers that any client (the executor, a shell with `socat`) can write.

use serde::{Deserialize, Serialize};

/// Default time the proxy waits for an upstream's response headers.
pub const DEFAULT_RESPONSE_TIMEOUT_MS: u64 = 30_000;
/// Default largest request body the proxy forwards (1 GiB, like kamal-proxy's default).
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1 << 30;

/// One service's routing: where its requests go and how they are forwarded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// The service name, the key of every admin operation.
    pub name: String,
    /// The upstream `ADDR:PORT` that receives the service's requests.
    pub target: String,
    /// The target's version label, used in metrics and `list` (for example the release tag).
    #[serde(default)]
    pub version: Option<String>,
    /// Host names this service answers for; empty means every host not claimed by another service.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Only requests whose path starts with this prefix are routed here.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// Remove `path_prefix` from the path before forwarding, for apps mounted at `/`.
    #[serde(default)]
    pub strip_prefix: bool,
    /// How the service's hosts get certificates, if they are served over HTTPS.
    #[serde(default)]
    pub tls: Option<TlsSpec>,
    /// Answer plain-HTTP requests with a redirect to HTTPS (ACME challenges excepted).
    #[serde(default)]
    pub redirect_https: bool,
    /// Trust and keep `X-Forwarded-*` headers sent by the client (behind another proxy);
    /// when false the proxy replaces them with what it saw itself.
    #[serde(default)]
    pub forward_headers: bool,
    /// How long the upstream may take to send response headers before the client gets a 504.
    #[serde(default = "default_response_timeout")]
    pub response_timeout_ms: u64,
    /// Requests with a larger body get a 413 instead of reaching the app.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: u64,
}

fn default_response_timeout() -> u64 {
    DEFAULT_RESPONSE_TIMEOUT_MS
}

fn default_max_body() -> u64 {
    DEFAULT_MAX_BODY_BYTES
}

/// Where a service's certificates come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TlsSpec {
    /// PEM files on the host, read when the service is deployed and when the proxy starts.
    Static { cert_path: String, key_path: String },
    /// Certificates issued by the proxy's ACME directory (HTTP-01) for every host of the service.
    Acme,
}

/// How the proxy decides that a new target may take traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// Path requested with GET; any 2xx answer means healthy.
    #[serde(default = "default_health_path")]
    pub path: String,
    /// Pause between two checks.
    #[serde(default = "default_health_interval")]
    pub interval_ms: u64,
    /// How long one check may take.
    #[serde(default = "default_health_timeout")]
    pub timeout_ms: u64,
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self {
            path: default_health_path(),
            interval_ms: default_health_interval(),
            timeout_ms: default_health_timeout(),
        }
    }
}

fn default_health_path() -> String {
    "/up".to_owned()
}

fn default_health_interval() -> u64 {
    1_000
}

fn default_health_timeout() -> u64 {
    5_000
}

impl ServiceSpec {
    /// A spec with defaults for everything but the name, target and hosts.
    pub fn new(name: impl Into<String>, target: impl Into<String>, hosts: Vec<String>) -> Self {
        Self {
            name: name.into(),
            target: target.into(),
            version: None,
            hosts,
            path_prefix: None,
            strip_prefix: false,
            tls: None,
            redirect_https: false,
            forward_headers: false,
            response_timeout_ms: DEFAULT_RESPONSE_TIMEOUT_MS,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }

    /// Checks what a route needs to be servable; the message names the bad field.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(format!(
                "service name {:?} must be non-empty letters, digits, '-', '_' or '.'",
                self.name
            ));
        }
        if self.target.parse::<std::net::SocketAddr>().is_err() {
            let valid = self
                .target
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !valid {
                return Err(format!("target {:?} must be ADDR:PORT", self.target));
            }
        }
        for host in &self.hosts {
            if host.is_empty() || host.contains(['/', ' ', ':']) {
                return Err(format!("host {host:?} is not a host name"));
            }
        }
        if let Some(prefix) = &self.path_prefix
            && !prefix.starts_with('/')
        {
            return Err(format!("path_prefix {prefix:?} must start with '/'"));
        }
        if self.tls.is_some() && self.hosts.is_empty() {
            return Err("tls needs at least one host name".to_owned());
        }
        if self.redirect_https && self.tls.is_none() {
            return Err("redirect_https needs tls".to_owned());
        }
        Ok(())
    }

    /// The version label shown in metrics and `list`.
    pub fn version_label(&self) -> &str {
        self.version.as_deref().unwrap_or("unknown")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deploy request with only the required fields gets the documented defaults.
    #[test]
    fn defaults_fill_in() {
        let spec: ServiceSpec =
            serde_json::from_str(r#"{"name":"web","target":"127.0.0.1:3000"}"#).unwrap();
        assert_eq!(spec, ServiceSpec::new("web", "127.0.0.1:3000", vec![]));
        assert_eq!(spec.validate(), Ok(()));
    }

    /// Bad fields are refused with a message naming the field.
    #[test]
    fn invalid_specs_are_named() {
        let mut spec = ServiceSpec::new("web", "nowhere", vec![]);
        assert!(spec.validate().unwrap_err().contains("target"));
        spec.target = "127.0.0.1:3000".into();
        spec.path_prefix = Some("api".into());
        assert!(spec.validate().unwrap_err().contains("path_prefix"));
        spec.path_prefix = None;
        spec.tls = Some(TlsSpec::Acme);
        assert!(spec.validate().unwrap_err().contains("tls"));
        let unknown =
            serde_json::from_str::<ServiceSpec>(r#"{"name":"w","target":"a:1","hostz":[]}"#);
        assert!(unknown.unwrap_err().to_string().contains("hostz"));
    }
}
