//! Deploy traces over OTLP/HTTP: a receiver of our own decodes what the scheduler and the
//! executors send (protobuf, `opentelemetry-proto`) during a real deploy on the fleet, and
//! what `flotilla replay ID --otlp` sends afterwards, and checks both against the event log.

use crate::project::{APP_SECRET, Project};
use crate::support::fleet;
use flotilla_events::{Envelope, Event};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::mpsc;
use std::time::Duration;

/// How long the executors' spans may take to arrive after the deploy command returned: they
/// are sent after each job's reports are durable, so usually before; this bounds a loaded
/// machine.
const EXECUTOR_SPANS_WAIT: Duration = Duration::from_secs(30);

/// One span as received, with the `service.name` of the process that sent it.
#[derive(Clone, Debug)]
struct Received {
    service: String,
    span: Span,
}

/// An OTLP/HTTP receiver on `ip`: each `POST /v1/traces` is decoded and handed to the test.
struct Receiver {
    addr: SocketAddr,
    rx: mpsc::Receiver<Vec<Received>>,
}

impl Receiver {
    fn start(ip: IpAddr) -> Receiver {
        let listener = TcpListener::bind((ip, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let Some(batch) = serve_one(stream) else {
                    continue;
                };
                if tx.send(batch).is_err() {
                    return;
                }
            }
        });
        Receiver { addr, rx }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything received within `wait` of the last batch.
    fn drain(&self, wait: Duration) -> Vec<Received> {
        let mut out = Vec::new();
        while let Ok(batch) = self.rx.recv_timeout(wait) {
            out.extend(batch);
        }
        out
    }

    /// Batches until `done` holds of all spans received so far (or `wait` passes).
    fn until(&self, wait: Duration, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = std::time::Instant::now() + wait;
        let mut out = Vec::new();
        while !done(&out) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(batch) => out.extend(batch),
                Err(_) => break,
            }
        }
        out
    }
}

/// Reads one HTTP/1.1 request, answers 200 and closes; returns its decoded spans.
fn serve_one(stream: std::net::TcpStream) -> Option<Vec<Received>> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).ok()?;
    let mut length = 0usize;
    let mut content_type = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = v.trim().parse().ok()?,
                "content-type" => content_type = v.trim().to_owned(),
                _ => {}
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    let mut w = stream;
    let _ = w.write_all(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    );
    assert!(
        request_line.starts_with("POST /v1/traces "),
        "{request_line}"
    );
    assert_eq!(content_type, "application/x-protobuf");
    let request = ExportTraceServiceRequest::decode(body.as_slice()).expect("OTLP protobuf");
    let mut out = Vec::new();
    for rs in request.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                Value::StringValue(s) => Some(s.clone()),
                _ => None,
            })
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for span in ss.spans {
                out.push(Received {
                    service: service.clone(),
                    span,
                });
            }
        }
    }
    Some(out)
}

fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        })
}

fn nanos(e: &Envelope) -> u64 {
    u64::try_from(e.at.unix_ms()).unwrap() * 1_000_000
}

fn step_of(event: &Event) -> Option<&'static str> {
    Some(match event {
        Event::ImagePulled(_) => "pull_image",
        Event::ContainerStarted(_) => "start_container",
        Event::HealthPassed(_) => "await_healthy",
        Event::ProxySwitched(_) => "switch_proxy",
        Event::OldContainerStopped(_) => "stop_old_container",
        _ => return None,
    })
}

/// With `x-flotilla.otel.endpoint` set (bootstrap hands it to every executor), a deploy on
/// two hosts arrives at an OTLP/HTTP collector as one trace whose id is the deploy id: the
/// deploy's root span, a span per host under it, a span per step under each host in the
/// order and at the times the event log records, with service, version, role, host, step,
/// digest and outcome; each executor's job span joins the same trace under the root. No
/// secret is in any span. `flotilla replay ID --otlp` afterwards sends the same spans with
/// the same ids.
#[test]
fn a_deploy_is_one_trace_at_the_collector_and_replay_sends_it_again() {
    let fleet = fleet(2);
    // On the fleet's bridge address, which the test and every host reach.
    let receiver = Receiver::start(IpAddr::V4(fleet.bridge_addr()));
    let url = receiver.url();
    let project = Project::new(&fleet, &format!("  otel:\n    endpoint: {url}\n"));
    project.flotilla_ok(&["deploy", "--version", "v1"], &[("APP_VERSION", "v1")]);
    let hosts: Vec<String> = fleet.hosts.iter().map(|h| h.addr.to_string()).collect();
    let live = receiver.until(EXECUTOR_SPANS_WAIT, |spans| {
        spans
            .iter()
            .filter(|r| r.span.name == "executor job")
            .count()
            >= hosts.len()
            && spans.iter().any(|r| r.span.parent_span_id.is_empty())
    });
    let scheduler: Vec<&Span> = live
        .iter()
        .filter(|r| r.service == "flotilla-scheduler")
        .map(|r| &r.span)
        .collect();
    let root = scheduler
        .iter()
        .find(|s| s.parent_span_id.is_empty())
        .unwrap_or_else(|| panic!("no root span among {live:#?}"));
    let deploy_id = attr(root, "flotilla.deploy.id").unwrap().to_owned();
    let events: Vec<Envelope> = project
        .flotilla_ok(&["replay", &deploy_id, "--json"], &[])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let at = |pred: &dyn Fn(&Envelope) -> bool| nanos(events.iter().find(|e| pred(e)).unwrap());

    // One trace, its id the deploy's ULID.
    let ulid = deploy_id_bits(&deploy_id);
    assert!(live.iter().all(|r| r.span.trace_id == ulid), "{live:#?}");
    assert_eq!(root.name, "deploy");
    assert_eq!(
        root.start_time_unix_nano,
        at(&|e| matches!(e.event, Event::DeployRequested(_)))
    );
    assert_eq!(
        root.end_time_unix_nano,
        at(&|e| matches!(e.event, Event::DeployCompleted(_)))
    );
    assert_eq!(attr(root, "flotilla.service"), Some("testapp"));
    assert_eq!(attr(root, "flotilla.version"), Some("v1"));
    assert_eq!(attr(root, "flotilla.outcome"), Some("succeeded"));

    for host in &hosts {
        let on_host: Vec<&Envelope> = events
            .iter()
            .filter(|e| e.host.as_deref() == Some(host))
            .collect();
        let host_spans: Vec<&&Span> = scheduler
            .iter()
            .filter(|s| s.name == "host" && attr(s, "flotilla.host") == Some(host))
            .collect();
        assert_eq!(host_spans.len(), 1, "{host}: {scheduler:#?}");
        let host_span = host_spans[0];
        assert_eq!(host_span.parent_span_id, root.span_id);
        assert_eq!(attr(host_span, "flotilla.role"), Some("web"));
        assert_eq!(attr(host_span, "flotilla.outcome"), Some("succeeded"));
        let succeeded = on_host
            .iter()
            .find(|e| matches!(e.event, Event::HostSucceeded(_)))
            .unwrap();
        assert_eq!(host_span.end_time_unix_nano, nanos(succeeded));

        let mut steps: Vec<&&Span> = scheduler
            .iter()
            .filter(|s| s.parent_span_id == host_span.span_id)
            .collect();
        steps.sort_by_key(|s| s.end_time_unix_nano);
        let expected: Vec<(&str, u64)> = on_host
            .iter()
            .filter_map(|e| Some((step_of(&e.event)?, nanos(e))))
            .collect();
        let got: Vec<(&str, u64)> = steps
            .iter()
            .map(|s| (s.name.as_str(), s.end_time_unix_nano))
            .collect();
        assert_eq!(got, expected, "{host}: steps and their end times");
        let pulled = on_host
            .iter()
            .find_map(|e| match &e.event {
                Event::ImagePulled(p) => Some(p),
                _ => None,
            })
            .unwrap();
        assert_eq!(
            steps[0].start_time_unix_nano,
            steps[0].end_time_unix_nano - pulled.duration_ms * 1_000_000
        );
        assert_eq!(
            steps[0].start_time_unix_nano,
            host_span.start_time_unix_nano
        );
        assert_eq!(
            attr(steps[0], "flotilla.image.digest"),
            Some(pulled.digest.as_str())
        );
        for pair in steps.windows(2) {
            assert_eq!(pair[0].end_time_unix_nano, pair[1].start_time_unix_nano);
        }
        for s in &steps {
            assert_eq!(attr(s, "flotilla.host"), Some(host.as_str()));
            assert_eq!(attr(s, "flotilla.service"), Some("testapp"));
            assert_eq!(attr(s, "flotilla.version"), Some("v1"));
            assert_eq!(attr(s, "flotilla.outcome"), Some("succeeded"));
        }

        // The executor's job joins the trace under the deploy's root, its steps under it.
        let job = live
            .iter()
            .find(|r| {
                r.service == "flotilla-executor"
                    && r.span.name == "executor job"
                    && attr(&r.span, "flotilla.host") == Some(host)
            })
            .unwrap_or_else(|| panic!("{host}: no executor job span"));
        assert_eq!(job.span.parent_span_id, root.span_id);
        let executor_steps: Vec<&Span> = live
            .iter()
            .filter(|r| r.span.parent_span_id == job.span.span_id)
            .map(|r| &r.span)
            .collect();
        assert!(!executor_steps.is_empty(), "{host}: no executor step spans");
        for s in executor_steps {
            assert_eq!(attr(s, "flotilla.host"), Some(host.as_str()));
            assert!(s.start_time_unix_nano >= job.span.start_time_unix_nano);
            assert!(s.end_time_unix_nano <= job.span.end_time_unix_nano);
        }
    }

    // No secret in any span.
    for r in &live {
        for kv in &r.span.attributes {
            let text = format!("{:?}", kv.value);
            assert!(!text.contains(APP_SECRET), "{}: {text}", kv.key);
            assert!(
                !text.contains("unused-by-this-registry"),
                "{}: {text}",
                kv.key
            );
        }
    }

    // The replay sends the scheduler's spans again, the same ids, tree and times.
    let out = project.flotilla(&["replay", &deploy_id, "--otlp", &url], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replayed = receiver.drain(Duration::from_secs(2));
    let key = |s: &Span| {
        (
            s.span_id.clone(),
            (
                s.parent_span_id.clone(),
                s.name.clone(),
                s.start_time_unix_nano,
                s.end_time_unix_nano,
            ),
        )
    };
    let live_map: BTreeMap<_, _> = scheduler.iter().map(|s| key(s)).collect();
    let replay_map: BTreeMap<_, _> = replayed.iter().map(|r| key(&r.span)).collect();
    assert_eq!(replay_map, live_map);
}

fn deploy_id_bits(id: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let mut n: u128 = 0;
    for c in id.bytes() {
        let v = ALPHABET.iter().position(|&a| a == c).unwrap() as u128;
        n = (n << 5) | v;
    }
    n.to_be_bytes().to_vec()
}
