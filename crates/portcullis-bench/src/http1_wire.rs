//! A small HTTP/1.1 client for the generator's hot path over plain TCP: requests are written
//! as pre-encoded bytes, responses parsed with `httparse` from one reused buffer, and only the
//! headers a run looks at (counted headers, checks) are kept. It does one thing: one request at
//! a time on a keep-alive connection, with `Content-Length`, chunked and close-delimited bodies
//! and interim 1xx responses. HTTP/2 and TLS use hyper ([`crate::connection`]).
//!
//! Why: with hyper's client, user-space time per request was about 4.5 times wrk's on the same
//! target (docs/BENCH.md), mostly the dispatch channel and the hop to a connection task.

use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Most response header fields parsed.
const MAX_HEADERS: usize = 128;
/// A connection idle for longer than this is checked for a close before it is reused.
const IDLE_CHECK_MS: u128 = 50;

/// A parsed response (the body is counted, and kept only when asked).
#[derive(Debug)]
pub(crate) struct WireResponse {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) bytes: u64,
    pub(crate) body: Option<Bytes>,
}

/// One keep-alive HTTP/1.1 connection.
#[derive(Debug)]
pub(crate) struct WireConn {
    stream: TcpStream,
    buf: BytesMut,
    closed: bool,
    last_used: Instant,
}

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

impl WireConn {
    /// Wraps a connected stream.
    pub(crate) fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            buf: BytesMut::with_capacity(16 * 1024),
            closed: false,
            last_used: Instant::now(),
        }
    }

    /// Whether the connection can no longer be used (the server closed it, or said it would).
    pub(crate) fn is_closed(&mut self) -> bool {
        if !self.closed && self.last_used.elapsed().as_millis() > IDLE_CHECK_MS {
            let mut probe = [0u8; 1];
            match self.stream.try_read(&mut probe) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                // End of stream, an error, or bytes nobody asked for: not reusable.
                _ => self.closed = true,
            }
        }
        self.closed
    }

    /// Writes `request` (complete, encoded) and reads the response.
    pub(crate) async fn exchange(
        &mut self,
        request: &[u8],
        head_only: bool,
        wanted: &[HeaderName],
        keep_body: bool,
    ) -> Result<WireResponse, String> {
        let result = self
            .exchange_inner(request, head_only, wanted, keep_body)
            .await;
        self.last_used = Instant::now();
        if result.is_err() {
            self.closed = true;
        }
        result
    }

    async fn exchange_inner(
        &mut self,
        request: &[u8],
        head_only: bool,
        wanted: &[HeaderName],
        keep_body: bool,
    ) -> Result<WireResponse, String> {
        self.buf.clear();
        self.stream
            .write_all(request)
            .await
            .map_err(|e| format!("write: {e}"))?;
        let (status, headers, framing) = loop {
            let parsed = parse_head(&self.buf, head_only, wanted)?;
            match parsed {
                Some((used, status, headers, framing, close)) => {
                    self.buf.advance(used);
                    if status.is_informational() {
                        continue;
                    }
                    if close {
                        self.closed = true;
                    }
                    break (status, headers, framing);
                }
                None => {
                    if self.fill().await? == 0 {
                        return Err("connection closed before the response head".to_owned());
                    }
                }
            }
        };
        let mut kept = keep_body.then(BytesMut::new);
        let bytes = match framing {
            Framing::None => 0,
            Framing::Length(n) => self.body_bytes(n, &mut kept).await?,
            Framing::Chunked => self.chunked(&mut kept).await?,
            Framing::UntilClose => {
                self.closed = true;
                self.until_close(&mut kept).await?
            }
        };
        Ok(WireResponse {
            status,
            headers,
            bytes,
            body: kept.map(BytesMut::freeze),
        })
    }

    async fn fill(&mut self) -> Result<usize, String> {
        self.buf.reserve(8 * 1024);
        self.stream
            .read_buf(&mut self.buf)
            .await
            .map_err(|e| format!("read: {e}"))
    }

    /// Consumes `n` body bytes, reading as they arrive.
    async fn body_bytes(&mut self, n: u64, kept: &mut Option<BytesMut>) -> Result<u64, String> {
        let mut left = n;
        while left > 0 {
            if self.buf.is_empty() && self.fill().await? == 0 {
                return Err(format!(
                    "connection closed {left} bytes before the body's end"
                ));
            }
            let take = self
                .buf
                .len()
                .min(usize::try_from(left).unwrap_or(usize::MAX));
            if let Some(k) = kept.as_mut() {
                k.extend_from_slice(&self.buf[..take]);
            }
            self.buf.advance(take);
            left -= take as u64;
        }
        Ok(n)
    }

    /// Reads one CRLF-terminated line (without the CRLF).
    async fn line(&mut self) -> Result<Bytes, String> {
        loop {
            if let Some(at) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf.split_to(at).freeze();
                self.buf.advance(2);
                return Ok(line);
            }
            if self.buf.len() > 64 * 1024 {
                return Err("chunked body: line too long".to_owned());
            }
            if self.fill().await? == 0 {
                return Err("connection closed inside a chunked body".to_owned());
            }
        }
    }

    async fn chunked(&mut self, kept: &mut Option<BytesMut>) -> Result<u64, String> {
        let mut total = 0;
        loop {
            let line = self.line().await?;
            let size = chunk_size(&line)?;
            if size == 0 {
                // Trailers, up to the empty line.
                while !self.line().await?.is_empty() {}
                return Ok(total);
            }
            total += self.body_bytes(size, kept).await?;
            if !self.line().await?.is_empty() {
                return Err("chunked body: missing CRLF after a chunk".to_owned());
            }
        }
    }

    async fn until_close(&mut self, kept: &mut Option<BytesMut>) -> Result<u64, String> {
        let mut total = 0;
        loop {
            total += self.buf.len() as u64;
            if let Some(k) = kept.as_mut() {
                k.extend_from_slice(&self.buf);
            }
            self.buf.clear();
            if self.fill().await? == 0 {
                return Ok(total);
            }
        }
    }
}

/// Parses a chunk-size line (`1a3f` or `1a3f;ext=1`).
fn chunk_size(line: &[u8]) -> Result<u64, String> {
    let digits = line.split(|&b| b == b';').next().unwrap_or_default();
    let text = std::str::from_utf8(digits).map_err(|_| "chunked body: bad size".to_owned())?;
    u64::from_str_radix(text.trim(), 16)
        .map_err(|_| format!("chunked body: bad chunk size {text:?}"))
}

/// Parses a response head from `buf`: bytes used, status, the wanted headers, body framing
/// and whether the connection closes after this response. `None` when incomplete.
fn parse_head(
    buf: &[u8],
    head_only: bool,
    wanted: &[HeaderName],
) -> Result<Option<(usize, StatusCode, HeaderMap, Framing, bool)>, String> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut fields);
    let used = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("invalid response head: {e}")),
    };
    let code = resp.code.unwrap_or(0);
    let status =
        StatusCode::from_u16(code).map_err(|_| format!("invalid response status {code}"))?;
    let mut close = resp.version == Some(0);
    let mut length = None;
    let mut chunked = false;
    let mut headers = HeaderMap::new();
    for h in resp.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let text = std::str::from_utf8(h.value).unwrap_or_default().trim();
            let n: u64 = text
                .parse()
                .map_err(|_| format!("invalid Content-Length {text:?}"))?;
            if length.is_some_and(|l| l != n) {
                return Err("conflicting Content-Length headers".to_owned());
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = h
                .value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case("connection") {
            let v = h.value.to_ascii_lowercase();
            if v.windows(5).any(|w| w == b"close") {
                close = true;
            } else if v.windows(10).any(|w| w == b"keep-alive") {
                close = false;
            }
        }
        if let Some(wanted) = wanted
            .iter()
            .find(|w| name.eq_ignore_ascii_case(w.as_str()))
            && let Ok(value) = HeaderValue::from_bytes(h.value)
        {
            headers.append(wanted.clone(), value);
        }
    }
    let framing = if head_only
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Framing::None
    } else if chunked {
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    Ok(Some((used, status, headers, framing, close)))
}

/// Encodes a request for the wire: request line, headers (with `Host`), `Content-Length` when
/// there is a body or the method expects one (as hyper does), and the body.
pub(crate) fn encode(
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
    out: &mut Vec<u8>,
) {
    out.clear();
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let expects_body = matches!(*method, Method::POST | Method::PUT | Method::PATCH);
    if (!body.is_empty() || expects_body) && !headers.contains_key(http::header::CONTENT_LENGTH) {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(body.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str, wanted: &[HeaderName]) -> (usize, StatusCode, HeaderMap, Framing, bool) {
        parse_head(text.as_bytes(), false, wanted).unwrap().unwrap()
    }

    #[test]
    fn framing_follows_length_chunked_and_close() {
        let (_, s, _, f, c) = head("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", &[]);
        assert_eq!((s, f, c), (StatusCode::OK, Framing::Length(12), false));
        let (_, _, _, f, _) = head(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            &[],
        );
        assert_eq!(f, Framing::Chunked);
        let (_, _, _, f, c) = head("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", &[]);
        assert_eq!((f, c), (Framing::UntilClose, true));
        let (_, _, _, f, c) = head("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", &[]);
        assert_eq!((f, c), (Framing::Length(1), true));
        let (_, _, _, f, _) = head(
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
            &[],
        );
        assert_eq!(f, Framing::None);
        let parsed = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true, &[]);
        assert_eq!(
            parsed.unwrap().unwrap().3,
            Framing::None,
            "HEAD has no body"
        );
    }

    #[test]
    fn only_wanted_headers_are_kept() {
        let x_cache = HeaderName::from_static("x-cache");
        let (used, _, headers, _, _) = head(
            "HTTP/1.1 200 OK\r\nX-Cache: HIT\r\nServer: x\r\nContent-Length: 0\r\n\r\nrest",
            std::slice::from_ref(&x_cache),
        );
        assert_eq!(headers.len(), 1);
        assert_eq!(headers[&x_cache], "HIT");
        assert_eq!(used, 63, "the head ends before \"rest\"");
    }

    #[test]
    fn incomplete_and_invalid_heads() {
        assert!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Le", false, &[])
                .unwrap()
                .is_none()
        );
        assert!(parse_head(b"HTTP/1.1 2x0 OK\r\n\r\n", false, &[]).is_err());
        let err = parse_head(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            false,
            &[],
        )
        .unwrap_err();
        assert!(err.contains("conflicting"), "{err}");
    }

    #[test]
    fn chunk_sizes_are_hex_with_optional_extensions() {
        assert_eq!(chunk_size(b"1a"), Ok(26));
        assert_eq!(chunk_size(b"0;name=v"), Ok(0));
        assert!(chunk_size(b"zz").is_err());
    }

    #[test]
    fn requests_encode_like_hyper() {
        let mut headers = HeaderMap::new();
        headers.insert("host", "h:1".parse().unwrap());
        let mut out = Vec::new();
        encode(&Method::GET, "/a?b=1", &headers, b"", &mut out);
        assert_eq!(out, b"GET /a?b=1 HTTP/1.1\r\nhost: h:1\r\n\r\n");
        encode(&Method::POST, "/", &headers, b"", &mut out);
        assert_eq!(
            out,
            b"POST / HTTP/1.1\r\nhost: h:1\r\ncontent-length: 0\r\n\r\n"
        );
        encode(&Method::PUT, "/", &headers, b"xy", &mut out);
        assert!(out.ends_with(b"content-length: 2\r\n\r\nxy"));
    }
}
