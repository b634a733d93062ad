use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener};

use crate::harness::{Lab, addr};

/// Echoes every connection back, upper-cased, until its client closes.
async fn echo<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut s: S) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                buf[..n].make_ascii_uppercase();
                if s.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn round_trip(addr: std::net::SocketAddr, msg: &[u8]) -> Vec<u8> {
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(msg).await.unwrap();
    c.shutdown().await.unwrap();
    let mut back = Vec::new();
    c.read_to_end(&mut back).await.unwrap();
    back
}

/// A local forward (`ssh -L 127.0.0.1:0:HOST:PORT`) carries real TCP traffic, several
/// connections at once, to a listener on the remote side (the way the CLI reaches NATS).
#[tokio::test]
async fn tcp_forward_carries_traffic() {
    let lab = Lab::new();
    let sshd = lab.sshd("s", &[addr(17)], "");
    lab.trust(&sshd);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            tokio::spawn(echo(s));
        }
    });
    let pool = lab.pool(&sshd);
    let session = pool.session("127.0.0.17").await.unwrap();
    let forward = session.forward_tcp("127.0.0.1", port).await.unwrap();
    let local = forward.local_addr();
    assert!(local.ip().is_loopback());
    let big: Vec<u8> = (0..1 << 20).map(|i| b'a' + (i % 26) as u8).collect();
    let (a, b, c) = tokio::join!(
        round_trip(local, b"hello"),
        round_trip(local, b"nats"),
        round_trip(local, &big),
    );
    assert_eq!(a, b"HELLO");
    assert_eq!(b, b"NATS");
    assert_eq!(c, big.to_ascii_uppercase());
    drop(forward);
    assert!(
        TcpStream::connect(local).await.is_err(),
        "a dropped forward stops listening"
    );
}

/// A direct-streamlocal channel reaches a remote unix socket (as for /var/run/docker.sock),
/// both as an in-process tunnel and as a local forward.
#[tokio::test]
async fn streamlocal_reaches_a_unix_socket() {
    let lab = Lab::new();
    let sshd = lab.sshd("s", &[addr(18)], "");
    lab.trust(&sshd);
    let path = lab.path().join("app.sock");
    let listener = UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            tokio::spawn(echo(s));
        }
    });
    let pool = lab.pool(&sshd);
    let session = pool.session("127.0.0.18").await.unwrap();
    let mut tunnel = session.open_unix(path.to_str().unwrap()).await.unwrap();
    tunnel.write_all(b"docker").await.unwrap();
    let mut buf = [0u8; 6];
    tunnel.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"DOCKER");

    let forward = session.forward_unix(path.to_str().unwrap()).await.unwrap();
    assert_eq!(round_trip(forward.local_addr(), b"ping").await, b"PING");
}
