//! The routing table: host name and path prefix to a service's current target.
//!
//! The table is an immutable snapshot behind a lock; a change builds a new
//! snapshot and swaps it in, so a request sees either the old or the new route,
//! never a mix. Lookups take the in-flight guard under the read lock, which is
//! what lets a switch drain the old target without missing a request.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;

use crate::metrics::RouteMetrics;
use crate::spec::{HealthCheck, ServiceSpec};
use crate::target::{InFlight, Target};

/// A service as the data path sees it.
#[derive(Debug)]
pub struct Route {
    pub spec: ServiceSpec,
    pub target: Arc<Target>,
    /// `Some(message)` while the service answers 503 with a maintenance page.
    pub maintenance: Option<String>,
    /// Held requests while the service is paused; kept across table versions.
    pub gate: Arc<Gate>,
    /// The request series of this service and target version.
    pub metrics: Arc<RouteMetrics>,
    /// The health check its last deploy passed, so whoever points the service at a new
    /// address of the same container (after an engine restart) can gate it the same way;
    /// `None` for a route saved before the proxy kept it.
    pub health: Option<HealthCheck>,
}

/// Pause state of a service: requests wait here until resumed or the limit passes.
#[derive(Debug)]
pub struct Gate {
    paused: watch::Sender<Option<Duration>>,
}

impl Gate {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            paused: watch::Sender::new(None),
        })
    }

    /// Holds new requests for up to `limit` each.
    pub fn pause(&self, limit: Duration) {
        self.paused.send_replace(Some(limit));
    }

    /// Releases held requests.
    pub fn resume(&self) {
        self.paused.send_replace(None);
    }

    pub fn is_paused(&self) -> bool {
        self.paused.borrow().is_some()
    }

    /// Waits while paused; false when the hold limit passed before a resume.
    pub async fn pass(&self) -> bool {
        let mut rx = self.paused.subscribe();
        let Some(limit) = *rx.borrow_and_update() else {
            return true;
        };
        tokio::time::timeout(limit, rx.wait_for(Option::is_none))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// An immutable routing table.
#[derive(Debug, Default, Clone)]
pub struct Table {
    services: BTreeMap<String, Arc<Route>>,
    /// Lower-cased host name to routes claiming it, longest path prefix first. Looked up on
    /// every request with the client's `Host`: foldhash, as SipHash cost about 200
    /// instructions per lookup (issue 18). Its seed is random per process, and clients only
    /// look names up, never insert them.
    by_host: HashMap<String, Vec<Arc<Route>>, foldhash::fast::RandomState>,
    /// Routes without host names, longest path prefix first.
    any_host: Vec<Arc<Route>>,
}

impl Table {
    pub fn from_routes(routes: impl IntoIterator<Item = Arc<Route>>) -> Self {
        let mut table = Table::default();
        for route in routes {
            table.services.insert(route.spec.name.clone(), route);
        }
        for route in table.services.values() {
            if route.spec.hosts.is_empty() {
                table.any_host.push(Arc::clone(route));
            }
            for host in &route.spec.hosts {
                table
                    .by_host
                    .entry(host.to_ascii_lowercase())
                    .or_default()
                    .push(Arc::clone(route));
            }
        }
        let by_prefix_len =
            |r: &Arc<Route>| std::cmp::Reverse(r.spec.path_prefix.as_deref().map_or(0, str::len));
        table.any_host.sort_by_key(by_prefix_len);
        for routes in table.by_host.values_mut() {
            routes.sort_by_key(by_prefix_len);
        }
        table
    }

    pub fn get(&self, service: &str) -> Option<&Arc<Route>> {
        self.services.get(service)
    }

    pub fn routes(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.services.values()
    }

    /// The route for a request: exact host first, then host-less services; longest prefix wins.
    pub fn lookup(&self, host: &str, path: &str) -> Option<&Arc<Route>> {
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            std::borrow::Cow::Owned(host.to_ascii_lowercase())
        } else {
            std::borrow::Cow::Borrowed(host)
        };
        let candidates = self
            .by_host
            .get(host.as_ref())
            .into_iter()
            .flatten()
            .chain(&self.any_host);
        candidates.into_iter().find(|r| {
            r.spec
                .path_prefix
                .as_deref()
                .is_none_or(|p| prefix_matches(p, path))
        })
    }

    /// A copy with `route` added or replacing the service of the same name.
    pub fn with(&self, route: Route) -> Table {
        let mut routes: Vec<_> = self.services.values().cloned().collect();
        routes.retain(|r| r.spec.name != route.spec.name);
        routes.push(Arc::new(route));
        Table::from_routes(routes)
    }

    /// A copy without `service`.
    pub fn without(&self, service: &str) -> Table {
        Table::from_routes(
            self.services
                .values()
                .filter(|r| r.spec.name != service)
                .cloned(),
        )
    }
}

/// `/api` matches `/api`, `/api/x` and `/api?q`, not `/apix`.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/') || prefix.is_empty(),
        None => false,
    }
}

/// The shared, swappable table.
#[derive(Debug, Default)]
pub struct Router {
    table: RwLock<Arc<Table>>,
}

/// A matched request: its route and the guard counting it against the route's target.
#[derive(Debug)]
pub struct Resolved {
    pub route: Arc<Route>,
    pub in_flight: InFlight,
}

impl Router {
    pub fn snapshot(&self) -> Arc<Table> {
        match self.table.read() {
            Ok(t) => Arc::clone(&t),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Finds the route and counts the request, atomically with respect to [`Router::swap`].
    pub fn resolve(&self, host: &str, path: &str) -> Option<Resolved> {
        let table = match self.table.read() {
            Ok(t) => t,
            Err(poisoned) => poisoned.into_inner(),
        };
        let route = table.lookup(host, path)?;
        Some(Resolved {
            route: Arc::clone(route),
            in_flight: route.target.begin(),
        })
    }

    /// Replaces the table with `change(current)`; returns the new table.
    pub fn update(&self, change: impl FnOnce(&Table) -> Table) -> Arc<Table> {
        let mut guard = match self.table.write() {
            Ok(t) => t,
            Err(poisoned) => poisoned.into_inner(),
        };
        let next = Arc::new(change(&guard));
        *guard = Arc::clone(&next);
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, hosts: &[&str], prefix: Option<&str>) -> Route {
        let mut spec = ServiceSpec::new(
            name,
            "127.0.0.1:1",
            hosts.iter().map(|h| h.to_string()).collect(),
        );
        spec.path_prefix = prefix.map(str::to_owned);
        Route {
            spec,
            target: Target::new("127.0.0.1:1", "v1"),
            maintenance: None,
            gate: Gate::new(),
            metrics: crate::metrics::Metrics::new().for_route(name, "v1"),
            health: None,
        }
    }

    fn name(t: &Table, host: &str, path: &str) -> Option<String> {
        t.lookup(host, path).map(|r| r.spec.name.clone())
    }

    /// Host names route to their service, case-insensitively; unknown hosts find nothing.
    #[test]
    fn routes_by_host() {
        let t = Table::default()
            .with(route("a", &["a.test"], None))
            .with(route("b", &["b.test"], None));
        assert_eq!(name(&t, "A.test", "/"), Some("a".into()));
        assert_eq!(name(&t, "b.test", "/x"), Some("b".into()));
        assert_eq!(name(&t, "c.test", "/"), None);
    }

    /// The longest matching path prefix wins, and prefixes match whole segments.
    #[test]
    fn longest_prefix_wins() {
        let t = Table::default()
            .with(route("site", &["x.test"], None))
            .with(route("api", &["x.test"], Some("/api")));
        assert_eq!(name(&t, "x.test", "/api/users"), Some("api".into()));
        assert_eq!(name(&t, "x.test", "/api"), Some("api".into()));
        assert_eq!(name(&t, "x.test", "/apix"), Some("site".into()));
    }

    /// A service without hosts catches hosts no other service claims.
    #[test]
    fn hostless_service_is_fallback() {
        let t = Table::default()
            .with(route("any", &[], None))
            .with(route("a", &["a.test"], None));
        assert_eq!(name(&t, "a.test", "/"), Some("a".into()));
        assert_eq!(name(&t, "other", "/"), Some("any".into()));
        assert_eq!(name(&t.without("any"), "other", "/"), None);
    }

    /// A paused gate holds requests until resumed, and lets them through after.
    #[tokio::test(start_paused = true)]
    async fn gate_holds_until_resume() {
        let gate = Gate::new();
        gate.pause(Duration::from_secs(10));
        let g = Arc::clone(&gate);
        let held = tokio::spawn(async move { g.pass().await });
        tokio::task::yield_now().await;
        gate.resume();
        assert!(held.await.unwrap());
        gate.pause(Duration::from_secs(1));
        assert!(!gate.pass().await);
    }
}
