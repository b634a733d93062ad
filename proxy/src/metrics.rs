//! Prometheus metrics: requests by service, version, method and status class,
//! a duration histogram, in-flight requests and the current target of each service.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The proxy's metrics, registered in their own registry.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    in_flight: IntGaugeVec,
    target: IntGaugeVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "flotilla_proxy_requests_total",
                "Requests answered, by service, target version, method and status class",
            ),
            &["service", "version", "method", "status"],
        )
        .expect("static metric definition");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "flotilla_proxy_request_duration_seconds",
                "Time from request to response headers, by service and target version",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["service", "version"],
        )
        .expect("static metric definition");
        let in_flight = IntGaugeVec::new(
            Opts::new(
                "flotilla_proxy_in_flight_requests",
                "Requests being forwarded, by service",
            ),
            &["service"],
        )
        .expect("static metric definition");
        let target = IntGaugeVec::new(
            Opts::new(
                "flotilla_proxy_target_info",
                "1 for each service's current target and version",
            ),
            &["service", "target", "version"],
        )
        .expect("static metric definition");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(duration.clone()),
            Box::new(in_flight.clone()),
            Box::new(target.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Self {
            registry,
            requests,
            duration,
            in_flight,
            target,
        }
    }

    /// Records `service`'s current target, replacing the previous one.
    pub fn set_target(&self, service: &str, target: Option<(&str, &str)>) {
        self.forget_target(service);
        if let Some((addr, version)) = target {
            self.target
                .with_label_values(&[service, addr, version])
                .set(1);
        }
    }

    fn forget_target(&self, service: &str) {
        use prometheus::core::Collector;
        let families = self.target.collect();
        for family in families {
            for m in family.get_metric() {
                let labels: Vec<&str> = m.get_label().iter().map(|l| l.value()).collect();
                if labels.first() == Some(&service) && labels.len() == 3 {
                    let _ = self
                        .target
                        .remove_label_values(&[labels[0], labels[1], labels[2]]);
                }
            }
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// One route's series, resolved once per route instead of on every request.
pub struct RouteMetrics {
    service: String,
    version: String,
    requests: IntCounterVec,
    /// By method (see `method_index`) and status class.
    counters: [[OnceLock<IntCounter>; 5]; METHODS.len()],
    duration: Histogram,
    in_flight: IntGauge,
}

impl std::fmt::Debug for RouteMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteMetrics")
            .field("service", &self.service)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// The series of `service` while its target has `version`.
    pub fn for_route(&self, service: &str, version: &str) -> Arc<RouteMetrics> {
        Arc::new(RouteMetrics {
            service: service.to_owned(),
            version: version.to_owned(),
            requests: self.requests.clone(),
            counters: std::array::from_fn(|_| std::array::from_fn(|_| OnceLock::new())),
            duration: self.duration.with_label_values(&[service, version]),
            in_flight: self.in_flight.with_label_values(&[service]),
        })
    }
}

impl RouteMetrics {
    /// Counts one answered request.
    pub fn observe(&self, method: &http::Method, status: u16, took: Duration) {
        let class = match status {
            100..=199 => 0,
            200..=299 => 1,
            300..=399 => 2,
            400..=499 => 3,
            _ => 4,
        };
        let m = method_index(method);
        self.counters[m][class]
            .get_or_init(|| {
                self.requests.with_label_values(&[
                    self.service.as_str(),
                    self.version.as_str(),
                    METHODS[m],
                    CLASSES[class],
                ])
            })
            .inc();
        self.duration.observe(took.as_secs_f64());
    }

    pub fn in_flight(&self) -> IntGauge {
        self.in_flight.clone()
    }

    /// The in-flight gauge, borrowed: cloning it per request writes its shared reference
    /// count from every worker (issue 18).
    pub fn in_flight_gauge(&self) -> &IntGauge {
        &self.in_flight
    }
}

const METHODS: [&str; 8] = [
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "OTHER",
];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn method_index(method: &http::Method) -> usize {
    let label = method_label(method);
    METHODS
        .iter()
        .position(|m| *m == label)
        .unwrap_or(METHODS.len() - 1)
}

/// Methods outside the standard set share one label, so clients cannot grow the label space.
fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::PATCH => "PATCH",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Requests are counted per service, version, method and status class; the target gauge
    /// shows only the current target.
    #[test]
    fn renders_counts_and_targets() {
        let m = Metrics::new();
        let web = m.for_route("web", "v1");
        web.observe(&http::Method::GET, 200, Duration::from_millis(3));
        web.observe(
            &http::Method::from_bytes(b"BREW").unwrap(),
            503,
            Duration::from_millis(3),
        );
        m.set_target("web", Some(("127.0.0.1:1", "v1")));
        m.set_target("web", Some(("127.0.0.1:2", "v2")));
        let text = String::from_utf8(m.render()).unwrap();
        assert!(text.contains(r#"flotilla_proxy_requests_total{method="GET",service="web",status="2xx",version="v1"} 1"#), "{text}");
        assert!(
            text.contains(r#"method="OTHER",service="web",status="5xx""#),
            "{text}"
        );
        assert!(text.contains(
            r#"flotilla_proxy_target_info{service="web",target="127.0.0.1:2",version="v2"} 1"#
        ));
        assert!(!text.contains("127.0.0.1:1"));
    }
}
