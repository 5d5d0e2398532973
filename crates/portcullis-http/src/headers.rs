//! Header names of the contract, as constants so the hot path never parses them, and a cheap
//! presence test for the fields a request usually lacks.

use http::{HeaderMap, HeaderName, HeaderValue};

/// Up to this many distinct fields, [`contains_any`] looks at each rather than hashing.
const SCAN_UP_TO: usize = 8;

/// Whether `headers` holds any of `names`. Most requests carry a few fields, and looking at
/// each of them is cheaper than a hash-map lookup per name (about 80 instructions each,
/// callgrind), which the hot path mostly spends on names that are absent (`Range`,
/// `If-None-Match`, `Upgrade`, ...). Past [`SCAN_UP_TO`] fields the map's lookups are used.
pub fn contains_any(headers: &HeaderMap, names: &[HeaderName]) -> bool {
    if headers.keys_len() <= SCAN_UP_TO {
        headers.keys().any(|key| names.contains(key))
    } else {
        names.iter().any(|name| headers.contains_key(name))
    }
}

/// The request id the gateway assigns (or accepts), echoed on every response.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Cache status of a response: `HIT`, `MISS`, `STALE`, `BYPASS` or `REVALIDATED`.
pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");
/// The cache tier that answered: `memory` or `redis`.
pub const X_CACHE_TIER: HeaderName = HeaderName::from_static("x-cache-tier");
/// The chain of client addresses, appended to by each proxy.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// The scheme (`http` or `https`) the client used.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// The Host the client asked for.
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// RFC 7239 `Forwarded`; removed when it comes from a proxy we do not trust.
pub const FORWARDED: HeaderName = HeaderName::from_static("forwarded");
/// Non-standard but common hop-by-hop header.
pub const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
/// Non-standard but common hop-by-hop header.
pub const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
/// IETF rate limit headers.
pub const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
/// IETF rate limit headers.
pub const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
/// IETF rate limit headers.
pub const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// The first value of `name` in `headers`, found as [`contains_any`] finds names: by looking
/// at each of a few fields, else by the map's lookup.
pub fn first_value<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<&'h HeaderValue> {
    if headers.keys_len() <= SCAN_UP_TO {
        headers
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value)
    } else {
        headers.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use http::header;

    #[test]
    fn contains_any_agrees_with_the_map_for_few_and_many_fields() {
        let wanted = [header::RANGE, header::IF_NONE_MATCH, X_REQUEST_ID];
        for extra in [0usize, 3, 12] {
            let mut headers = HeaderMap::new();
            headers.insert(header::HOST, HeaderValue::from_static("x"));
            for i in 0..extra {
                let name: HeaderName = format!("x-filler-{i}").parse().unwrap();
                headers.insert(name, HeaderValue::from_static("1"));
            }
            assert!(!contains_any(&headers, &wanted), "{extra} extra fields");
            headers.append(X_REQUEST_ID, HeaderValue::from_static("abc"));
            assert!(contains_any(&headers, &wanted), "{extra} extra fields");
            assert!(contains_any(&headers, &[header::HOST]));
            assert!(!contains_any(&headers, &[]));
            // The first of several values, as the map's `get` gives it.
            headers.append(X_REQUEST_ID, HeaderValue::from_static("def"));
            assert_eq!(
                first_value(&headers, &X_REQUEST_ID),
                headers.get(X_REQUEST_ID)
            );
            assert_eq!(first_value(&headers, &header::RANGE), None);
        }
    }
}
