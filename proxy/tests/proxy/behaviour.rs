//! What clients and operators see: unknown hosts, maintenance, pause, limits,
//! prefixes, metrics, WebSocket upgrades and the admin socket's manners.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use flotilla_proxy::admin::{AdminError, ErrorKind};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UnixStream};

use crate::support::{App, Proxy, config, deploy, get, http_client};

/// A request for a host no service claims gets a 404 marked as the proxy's own answer.
#[tokio::test]
async fn unknown_host_is_404_from_the_proxy() {
    let proxy = Proxy::start().await;
    let got = get(&http_client(), proxy.http, "nobody.test", "/")
        .await
        .unwrap();
    assert_eq!(got.status, 404);
    assert_eq!(got.headers["x-flotilla-proxy"], "no-route");
}

/// Maintenance answers 503 with the operator's message until `live`; routes, not the app, answer.
#[tokio::test]
async fn maintenance_then_live() {
    let v1 = App::start("v1", "healthy");
    let proxy = Proxy::start().await;
    proxy
        .admin
        .deploy(deploy("web", "app.test", &v1.addr, "v1"))
        .await
        .unwrap();
    proxy
        .admin
        .maintenance("web", Some("back at ten".into()))
        .await
        .unwrap();
    let client = http_client();
    let got = get(&client, proxy.http, "app.test", "/version")
        .await
        .unwrap();
    assert_eq!((got.status, got.body.trim()), (503, "back at ten"));
    assert_eq!(got.headers["x-flotilla-proxy"], "maintenance");
    proxy.admin.live("web").await.unwrap();
    let got = get(&client, proxy.http, "app.test", "/version")
        .await
        .unwrap();
    assert_eq!((got.status, got.body.trim()), (200, "v1"));
}

/// A paused service holds requests and releases them on resume, to the target current at
/// release (a switch during the pause is seen); past the hold limit a request gets a 503.
#[tokio::test]
async fn pause_holds_until_resume() {
    let v1 = App::start("v1", "healthy");
    let v2 = App::start("v2", "healthy");
    let proxy = Proxy::start().await;
    proxy
        .admin
        .deploy(deploy("web", "app.test", &v1.addr, "v1"))
        .await
        .unwrap();
    proxy.admin.pause("web", 30_000).await.unwrap();
    let addr = proxy.http;
    let mut held =
        tokio::spawn(async move { get(&http_client(), addr, "app.test", "/version").await });
    assert!(proxy.admin.list().await.unwrap()[0].paused);
    // The held request is not answered while paused.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut held)
            .await
            .is_err()
    );
    proxy
        .admin
        .deploy(deploy("web", "app.test", &v2.addr, "v2"))
        .await
        .unwrap();
    proxy.admin.resume("web").await.unwrap();
    let got = held.await.unwrap().unwrap();
    assert_eq!((got.status, got.body.trim()), (200, "v2"));

    proxy.admin.pause("web", 200).await.unwrap();
    let got = get(&http_client(), addr, "app.test", "/version")
        .await
        .unwrap();
    assert_eq!(got.status, 503);
    assert_eq!(got.headers["x-flotilla-proxy"], "paused");
}

/// A path prefix routes only its paths, and with stripping the app sees paths from `/`.
#[tokio::test]
async fn path_prefix_routes_and_strips() {
    let site = App::start("site", "healthy");
    let api = App::start("api", "healthy");
    let proxy = Proxy::start().await;
    proxy
        .admin
        .deploy(deploy("site", "x.test", &site.addr, "s1"))
        .await
        .unwrap();
    let mut request = deploy("api", "x.test", &api.addr, "a1");
    request.service.path_prefix = Some("/api".into());
    request.service.strip_prefix = true;
    proxy.admin.deploy(request).await.unwrap();
    let client = http_client();
    let got = get(&client, proxy.http, "x.test", "/api/version")
        .await
        .unwrap();
    assert_eq!(got.body.trim(), "api");
    let got = get(&client, proxy.http, "x.test", "/version")
        .await
        .unwrap();
    assert_eq!(got.body.trim(), "site");
}

/// A slow upstream gets the client a 504 after the response timeout; a body within the
/// limit is forwarded, and one over it gets a 413 without reaching the app.
#[tokio::test]
async fn response_timeout_and_body_limit() {
    let v1 = App::start("v1", "healthy");
    let proxy = Proxy::start().await;
    let mut request = deploy("web", "app.test", &v1.addr, "v1");
    request.service.response_timeout_ms = 300;
    request.service.max_body_bytes = 10;
    proxy.admin.deploy(request).await.unwrap();
    let got = get(&http_client(), proxy.http, "app.test", "/slow?ms=2000")
        .await
        .unwrap();
    assert_eq!(got.status, 504);
    assert_eq!(got.headers["x-flotilla-proxy"], "upstream-timeout");

    // A body within the limit reaches the app.
    let mut stream = TcpStream::connect(proxy.http).await.unwrap();
    stream
        .write_all(b"POST /version HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("v1\n"),
        "{answer}"
    );

    let mut stream = TcpStream::connect(proxy.http).await.unwrap();
    stream
        .write_all(b"POST /version HTTP/1.1\r\nHost: app.test\r\nContent-Length: 11\r\nConnection: close\r\n\r\nhello world")
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
}

/// The metrics endpoint counts requests by service, version, method and status class, times
/// them by service and version, and shows each service's current target.
#[tokio::test]
async fn metrics_count_requests() {
    let v1 = App::start("v1", "healthy");
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.metrics = Some("127.0.0.1:0".parse().unwrap());
    let proxy = Proxy::start_with(cfg, dir).await;
    proxy
        .admin
        .deploy(deploy("web", "app.test", &v1.addr, "v1"))
        .await
        .unwrap();
    let client = http_client();
    for _ in 0..3 {
        get(&client, proxy.http, "app.test", "/version")
            .await
            .unwrap();
    }
    get(&client, proxy.http, "app.test", "/missing")
        .await
        .unwrap();
    let metrics_addr = proxy.running.as_ref().unwrap().metrics_addr.unwrap();
    let text = get(&client, metrics_addr, "metrics", "/metrics")
        .await
        .unwrap()
        .body;
    assert!(text.contains(r#"flotilla_proxy_requests_total{method="GET",service="web",status="2xx",version="v1"} 3"#), "{text}");
    assert!(text.contains(
        r#"flotilla_proxy_requests_total{method="GET",service="web",status="4xx",version="v1"} 1"#
    ));
    assert!(text.contains(&format!(
        r#"flotilla_proxy_target_info{{service="web",target="{}",version="v1"}} 1"#,
        v1.addr
    )));
    assert!(text.contains(
        r#"flotilla_proxy_request_duration_seconds_count{service="web",version="v1"} 4"#
    ));
    assert!(text.contains(r#"flotilla_proxy_in_flight_requests{service="web"} 0"#));
}

/// A WebSocket-style upgrade passes through: after the 101 both directions carry raw bytes.
#[tokio::test]
async fn upgrade_passes_through() {
    let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = upstream.local_addr().unwrap().to_string();
    // A minimal upgrade server: health answers 200, an upgrade gets 101 and an echo.
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = upstream.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream);
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    if line == "\r\n" {
                        break;
                    }
                    head.push_str(&line);
                }
                let mut stream = reader.into_inner();
                if head.to_ascii_lowercase().contains("upgrade: websocket") {
                    stream
                        .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
                        .await
                        .unwrap();
                    let mut buf = [0u8; 64];
                    while let Ok(n) = stream.read(&mut buf).await {
                        if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                } else {
                    let _ = stream
                        .write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        )
                        .await;
                }
            });
        }
    });
    let proxy = Proxy::start().await;
    proxy
        .admin
        .deploy(deploy("ws", "ws.test", &upstream_addr, "w1"))
        .await
        .unwrap();
    let mut client = TcpStream::connect(proxy.http).await.unwrap();
    client
        .write_all(b"GET /socket HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        .await
        .unwrap();
    let mut reader = BufReader::new(client);
    let mut status = String::new();
    reader.read_line(&mut status).await.unwrap();
    assert!(status.starts_with("HTTP/1.1 101"), "{status}");
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).await.unwrap();
        if line == "\r\n" {
            break;
        }
    }
    let mut client = reader.into_inner();
    client.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 4];
    client.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"ping");
}

/// The admin socket is private to its owner, and a malformed or invalid request gets an
/// error reply on a connection that stays usable, with routing unchanged.
#[tokio::test]
async fn admin_socket_refuses_bad_requests() {
    let v1 = App::start("v1", "healthy");
    let proxy = Proxy::start().await;
    let mode = std::fs::metadata(&proxy.config.admin_socket)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    proxy
        .admin
        .deploy(deploy("web", "app.test", &v1.addr, "v1"))
        .await
        .unwrap();

    let stream = UnixStream::connect(&proxy.config.admin_socket)
        .await
        .unwrap();
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    for bad in [
        "{not json",
        r#"{"op":"explode"}"#,
        r#"{"op":"deploy","service":{"name":"web","target":"nowhere"}}"#,
    ] {
        write
            .write_all(format!("{bad}\n").as_bytes())
            .await
            .unwrap();
        let reply = lines.next_line().await.unwrap().unwrap();
        assert!(
            reply.contains(r#""reply":"error""#) && reply.contains("bad_request"),
            "{bad} -> {reply}"
        );
    }
    write.write_all(b"{\"op\":\"list\"}\n").await.unwrap();
    let reply = lines.next_line().await.unwrap().unwrap();
    assert!(reply.contains(&v1.addr), "{reply}");

    let mut acme = deploy("web", "app.test", &v1.addr, "v2");
    acme.service.tls = Some(flotilla_proxy::TlsSpec::Acme);
    let refused = proxy.admin.deploy(acme).await.unwrap_err();
    assert!(
        refused.to_string().contains("--acme-directory"),
        "{refused}"
    );

    let missing = proxy.admin.live("nosuch").await.unwrap_err();
    assert!(
        matches!(
            missing,
            AdminError::Refused {
                kind: ErrorKind::NotFound,
                ..
            }
        ),
        "{missing:?}"
    );
    let got = get(&http_client(), proxy.http, "app.test", "/version")
        .await
        .unwrap();
    assert_eq!(got.body.trim(), "v1");
}

/// Removing a service stops routing it, and the removal survives in the state file.
#[tokio::test]
async fn remove_stops_routing() {
    let v1 = App::start("v1", "healthy");
    let proxy = Proxy::start().await;
    proxy
        .admin
        .deploy(deploy("web", "app.test", &v1.addr, "v1"))
        .await
        .unwrap();
    proxy.admin.remove("web", 1_000).await.unwrap();
    let got = get(&http_client(), proxy.http, "app.test", "/version")
        .await
        .unwrap();
    assert_eq!(got.status, 404);
    let saved = std::fs::read_to_string(&proxy.config.state_file).unwrap();
    assert!(!saved.contains(&v1.addr), "{saved}");
}

/// Client connections are bounded: past the limit a new connection waits in the accept
/// queue, and is served as soon as an open one closes.
#[tokio::test]
async fn connections_are_bounded() {
    let v1 = App::start("v1", "healthy");
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    // One worker, so the limit is not split across workers.
    cfg.workers = 1;
    cfg.max_connections = 1;
    let proxy = Proxy::start_with(cfg, dir).await;
    proxy
        .admin
        .deploy(deploy("web", "app.test", &v1.addr, "v1"))
        .await
        .unwrap();
    let request = b"GET /version HTTP/1.1\r\nHost: app.test\r\n\r\n";

    let mut first = TcpStream::connect(proxy.http).await.unwrap();
    first.write_all(request).await.unwrap();
    let mut buf = [0u8; 512];
    let n = first.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));

    let mut second = TcpStream::connect(proxy.http).await.unwrap();
    second.write_all(request).await.unwrap();
    let waiting = tokio::time::timeout(Duration::from_millis(300), second.read(&mut buf)).await;
    assert!(
        waiting.is_err(),
        "second connection served while the first was open"
    );
    drop(first);
    let n = tokio::time::timeout(Duration::from_secs(5), second.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
}
