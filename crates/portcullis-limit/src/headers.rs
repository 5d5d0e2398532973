//! The response headers of a limited route: `RateLimit-Limit`, `RateLimit-Remaining`,
//! `RateLimit-Reset` (draft-ietf-httpapi-ratelimit-headers, the form most clients read), the
//! newer structured `RateLimit-Policy` / `RateLimit` pair when asked, and `Retry-After` on 429.

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, header::RETRY_AFTER};

use crate::Decision;

/// `RateLimit-Limit`.
pub const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
/// `RateLimit-Remaining`.
pub const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
/// `RateLimit-Reset`.
pub const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
/// `RateLimit-Policy`.
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`.
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Header values of small numbers, built once: most `RateLimit-*` values are small, and a
/// static value clones without allocating or formatting.
pub(crate) fn number(n: u64) -> HeaderValue {
    static SMALL: std::sync::LazyLock<Vec<HeaderValue>> = std::sync::LazyLock::new(|| {
        (0..1024u64)
            .map(|i| HeaderValue::from_static(Box::leak(i.to_string().into_boxed_str())))
            .collect()
    });
    usize::try_from(n)
        .ok()
        .and_then(|i| SMALL.get(i))
        .cloned()
        .unwrap_or_else(|| digits(n))
}

/// `n` in decimal, formatted on the stack by `itoa`: one allocation (the value's own bytes),
/// where `HeaderValue::from(u64)` grows a `BytesMut` first.
fn digits(n: u64) -> HeaderValue {
    HeaderValue::from_bytes(itoa::Buffer::new().format(n).as_bytes())
        .unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// Whole seconds, rounded up (a client waiting the advertised time must then succeed).
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl Decision {
    /// Writes the rate-limit headers (and `Retry-After` when refused) into `headers`.
    /// `structured` adds `RateLimit-Policy` and `RateLimit`.
    pub fn write_headers(&self, headers: &mut HeaderMap, structured: bool) {
        let b = &self.verdict.binding;
        let reset = ceil_secs(b.reset);
        headers.reserve(3);
        let limit = self.limit_header.clone().unwrap_or_else(|| number(b.limit));
        headers.insert(RATELIMIT_LIMIT, limit);
        headers.insert(RATELIMIT_REMAINING, number(b.remaining));
        headers.insert(RATELIMIT_RESET, number(reset));
        if !self.verdict.allowed {
            headers.insert(RETRY_AFTER, number(ceil_secs(b.retry_after).max(1)));
        }
        if structured {
            let name = &self.name;
            let policy = format!(
                "\"{name}\";q={};w={}",
                b.limit,
                ceil_secs(self.window).max(1)
            );
            let current = format!("\"{name}\";r={};t={reset}", b.remaining);
            if let Ok(v) = HeaderValue::try_from(policy) {
                headers.insert(RATELIMIT_POLICY, v);
            }
            if let Ok(v) = HeaderValue::try_from(current) {
                headers.insert(RATELIMIT, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_written_in_decimal_from_the_table_and_beyond_it() {
        for n in [0, 1, 9, 10, 1023, 1024, 99_999, 1_000_000_000, u64::MAX] {
            assert_eq!(number(n).to_str().ok(), Some(n.to_string().as_str()), "{n}");
        }
    }
}
