//! The HTTP/1.1 fast path (`GET`/`HEAD` without body on keep-alive connections) and its
//! hand-off to hyper: what the app receives, response framings, and connections that
//! change path half-way.

use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::host::exchange;
use crate::support::{App, Proxy, deploy, get, http_client};

/// One megabyte, the large-body case.
const BIG: usize = 1 << 20;

/// An upstream serving each framing by path, with keep-alive where the framing allows:
/// `/echo` answers the request head it received, `/chunked` a body in three chunks and
/// pieces, `/big` a 1 MB body, `/close` a body delimited by closing, `/up` 200.
async fn framings() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head: Vec<u8> = buf.drain(..end + 4).collect();
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                    let is_head = head.starts_with("HEAD ");
                    let ok = match path.as_str() {
                        "/echo" => {
                            let reply = format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{head}",
                                head.len()
                            );
                            let reply = if is_head {
                                reply[..reply.len() - head.len()].to_owned()
                            } else {
                                reply
                            };
                            s.write_all(reply.as_bytes()).await.is_ok()
                        }
                        "/chunked" => {
                            let mut ok = s
                                .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel")
                                .await
                                .is_ok();
                            ok &= s.write_all(b"lo\r\n7;x=y\r\n, wor").await.is_ok();
                            ok &= s.write_all(b"ld\r\n0\r\n\r\n").await.is_ok();
                            ok
                        }
                        "/big" => {
                            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {BIG}\r\n\r\n");
                            let body = vec![b'x'; BIG];
                            s.write_all(head.as_bytes()).await.is_ok()
                                && s.write_all(&body).await.is_ok()
                        }
                        "/close" => {
                            let _ = s
                                .write_all(
                                    b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil close",
                                )
                                .await;
                            return;
                        }
                        _ => s
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nup\n")
                            .await
                            .is_ok(),
                    };
                    if !ok {
                        return;
                    }
                }
            });
        }
    });
    addr
}

async fn proxy_to_framings() -> Proxy {
    let upstream = framings().await;
    let proxy = Proxy::start().await;
    proxy
        .admin
        .deploy(deploy("web", "app.test", &upstream, "v1"))
        .await
        .unwrap();
    proxy
}

/// The app receives the client's Host, its own headers, and forwarding headers set by the
/// proxy in place of the client's; hop-by-hop headers do not cross.
#[tokio::test]
async fn app_sees_forwarding_headers() {
    let proxy = proxy_to_framings().await;
    // A second, pipelined request closes the connection, so the answer can be read to
    // its end; the first one asked for keep-alive.
    let answer = exchange(
        proxy.http,
        "GET /echo HTTP/1.1\r\nHost: App.Test\r\nX-Forwarded-For: 6.6.6.6\r\nX-App: 1\r\nKeep-Alive: timeout=5\r\nConnection: keep-alive\r\n\r\nGET /up HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    let body = answer
        .split_once("\r\n\r\n")
        .unwrap()
        .1
        .to_ascii_lowercase();
    assert!(body.starts_with("get /echo http/1.1\r\n"), "{body}");
    for expected in [
        "\r\nhost: app.test\r\n",
        "\r\nx-app: 1\r\n",
        "\r\nx-forwarded-for: 127.0.0.1\r\n",
        "\r\nx-forwarded-proto: http\r\n",
        "\r\nx-forwarded-host: app.test\r\n",
    ] {
        assert!(body.contains(expected), "{expected:?} missing in {body}");
    }
    assert!(
        !body.contains("6.6.6.6") && !body.contains("keep-alive"),
        "{body}"
    );
}

/// Chunked, 1 MB, close-delimited and HEAD responses arrive whole, and a keep-alive
/// client connection goes on serving after each.
#[tokio::test]
async fn response_framings_arrive_whole() {
    let proxy = proxy_to_framings().await;
    let client = http_client();
    for _ in 0..2 {
        let got = get(&client, proxy.http, "app.test", "/chunked")
            .await
            .unwrap();
        assert_eq!((got.status, got.body.as_str()), (200, "hello, world"));
        let got = get(&client, proxy.http, "app.test", "/big").await.unwrap();
        assert_eq!(got.body.len(), BIG);
        assert!(got.body.bytes().all(|b| b == b'x'));
        let got = get(&client, proxy.http, "app.test", "/close")
            .await
            .unwrap();
        assert_eq!((got.status, got.body.as_str()), (200, "until close"));
        let got = get(&client, proxy.http, "app.test", "/up").await.unwrap();
        assert_eq!(got.body, "up\n");
    }
    let answer = exchange(
        proxy.http,
        "HEAD /echo HTTP/1.1\r\nHost: app.test\r\n\r\nGET /up HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    // The HEAD answer has its length but no body; the pipelined GET follows it directly.
    let (head, rest) = answer.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.1 200") && head.contains("Content-Length"),
        "{answer}"
    );
    assert!(
        rest.starts_with("HTTP/1.1 200") && rest.ends_with("up\n"),
        "{answer}"
    );
}

/// A keep-alive connection that starts on the fast path and then sends a request with a
/// body is served by hyper from there on, with nothing lost in between.
#[tokio::test]
async fn connection_changes_path_mid_way() {
    let v1 = App::start("v1", "healthy");
    let proxy = Proxy::start().await;
    proxy
        .admin
        .deploy(deploy("web", "app.test", &v1.addr, "v1"))
        .await
        .unwrap();
    let mut s = TcpStream::connect(proxy.http).await.unwrap();
    s.write_all(b"GET /version HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"v1\n") {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    s.write_all(b"POST /version HTTP/1.1\r\nHost: app.test\r\nContent-Length: 2\r\n\r\nhiGET /version HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await.unwrap();
    let rest = String::from_utf8_lossy(&rest);
    assert_eq!(rest.matches("HTTP/1.1 200").count(), 2, "{rest}");
    assert_eq!(rest.matches("v1\n").count(), 2, "{rest}");
}

/// HTTP/2 with prior knowledge on the plain listener is handed to hyper and served.
#[tokio::test]
async fn http2_prior_knowledge_is_served() {
    let v1 = App::start("v1", "healthy");
    let proxy = Proxy::start().await;
    proxy
        .admin
        .deploy(deploy("web", "app.test", &v1.addr, "v1"))
        .await
        .unwrap();
    let stream = TcpStream::connect(proxy.http).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let request = http::Request::get("http://app.test/version")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"v1\n");
}
