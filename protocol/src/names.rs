//! Kamal's names on hosts, one definition each, so containers Flotilla makes are found by
//! Kamal's tooling and the other way round: the planner, the executor and the scheduler all
//! name things through here.

/// The Docker network every Flotilla container joins (Kamal's).
pub const NETWORK: &str = "kamal";

/// Container labels Kamal sets, and reads to find a service's containers.
pub const LABEL_SERVICE: &str = "service";
/// See [`LABEL_SERVICE`].
pub const LABEL_ROLE: &str = "role";
/// See [`LABEL_SERVICE`]; absent without a destination.
pub const LABEL_DESTINATION: &str = "destination";

/// The host proxy's container (`flotilla setup` runs it), and its successor's while a
/// reboot hands the listening sockets over.
pub const PROXY_CONTAINER: &str = "flotilla-proxy";
/// The host's executor's container (`flotilla setup` runs it): its image is the agents'.
pub const EXECUTOR_CONTAINER: &str = "flotilla-executor";
/// See [`PROXY_CONTAINER`].
pub const PROXY_NEXT_CONTAINER: &str = "flotilla-proxy-next";
/// Seconds Docker waits after SIGTERM before killing the proxy: it drains in-flight requests
/// for up to 30 s (its `--shutdown-timeout` default).
pub const PROXY_STOP_TIMEOUT_S: u32 = 40;

/// Kamal's container name: `service-role[-destination]-version`.
pub fn container_name(
    service: &str,
    role: &str,
    destination: Option<&str>,
    version: &str,
) -> String {
    match destination {
        Some(d) => format!("{service}-{role}-{d}-{version}"),
        None => format!("{service}-{role}-{version}"),
    }
}

/// The proxy's service name for a role: `service-role[-destination]`.
pub fn proxy_service(service: &str, role: &str, destination: Option<&str>) -> String {
    match destination {
        Some(d) => format!("{service}-{role}-{d}"),
        None => format!("{service}-{role}"),
    }
}

/// What one deploy lock covers: a service and destination (`myapp`, `myapp.staging`). Kamal
/// locks per destination too.
pub fn lock_key(service: &str, destination: Option<&str>) -> String {
    match destination {
        Some(d) => format!("{service}.{d}"),
        None => service.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Containers, proxy services and locks follow Kamal's `service-role[-destination]`.
    #[test]
    fn kamal_names() {
        assert_eq!(container_name("app", "web", None, "abc"), "app-web-abc");
        assert_eq!(
            container_name("app", "web", Some("staging"), "abc"),
            "app-web-staging-abc"
        );
        assert_eq!(proxy_service("app", "web", Some("eu")), "app-web-eu");
        assert_eq!(lock_key("app", Some("staging")), "app.staging");
        assert_eq!(lock_key("app", None), "app");
    }
}
