//! An HTTP/1.1 client for idempotent requests without a body, run inline in the task that
//! serves the client.
//!
//! Why not hyper's client connection for these: hyper runs each upstream connection as a task
//! of its own and hands the request, the response head and every body frame across channels
//! to it. In a proxy that was a third of the user-space instructions per request (BENCHMARKS.md,
//! "Where the remaining time goes"), and each hand-off is a task wake-up. Most requests through
//! an API gateway are GETs, HEADs and DELETEs without a body, so for those this module writes
//! the request head and parses the response head (with httparse, as hyper does) in the request's
//! own task, and the response body reads straight from the socket as the client side polls it.
//! No crate offers such a client without its own connection task.
//!
//! Requests with a body, protocol upgrades and HTTP/2 stay on hyper's client, which also
//! handles `Expect: 100-continue` and early responses while a body is being sent.
//!
//! Response framing follows RFC 9112 section 6.3: no body for HEAD, 204 and 304; a
//! `Transfer-Encoding` ending in `chunked` wins over `Content-Length` (and the connection is not
//! reused after such a response); conflicting or malformed `Content-Length` values are an error;
//! otherwise the body runs to the end of the connection. Interim 1xx responses are skipped; a
//! 101 answer to a request that asked for no upgrade is an error. Chunk extensions and trailer
//! fields are read and dropped, as hyper's server would not pass trailers to an HTTP/1.1
//! client that did not ask for them either.

use std::{
    cmp::min,
    fmt,
    future::poll_fn,
    io,
    mem::MaybeUninit,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use bytes::{Buf, Bytes, BytesMut};
use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Version, header,
    request::Parts,
};
use http_body::{Frame, SizeHint};
use tokio::{
    io::AsyncReadExt,
    net::{
        TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
};

use crate::{
    headers::is_hop_by_hop,
    pool::TargetPool,
    round_flush::{self, FlushQueue, Outbox, Side},
    upstream_head::TargetHead,
};

/// Most header fields accepted in a response head (hyper's client default).
const MAX_HEADERS: usize = 100;
/// Largest response head accepted (hyper's client default buffer limit).
const MAX_HEAD: usize = 8192 + 4096 * 100;
/// Bytes asked of the socket per read while waiting for a response head.
const HEAD_READ: usize = 8192;
/// Most bytes asked of the socket per read of a body.
const BODY_READ: usize = 64 * 1024;
/// Longest chunk-size line, extensions included.
const MAX_CHUNK_LINE: usize = 4096;
/// Most bytes of trailer fields read (and dropped) after the last chunk.
const MAX_TRAILERS: usize = 16 * 1024;

/// Whether a request with an empty body can go through this client: an idempotent method, so
/// a request that meets a pooled connection the upstream has just closed can be sent again on
/// another, and no protocol upgrade.
pub(crate) fn eligible(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::DELETE | Method::TRACE
    )
}

/// One keep-alive connection to an upstream target.
pub(crate) struct H1Conn {
    read: OwnedReadHalf,
    /// The request head being written (its allocation reused), and the socket's write half.
    out: Arc<Outbox<OwnedWriteHalf>>,
    /// Sends request heads at the end of the round, on a current-thread runtime
    /// (`round_flush.rs`).
    queue: Option<Arc<FlushQueue>>,
    /// Bytes read and not yet handed on.
    buf: BytesMut,
    /// The field names of the last response head, in order: an upstream sends the same
    /// names in the same order response after response (see [`FieldNames`]).
    names: FieldNames,
}

impl fmt::Debug for H1Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("H1Conn")
            .field("peer", &self.read.peer_addr().ok())
            .finish_non_exhaustive()
    }
}

/// Why an exchange failed.
#[derive(Debug)]
pub(crate) struct Error {
    kind: ErrorKind,
    /// Some of a response had arrived (so the request must not be sent again).
    answered: bool,
}

#[derive(Debug)]
enum ErrorKind {
    Io(io::Error),
    /// The upstream closed the connection before the response was complete.
    Closed,
    /// The response is not valid HTTP/1.1 (the message says how).
    Malformed(&'static str),
}

impl Error {
    fn malformed(what: &'static str) -> Self {
        Self {
            kind: ErrorKind::Malformed(what),
            answered: true,
        }
    }

    fn io(e: io::Error, answered: bool) -> Self {
        Self {
            kind: ErrorKind::Io(e),
            answered,
        }
    }

    fn closed(answered: bool) -> Self {
        Self {
            kind: ErrorKind::Closed,
            answered,
        }
    }

    /// Nothing of a response arrived: on a reused connection, the upstream most likely closed
    /// it as the request went out, and an idempotent request may be sent again.
    pub(crate) fn unanswered(&self) -> bool {
        !self.answered
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ErrorKind::Io(e) => write!(f, "upstream connection: {e}"),
            ErrorKind::Closed if self.answered => {
                f.write_str("upstream closed the connection mid-response")
            }
            ErrorKind::Closed => f.write_str("upstream closed the connection without a response"),
            ErrorKind::Malformed(what) => write!(f, "malformed upstream response: {what}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            ErrorKind::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// How the response body is delimited (RFC 9112 section 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    /// Until the upstream closes the connection.
    Close,
}

/// A parsed response head.
pub(crate) struct Head {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    framing: Framing,
    keep_alive: bool,
}

impl H1Conn {
    /// A connection over `io`, an established TCP stream.
    pub(crate) fn new(io: TcpStream) -> Self {
        let (read, write) = io.into_split();
        Self {
            read,
            out: Outbox::new(write),
            queue: round_flush::queue(),
            buf: BytesMut::new(),
            names: FieldNames::default(),
        }
    }

    /// Whether request heads wait for the end of the round by themselves (see
    /// `round_flush.rs`); if not, the caller may let the round finish before the exchange.
    pub(crate) fn sends_at_round_end(&self) -> bool {
        self.queue.is_some()
    }

    /// Writes the request head of `parts` (origin-form URI, the client's headers, which `head`
    /// rewrites as it writes them) and reads the response head, skipping interim 1xx
    /// responses.
    pub(crate) async fn exchange(
        &mut self,
        parts: &Parts,
        head: &TargetHead<'_>,
    ) -> Result<Head, Error> {
        let listed = {
            let mut state = self.out.lock();
            state.held.clear();
            head.encode(parts, &mut state.held);
            match &self.queue {
                Some(queue) if queue.running() => {
                    self.out.list(state, queue, Side::Upstream);
                    true
                }
                _ => false,
            }
        };
        if !listed {
            poll_fn(|cx| self.out.poll_send(cx))
                .await
                .map_err(|e| Error::io(e, false))?;
        }
        let head_request = parts.method == Method::HEAD;
        let mut answered = !self.buf.is_empty();
        loop {
            if !self.buf.is_empty() {
                answered = true;
                if let Some(head) = parse_head(&mut self.buf, head_request, &mut self.names)? {
                    return Ok(head);
                }
                if self.buf.len() >= MAX_HEAD {
                    return Err(Error::malformed("response head too large"));
                }
            }
            // tokio's read (not `try_read`) takes a short read to mean the socket is drained,
            // so the read after the next request waits for the runtime to report readiness
            // instead of being tried at once: reading at once, right after the write that let
            // the upstream run, answered requests one by one (BENCHMARKS.md, session 13).
            self.buf.reserve(HEAD_READ);
            let out = &self.out;
            let mut reading = std::pin::pin!(self.read.read_buf(&mut self.buf));
            let read = poll_fn(|cx| {
                // The head goes out at the end of the round; until then, or if that fails,
                // there is nothing to read.
                if let Poll::Ready(Err(e)) = out.poll_sent(cx) {
                    return Poll::Ready(Err(Error::io(e, false)));
                }
                reading
                    .as_mut()
                    .poll(cx)
                    .map_err(|e| Error::io(e, answered))
            })
            .await?;
            if read == 0 {
                return Err(Error::closed(answered));
            }
        }
    }

    /// Reads more bytes into the buffer, at most about `want`: `Ok(0)` at the end of the
    /// connection.
    fn poll_fill(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        self.buf.reserve(want);
        let io: &TcpStream = self.read.as_ref();
        loop {
            match io.try_read_buf(&mut self.buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(io.poll_read_ready(cx))?;
                }
                done => return Poll::Ready(done),
            }
        }
    }
}

/// Parses one response head from the front of `buf`, taking it out: `None` until it is
/// complete. Interim 1xx heads are taken out and skipped.
fn parse_head(
    buf: &mut BytesMut,
    head_request: bool,
    names: &mut FieldNames,
) -> Result<Option<Head>, Error> {
    loop {
        // Where each field's name and value lie in `buf`: the head is parsed in place, then
        // split off and frozen, and the values become slices of it without a copy.
        let mut spans = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
        let (len, code, minor, count) = {
            let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
            let mut res = httparse::Response::new(&mut []);
            let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
                &mut res,
                buf,
                &mut fields,
            );
            let len = match parsed {
                Ok(httparse::Status::Complete(len)) => len,
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(httparse::Error::TooManyHeaders) => {
                    return Err(Error::malformed("too many header fields"));
                }
                Err(_) => return Err(Error::malformed("invalid response head")),
            };
            let base = buf.as_ptr() as usize;
            let offset = |s: &[u8]| (s.as_ptr() as usize - base) as u32;
            for (span, field) in spans.iter_mut().zip(res.headers.iter()) {
                *span = (
                    offset(field.name.as_bytes()),
                    field.name.len() as u32,
                    offset(field.value),
                    field.value.len() as u32,
                );
            }
            (
                len,
                res.code.unwrap_or_default(),
                res.version.unwrap_or_default(),
                res.headers.len(),
            )
        };
        let status =
            StatusCode::from_u16(code).map_err(|_| Error::malformed("invalid status code"))?;
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(Error::malformed(
                "101 to a request that asked for no upgrade",
            ));
        }
        let head = buf.split_to(len).freeze();
        if status.is_informational() {
            continue;
        }
        return build_head(&head, &spans[..count], status, minor, head_request, names).map(Some);
    }
}

/// The field names of a connection's last response head, by position, as sent and as parsed.
/// Parsing a name (`HeaderName::from_bytes`: a lookup among the standard names, or a
/// lowercased copy) costs about 120 instructions; an upstream sends the same names, spelt the
/// same way, response after response, and comparing the bytes with those at the same position
/// last time costs about a fifth of that. hyper's client has no such memo.
#[derive(Default)]
struct FieldNames(Vec<(Box<[u8]>, HeaderName)>);

impl FieldNames {
    /// The name of the field at `position`, whose bytes are `raw`.
    fn name(&mut self, position: usize, raw: &[u8]) -> Result<HeaderName, Error> {
        if let Some((sent, name)) = self.0.get(position)
            && **sent == *raw
        {
            return Ok(name.clone());
        }
        let name =
            HeaderName::from_bytes(raw).map_err(|_| Error::malformed("invalid header name"))?;
        // Positions come in order from 0, so one past the end is the furthest asked for.
        let entry = (Box::from(raw), name.clone());
        match self.0.get_mut(position) {
            Some(slot) => *slot = entry,
            None => self.0.push(entry),
        }
        Ok(name)
    }
}

/// The header map and framing of a complete response head.
fn build_head(
    head: &Bytes,
    spans: &[(u32, u32, u32, u32)],
    status: StatusCode,
    minor: u8,
    head_request: bool,
    names: &mut FieldNames,
) -> Result<Head, Error> {
    // Room for what the gateway adds on the way out (`Via`, the request id, and on cached or
    // secured routes a few more), so the map does not grow and rehash for them.
    let mut headers = HeaderMap::with_capacity(spans.len() + 6);
    let mut length: Option<u64> = None;
    let mut transfer_encoding = false;
    let mut chunked = false;
    let mut close = false;
    let mut keep_alive_token = false;
    let mut connection_named = Vec::new();
    for (i, &(name_at, name_len, value_at, value_len)) in spans.iter().enumerate() {
        let name_range = name_at as usize..(name_at + name_len) as usize;
        let name = names.name(i, &head[name_range])?;
        let value_range = value_at as usize..(value_at + value_len) as usize;
        let value = HeaderValue::from_maybe_shared(head.slice(value_range))
            .map_err(|_| Error::malformed("invalid header value"))?;
        if name == header::CONTENT_LENGTH {
            for part in value.as_bytes().split(|&b| b == b',') {
                let n = parse_length(part.trim_ascii())
                    .ok_or_else(|| Error::malformed("invalid Content-Length"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(Error::malformed("conflicting Content-Length values"));
                }
                length = Some(n);
            }
        } else if name == header::TRANSFER_ENCODING {
            transfer_encoding = true;
            // Only the last coding counts: chunked must be last to delimit the body.
            chunked = value
                .as_bytes()
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            continue;
        } else if name == header::CONNECTION {
            for token in value.as_bytes().split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive_token = true;
                } else if let Ok(named) = HeaderName::from_bytes(token) {
                    connection_named.push(named);
                }
            }
            continue;
        } else if is_hop_by_hop(&name, false) {
            continue;
        }
        headers.append(name, value);
    }
    // Hop-by-hop fields end here, at the hop they belong to (RFC 9110 section 7.6.1); the
    // ones above were never added. The service strips hop-by-hop fields again, for the
    // responses hyper's client parses.
    for name in connection_named {
        headers.remove(name);
    }
    let version = if minor == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let mut keep_alive = if minor == 0 {
        keep_alive_token && !close
    } else {
        !close
    };
    let framing =
        if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
            Framing::Empty
        } else if transfer_encoding {
            // A message with both may be an attempt at request smuggling: read it by
            // Transfer-Encoding, do not forward the Content-Length, and do not reuse the
            // connection (RFC 9112 section 6.3).
            if length.is_some() {
                headers.remove(header::CONTENT_LENGTH);
                keep_alive = false;
            }
            if chunked {
                Framing::Chunked
            } else {
                Framing::Close
            }
        } else {
            match length {
                Some(0) => Framing::Empty,
                Some(n) => Framing::Length(n),
                None => Framing::Close,
            }
        };
    if framing == Framing::Close {
        keep_alive = false;
    }
    Ok(Head {
        status,
        version,
        headers,
        framing,
        keep_alive,
    })
}

/// A decimal Content-Length value.
fn parse_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0'))
    })
}

impl Head {
    /// The response, its body reading from `conn`, which goes back to `pool` at the body's
    /// end when the upstream keeps it alive.
    pub(crate) fn into_response(self, conn: H1Conn, pool: Arc<TargetPool>) -> Response<H1Body> {
        let state = match self.framing {
            Framing::Empty => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Chunked(ChunkedDecoder::default()),
            Framing::Close => State::Close,
        };
        let mut body = H1Body {
            conn: Some(conn),
            state,
            keep_alive: self.keep_alive,
            pool,
        };
        if matches!(body.state, State::Done) {
            body.finish();
        }
        let mut response = Response::new(body);
        *response.status_mut() = self.status;
        *response.version_mut() = self.version;
        *response.headers_mut() = self.headers;
        response
    }
}

/// A response body read from the upstream connection as it is polled.
pub(crate) struct H1Body {
    /// `None` once the body has ended (the connection back in the pool or closed).
    conn: Option<H1Conn>,
    state: State,
    keep_alive: bool,
    pool: Arc<TargetPool>,
}

impl fmt::Debug for H1Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("H1Body")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
enum State {
    /// This many bytes still to come.
    Length(u64),
    Chunked(ChunkedDecoder),
    Close,
    Done,
}

impl H1Body {
    /// The body has been read to its end: the connection goes back to the pool if the
    /// upstream keeps it alive and sent nothing beyond the response.
    fn finish(&mut self) {
        self.state = State::Done;
        if let Some(conn) = self.conn.take()
            && self.keep_alive
            && conn.buf.is_empty()
        {
            self.pool.put_h1(conn);
        }
    }

    /// The body failed: the connection is closed.
    fn fail(&mut self, e: Error) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        self.state = State::Done;
        self.conn = None;
        Poll::Ready(Some(Err(e)))
    }
}

impl http_body::Body for H1Body {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            let want = match &mut this.state {
                State::Done => return Poll::Ready(None),
                State::Length(left) => {
                    if !conn.buf.is_empty() {
                        let n = min(*left, conn.buf.len() as u64);
                        let data = conn.buf.split_to(n as usize).freeze();
                        *left -= n;
                        if *left == 0 {
                            this.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    min(*left, BODY_READ as u64) as usize
                }
                State::Chunked(decoder) => match decoder.decode(&mut conn.buf, true) {
                    Ok(Some(data)) => {
                        if decoder.is_done() {
                            this.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    Ok(None) if decoder.is_done() => {
                        this.finish();
                        return Poll::Ready(None);
                    }
                    Ok(None) => BODY_READ,
                    Err(e) => return this.fail(e),
                },
                State::Close => {
                    if !conn.buf.is_empty() {
                        let data = conn.buf.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    BODY_READ
                }
            };
            match ready!(conn.poll_fill(cx, want)) {
                Ok(0) if matches!(this.state, State::Close) => {
                    this.state = State::Done;
                    this.conn = None;
                    return Poll::Ready(None);
                }
                Ok(0) => return this.fail(Error::closed(true)),
                Ok(_) => {}
                Err(e) => return this.fail(Error::io(e, true)),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(left) => SizeHint::with_exact(left),
            State::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

/// Decodes `Transfer-Encoding: chunked` from a buffer that fills as bytes arrive.
#[derive(Debug, Default)]
struct ChunkedDecoder {
    state: ChunkState,
    /// Trailer bytes read so far (bounded by [`MAX_TRAILERS`]).
    trailer_bytes: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Expecting a chunk-size line.
    #[default]
    Size,
    /// In a chunk's data, this many bytes left.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one.
    Trailers,
    Done,
}

impl ChunkedDecoder {
    fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Consumes framing from `buf` and returns the next piece of chunk data, or `None` when
    /// more bytes are needed or the body has ended ([`Self::is_done`]). After a piece of data
    /// it reads on through any framing already buffered, so the last piece is known as last.
    /// An error leaves the state as it was.
    fn decode(&mut self, buf: &mut BytesMut, yield_data: bool) -> Result<Option<Bytes>, Error> {
        loop {
            match self.state {
                ChunkState::Size => {
                    let Some(line) = take_line(buf, MAX_CHUNK_LINE)? else {
                        return Ok(None);
                    };
                    let size = parse_chunk_size(&line)?;
                    self.state = if size == 0 {
                        ChunkState::Trailers
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(left) => {
                    if !yield_data || buf.is_empty() {
                        return Ok(None);
                    }
                    let n = min(left, buf.len() as u64);
                    let data = buf.split_to(n as usize).freeze();
                    self.state = if n == left {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left - n)
                    };
                    // Malformed framing ahead is reported on the next call.
                    let _ = self.decode(buf, false);
                    return Ok(Some(data));
                }
                ChunkState::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(None);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(Error::malformed("chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers => {
                    let room = MAX_TRAILERS.saturating_sub(self.trailer_bytes);
                    let Some(line) = take_line(buf, room)? else {
                        return Ok(None);
                    };
                    if line.is_empty() {
                        self.state = ChunkState::Done;
                    } else {
                        self.trailer_bytes += line.len() + 2;
                    }
                }
                ChunkState::Done => return Ok(None),
            }
        }
    }
}

/// Takes one CRLF-terminated line (without the CRLF) from the front of `buf`: `None` until
/// it is complete; an error past `limit` bytes or for a bare LF.
fn take_line(buf: &mut BytesMut, limit: usize) -> Result<Option<Bytes>, Error> {
    let scan = min(buf.len(), limit.saturating_add(2));
    match buf[..scan].iter().position(|&b| b == b'\n') {
        Some(lf) if lf == 0 || buf[lf - 1] != b'\r' => {
            Err(Error::malformed("chunked framing line not ended by CRLF"))
        }
        Some(lf) => {
            let line = buf.split_to(lf + 1).freeze().slice(..lf - 1);
            Ok(Some(line))
        }
        None if scan >= limit.saturating_add(2) => {
            Err(Error::malformed("chunked framing line too long"))
        }
        None => Ok(None),
    }
}

/// The hex size at the start of a chunk-size line; extensions after `;` are ignored.
fn parse_chunk_size(line: &[u8]) -> Result<u64, Error> {
    let bad = || Error::malformed("invalid chunk size");
    let digits = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    if digits == 0 || digits > 16 {
        return Err(bad());
    }
    let rest = line[digits..].trim_ascii_start();
    if !rest.is_empty() && rest[0] != b';' {
        return Err(bad());
    }
    line[..digits].iter().try_fold(0u64, |n, &d| {
        let v = (d as char).to_digit(16).ok_or_else(bad)?;
        Ok((n << 4) | u64::from(v))
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn decode_all(input: &[u8], split: usize) -> Result<(Vec<u8>, bool), Error> {
        let mut decoder = ChunkedDecoder::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in input.chunks(split) {
            buf.extend_from_slice(piece);
            while let Some(data) = decoder.decode(&mut buf, true)? {
                out.extend_from_slice(&data);
            }
        }
        Ok((out, decoder.is_done()))
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_read_boundaries() {
        let wire = b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nx-trailer: 1\r\n\r\n";
        for split in 1..=wire.len() {
            let (body, done) = decode_all(wire, split).unwrap();
            assert_eq!(body, b"hello, world", "split {split}");
            assert!(done, "split {split}");
        }
    }

    #[test]
    fn the_last_chunk_is_known_as_last_when_its_end_is_buffered() {
        let mut decoder = ChunkedDecoder::default();
        let mut buf = BytesMut::from(&b"3\r\nabc\r\n0\r\n\r\n"[..]);
        let data = decoder.decode(&mut buf, true).unwrap().unwrap();
        assert_eq!(&data[..], b"abc");
        assert!(decoder.is_done());
        assert!(buf.is_empty());
    }

    #[test]
    fn malformed_chunked_framing_is_an_error() {
        for wire in [
            &b"zz\r\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhelloXX0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"11111111111111111\r\n",
            b"5 x\r\nhello\r\n0\r\n\r\n",
        ] {
            assert!(decode_all(wire, wire.len()).is_err(), "{wire:?}");
        }
        let long = vec![b'1'; MAX_CHUNK_LINE + 10];
        assert!(decode_all(&long, long.len()).is_err());
    }

    #[test]
    fn heads_are_framed_per_rfc_9112() {
        let framing = |raw: &str, head_request: bool| {
            let mut buf = BytesMut::from(raw.as_bytes());
            parse_head(&mut buf, head_request, &mut FieldNames::default())
                .map(|h| h.map(|h| (h.status.as_u16(), h.framing, h.keep_alive)))
        };
        let ok = |raw: &str| framing(raw, false).unwrap().unwrap();
        assert_eq!(
            ok("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"),
            (200, Framing::Length(5), true)
        );
        assert_eq!(
            ok("HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\n"),
            (200, Framing::Length(5), true)
        );
        assert_eq!(
            ok("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            (200, Framing::Chunked, true)
        );
        assert_eq!(
            ok("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"),
            (200, Framing::Chunked, false)
        );
        assert_eq!(
            ok("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"),
            (200, Framing::Close, false)
        );
        assert_eq!(ok("HTTP/1.1 200 OK\r\n\r\n"), (200, Framing::Close, false));
        assert_eq!(
            ok("HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n"),
            (204, Framing::Empty, true)
        );
        assert_eq!(
            ok("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
            (200, Framing::Empty, false)
        );
        assert_eq!(
            ok("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n"),
            (200, Framing::Length(1), false)
        );
        assert_eq!(
            ok("HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\n"),
            (200, Framing::Length(1), true)
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n", true)
                .unwrap()
                .unwrap(),
            (200, Framing::Empty, true)
        );
        assert_eq!(
            ok(
                "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n"
            ),
            (404, Framing::Length(2), true)
        );
        assert!(
            framing("HTTP/1.1 200 OK\r\nContent-Len", false)
                .unwrap()
                .is_none()
        );
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
            "HTTX/1.1 200 OK\r\n\r\n",
        ] {
            assert!(framing(bad, false).is_err(), "{bad}");
        }
    }

    #[test]
    fn hop_by_hop_fields_stay_at_this_hop() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\nX-Hop: 1\r\nProxy-Authenticate: x\r\nTrailer: y\r\nTransfer-Encoding: chunked\r\nX-End: 2\r\n\r\n"[..],
        );
        let head = parse_head(&mut buf, false, &mut FieldNames::default())
            .unwrap()
            .unwrap();
        let names: Vec<_> = head.headers.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["x-end"]);
        assert_eq!(head.framing, Framing::Chunked);
    }

    #[test]
    fn names_remembered_from_the_last_head_give_what_parsing_gives() {
        let heads = [
            "HTTP/1.1 200 OK\r\nContent-Type: a\r\nX-One: 1\r\nContent-Length: 0\r\n\r\n",
            // Same names, other case; then other names at the same places; then more fields.
            "HTTP/1.1 200 OK\r\ncontent-TYPE: a\r\nx-one: 1\r\nCONTENT-LENGTH: 0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX-One: 1\r\nContent-Type: a\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX-Onf: 1\r\nContent-Typf: a\r\nContent-Length: 0\r\nDate: d\r\nX-Two: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX-One: 1\r\n\r\n",
        ];
        let fields = |head: Head| -> Vec<(String, String)> {
            head.headers
                .iter()
                .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap().to_owned()))
                .collect()
        };
        let mut memo = FieldNames::default();
        for raw in heads.iter().chain(heads.iter().rev()) {
            let remembered = parse_head(&mut BytesMut::from(raw.as_bytes()), false, &mut memo);
            let fresh = parse_head(
                &mut BytesMut::from(raw.as_bytes()),
                false,
                &mut FieldNames::default(),
            );
            assert_eq!(
                fields(remembered.unwrap().unwrap()),
                fields(fresh.unwrap().unwrap()),
                "{raw}"
            );
        }
        // A name that is no header name is still refused with names remembered.
        let bad = "HTTP/1.1 200 OK\r\nX-One\x01: 1\r\n\r\n";
        assert!(parse_head(&mut BytesMut::from(bad.as_bytes()), false, &mut memo).is_err());
    }

    #[test]
    fn header_values_are_kept_as_sent() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\nX-A: 1\r\nset-cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 0\r\n\r\nrest"[..],
        );
        let head = parse_head(&mut buf, false, &mut FieldNames::default())
            .unwrap()
            .unwrap();
        assert_eq!(head.headers["x-a"], "1");
        let cookies: Vec<_> = head.headers.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        assert_eq!(&buf[..], b"rest");
    }

    #[test]
    fn only_idempotent_methods_go_through_this_client() {
        for method in ["GET", "HEAD", "OPTIONS", "DELETE", "TRACE"] {
            assert!(eligible(&method.parse().unwrap()), "{method}");
        }
        for method in ["POST", "PUT", "PATCH", "CONNECT"] {
            assert!(!eligible(&method.parse().unwrap()), "{method}");
        }
    }
}
