//! The admin protocol: one JSON object per line each way over the unix socket.
//!
//! A request names its operation in `op`; a reply names its kind in `reply`.
//! Example (one line each):
//!
//! ```text
//! {"op":"deploy","service":{"name":"web","target":"127.0.0.1:3001","hosts":["app.example"]},"deploy_timeout_ms":30000}
//! {"reply":"deployed","service":"web","from":"127.0.0.1:3000","to":"127.0.0.1:3001","version":"v2","drain_cancelled":0}
//! ```

use serde::{Deserialize, Serialize};

use crate::spec::{HealthCheck, ServiceSpec};

/// Default for how long a new target has to become healthy.
pub const DEFAULT_DEPLOY_TIMEOUT_MS: u64 = 30_000;
/// Default for how long the old target's requests may run after a switch.
pub const DEFAULT_DRAIN_TIMEOUT_MS: u64 = 30_000;
/// Default for how long a paused service holds each request.
pub const DEFAULT_PAUSE_TIMEOUT_MS: u64 = 30_000;

/// An operation asked of the proxy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Health-check a new target, switch the service to it, drain the old one.
    Deploy(DeployRequest),
    /// Stop routing a service, then drain its target.
    Remove {
        service: String,
        #[serde(default = "default_drain")]
        drain_timeout_ms: u64,
    },
    /// Every service with its target and state.
    List,
    /// Answer the service's requests with 503 and a message instead of forwarding them.
    Maintenance {
        service: String,
        #[serde(default)]
        message: Option<String>,
    },
    /// End maintenance.
    Live { service: String },
    /// Hold the service's new requests (each up to `timeout_ms`) for a fast restart.
    Pause {
        service: String,
        #[serde(default = "default_pause")]
        timeout_ms: u64,
    },
    /// Release held requests.
    Resume { service: String },
}

/// The arguments of a deploy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// The service's new route; `target` is the new target.
    pub service: ServiceSpec,
    #[serde(default)]
    pub health: HealthCheck,
    /// The new target must be healthy within this time, or the deploy fails untouched.
    #[serde(default = "default_deploy")]
    pub deploy_timeout_ms: u64,
    /// The old target's in-flight requests may run this long after the switch.
    #[serde(default = "default_drain")]
    pub drain_timeout_ms: u64,
}

impl DeployRequest {
    pub fn new(service: ServiceSpec) -> Self {
        Self {
            service,
            health: HealthCheck::default(),
            deploy_timeout_ms: DEFAULT_DEPLOY_TIMEOUT_MS,
            drain_timeout_ms: DEFAULT_DRAIN_TIMEOUT_MS,
        }
    }
}

fn default_deploy() -> u64 {
    DEFAULT_DEPLOY_TIMEOUT_MS
}

fn default_drain() -> u64 {
    DEFAULT_DRAIN_TIMEOUT_MS
}

fn default_pause() -> u64 {
    DEFAULT_PAUSE_TIMEOUT_MS
}

/// The proxy's answer to one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Deployed(Deployed),
    Removed {
        service: String,
    },
    Services {
        services: Vec<ServiceStatus>,
    },
    /// A maintenance, live, pause or resume took effect.
    Done {
        service: String,
    },
    Error {
        kind: ErrorKind,
        message: String,
    },
}

/// A successful switch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployed {
    pub service: String,
    /// The previous target, if the service existed.
    pub from: Option<String>,
    pub to: String,
    pub version: String,
    /// Requests of the old target cancelled at the drain deadline.
    pub drain_cancelled: usize,
}

/// One service as `list` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub spec: ServiceSpec,
    pub maintenance: Option<String>,
    pub paused: bool,
    pub in_flight: usize,
    /// The health check the service's last deploy passed (`None` if the proxy's state
    /// predates it): the gate for pointing the service at its container's new address.
    #[serde(default)]
    pub health: Option<HealthCheck>,
}

/// Why an operation was refused or failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request could not be parsed or has a bad field.
    BadRequest,
    /// The named service does not exist.
    NotFound,
    /// The new target did not become healthy in time; routing is unchanged.
    Unhealthy,
    /// A certificate could not be loaded; routing is unchanged.
    Tls,
    /// The change took effect but could not be saved to the state file.
    State,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented example request parses, with defaults for what it leaves out.
    #[test]
    fn example_request_parses() {
        let line = r#"{"op":"deploy","service":{"name":"web","target":"127.0.0.1:3001","hosts":["app.example"]},"deploy_timeout_ms":30000}"#;
        let Request::Deploy(d) = serde_json::from_str(line).unwrap() else {
            panic!("not a deploy")
        };
        assert_eq!(d.service.hosts, vec!["app.example".to_owned()]);
        assert_eq!(d.health.path, "/up");
        assert_eq!(d.drain_timeout_ms, DEFAULT_DRAIN_TIMEOUT_MS);
        let list: Request = serde_json::from_str(r#"{"op":"list"}"#).unwrap();
        assert_eq!(list, Request::List);
    }

    /// Typos in a deploy are errors naming the field, not silently ignored options.
    #[test]
    fn unknown_fields_are_refused() {
        let line = r#"{"op":"deploy","service":{"name":"web","target":"127.0.0.1:3001"},"drain_timout_ms":5}"#;
        let e = serde_json::from_str::<Request>(line)
            .unwrap_err()
            .to_string();
        assert!(e.contains("drain_timout_ms"), "{e}");
    }
}
