//! Header names of the contract, as constants so the hot path never parses them.

use http::HeaderName;

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
