//! `Host` normalisation (issue 12): the request target's authority decides the route and is
//! what the app sees; a request with a missing or repeated `Host` is refused with 400.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{App, Proxy, deploy};

/// Sends `raw` on a new connection to `addr` and returns everything read until the close.
pub async fn exchange(addr: std::net::SocketAddr, raw: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(raw.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// An upstream that answers every request with 200 and the `Host` headers it received,
/// comma-separated, then closes.
async fn host_echo() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head);
                let hosts: Vec<&str> = head
                    .lines()
                    .filter_map(|l| l.split_once(':'))
                    .filter(|(name, _)| name.eq_ignore_ascii_case("host"))
                    .map(|(_, value)| value.trim())
                    .collect();
                let body = hosts.join(",");
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
            });
        }
    });
    addr
}

/// A request in absolute form is routed by the host in its target, not by its `Host`
/// header, and the app receives that host as its one `Host` header.
#[tokio::test]
async fn absolute_form_target_wins_and_is_forwarded() {
    let other = App::start("other", "healthy");
    let echo = host_echo().await;
    let proxy = Proxy::start().await;
    proxy
        .admin
        .deploy(deploy("echo", "app.test", &echo, "e1"))
        .await
        .unwrap();
    proxy
        .admin
        .deploy(deploy("other", "other.test", &other.addr, "o1"))
        .await
        .unwrap();
    let answer = exchange(
        proxy.http,
        "GET http://App.Test:8080/x HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("\r\n\r\nApp.Test:8080"), "{answer}");
    // The origin form keeps the client's own Host.
    let answer = exchange(
        proxy.http,
        "GET /x HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.ends_with("\r\n\r\napp.test"), "{answer}");
}

/// Two `Host` headers get a 400 from the proxy, whichever service either names.
#[tokio::test]
async fn duplicate_host_is_400() {
    let v1 = App::start("v1", "healthy");
    let proxy = Proxy::start().await;
    proxy
        .admin
        .deploy(deploy("web", "app.test", &v1.addr, "v1"))
        .await
        .unwrap();
    let answer = exchange(
        proxy.http,
        "GET /version HTTP/1.1\r\nHost: app.test\r\nHost: app.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("x-flotilla-proxy: bad-host"), "{answer}");
}

/// An HTTP/1.1 request without `Host` gets a 400 instead of reaching the host-less
/// (catch-all) service; an HTTP/1.0 one, which needs no `Host`, still reaches it.
#[tokio::test]
async fn missing_host_is_400_for_http_1_1() {
    let v1 = App::start("v1", "healthy");
    let proxy = Proxy::start().await;
    let mut catch_all = deploy("web", "unused.test", &v1.addr, "v1");
    catch_all.service.hosts = Vec::new();
    proxy.admin.deploy(catch_all).await.unwrap();
    let answer = exchange(
        proxy.http,
        "GET /version HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("x-flotilla-proxy: bad-host"), "{answer}");
    let answer = exchange(proxy.http, "GET /version HTTP/1.0\r\n\r\n").await;
    assert_eq!(answer.split(' ').nth(1), Some("200"), "{answer}");
    assert!(answer.ends_with("v1\n"), "{answer}");
}
