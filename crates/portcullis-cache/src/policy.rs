//! Settings: one [`CacheConfig`] for the whole cache, one [`RoutePolicy`] per cached route.
//! Plain structs, so an axum user needs no config file.

use std::{sync::Arc, time::Duration};

use http::HeaderName;

use crate::{
    HeuristicPolicy,
    clock::{Clock, SystemClock},
    key::KeyParts,
    stats::RouteStats,
};

/// Settings shared by every route of one cache.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Bytes the memory tier may hold (headers, bodies, keys).
    pub memory_max: u64,
    /// Larger responses are passed through, not stored, and never buffered whole.
    pub max_object_size: u64,
    /// How long concurrent misses wait for the one request in flight before going upstream
    /// themselves.
    pub lock_timeout: Duration,
    /// How long a key whose response could not be stored skips coalescing (hit-for-miss).
    pub hit_for_miss: Duration,
    /// After a failed revalidation, stale copies are served without asking the origin again
    /// for this long (one attempt per key per interval).
    pub error_backoff: Duration,
    /// How long a stale response with validators is kept for conditional revalidation.
    pub keep_stale: Duration,
    /// Heuristic freshness for responses with `Last-Modified` and no explicit lifetime.
    pub heuristic: HeuristicPolicy,
    /// Most refresh-ahead requests in flight at once.
    pub refresh_concurrency: usize,
    /// The clock for ages and freshness.
    pub clock: Arc<dyn Clock>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            memory_max: 256 << 20,
            max_object_size: 8 << 20,
            lock_timeout: Duration::from_secs(10),
            hit_for_miss: Duration::from_secs(30),
            error_backoff: Duration::from_secs(5),
            keep_stale: Duration::from_secs(600),
            heuristic: HeuristicPolicy::default(),
            refresh_concurrency: 8,
            clock: Arc::new(SystemClock),
        }
    }
}

/// How one route caches.
#[derive(Debug, Clone)]
pub struct RoutePolicy {
    /// Route name (for stats and logs).
    pub name: Arc<str>,
    /// Whether the route caches. A disabled policy still invalidates on writes (so a POST
    /// route purges what a GET route stored) and adds no `X-Cache` header.
    pub enabled: bool,
    /// Freshness lifetime for storable responses that state none (instead of a heuristic).
    pub ttl: Option<Duration>,
    /// Use `ttl` even when the response states its own lifetime. Never overrides `no-store`,
    /// `private` or `no-cache`.
    pub ttl_override: bool,
    /// `stale-while-revalidate` when the response gives none.
    pub stale_while_revalidate: Duration,
    /// `stale-if-error` when the response gives none.
    pub stale_if_error: Duration,
    /// Refresh an entry in the background when a read finds it in this last fraction of its
    /// freshness lifetime (0: off).
    pub refresh_ahead: f64,
    /// Key by consumer: `private` and authorized responses are stored per consumer.
    pub per_consumer: bool,
    /// Add a strong `ETag` (hash of the body) to stored responses without one.
    pub etag: bool,
    /// Compress stored responses once per content coding clients ask for.
    pub compress: Option<crate::compress::Compression>,
    /// Cache GraphQL queries sent by POST (keyed by the normalized operation); mutations pass
    /// through and invalidate.
    pub graphql: bool,
    /// Extra key parts and ignored query parameters.
    pub key: KeyParts,
    /// Requests carrying any of these cookies bypass the cache (sessions).
    pub bypass_cookies: Vec<String>,
    /// Tags given to every response stored by this route.
    pub tags: Vec<Arc<str>>,
    /// Tags purged when a write (POST, PUT, PATCH, DELETE) through this route succeeds.
    pub invalidate_tags_on_write: Vec<Arc<str>>,
    /// Response header through which the origin tags responses (space- or comma-separated);
    /// removed before the client sees the response.
    pub tag_header: Option<HeaderName>,
    /// Counters.
    pub stats: Arc<RouteStats>,
}

impl RoutePolicy {
    /// A policy with RFC defaults and nothing extra, named `name`.
    pub fn new(name: &str) -> Self {
        Self {
            name: Arc::from(name),
            enabled: true,
            ttl: None,
            ttl_override: false,
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            refresh_ahead: 0.0,
            per_consumer: false,
            etag: false,
            graphql: false,
            compress: None,
            key: KeyParts::default(),
            bypass_cookies: Vec::new(),
            tags: Vec::new(),
            invalidate_tags_on_write: Vec::new(),
            tag_header: Some(HeaderName::from_static("surrogate-key")),
            stats: Arc::default(),
        }
    }
}
