//! Prometheus metrics: requests by service, version, method and status class,
//! a duration histogram, in-flight requests and the current target of each service.

use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
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
                "Time from request to response headers, by service",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["service"],
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

    /// Counts one answered request.
    pub fn observe(
        &self,
        service: &str,
        version: &str,
        method: &http::Method,
        status: u16,
        took: Duration,
    ) {
        let class = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.requests
            .with_label_values(&[service, version, method_label(method), class])
            .inc();
        self.duration
            .with_label_values(&[service])
            .observe(took.as_secs_f64());
    }

    pub fn in_flight(&self, service: &str) -> prometheus::IntGauge {
        self.in_flight.with_label_values(&[service])
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
        m.observe(
            "web",
            "v1",
            &http::Method::GET,
            200,
            Duration::from_millis(3),
        );
        m.observe(
            "web",
            "v1",
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
