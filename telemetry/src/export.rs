//! The OTLP/HTTP exporter: one HTTP/1.1 `POST {endpoint}/v1/traces` with
//! `Content-Type: application/x-protobuf` per batch, over hyper.
//!
//! Only `http://` endpoints: a collector is usually a local agent or sidecar, and TLS here
//! would mean a second HTTP client stack; for a remote collector run a local agent (the
//! OpenTelemetry Collector) that forwards over TLS.

use crate::otlp;
use crate::span::Span;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::time::Duration;

/// The standard variable naming the collector's base URL (`/v1/traces` is appended).
pub const ENV_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// The standard variable naming the traces URL itself (used as it is).
pub const ENV_TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
/// The OTLP/HTTP path of traces.
pub const TRACES_PATH: &str = "/v1/traces";
/// Spans per request: the OpenTelemetry SDKs' default batch size (512), so a replay of a
/// 1,000-host deploy (about 6,000 spans, 2 MB) goes out as requests a collector's default
/// size limits accept.
pub const MAX_BATCH_SPANS: usize = 512;
/// How long one export may take, connect to response: OTLP's own default exporter timeout
/// (10 s); a deploy never waits on a slow collector longer than this per batch.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where spans go: a collector's address and the path to post to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// `host:port` to connect to.
    pub authority: String,
    /// The request path, e.g. `/v1/traces`.
    pub path: String,
}

impl Endpoint {
    /// A collector's base URL (`http://HOST:PORT` or `http://HOST:PORT/prefix`), as
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` or `x-flotilla.otel.endpoint` give it: `/v1/traces` is
    /// appended unless the URL already ends with it.
    pub fn from_base(url: &str) -> Result<Self, ExportError> {
        let mut e = Self::parse(url)?;
        if !e.path.ends_with(TRACES_PATH) {
            e.path = format!("{}{TRACES_PATH}", e.path.trim_end_matches('/'));
        }
        Ok(e)
    }

    /// A traces URL used as it is (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`).
    pub fn exact(url: &str) -> Result<Self, ExportError> {
        Self::parse(url)
    }

    /// The endpoint the environment names: the traces variable, else the base one; `None`
    /// when neither is set (or both are empty).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Option<Result<Self, ExportError>> {
        let set = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        if let Some(v) = set(ENV_TRACES_ENDPOINT) {
            return Some(Self::exact(v.trim()));
        }
        set(ENV_ENDPOINT).map(|v| Self::from_base(v.trim()))
    }

    fn parse(url: &str) -> Result<Self, ExportError> {
        let uri: http::Uri = url.parse().map_err(|source| ExportError::Url {
            url: url.to_owned(),
            source,
        })?;
        match uri.scheme_str() {
            Some("http") => {}
            _ => {
                return Err(ExportError::Scheme {
                    url: url.to_owned(),
                });
            }
        }
        let Some(authority) = uri.authority() else {
            return Err(ExportError::Scheme {
                url: url.to_owned(),
            });
        };
        let authority = match authority.port_u16() {
            Some(_) => authority.as_str().to_owned(),
            // OTLP/HTTP's registered port.
            None => format!("{}:4318", authority.host()),
        };
        Ok(Self {
            authority,
            path: uri.path().to_owned(),
        })
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}{}", self.authority, self.path)
    }
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The endpoint is not a URL.
    #[error("OTLP endpoint {url:?} is not a URL")]
    Url {
        /// What was given.
        url: String,
        /// Why it does not parse.
        #[source]
        source: http::uri::InvalidUri,
    },
    /// The endpoint is not `http://HOST[:PORT]...`.
    #[error(
        "OTLP endpoint {url:?} must be http://HOST:PORT (run a local collector to forward over TLS)"
    )]
    Scheme {
        /// What was given.
        url: String,
    },
    /// The collector could not be reached or the exchange broke.
    #[error("send spans to {endpoint}")]
    Http {
        /// Where to.
        endpoint: String,
        /// What broke.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The collector answered with an error status.
    #[error("{endpoint} answered {status}: {body}")]
    Status {
        /// Where to.
        endpoint: String,
        /// The HTTP status.
        status: http::StatusCode,
        /// The start of its answer.
        body: String,
    },
    /// No answer within [`EXPORT_TIMEOUT`].
    #[error("{endpoint} did not answer within {}s", EXPORT_TIMEOUT.as_secs())]
    TimedOut {
        /// Where to.
        endpoint: String,
    },
}

/// Sends spans to one collector.
#[derive(Clone, Debug)]
pub struct Exporter {
    endpoint: Endpoint,
    service_name: String,
}

impl Exporter {
    /// An exporter to `endpoint`, reporting as `service_name` (the resource's `service.name`).
    pub fn new(endpoint: Endpoint, service_name: &str) -> Self {
        Self {
            endpoint,
            service_name: service_name.to_owned(),
        }
    }

    /// Where it sends.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Sends `spans`, [`MAX_BATCH_SPANS`] per request, stopping at the first failure; an
    /// empty slice sends nothing.
    pub async fn export(&self, spans: &[Span]) -> Result<(), ExportError> {
        for batch in spans.chunks(MAX_BATCH_SPANS) {
            let body = otlp::encode(&self.service_name, batch);
            match tokio::time::timeout(EXPORT_TIMEOUT, self.post(body)).await {
                Ok(r) => r?,
                Err(_) => {
                    return Err(ExportError::TimedOut {
                        endpoint: self.endpoint.to_string(),
                    });
                }
            }
        }
        Ok(())
    }

    async fn post(&self, body: Vec<u8>) -> Result<(), ExportError> {
        let endpoint = self.endpoint.to_string();
        let http_err = |source: Box<dyn std::error::Error + Send + Sync>| ExportError::Http {
            endpoint: endpoint.clone(),
            source,
        };
        let stream = tokio::net::TcpStream::connect(&self.endpoint.authority)
            .await
            .map_err(|e| http_err(e.into()))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| http_err(e.into()))?;
        let conn = tokio::spawn(conn);
        let request = http::Request::post(self.endpoint.path.as_str())
            .header(http::header::HOST, self.endpoint.authority.as_str())
            .header(http::header::CONTENT_TYPE, "application/x-protobuf")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| http_err(e.into()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| http_err(e.into()))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| http_err(e.into()))?
            .to_bytes();
        conn.abort();
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
            return Err(ExportError::Status {
                endpoint,
                status,
                body: text,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The standard variables are read as the OTLP spec says: the traces URL as it is, the
    /// base URL with `/v1/traces` appended, an unset or empty variable means no export.
    #[test]
    fn endpoints_follow_the_otlp_variables() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        assert!(Endpoint::from_env(env(&[])).is_none());
        assert!(Endpoint::from_env(env(&[(ENV_ENDPOINT, " ")])).is_none());
        let e = Endpoint::from_env(env(&[(ENV_ENDPOINT, "http://127.0.0.1:4318")]))
            .unwrap()
            .unwrap();
        assert_eq!(e.to_string(), "http://127.0.0.1:4318/v1/traces");
        let e = Endpoint::from_env(env(&[
            (ENV_ENDPOINT, "http://a:1"),
            (ENV_TRACES_ENDPOINT, "http://b:2/custom"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(e.to_string(), "http://b:2/custom");
        assert_eq!(
            Endpoint::from_base("http://c/otlp/").unwrap().to_string(),
            "http://c:4318/otlp/v1/traces"
        );
        assert!(matches!(
            Endpoint::from_base("https://c:4318"),
            Err(ExportError::Scheme { .. })
        ));
    }

    /// Answers one request on a fresh loopback port with `status` and returns the port and
    /// the request head it got.
    async fn collector(status: &'static str) -> (String, tokio::task::JoinHandle<String>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            // Read the head and the body the head announces.
            loop {
                let n = s.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if body.len() >= len || n == 0 {
                        break;
                    }
                }
            }
            let answer = format!("HTTP/1.1 {status}\r\ncontent-length: 4\r\n\r\nnope");
            s.write_all(answer.as_bytes()).await.unwrap();
            String::from_utf8_lossy(&got).to_string()
        });
        (addr, task)
    }

    fn one_span() -> Vec<Span> {
        let t = crate::ids::TraceId::for_deploy("01JZ8XK6Q0V3M9N4B2C7D5E8F1");
        vec![Span {
            trace_id: t,
            span_id: t.root(),
            parent: None,
            name: "deploy".into(),
            start_unix_nanos: 1,
            end_unix_nanos: 2,
            attributes: Vec::new(),
            status: crate::span::Status::Ok,
        }]
    }

    /// A batch is one protobuf POST to the traces path; a collector's error status is an
    /// error naming the endpoint, the status and the start of its answer.
    #[tokio::test]
    async fn posts_protobuf_and_reports_a_collector_error() {
        let (addr, got) = collector("200 OK").await;
        let e = Exporter::new(Endpoint::from_base(&format!("http://{addr}")).unwrap(), "t");
        e.export(&one_span()).await.unwrap();
        let head = got.await.unwrap();
        assert!(head.starts_with("POST /v1/traces HTTP/1.1\r\n"), "{head}");
        assert!(
            head.contains("content-type: application/x-protobuf"),
            "{head}"
        );

        let (addr, _) = collector("503 Service Unavailable").await;
        let e = Exporter::new(Endpoint::from_base(&format!("http://{addr}")).unwrap(), "t");
        match e.export(&one_span()).await {
            Err(ExportError::Status { status, body, .. }) => {
                assert_eq!(status, http::StatusCode::SERVICE_UNAVAILABLE);
                assert_eq!(body, "nope");
            }
            other => panic!("{other:?}"),
        }
        // Nothing to send: no connection at all (this endpoint would refuse one).
        assert!(e.export(&[]).await.is_ok());
    }
}
