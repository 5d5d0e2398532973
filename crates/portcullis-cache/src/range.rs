//! Byte ranges answered from a stored complete response (RFC 9110 §14).
//!
//! One `bytes=` range per request is served as a 206 slice of the stored body (no copy);
//! several ranges, other units or a failed `If-Range` get the whole 200, which RFC 9110 allows
//! (a server may ignore `Range`). Partial responses from the origin are not stored.

use http::{HeaderMap, HeaderValue, header};

use crate::freshness::parse_date;

/// An inclusive byte range within a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte.
    pub start: u64,
    /// Last byte (inclusive).
    pub end: u64,
}

/// What a `Range` request asks of a body of a given length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requested {
    /// A 206 with this range.
    Satisfiable(ByteRange),
    /// A 416: the range starts beyond the end.
    Unsatisfiable,
}

impl Requested {
    /// The `Content-Range` value for a body of `len` bytes.
    pub fn content_range(&self, len: u64) -> HeaderValue {
        let text = match self {
            Self::Satisfiable(r) => format!("bytes {}-{}/{len}", r.start, r.end),
            Self::Unsatisfiable => format!("bytes */{len}"),
        };
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("bytes */0"))
    }
}

/// The range the request asks for, if it is one `bytes=` range the stored response (with
/// `stored` headers and `len` bytes of body) can answer; `None` means serve the whole body.
pub fn requested(req: &HeaderMap, stored: &HeaderMap, len: u64) -> Option<Requested> {
    let spec = req.get(header::RANGE)?.to_str().ok()?.trim();
    if let Some(if_range) = req.get(header::IF_RANGE)
        && !if_range_holds(if_range, stored)
    {
        return None;
    }
    let set = spec.strip_prefix("bytes=")?;
    if set.contains(',') {
        return None;
    }
    let (first, last) = set.trim().split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    let range = if first.is_empty() {
        // Suffix: the last N bytes.
        if !digits(last) {
            return None;
        }
        let n: u64 = last.parse().ok()?;
        if n == 0 || len == 0 {
            return Some(Requested::Unsatisfiable);
        }
        ByteRange {
            start: len.saturating_sub(n),
            end: len - 1,
        }
    } else {
        if !digits(first) || !(last.is_empty() || digits(last)) {
            return None;
        }
        let start: u64 = first.parse().ok()?;
        let end: u64 = if last.is_empty() {
            u64::MAX
        } else {
            last.parse().ok()?
        };
        if end < start {
            return None;
        }
        if start >= len {
            return Some(Requested::Unsatisfiable);
        }
        ByteRange {
            start,
            end: end.min(len - 1),
        }
    };
    Some(Requested::Satisfiable(range))
}

/// `If-Range`: a strong ETag equal to the stored one, or a date equal to `Last-Modified`.
fn if_range_holds(if_range: &HeaderValue, stored: &HeaderMap) -> bool {
    let value = if_range.as_bytes();
    if value.starts_with(b"\"") {
        return stored
            .get(header::ETAG)
            .is_some_and(|e| e.as_bytes() == value);
    }
    let (Some(date), Some(modified)) = (
        if_range.to_str().ok().and_then(parse_date),
        stored
            .get(header::LAST_MODIFIED)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_date),
    ) else {
        return false;
    };
    date == modified
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(range: &str, len: u64) -> Option<Requested> {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, HeaderValue::from_str(range).unwrap());
        requested(&h, &HeaderMap::new(), len)
    }

    fn r(start: u64, end: u64) -> Option<Requested> {
        Some(Requested::Satisfiable(ByteRange { start, end }))
    }

    #[test]
    fn single_byte_ranges() {
        assert_eq!(ask("bytes=0-1", 10), r(0, 1));
        assert_eq!(ask("bytes=5-", 10), r(5, 9));
        assert_eq!(ask("bytes=-3", 10), r(7, 9));
        assert_eq!(ask("bytes=-30", 10), r(0, 9));
        assert_eq!(ask("bytes=2-100", 10), r(2, 9));
        assert_eq!(ask("bytes=10-", 10), Some(Requested::Unsatisfiable));
        // Not answered from the cache: whole body instead.
        assert_eq!(ask("bytes=0-1,3-4", 10), None);
        assert_eq!(ask("items=0-1", 10), None);
        assert_eq!(ask("bytes=5-2", 10), None);
        assert_eq!(ask("bytes=a-b", 10), None);
    }

    #[test]
    fn if_range_must_match_the_stored_validator() {
        let mut stored = HeaderMap::new();
        stored.insert(header::ETAG, HeaderValue::from_static("\"v1\""));
        let mut req = HeaderMap::new();
        req.insert(header::RANGE, HeaderValue::from_static("bytes=0-1"));
        req.insert(header::IF_RANGE, HeaderValue::from_static("\"v1\""));
        assert_eq!(requested(&req, &stored, 10), r(0, 1));
        req.insert(header::IF_RANGE, HeaderValue::from_static("\"v2\""));
        assert_eq!(requested(&req, &stored, 10), None);
        assert_eq!(
            Requested::Satisfiable(ByteRange { start: 0, end: 1 }).content_range(10),
            "bytes 0-1/10"
        );
    }
}
