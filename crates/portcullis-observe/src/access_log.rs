//! The access log: one line per request, in JSON or the combined log format, written by a
//! background thread so the request path never waits on the disk or a slow pipe.
//!
//! Lines go through a bounded in-memory queue; when it is full (the writer cannot keep up),
//! lines are dropped and counted (`portcullis_access_log_dropped_total`) rather than slowing
//! requests or growing memory. Query parameters that look like credentials (`token`, `key`,
//! `secret`, `password`, `signature`, `auth`, `code` in their name), and those configured to
//! carry credentials, are logged as `[redacted]`.

use std::{
    io::Write,
    net::IpAddr,
    path::Path,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use parking_lot::{Condvar, Mutex};

use prometheus_client::metrics::counter::Counter;
use serde::Serialize;

/// The access log's line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessFormat {
    /// One JSON object per line.
    Json,
    /// Combined log format plus `rid=`, `route=`, `cache=`, `dur=`, `up=` fields.
    Combined,
}

/// What one access line says about a request.
#[derive(Debug, Clone, Serialize)]
pub struct AccessRecord<'a> {
    /// When the response finished; written as RFC 3339 UTC with milliseconds (see
    /// [`rfc3339_bytes`]).
    #[serde(serialize_with = "time_text")]
    pub time: SystemTime,
    /// The request id.
    pub request_id: &'a str,
    /// The W3C trace id (sent upstream, or the caller's); written as 32 hex digits.
    #[serde(serialize_with = "trace_text")]
    pub trace_id: Option<u128>,
    /// The client's address (after trusted-proxy handling).
    pub client_ip: IpAddr,
    /// Request method.
    pub method: &'a str,
    /// Path and query, credentials in the query redacted.
    pub path: &'a str,
    /// `HTTP/1.1`, `HTTP/2.0`...
    pub protocol: &'a str,
    /// Response status.
    pub status: u16,
    /// Response body bytes sent.
    pub bytes: u64,
    /// Request head received to last response byte handed to the connection, milliseconds.
    pub duration_ms: f64,
    /// Upstream request sent to response head received, milliseconds; absent without one.
    pub upstream_ms: Option<f64>,
    /// The upstream target (`host:port`), when one was used.
    pub target: Option<&'a str>,
    /// The route's name (`unmatched` when none matched).
    pub route: &'a str,
    /// The `X-Cache` result on cached routes.
    pub cache: Option<&'a str>,
    /// The authenticated consumer, when there is one.
    pub consumer: Option<&'a str>,
    /// The `User-Agent`, if sent.
    pub user_agent: Option<&'a str>,
    /// The `Referer`, if sent.
    pub referer: Option<&'a str>,
}

impl AccessRecord<'_> {
    /// The record as one line (with the trailing newline) in `format`.
    pub fn format(&self, format: AccessFormat) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        self.write(format, &mut out);
        out
    }

    /// Appends the record's line (with the trailing newline) in `format` to `out`.
    pub fn write(&self, format: AccessFormat, out: &mut Vec<u8>) {
        match format {
            AccessFormat::Json => self.json_line(out),
            AccessFormat::Combined => {
                let dash = |v: Option<&str>| v.unwrap_or("-").replace('"', "\\\"");
                let up = self
                    .upstream_ms
                    .map_or_else(|| "-".to_owned(), |ms| format!("{:.3}", ms / 1000.0));
                let line = format!(
                    "{} - {} [{}] \"{} {} {}\" {} {} \"{}\" \"{}\" rid={} route={} cache={} dur={:.3} up={}\n",
                    self.client_ip,
                    self.consumer.unwrap_or("-"),
                    rfc3339(self.time),
                    self.method,
                    self.path.replace('"', "%22"),
                    self.protocol,
                    self.status,
                    self.bytes,
                    dash(self.referer),
                    dash(self.user_agent),
                    self.request_id,
                    self.route,
                    self.cache.unwrap_or("-"),
                    self.duration_ms / 1000.0,
                    up,
                );
                out.extend_from_slice(line.as_bytes());
            }
        }
    }
}

impl AccessRecord<'_> {
    /// The JSON line, written by hand: serde_json's derived serializer spent about 6,400
    /// instructions per line here (every key escaped, one `io::Write` call per piece), a sixth
    /// of a proxied request; this writes the fixed keys as literals and escapes only values
    /// that need it. Same JSON as the derived `Serialize` (a test holds them equal), except
    /// that durations have microsecond precision.
    fn json_line(&self, out: &mut Vec<u8>) {
        // The time and the trace id are digits and punctuation by construction: no escaping.
        out.extend_from_slice(b"{\"time\":\"");
        out.extend_from_slice(&rfc3339_bytes(self.time));
        out.push(b'"');
        field(out, b",\"request_id\":", Some(self.request_id));
        match self.trace_id {
            Some(id) => {
                out.extend_from_slice(b",\"trace_id\":\"");
                out.extend_from_slice(&crate::trace_id_hex(id));
                out.push(b'"');
            }
            None => out.extend_from_slice(b",\"trace_id\":null"),
        }
        out.extend_from_slice(b",\"client_ip\":\"");
        match self.client_ip {
            IpAddr::V4(v4) => {
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        out.push(b'.');
                    }
                    put_int(out, u64::from(octet));
                }
            }
            // Rare enough for the formatter.
            IpAddr::V6(v6) => out.extend_from_slice(v6.to_string().as_bytes()),
        }
        out.push(b'"');
        field(out, b",\"method\":", Some(self.method));
        field(out, b",\"path\":", Some(self.path));
        field(out, b",\"protocol\":", Some(self.protocol));
        out.extend_from_slice(b",\"status\":");
        put_int(out, u64::from(self.status));
        out.extend_from_slice(b",\"bytes\":");
        put_int(out, self.bytes);
        out.extend_from_slice(b",\"duration_ms\":");
        put_millis(out, self.duration_ms);
        out.extend_from_slice(b",\"upstream_ms\":");
        match self.upstream_ms {
            Some(ms) => put_millis(out, ms),
            None => out.extend_from_slice(b"null"),
        }
        field(out, b",\"target\":", self.target);
        field(out, b",\"route\":", Some(self.route));
        field(out, b",\"cache\":", self.cache);
        field(out, b",\"consumer\":", self.consumer);
        field(out, b",\"user_agent\":", self.user_agent);
        field(out, b",\"referer\":", self.referer);
        out.extend_from_slice(b"}\n");
    }
}

/// Serializes a record's time as its line shows it.
fn time_text<S: serde::Serializer>(time: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*time))
}

/// Serializes a record's trace id as its line shows it.
fn trace_text<S: serde::Serializer>(id: &Option<u128>, s: S) -> Result<S::Ok, S::Error> {
    match id {
        Some(id) => s.serialize_str(std::str::from_utf8(&crate::trace_id_hex(*id)).unwrap_or("")),
        None => s.serialize_none(),
    }
}

/// `n` in decimal.
fn put_int(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Milliseconds with three decimals (microseconds), as integer arithmetic: `{:.3}` on an `f64`
/// takes the formatter's exact (slow) path.
fn put_millis(out: &mut Vec<u8>, ms: f64) {
    // Rounded to the nearest microsecond; `as` saturates, so the negative or NaN durations
    // that do not happen print as 0 (and `f64::round` would be a call into libm).
    let micros = (ms * 1000.0 + 0.5) as u64;
    put_int(out, micros / 1000);
    let mut frac = *b".000";
    put_digits(&mut frac[1..], micros % 1000);
    out.extend_from_slice(&frac);
}

/// `,"key":"value"` (or `null`); `key` is one of ours, given with its punctuation
/// (`,"key":`), and needs no escaping. Always inlined, so that each key is copied as the
/// constant it is rather than by a call to `memcpy` (that halved the cost of a `null` field).
#[inline(always)]
fn field(out: &mut Vec<u8>, key: &[u8], value: Option<&str>) {
    out.extend_from_slice(key);
    match value {
        Some(v) => json_str(out, v),
        None => out.extend_from_slice(b"null"),
    }
}

/// `s` as a JSON string (RFC 8259 escaping; non-ASCII passes through as UTF-8).
fn json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    if plain(s.as_bytes()) {
        out.extend_from_slice(s.as_bytes());
    } else {
        for b in s.bytes() {
            match b {
                b'"' => out.extend_from_slice(b"\\\""),
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.extend_from_slice(b"\\t"),
                0..=0x1f => {
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    out.extend_from_slice(b"\\u00");
                    out.push(HEX[usize::from(b >> 4)]);
                    out.push(HEX[usize::from(b & 0x0f)]);
                }
                _ => out.push(b),
            }
        }
    }
    out.push(b'"');
}

/// Whether `s` needs no JSON escaping: no byte below 0x20, no `"`, no `\`. Eight bytes at a
/// time (the classic "has a byte less than / equal to" word tricks), since this runs over
/// every string of every access line; byte by byte it was a third of the line's formatting.
/// A false "needs escaping" would only take the slower, still correct, path.
fn plain(s: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let has_zero_byte = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS != 0;
    let mut chunks = s.chunks_exact(8);
    for chunk in &mut chunks {
        let x = u64::from_le_bytes(<[u8; 8]>::try_from(chunk).unwrap_or_default());
        let below_space = x.wrapping_sub(0x20 * ONES) & !x & HIGHS != 0;
        if below_space
            || has_zero_byte(x ^ (u64::from(b'"') * ONES))
            || has_zero_byte(x ^ (u64::from(b'\\') * ONES))
        {
            return false;
        }
    }
    chunks
        .remainder()
        .iter()
        .all(|&b| b >= 0x20 && b != b'"' && b != b'\\')
}

/// The bytes queued between requests and the writer thread, at most (about 16,000 lines).
const QUEUE_BYTES: usize = 8 * 1024 * 1024;

/// What requests and the writer thread share.
#[derive(Debug, Default)]
struct Queue {
    state: Mutex<QueueState>,
    /// The writer waits here for lines (or a flush, or the end).
    wake: Condvar,
    /// Flushers wait here for the writer to reach their flush.
    flushed: Condvar,
}

#[derive(Debug, Default)]
struct QueueState {
    /// Lines not yet taken by the writer.
    lines: Vec<u8>,
    /// Whether the writer is asleep on `wake` (only then does a line notify it).
    waiting: bool,
    /// Flushes asked for, and flushes done: a flush waits until `done` reaches its number.
    flush_asked: u64,
    flush_done: u64,
    /// Every handle is gone: the writer writes what is left and ends.
    closed: bool,
}

/// The access log: a handle requests write lines through.
///
/// Lines are appended to one shared buffer under a short lock (formatted beforehand into a
/// per-thread scratch buffer), and a writer thread takes the whole buffer at once. A channel of
/// one `Vec` per line cost an allocation, a free on the other thread and a channel hand-off per
/// request; this costs a lock and a copy.
#[derive(Debug, Clone)]
pub struct AccessLog {
    inner: Arc<Handle>,
}

#[derive(Debug)]
struct Handle {
    format: AccessFormat,
    queue: Arc<Queue>,
    dropped: Counter,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.queue.state.lock().closed = true;
        self.queue.wake.notify_one();
    }
}

thread_local! {
    /// Where a request thread formats its line before copying it into the queue.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(512));
}

impl AccessLog {
    /// Starts the writer thread, appending to `file` (created if missing), or writing to
    /// standard output without one. `dropped` counts lines lost to a full queue.
    pub fn start(
        format: AccessFormat,
        file: Option<&Path>,
        dropped: Counter,
    ) -> std::io::Result<Self> {
        let out: Box<dyn Write + Send> = match file {
            Some(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
            None => Box::new(std::io::stdout()),
        };
        let queue = Arc::new(Queue::default());
        let writer = Arc::clone(&queue);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(&writer, out))?;
        Ok(Self {
            inner: Arc::new(Handle {
                format,
                queue,
                dropped,
            }),
        })
    }

    /// Queues `record`'s line; drops it (and counts it) when the writer is behind.
    pub fn log(&self, record: &AccessRecord<'_>) {
        let format = self.inner.format;
        SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut line) => {
                line.clear();
                record.write(format, &mut line);
                self.enqueue(&line);
            }
            // Only if logging ever re-entered itself on this thread: a line of its own.
            Err(_) => self.enqueue(&record.format(format)),
        });
    }

    fn enqueue(&self, line: &[u8]) {
        let queue = &self.inner.queue;
        let mut state = queue.state.lock();
        if state.lines.len() + line.len() > QUEUE_BYTES {
            drop(state);
            self.inner.dropped.inc();
            return;
        }
        state.lines.extend_from_slice(line);
        let wake = std::mem::take(&mut state.waiting);
        drop(state);
        if wake {
            queue.wake.notify_one();
        }
    }

    /// Blocks until every line queued so far is written out (at shutdown: the writer thread
    /// dies with the process), or `timeout` passes. False on timeout.
    pub fn flush(&self, timeout: std::time::Duration) -> bool {
        let queue = &self.inner.queue;
        let deadline = std::time::Instant::now() + timeout;
        let mut state = queue.state.lock();
        state.flush_asked += 1;
        let ticket = state.flush_asked;
        queue.wake.notify_one();
        while state.flush_done < ticket {
            if queue.flushed.wait_until(&mut state, deadline).timed_out() {
                return state.flush_done >= ticket;
            }
        }
        true
    }
}

/// After writing what was queued, the writer pauses this long before it takes more. A request
/// wakes the writer only when it is waiting: without the pause that was one thread wake-up
/// (two context switches) per line, which cost more than the line itself (`scripts/bench-cpu`:
/// +59% CPU per proxied request with JSON lines to /dev/null); with it, at most a few hundred
/// wake-ups a second under load. Lines reach the file within this delay.
const DRAIN_PAUSE: std::time::Duration = std::time::Duration::from_millis(5);

/// The writer thread: takes everything queued, writes it out, flushes, pauses; ends when
/// every handle is gone and the queue is empty.
fn write_lines(queue: &Queue, mut out: Box<dyn Write + Send>) {
    let mut batch = Vec::new();
    loop {
        let (flush, closed) = {
            let mut state = queue.state.lock();
            while state.lines.is_empty() && state.flush_asked == state.flush_done && !state.closed {
                state.waiting = true;
                queue.wake.wait(&mut state);
            }
            state.waiting = false;
            std::mem::swap(&mut batch, &mut state.lines);
            (state.flush_asked, state.closed)
        };
        let _ = out.write_all(&batch);
        let _ = out.flush();
        // Emptied but kept: the two buffers take turns, so a steady load allocates nothing.
        batch.clear();
        {
            let mut state = queue.state.lock();
            if state.flush_done < flush {
                state.flush_done = flush;
                queue.flushed.notify_all();
            }
            if closed && state.lines.is_empty() {
                return;
            }
        }
        std::thread::sleep(DRAIN_PAUSE);
    }
}

/// Query parameter names containing these are logged without their values.
const SECRET_PARAMS: [&str; 7] = [
    "token",
    "key",
    "secret",
    "password",
    "signature",
    "auth",
    "code",
];

/// `path_and_query` with the values of credential-like query parameters replaced.
pub fn redact_query(path_and_query: &str) -> std::borrow::Cow<'_, str> {
    redact_query_also::<&str>(path_and_query, &[])
}

/// [`redact_query`], also redacting the parameters named in `also` (compared without regard
/// to case): names configured to carry credentials that the patterns may not catch, such as
/// an API key's query parameter.
pub fn redact_query_also<'a, S: AsRef<str>>(
    path_and_query: &'a str,
    also: &[S],
) -> std::borrow::Cow<'a, str> {
    let Some((path, query)) = path_and_query.split_once('?') else {
        return std::borrow::Cow::Borrowed(path_and_query);
    };
    let secret = |name: &str| {
        let lower = name.to_ascii_lowercase();
        SECRET_PARAMS.iter().any(|s| lower.contains(s))
            || also.iter().any(|a| a.as_ref().eq_ignore_ascii_case(name))
    };
    if !query
        .split('&')
        .any(|pair| secret(pair.split('=').next().unwrap_or("")))
    {
        return std::borrow::Cow::Borrowed(path_and_query);
    }
    let redacted: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if secret(name) => format!("{name}=[redacted]"),
            _ => pair.to_owned(),
        })
        .collect();
    std::borrow::Cow::Owned(format!("{path}?{}", redacted.join("&")))
}

/// `now` as RFC 3339 UTC with milliseconds: `2026-11-23T15:04:05.123Z`.
pub fn rfc3339(now: SystemTime) -> String {
    String::from_utf8_lossy(&rfc3339_bytes(now)).into_owned()
}

/// [`rfc3339`] without the allocation: the 24 ASCII bytes, for a caller that writes them out
/// at once (the access log, once per request).
///
/// The date and time down to the second are computed once per second per thread and kept;
/// only the milliseconds are written per call.
pub fn rfc3339_bytes(now: SystemTime) -> [u8; 24] {
    thread_local! {
        /// The last second formatted on this thread, and its text.
        static SECOND: std::cell::Cell<(u64, [u8; 24])> =
            const { std::cell::Cell::new((u64::MAX, [0; 24])) };
    }
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let mut text = SECOND.with(|cached| {
        let (second, text) = cached.get();
        if second == secs {
            return text;
        }
        let text = second_text(secs);
        cached.set((secs, text));
        text
    });
    put_digits(&mut text[20..23], u64::from(since.subsec_millis()));
    text
}

/// `secs` since the epoch as `YYYY-MM-DDTHH:MM:SS.000Z`.
fn second_text(secs: u64) -> [u8; 24] {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(i64::try_from(days).unwrap_or(0));
    // Digits written by hand: `format!` with widths cost about 3,300 instructions per access
    // line (callgrind), for a fixed 24-byte shape.
    let mut text = *b"0000-00-00T00:00:00.000Z";
    let year = u64::try_from(y.clamp(0, 9999)).unwrap_or(0);
    for (range, n) in [
        (0..4, year),
        (5..7, u64::from(m)),
        (8..10, u64::from(d)),
        (11..13, rem / 3600),
        (14..16, rem % 3600 / 60),
        (17..19, rem % 60),
    ] {
        put_digits(&mut text[range], n);
    }
    text
}

/// Writes `n`'s last `out.len()` decimal digits, zero-padded.
fn put_digits(out: &mut [u8], mut n: u64) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn record() -> AccessRecord<'static> {
        AccessRecord {
            time: UNIX_EPOCH + Duration::from_millis(1_795_446_245_123),
            request_id: "rid-1",
            trace_id: None,
            client_ip: "10.0.0.7".parse().unwrap(),
            method: "GET",
            path: "/api/x?a=1",
            protocol: "HTTP/1.1",
            status: 200,
            bytes: 42,
            duration_ms: 3.5,
            upstream_ms: Some(2.25),
            target: Some("127.0.0.1:3000"),
            route: "api",
            cache: Some("MISS"),
            consumer: None,
            user_agent: Some("curl/8 \"x\""),
            referer: None,
        }
    }

    #[test]
    fn rfc3339_matches_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_millis(1_795_446_245_123)),
            "2026-11-23T15:04:05.123Z"
        );
        // 2000-02-29, a leap day in a century leap year.
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000Z"
        );
    }

    #[test]
    fn the_kept_second_gives_way_to_the_next() {
        let at = |ms: u64| rfc3339(UNIX_EPOCH + Duration::from_millis(ms));
        assert_eq!(at(1_795_446_245_123), "2026-11-23T15:04:05.123Z");
        assert_eq!(at(1_795_446_245_999), "2026-11-23T15:04:05.999Z");
        assert_eq!(at(1_795_446_246_000), "2026-11-23T15:04:06.000Z");
        // Back to an earlier second (the clock stepped back): computed afresh.
        assert_eq!(at(1_795_446_245_001), "2026-11-23T15:04:05.001Z");
        assert_eq!(at(951_782_399_500), "2000-02-28T23:59:59.500Z");
    }

    #[test]
    fn json_lines_carry_every_field() {
        let line = record().format(AccessFormat::Json);
        assert_eq!(line.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["request_id"], "rid-1");
        assert_eq!(v["status"], 200);
        assert_eq!(v["route"], "api");
        assert_eq!(v["cache"], "MISS");
        assert_eq!(v["upstream_ms"], 2.25);
        assert_eq!(v["client_ip"], "10.0.0.7");
        assert!(v["consumer"].is_null());
    }

    #[test]
    fn the_hand_written_json_equals_serde_json() {
        let mut r = record();
        let tricky = "q\"u\\o\nte\t\u{1}\u{7f} é ☃";
        r.user_agent = Some(tricky);
        r.referer = None;
        r.trace_id = Some(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736);
        for (ip, upstream_ms) in [("::1", Some(2.25)), ("192.168.10.255", None)] {
            r.client_ip = ip.parse().unwrap();
            r.upstream_ms = upstream_ms;
            let ours: serde_json::Value =
                serde_json::from_slice(&r.format(AccessFormat::Json)).unwrap();
            assert_eq!(ours, serde_json::to_value(&r).unwrap());
        }
        let mut millis = Vec::new();
        for ms in [0.0004, 1234.5678, 7.0] {
            put_millis(&mut millis, ms);
            millis.push(b' ');
        }
        assert_eq!(millis, b"0.000 1234.568 7.000 ");
        assert_eq!(
            String::from_utf8(r.format(AccessFormat::Json))
                .unwrap()
                .lines()
                .count(),
            1
        );
    }

    #[test]
    fn the_word_at_a_time_check_finds_every_byte_that_needs_escaping() {
        for text in ["", "GET", "/api/v1/orders?id=7&x=y", "curl/8.5 é ☃ \u{7f}~"] {
            assert!(plain(text.as_bytes()), "{text:?}");
        }
        for bad in [b'"', b'\\', 0x00, 0x01, b'\n', 0x1f] {
            for at in 0..17 {
                let mut text = vec![b'a'; 17];
                text[at] = bad;
                assert!(!plain(&text), "byte {bad:#x} at {at}");
            }
        }
    }

    #[test]
    fn flush_writes_out_every_queued_line_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let log = AccessLog::start(AccessFormat::Json, Some(&path), Counter::default()).unwrap();
        for _ in 0..100 {
            log.log(&record());
        }
        assert!(log.flush(std::time::Duration::from_secs(10)));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 100);
    }

    #[test]
    fn combined_lines_follow_the_format() {
        let line = String::from_utf8(record().format(AccessFormat::Combined)).unwrap();
        assert!(
            line.starts_with(
                "10.0.0.7 - - [2026-11-23T15:04:05.123Z] \"GET /api/x?a=1 HTTP/1.1\" 200 42 \"-\" \"curl/8 \\\"x\\\"\""
            ),
            "{line}"
        );
        assert!(
            line.ends_with("rid=rid-1 route=api cache=MISS dur=0.004 up=0.002\n"),
            "{line}"
        );
    }

    #[test]
    fn credentials_in_queries_are_redacted() {
        assert_eq!(redact_query("/a?x=1"), "/a?x=1");
        assert_eq!(
            redact_query("/a?api_key=s3cret&x=1&Token=abc&flag"),
            "/a?api_key=[redacted]&x=1&Token=[redacted]&flag"
        );
        assert_eq!(redact_query("/plain"), "/plain");
    }

    #[test]
    fn configured_parameter_names_are_redacted_too() {
        // Names none of the patterns catch.
        let also = ["access", "X"];
        assert_eq!(redact_query("/a?Access=s3cret&x=v"), "/a?Access=s3cret&x=v");
        assert_eq!(
            redact_query_also("/a?Access=s3cret&x=v&y=1", &also),
            "/a?Access=[redacted]&x=[redacted]&y=1"
        );
        assert_eq!(
            redact_query_also("/a?accessx=1", &also),
            "/a?accessx=1",
            "whole names only"
        );
        assert_eq!(redact_query_also::<&str>("/a?y=1", &[]), "/a?y=1");
    }
}
