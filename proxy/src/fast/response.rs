//! The upstream's response on the fast path: its head parsed and rewritten for the client,
//! and its body relayed as it arrives, whatever its framing.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Held;
use super::{named, pool::READ_BUF, uninit_headers};

/// How the response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BodyLength {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// What the upstream's response head said.
#[derive(Debug)]
pub(super) struct Response {
    pub(super) head_len: usize,
    pub(super) status: u16,
    pub(super) body: BodyLength,
    pub(super) keep_alive: bool,
}

/// Parses the response head in `bytes`: `Ok(None)` when incomplete. For a complete final
/// (not 1xx) response, `head` is replaced by the client's response head less its last line
/// ([`finish_head`] adds it): HTTP/1.1, hop-by-hop headers dropped (and `Content-Length`
/// beside `Transfer-Encoding`, which wins). Built from this one parse: parsing the head a
/// second time to rewrite it cost about 1,400 instructions per request (issue 18).
pub(super) fn parse_response(
    bytes: &[u8],
    head_request: bool,
    head: &mut Vec<u8>,
) -> Result<Option<Response>, ()> {
    let mut headers = uninit_headers();
    let mut resp = httparse::Response::new(&mut []);
    let head_len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        bytes,
        &mut headers,
    ) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(()),
    };
    let status = resp.code.ok_or(())?;
    let mut keep_alive = resp.version == Some(1);
    let mut length = None;
    let mut chunked = None;
    for h in resp.headers.iter() {
        // Matched by length first: most names have none of these lengths.
        match h.name.len() {
            14 if named(h.name, "content-length") => {
                let n = parse_length(h.value).ok_or(())?;
                if length.is_some_and(|l| l != n) {
                    return Err(());
                }
                length = Some(n);
            }
            17 if named(h.name, "transfer-encoding") => {
                let last = h.value.rsplit(|b| *b == b',').next().unwrap_or_default();
                chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            }
            10 if named(h.name, "connection") => {
                for token in h.value.split(|b| *b == b',') {
                    let token = token.trim_ascii();
                    if token.eq_ignore_ascii_case(b"close") {
                        keep_alive = false;
                    } else if !token.eq_ignore_ascii_case(b"keep-alive") {
                        // Headers named in Connection would have to be removed: let it close.
                        keep_alive = false;
                    }
                }
            }
            _ => {}
        }
    }
    let body = if head_request || status == 204 || status == 304 || (100..200).contains(&status) {
        BodyLength::None
    } else {
        match (chunked, length) {
            (Some(true), _) => BodyLength::Chunked,
            (Some(false), _) => BodyLength::UntilClose,
            (None, Some(n)) => BodyLength::Length(n),
            (None, None) => BodyLength::UntilClose,
        }
    };
    if body == BodyLength::UntilClose {
        keep_alive = false;
    }
    if !(100..200).contains(&status) {
        client_head(&resp, bytes, head_len, status, chunked.is_some(), head);
    }
    Ok(Some(Response {
        head_len,
        status,
        body,
        keep_alive,
    }))
}

/// Writes the client's response head, less its last line, into `out`.
fn client_head(
    resp: &httparse::Response<'_, '_>,
    bytes: &[u8],
    head_len: usize,
    code: u16,
    chunked: bool,
    out: &mut Vec<u8>,
) {
    out.clear();
    // By hand rather than `write!` (about 600 instructions per request, issue 18); httparse
    // reads exactly three digits, so `code` is below 1,000.
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(&[
        b'0' + (code / 100 % 10) as u8,
        b'0' + (code / 10 % 10) as u8,
        b'0' + (code % 10) as u8,
        b' ',
    ]);
    out.extend_from_slice(resp.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    // Hop-by-hop headers are left out, and a `Content-Length` beside chunked framing.
    // Matched by length first: most names have none of these lengths.
    super::copy_headers(out, bytes, resp.headers, head_len, |name| {
        let left_out = match name.len() {
            7 => named(name, "upgrade"),
            10 => named(name, "connection") || named(name, "keep-alive"),
            14 => chunked && named(name, "content-length"),
            16 => named(name, "proxy-connection"),
            18 => named(name, "proxy-authenticate"),
            _ => false,
        };
        !left_out
    });
}

/// A `Content-Length` value: digits, optionally surrounded by whitespace.
fn parse_length(value: &[u8]) -> Option<u64> {
    let digits = value.trim_ascii();
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        let d = char::from(b).to_digit(10)?;
        n.checked_mul(10)?.checked_add(u64::from(d))
    })
}

/// Ends the client's response head built by [`parse_response`]: `connection: close` when the
/// connection ends after this response.
pub(super) fn finish_head(head: &mut Vec<u8>, close: bool) {
    if close {
        head.extend_from_slice(b"connection: close\r\n");
    }
    head.extend_from_slice(b"\r\n");
}

pub(super) enum Relayed {
    /// The body was sent; `reusable` when the upstream sent nothing past it.
    Complete { reusable: bool },
    /// The client or the upstream went away mid-body: close both.
    Failed,
}

/// Sends `head` and the body: what `buf` holds already, then what `upstream` sends.
pub(super) async fn relay_body<S>(
    client: &mut S,
    upstream: &mut TcpStream,
    buf: &mut BytesMut,
    head: &mut Vec<u8>,
    body: BodyLength,
    held: Held,
) -> Relayed
where
    S: AsyncWrite + Unpin,
{
    let mut held = Some(held);
    let mut chunks = ChunkScanner::default();
    let mut remaining = match body {
        BodyLength::Length(n) => n,
        _ => 0,
    };
    let mut first = true;
    loop {
        // How much of `buf` belongs to this body, and whether the body ends there.
        let (take, done) = match body {
            BodyLength::None => (0, true),
            BodyLength::Length(_) => {
                let take = usize::try_from(remaining).map_or(buf.len(), |r| r.min(buf.len()));
                remaining -= take as u64;
                (take, remaining == 0)
            }
            BodyLength::Chunked => match chunks.feed(buf) {
                Ok(Some(end)) => (end, true),
                Ok(None) => (buf.len(), false),
                Err(()) => return Relayed::Failed,
            },
            BodyLength::UntilClose => (buf.len(), false),
        };
        if done {
            // As on hyper's path, the request stops counting (in flight, draining) once its
            // body has been read whole, before the last bytes are written to the client.
            drop(held.take());
        }
        let written = if first {
            first = false;
            head.extend_from_slice(&buf[..take]);
            client.write_all(head).await
        } else {
            client.write_all(&buf[..take]).await
        };
        // TLS streams buffer what they encrypt until flushed; for TCP this does nothing.
        let written = match written {
            Ok(()) => client.flush().await,
            e => e,
        };
        if written.is_err() {
            return Relayed::Failed;
        }
        let extra = buf.len() > take;
        buf.advance(take);
        if done {
            buf.clear();
            return Relayed::Complete { reusable: !extra };
        }
        buf.clear();
        if buf.capacity() < READ_BUF {
            buf.reserve(READ_BUF);
        }
        match upstream.read_buf(buf).await {
            Ok(0) if body == BodyLength::UntilClose => {
                return Relayed::Complete { reusable: false };
            }
            Ok(0) | Err(_) => return Relayed::Failed,
            Ok(_) => {}
        }
    }
}

/// Finds the end of a chunked body as it streams past, without changing it.
#[derive(Debug, Default)]
struct ChunkScanner {
    state: ChunkState,
}

#[derive(Debug, Default, Clone, Copy)]
enum ChunkState {
    /// Reading the hex size; `digits` once one was seen.
    #[default]
    SizeStart,
    Size {
        size: u64,
    },
    /// Chunk extensions (or whitespace) up to the CR.
    Extension {
        size: u64,
    },
    SizeLf {
        size: u64,
    },
    Data {
        left: u64,
    },
    DataCr,
    DataLf,
    /// A trailer line (or the final empty line); `empty` while the line has no byte yet.
    Trailer {
        empty: bool,
    },
    TrailerLf {
        empty: bool,
    },
    Done,
}

impl ChunkScanner {
    /// Scans `bytes`, the body's next bytes; `Ok(Some(n))` when the body ends after `n` of them.
    fn feed(&mut self, bytes: &[u8]) -> Result<Option<usize>, ()> {
        use ChunkState::*;
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            self.state = match self.state {
                SizeStart | Size { .. } => {
                    let size = match self.state {
                        Size { size } => size,
                        _ => 0,
                    };
                    match (b as char).to_digit(16) {
                        Some(d) => Size {
                            size: size
                                .checked_mul(16)
                                .and_then(|s| s.checked_add(u64::from(d)))
                                .ok_or(())?,
                        },
                        None if matches!(self.state, SizeStart) => return Err(()),
                        None if b == b'\r' => SizeLf { size },
                        None if b == b';' || b == b' ' || b == b'\t' => Extension { size },
                        None => return Err(()),
                    }
                }
                Extension { size } => match b {
                    b'\r' => SizeLf { size },
                    b'\n' => return Err(()),
                    _ => Extension { size },
                },
                SizeLf { size } => match (b, size) {
                    (b'\n', 0) => Trailer { empty: true },
                    (b'\n', left) => Data { left },
                    _ => return Err(()),
                },
                Data { left } => {
                    let available = (bytes.len() - i) as u64;
                    let step = left.min(available);
                    // `step` fits: it is at most what is left of `bytes`.
                    i += step as usize;
                    self.state = if step == left {
                        DataCr
                    } else {
                        Data { left: left - step }
                    };
                    continue;
                }
                DataCr if b == b'\r' => DataLf,
                DataLf if b == b'\n' => SizeStart,
                DataCr | DataLf => return Err(()),
                Trailer { empty } => match b {
                    b'\r' => TrailerLf { empty },
                    _ => Trailer { empty: false },
                },
                TrailerLf { empty } => match (b, empty) {
                    (b'\n', true) => Done,
                    (b'\n', false) => Trailer { empty: true },
                    _ => return Err(()),
                },
                Done => return Ok(Some(i)),
            };
            i += 1;
            if matches!(self.state, Done) {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8], head_request: bool) -> Result<Option<Response>, ()> {
        parse_response(bytes, head_request, &mut Vec::new())
    }

    /// The client's head for the upstream's `up`, built in a buffer that held the request.
    fn response_head(up: &[u8], close: bool) -> String {
        let mut head = b"GET / HTTP/1.1\r\nhost: a\r\n\r\n".to_vec();
        let r = parse_response(up, false, &mut head).unwrap().unwrap();
        assert_eq!(r.head_len, up.len());
        finish_head(&mut head, close);
        String::from_utf8(head).unwrap()
    }

    /// An informational response is dropped: the buffer still holds the request.
    #[test]
    fn informational_response_leaves_request() {
        let mut head = b"GET / HTTP/1.1\r\n\r\n".to_vec();
        let r = parse_response(
            b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
            false,
            &mut head,
        );
        assert_eq!(r.unwrap().unwrap().status, 103);
        assert_eq!(head, b"GET / HTTP/1.1\r\n\r\n");
    }

    /// The end of a chunked body is found however the bytes are split, extensions and
    /// trailers included; malformed framing is an error.
    #[test]
    fn chunked_end_is_found_across_reads() {
        let body = b"4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nx-trailer: 1\r\n\r\n";
        for split in 0..body.len() {
            let mut s = ChunkScanner::default();
            let (a, b) = body.split_at(split);
            let end = match s.feed(a).unwrap() {
                Some(n) => n,
                None => split + s.feed(b).unwrap().unwrap(),
            };
            assert_eq!(end, body.len(), "split at {split}");
        }
        let mut s = ChunkScanner::default();
        assert_eq!(s.feed(b"0\r\n\r\nNEXT").unwrap(), Some(5));
        assert!(ChunkScanner::default().feed(b"zz\r\n").is_err());
        assert!(ChunkScanner::default().feed(b"1\r\nab\r\n").is_err());
    }

    /// Response framing: length, chunked, bodiless statuses and HEAD, close-delimited, and
    /// whether the connection may be reused.
    #[test]
    fn response_framing() {
        let r = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false)
            .unwrap()
            .unwrap();
        assert_eq!(
            (r.body, r.keep_alive, r.head_len),
            (BodyLength::Length(5), true, 38)
        );
        let r = parse(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.body, BodyLength::Chunked);
        let r = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true)
            .unwrap()
            .unwrap();
        assert_eq!(r.body, BodyLength::None);
        let r = parse(b"HTTP/1.1 200 OK\r\n\r\n", false).unwrap().unwrap();
        assert_eq!((r.body, r.keep_alive), (BodyLength::UntilClose, false));
        let r = parse(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert!(!r.keep_alive);
        assert!(
            parse(
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                false
            )
            .is_err()
        );
        assert!(
            parse(b"HTTP/1.1 200 OK\r\nContent", false)
                .unwrap()
                .is_none()
        );
    }

    /// A `Content-Length` is digits with optional spaces around them; anything else makes
    /// the response malformed (a 502), as do two lengths that differ.
    #[test]
    fn content_length_values() {
        assert_eq!(parse_length(b"0"), Some(0));
        assert_eq!(parse_length(b" 1234 "), Some(1234));
        assert_eq!(parse_length(b"18446744073709551615"), Some(u64::MAX));
        for bad in [
            &b""[..],
            b" ",
            b"+5",
            b"-1",
            b"1 2",
            b"0x10",
            b"18446744073709551616",
        ] {
            assert_eq!(
                parse_length(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    /// The client gets HTTP/1.1 with the upstream's headers minus hop-by-hop ones (and a
    /// `Content-Length` contradicting chunked framing), told when the connection closes.
    #[test]
    fn client_response_head() {
        let up = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\nX-App: 1\r\n\r\n";
        let head = response_head(up, false);
        assert_eq!(
            head,
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-App: 1\r\n\r\n"
        );
        let up = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n";
        let head = response_head(up, false);
        assert_eq!(
            head,
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        let up = b"HTTP/1.1 204 No Content\r\n\r\n";
        let head = response_head(up, true);
        assert!(head.ends_with("connection: close\r\n\r\n"));
    }
}
