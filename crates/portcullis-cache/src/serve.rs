//! The cache in front of an origin: lookup, coalesced fill, revalidation, stale serving and
//! invalidation, for any `fetch` function that sends a request to the origin.
//!
//! [`Cache::serve`] is what the gateway calls per cached route, after routing; the tower layer
//! in [`crate::layer`] calls it with the inner service.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    time::{Duration, SystemTime},
};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use parking_lot::Mutex;
use portcullis_http::{
    Body, BoxError, ConsumerId, RequestId, body, error_response,
    headers::{X_CACHE, X_CACHE_TIER, contains_any},
};
use tracing::debug;

use crate::{
    CacheControl, Decision, Freshness, SURROGATE_TOKEN, StoredMeta, SurrogateControl,
    coalesce::{Coalescer, Flight, Joined},
    decide,
    entry::{StoredResponse, http_date, preferred_encoding, vary_names, vary_value},
    freshness::initial_age,
    key::{self, CacheKey, KeyInput},
    policy::{CacheConfig, RoutePolicy},
    purge::{Attached, Purge},
    range,
    stats::{CacheStats, Outcome, StatsSnapshot},
    storability::{Storable, storable},
    store::MemoryStore,
    tee::{Sink, TeeBody},
    tiered::{SharedLock, TIER_REDIS},
};

/// Sends a request to the origin. Errors are responses (502, 504): the cache treats 5xx as
/// origin errors for `stale-if-error`.
pub trait Fetch: Clone + Send + Sync + 'static {
    /// Sends `req` and returns the response.
    fn fetch(&self, req: Request<Body>) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>>;
}

impl<F, Fut> Fetch for F
where
    F: Fn(Request<Body>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    fn fetch(&self, req: Request<Body>) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>> {
        Box::pin(self(req))
    }
}

/// What the key needs to know about the request beyond its headers.
#[derive(Debug, Clone, Copy)]
pub struct RequestTarget<'a> {
    /// `http` or `https`, as the client used.
    pub scheme: &'a str,
    /// The host the client asked for, without port.
    pub host: &'a str,
    /// The normalized path.
    pub path: &'a str,
}

/// A shared HTTP cache: the memory tier, the in-flight map and the counters.
#[derive(Debug, Clone)]
pub struct Cache {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: CacheConfig,
    pub(crate) store: MemoryStore,
    coalescer: Coalescer,
    /// Keys whose last response could not be stored: skip the lock for a while.
    hit_for_miss: moka::sync::Cache<u128, ()>,
    /// Keys whose origin failed recently: serve stale without asking again.
    backoff: moka::sync::Cache<u128, ()>,
    routes: Mutex<Vec<Arc<RoutePolicy>>>,
    /// The Redis tier, when attached.
    pub(crate) tier: ArcSwapOption<Attached>,
    /// Permits for refresh-ahead requests in flight.
    refresh_slots: Arc<tokio::sync::Semaphore>,
    /// Recent purges, so fills that were under way do not store what was purged.
    pub(crate) purges: crate::purge::PurgeLog,
}

thread_local! {
    /// The hit path builds keys here, so a lookup allocates nothing.
    static KEY_BUFFER: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// A request without `Cache-Control`.
const NO_DIRECTIVES: CacheControl = CacheControl {
    max_age: None,
    s_maxage: None,
    no_store: false,
    no_cache: false,
    private: false,
    public: false,
    must_revalidate: false,
    proxy_revalidate: false,
    immutable: false,
    no_transform: false,
    stale_while_revalidate: None,
    stale_if_error: None,
    min_fresh: None,
    max_stale: None,
    only_if_cached: false,
    must_understand: false,
    withheld_fields: Vec::new(),
};

/// `Age` values up to this many seconds are preformatted (cloning one costs no allocation).
const AGE_VALUES: u64 = 4096;

fn age_value(secs: u64) -> HeaderValue {
    static TABLE: std::sync::OnceLock<Vec<HeaderValue>> = std::sync::OnceLock::new();
    match usize::try_from(secs) {
        Ok(i) if secs < AGE_VALUES => {
            TABLE.get_or_init(|| (0..AGE_VALUES).map(HeaderValue::from).collect())[i].clone()
        }
        _ => HeaderValue::from(secs),
    }
}

static X_CACHE_VALUES: [HeaderValue; 5] = [
    HeaderValue::from_static("HIT"),
    HeaderValue::from_static("MISS"),
    HeaderValue::from_static("STALE"),
    HeaderValue::from_static("BYPASS"),
    HeaderValue::from_static("REVALIDATED"),
];

/// Whether `resp` went out without being stored: a miss or a bypass (a filling miss of a
/// compressible object carries `Vary: Accept-Encoding`, which keeps it out of streaming
/// compression; hits are never compressed on the way out).
fn passed_on(resp: &Response<Body>) -> bool {
    resp.headers()
        .get(X_CACHE)
        .is_some_and(|v| v == "MISS" || v == "BYPASS")
}

fn x_cache(outcome: Outcome) -> HeaderValue {
    let i = match outcome {
        Outcome::Hit => 0,
        Outcome::Miss => 1,
        Outcome::Stale => 2,
        Outcome::Bypass => 3,
        Outcome::Revalidated => 4,
    };
    X_CACHE_VALUES[i].clone()
}

impl Cache {
    /// A cache with `config`.
    pub fn new(config: CacheConfig) -> Self {
        let side_map = |ttl: Duration| {
            moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl.max(Duration::from_millis(1)))
                .build()
        };
        Self {
            inner: Arc::new(Inner {
                store: MemoryStore::new(config.memory_max),
                coalescer: Coalescer::default(),
                hit_for_miss: side_map(config.hit_for_miss),
                backoff: side_map(config.error_backoff),
                routes: Mutex::default(),
                tier: ArcSwapOption::empty(),
                refresh_slots: Arc::new(tokio::sync::Semaphore::new(config.refresh_concurrency)),
                purges: crate::purge::PurgeLog::default(),
                config,
            }),
        }
    }

    pub(crate) fn from_inner(inner: Arc<Inner>) -> Self {
        Self { inner }
    }

    pub(crate) fn downgrade(&self) -> std::sync::Weak<Inner> {
        Arc::downgrade(&self.inner)
    }

    /// Registers a route's policy so its counters appear in [`Cache::stats`].
    pub fn register(&self, policy: RoutePolicy) -> Arc<RoutePolicy> {
        let policy = Arc::new(policy);
        self.inner.routes.lock().push(Arc::clone(&policy));
        policy
    }

    /// Replaces the registered routes (on a config reload): [`Cache::stats`] lists exactly
    /// `policies` from now on. Stored entries stay.
    pub fn set_routes(&self, policies: Vec<Arc<RoutePolicy>>) {
        *self.inner.routes.lock() = policies;
    }

    /// The memory tier.
    pub fn memory(&self) -> &MemoryStore {
        &self.inner.store
    }

    /// Counters per route, totals and memory use.
    pub fn stats(&self) -> CacheStats {
        let routes: Vec<(String, StatsSnapshot)> = self
            .inner
            .routes
            .lock()
            .iter()
            .map(|p| (p.name.to_string(), p.stats.snapshot()))
            .collect();
        let mut total = StatsSnapshot::default();
        for (_, s) in &routes {
            total.add(s);
        }
        CacheStats {
            total,
            routes,
            memory_bytes: self.inner.store.weighted_size(),
            memory_entries: self.inner.store.entry_count(),
            redis: self.tier().map(|t| t.stats()),
        }
    }

    /// Removes every entry carrying `tag` from the memory tier; returns how many keys went.
    /// ([`Cache::purge`] purges every tier and instance.)
    pub fn purge_tag(&self, tag: &str) -> usize {
        self.inner.store.purge_tag(tag)
    }

    /// Removes every entry of the resource at `url` (`scheme://host/path?query`) from the
    /// memory tier.
    pub fn purge_url(&self, url: &str) -> usize {
        self.inner.store.purge_url(url)
    }

    pub(crate) fn now(&self) -> SystemTime {
        self.inner.config.clock.now()
    }

    /// Answers `req` from the cache or through `fetch`, storing what may be stored.
    pub async fn serve<F: Fetch>(
        &self,
        policy: &Arc<RoutePolicy>,
        target: RequestTarget<'_>,
        req: Request<Body>,
        fetch: F,
    ) -> Response<Body> {
        let method = req.method();
        if !policy.enabled {
            return if is_write(method) {
                self.write(policy, target, req, fetch).await
            } else {
                fetch.fetch(req).await
            };
        }
        if method == Method::GET || method == Method::HEAD {
            // What the client would take compressed, for a response the cache passes on
            // without storing (stored ones are compressed once, as variants).
            let coding = match &policy.compress {
                Some(_) if method == Method::GET => preferred_encoding(req.headers()),
                _ => "identity",
            };
            let resp = self.read(policy, target, req, fetch).await;
            match &policy.compress {
                Some(compression) if coding != "identity" && passed_on(&resp) => {
                    crate::compress_stream::compress_passing(compression, coding, resp)
                }
                _ => resp,
            }
        } else if policy.graphql && method == Method::POST {
            Box::pin(self.graphql(policy, target, req, fetch)).await
        } else if is_write(method) {
            self.write(policy, target, req, fetch).await
        } else {
            self.bypass(policy, req, &fetch).await
        }
    }

    async fn bypass<F: Fetch>(
        &self,
        policy: &RoutePolicy,
        req: Request<Body>,
        fetch: &F,
    ) -> Response<Body> {
        let mut resp = fetch.fetch(req).await;
        if policy.enabled {
            policy.stats.record(Outcome::Bypass);
            strip_tag_header(policy, resp.headers_mut());
            resp.headers_mut().insert(X_CACHE, x_cache(Outcome::Bypass));
        }
        resp
    }

    /// Writes go through; a success invalidates the resource (RFC 9111 §4.4), the resources
    /// named by same-host `Location`/`Content-Location`, and the route's write tags.
    async fn write<F: Fetch>(
        &self,
        policy: &RoutePolicy,
        target: RequestTarget<'_>,
        req: Request<Body>,
        fetch: F,
    ) -> Response<Body> {
        let ignore = &policy.key.ignore_query;
        let url = key::resource_url(&key_input(target, req.uri().query(), None), ignore);
        let resp = self.bypass(policy, req, &fetch).await;
        let status = resp.status();
        if status.is_success() || status.is_redirection() {
            let mut purge = Purge {
                urls: vec![url],
                tags: policy
                    .invalidate_tags_on_write
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
                ..Purge::default()
            };
            for name in [header::LOCATION, header::CONTENT_LOCATION] {
                let Some(uri) = resp
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<http::Uri>().ok())
                else {
                    continue;
                };
                if uri
                    .host()
                    .is_none_or(|h| h.eq_ignore_ascii_case(target.host))
                {
                    let path = if uri.path().is_empty() {
                        "/"
                    } else {
                        uri.path()
                    };
                    let input = KeyInput {
                        path,
                        ..key_input(target, uri.query(), None)
                    };
                    purge.urls.push(key::resource_url(&input, ignore));
                }
            }
            let removed = self.purge(&purge).await.removed();
            policy.stats.invalidated(removed);
            debug!(route = %policy.name, url = %purge.urls[0], removed, "write invalidated cached entries");
        }
        resp
    }

    /// A POST on a GraphQL route: queries are cached like GETs (keyed by operation), mutations
    /// go through as writes (invalidating the endpoint's cached queries and the route's tags),
    /// anything else passes through.
    async fn graphql<F: Fetch>(
        &self,
        policy: &Arc<RoutePolicy>,
        target: RequestTarget<'_>,
        req: Request<Body>,
        fetch: F,
    ) -> Response<Body> {
        if content_length(req.headers()).is_some_and(|n| n > GRAPHQL_MAX_BODY) {
            return self.bypass(policy, req, &fetch).await;
        }
        let (parts, body) = req.into_parts();
        let bytes = match collect_limited(body, GRAPHQL_MAX_BODY).await {
            Ok(bytes) => bytes,
            Err(e) => {
                let id = parts.extensions.get::<RequestId>();
                let too_large = e.is::<BodyTooLarge>();
                let (status, message) = if too_large {
                    (
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "GraphQL request body too large",
                    )
                } else {
                    (StatusCode::BAD_REQUEST, "request body could not be read")
                };
                return error_response(status, message, id);
            }
        };
        let operation = crate::graphql::classify(&bytes);
        let mut req = Request::from_parts(parts, body::full(bytes.clone()));
        match operation {
            Some(crate::graphql::Operation::Query { digest }) => {
                req.extensions_mut().insert(GraphqlQuery {
                    digest,
                    body: bytes,
                });
                self.read(policy, target, req, fetch).await
            }
            Some(crate::graphql::Operation::Mutation) => {
                let resp = self.write(policy, target, req, fetch).await;
                if resp.status().is_success() && !policy.tags.is_empty() {
                    let purge = Purge {
                        tags: policy.tags.iter().map(ToString::to_string).collect(),
                        ..Purge::default()
                    };
                    policy.stats.invalidated(self.purge(&purge).await.removed());
                }
                resp
            }
            _ => self.bypass(policy, req, &fetch).await,
        }
    }

    /// Answers a GET or HEAD from the memory tier when a fresh response is stored for it,
    /// without building an owned request or key: the hit path. `None` means the full path
    /// ([`Cache::serve`]) must decide (miss, stale, per-consumer route, request directives).
    pub fn serve_fresh(
        &self,
        policy: &RoutePolicy,
        target: RequestTarget<'_>,
        method: &Method,
        uri: &http::Uri,
        headers: &HeaderMap,
    ) -> Option<Response<Body>> {
        let head = method == Method::HEAD;
        if !policy.enabled
            || policy.per_consumer
            || !(head || method == Method::GET)
            || contains_any(headers, &[header::CACHE_CONTROL, header::PRAGMA])
            || has_cookie(headers, &policy.bypass_cookies)
        {
            return None;
        }
        KEY_BUFFER.with_borrow_mut(|buf| {
            buf.clear();
            key::write(
                buf,
                &key_input(target, uri.query(), None),
                headers,
                &policy.key,
            );
            let slot = self.inner.store.get_raw(key::digest(buf), buf)?;
            let stored = slot.select(headers)?;
            let now = self.now();
            let fresh = decide(&stored.meta, &NO_DIRECTIVES, false, now) == Decision::Fresh
                && !due_for_refresh(policy.refresh_ahead, &stored.meta, now);
            fresh.then(|| self.hit(policy, stored, headers, head, Outcome::Hit, now))
        })
    }

    async fn read<F: Fetch>(
        &self,
        policy: &Arc<RoutePolicy>,
        target: RequestTarget<'_>,
        req: Request<Body>,
        fetch: F,
    ) -> Response<Body> {
        let headers = req.headers();
        if !policy.per_consumer && has_cookie(headers, &policy.bypass_cookies) {
            return self.bypass(policy, req, &fetch).await;
        }
        let consumer = if policy.per_consumer {
            consumer_identity(&req, &policy.bypass_cookies)
        } else {
            None
        };
        let key = key::build(
            &KeyInput {
                operation: req.extensions().get::<GraphqlQuery>().map(|q| q.digest),
                ..key_input(target, req.uri().query(), consumer.as_deref())
            },
            headers,
            &policy.key,
        );
        let req_cc = CacheControl::from_headers(headers);
        let pragma = !headers.contains_key(header::CACHE_CONTROL) && pragma_no_cache(headers);
        let head = req.method() == Method::HEAD;

        let mut found = match self.lookup(&key, headers) {
            Some(stored) => Some(stored),
            None => self.derive_encoded(policy, &key, headers).await,
        };
        // Memory missed: ask Redis, once per key in this instance (concurrent requests wait
        // for the answer, or for the fill that follows a Redis miss).
        let tier = if found.is_none() && !self.inner.hit_for_miss.contains_key(&key.digest) {
            self.tier()
        } else {
            None
        };
        let mut from_redis = false;
        let mut flight = None;
        if let Some(tier) = &tier {
            match self.inner.coalescer.join(key.digest) {
                Joined::Leader(f) => match self.shared_lookup(tier, &key, headers).await {
                    Some(stored) => {
                        found = Some(stored);
                        from_redis = true;
                    }
                    None => flight = Some(f),
                },
                Joined::Waiter(waiter) => {
                    return self
                        .after_wait(policy, key, req, &req_cc, pragma, waiter, fetch)
                        .await;
                }
            }
        }
        let (key, req) = match found {
            Some(stored) => {
                match self
                    .use_stored(
                        policy,
                        key,
                        req,
                        stored,
                        &req_cc,
                        pragma,
                        from_redis,
                        fetch.clone(),
                    )
                    .await
                {
                    Ok(resp) => return resp,
                    Err(back) => back,
                }
            }
            None => (key, req),
        };
        if req_cc.only_if_cached {
            policy.stats.record(Outcome::Miss);
            let id = req.extensions().get::<RequestId>();
            let mut resp = error_response(
                StatusCode::GATEWAY_TIMEOUT,
                "not in cache (only-if-cached)",
                id,
            );
            resp.headers_mut().insert(X_CACHE, x_cache(Outcome::Miss));
            return resp;
        }
        // A HEAD cannot fill the cache, and a range request gets a 206 that is not stored:
        // send them on without taking the key's lock.
        if head
            || req.headers().contains_key(header::RANGE)
            || self.inner.hit_for_miss.contains_key(&key.digest)
        {
            drop(flight);
            return self
                .fill(policy, key, req, &req_cc, None, None, &fetch)
                .await;
        }
        let flight = match flight {
            Some(f) => f,
            None => match self.inner.coalescer.join(key.digest) {
                Joined::Leader(f) => f,
                Joined::Waiter(waiter) => {
                    return self
                        .after_wait(policy, key, req, &req_cc, pragma, waiter, fetch)
                        .await;
                }
            },
        };
        // Coalesce across instances too: one of them fetches, the others read its entry.
        let lock = match &tier {
            Some(tier) => match self.lock_or_wait(tier, &key, req.headers()).await {
                Ok(lock) => lock,
                Err(stored) => {
                    let now = self.now();
                    if decide(&stored.meta, &req_cc, pragma, now) == Decision::Fresh {
                        policy.stats.coalesced();
                        drop(flight);
                        let resp =
                            self.hit(policy, &stored, req.headers(), head, Outcome::Hit, now);
                        return mark_redis(policy, resp, Outcome::Hit);
                    }
                    None
                }
            },
            None => None,
        };
        self.fill(policy, key, req, &req_cc, Some(flight), lock, &fetch)
            .await
    }

    /// Answers from a stored response: fresh or acceptably stale as it is, otherwise after
    /// revalidating it. `Err` hands the request back when it may only be answered from the
    /// cache and the stored response needs revalidation.
    #[allow(clippy::too_many_arguments)]
    async fn use_stored<F: Fetch>(
        &self,
        policy: &Arc<RoutePolicy>,
        key: CacheKey,
        req: Request<Body>,
        stored: Arc<StoredResponse>,
        req_cc: &CacheControl,
        pragma: bool,
        from_redis: bool,
        fetch: F,
    ) -> Result<Response<Body>, (CacheKey, Request<Body>)> {
        let now = self.now();
        let outcome = match decide(&stored.meta, req_cc, pragma, now) {
            Decision::Fresh => {
                if due_for_refresh(policy.refresh_ahead, &stored.meta, now)
                    && let Ok(slot) = Arc::clone(&self.inner.refresh_slots).try_acquire_owned()
                {
                    self.refresh_in_background(policy, &key, &req, &stored, &fetch, Some(slot));
                }
                Outcome::Hit
            }
            Decision::StaleByClient => Outcome::Stale,
            Decision::StaleWhileRevalidate => {
                self.refresh_in_background(policy, &key, &req, &stored, &fetch, None);
                Outcome::Stale
            }
            Decision::Revalidate
                if self.inner.backoff.contains_key(&key.digest)
                    && stored.meta.usable_on_error(req_cc, now) =>
            {
                Outcome::Stale
            }
            Decision::Revalidate if req_cc.only_if_cached => return Err((key, req)),
            Decision::Revalidate => {
                return Ok(self
                    .revalidate(policy, key, req, stored, req_cc, fetch)
                    .await);
            }
        };
        let head = req.method() == Method::HEAD;
        let resp = self.hit(policy, &stored, req.headers(), head, outcome, now);
        Ok(if from_redis {
            mark_redis(policy, resp, outcome)
        } else {
            resp
        })
    }

    /// After waiting for this instance's request in flight for the same key: its result (a
    /// fresh one counts as coalesced), the stored response's usual treatment if stale, or a
    /// fetch of our own.
    #[allow(clippy::too_many_arguments)]
    async fn after_wait<F: Fetch>(
        &self,
        policy: &Arc<RoutePolicy>,
        mut key: CacheKey,
        mut req: Request<Body>,
        req_cc: &CacheControl,
        pragma: bool,
        waiter: crate::coalesce::Waiter,
        fetch: F,
    ) -> Response<Body> {
        if waiter.wait(self.inner.config.lock_timeout).await {
            let mut found = self.lookup(&key, req.headers());
            let mut from_redis = false;
            if found.is_none()
                && !self.memory_enabled()
                && let Some(tier) = self.tier()
            {
                found = self.shared_lookup(&tier, &key, req.headers()).await;
                from_redis = found.is_some();
            }
            if let Some(stored) = found {
                if decide(&stored.meta, req_cc, pragma, self.now()) == Decision::Fresh {
                    policy.stats.coalesced();
                }
                let used = self
                    .use_stored(
                        policy,
                        key,
                        req,
                        stored,
                        req_cc,
                        pragma,
                        from_redis,
                        fetch.clone(),
                    )
                    .await;
                (key, req) = match used {
                    Ok(resp) => return resp,
                    Err(back) => back,
                };
            }
        }
        self.fill(policy, key, req, req_cc, None, None, &fetch)
            .await
    }

    /// Compresses a stored identity response for the coding this client prefers, stores the
    /// result as a variant and returns it (once per object and coding; later hits find it).
    /// A body that does not shrink is stored as is under that coding's variant.
    async fn derive_encoded(
        &self,
        policy: &RoutePolicy,
        key: &CacheKey,
        req: &HeaderMap,
    ) -> Option<Arc<StoredResponse>> {
        policy.compress.as_ref()?;
        let coding = preferred_encoding(req);
        if coding == "identity" {
            return None;
        }
        let slot = self.inner.store.get(key)?;
        let source = slot
            .variants
            .iter()
            .find(|v| v.compressible && v.matches_except(req, &header::ACCEPT_ENCODING))?
            .clone();
        let body = source.body.clone();
        let encoded = if body.len() > INLINE_COMPRESS_MAX {
            tokio::task::spawn_blocking(move || crate::compress::encode(coding, &body))
                .await
                .ok()
                .flatten()
        } else {
            crate::compress::encode(coding, &body)
        };
        let mut variant = StoredResponse {
            compressible: false,
            derived: true,
            ..StoredResponse::clone(&source)
        };
        if let Some(encoded) = encoded.filter(|e| e.len() < source.body.len()) {
            let h = &mut variant.headers;
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(coding));
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(encoded.len()));
            crate::compress::weaken_etag(h);
            variant.body = encoded;
        }
        for (name, value) in &mut variant.vary {
            if *name == header::ACCEPT_ENCODING {
                *value = Some(coding.to_owned());
            }
        }
        let variant = Arc::new(variant.seal());
        self.inner.store.insert(key, Arc::clone(&variant));
        let since = self.purge_mark();
        self.share(key, &variant, None, since);
        debug!(route = %policy.name, key = %key.readable, coding, "stored a compressed variant");
        Some(variant)
    }

    fn lookup(&self, key: &CacheKey, headers: &HeaderMap) -> Option<Arc<StoredResponse>> {
        self.inner.store.get(key)?.select(headers).cloned()
    }

    /// A response built from a stored one: `Age`, `X-Cache`, and a 304 when the request's
    /// validators match.
    fn hit(
        &self,
        policy: &RoutePolicy,
        stored: &StoredResponse,
        req_headers: &HeaderMap,
        head: bool,
        outcome: Outcome,
        now: SystemTime,
    ) -> Response<Body> {
        policy.stats.record(outcome);
        let age = age_value(stored.meta.age(now).as_secs());
        if stored.status == StatusCode::OK && not_modified(req_headers, &stored.headers) {
            let mut resp = not_modified_response(&stored.headers);
            let h = resp.headers_mut();
            h.insert(header::AGE, age);
            h.insert(X_CACHE, x_cache(outcome));
            return resp;
        }
        let range =
            if stored.status == StatusCode::OK && contains_any(req_headers, &[header::RANGE]) {
                range::requested(req_headers, &stored.headers, stored.body.len() as u64)
            } else {
                None
            };
        let (status, bytes) = match &range {
            Some(range::Requested::Satisfiable(r)) => (
                StatusCode::PARTIAL_CONTENT,
                stored.body.slice(r.start as usize..=r.end as usize),
            ),
            Some(range::Requested::Unsatisfiable) => {
                (StatusCode::RANGE_NOT_SATISFIABLE, Bytes::new())
            }
            None => (stored.status, stored.body.clone()),
        };
        let body = if head {
            body::empty()
        } else {
            body::full(bytes.clone())
        };
        let mut resp = Response::new(body);
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        *h = stored.headers.clone();
        h.insert(header::AGE, age);
        if outcome != Outcome::Hit {
            h.insert(X_CACHE, x_cache(outcome));
        }
        if let Some(range) = range {
            h.insert(
                header::CONTENT_RANGE,
                range.content_range(stored.body.len() as u64),
            );
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        }
        resp
    }

    /// Fetches from the origin and stores the response if allowed. With a `flight`, the
    /// client's own validators are held back so the origin sends a full, storable response;
    /// they are answered from that response afterwards.
    #[allow(clippy::too_many_arguments)]
    async fn fill<F: Fetch>(
        &self,
        policy: &Arc<RoutePolicy>,
        key: CacheKey,
        mut req: Request<Body>,
        req_cc: &CacheControl,
        flight: Option<Flight>,
        lock: Option<SharedLock>,
        fetch: &F,
    ) -> Response<Body> {
        policy.stats.record(Outcome::Miss);
        let method = read_method(&req);
        let req_headers = req.headers().clone();
        if flight.is_some() {
            remove_conditionals(req.headers_mut());
        }
        advertise_surrogate(req.headers_mut());
        let since = self.purge_mark();
        let request_time = self.now();
        let resp = fetch.fetch(req).await;
        let response_time = self.now();
        let a = Admission {
            policy,
            key,
            method: &method,
            req_headers: &req_headers,
            req_cc,
            request_time,
            response_time,
            since,
        };
        let resp = self.admit_miss(&a, resp, flight, lock);
        if resp.status() == StatusCode::OK && not_modified(&req_headers, resp.headers()) {
            // The client already has it: finish storing in the background, answer 304.
            let (parts, body) = resp.into_parts();
            tokio::spawn(drain(body));
            let mut answer = not_modified_response(&parts.headers);
            answer.headers_mut().insert(X_CACHE, x_cache(Outcome::Miss));
            return answer;
        }
        resp
    }

    /// Decides whether `resp` is stored; returns the response to send on (its body tees into
    /// the store when it is).
    fn admit(
        &self,
        a: &Admission<'_>,
        resp: Response<Body>,
        flight: Option<Flight>,
        lock: Option<SharedLock>,
    ) -> Response<Body> {
        let policy = a.policy;
        let (mut parts, body) = resp.into_parts();
        let tags = take_tags(policy, &mut parts.headers);
        let cc = response_directives(&mut parts.headers);
        let allow = Storable {
            per_consumer: policy.per_consumer && a.key.per_consumer,
            route_ttl: policy.ttl.is_some(),
        };
        let verdict = storable(
            a.method,
            a.req_headers,
            a.req_cc,
            parts.status,
            &parts.headers,
            &cc,
            allow,
        );
        let max = self.inner.config.max_object_size;
        let too_large = content_length(&parts.headers).is_some_and(|n| n > max);
        let meta = self.meta_for(
            policy,
            parts.status,
            &parts.headers,
            &cc,
            a.request_time,
            a.response_time,
        );
        let reason = match (verdict, too_large, &meta) {
            (Err(reason), _, _) => Some(reason.as_str()),
            (_, true, _) => Some("too large"),
            (_, _, None) => Some("no freshness and no validators"),
            _ => None,
        };
        if let Some(reason) = reason {
            policy.stats.not_stored();
            debug!(route = %policy.name, key = %a.key.readable, reason, "response not stored");
            if flight.is_some() && !parts.status.is_server_error() {
                self.inner.hit_for_miss.insert(a.key.digest, ());
            }
            return Response::from_parts(parts, body);
        }
        let Some((meta, retain)) = meta else {
            return Response::from_parts(parts, body);
        };
        let compressible = policy
            .compress
            .as_ref()
            .is_some_and(|c| c.applies(parts.status, &parts.headers, &cc));
        if compressible {
            // The gateway will serve this URL in several codings from now on.
            parts
                .headers
                .append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        }
        let mut stored_headers = parts.headers.clone();
        stored_headers.remove(header::AGE);
        for field in &cc.withheld_fields {
            if let Ok(name) = HeaderName::from_bytes(field.as_bytes()) {
                stored_headers.remove(name);
            }
        }
        let template = StoredResponse {
            status: parts.status,
            headers: stored_headers,
            body: Bytes::new(),
            meta,
            vary: vary_names(&parts.headers)
                .into_iter()
                .map(|name| {
                    let value = if compressible && name == header::ACCEPT_ENCODING {
                        Some("identity".to_owned())
                    } else {
                        vary_value(a.req_headers, &name)
                    };
                    (name, value)
                })
                .collect(),
            tags,
            retain,
            compressible,
            derived: false,
        };
        let job = StoreJob {
            cache: self.clone(),
            policy: Arc::clone(policy),
            key: a.key.clone(),
            template,
            flight,
            lock,
            since: a.since,
        };
        Response::from_parts(parts, body::boxed(TeeBody::new(body, max, job)))
    }

    /// [`Cache::admit`] for a response fetched on a miss: marked `X-Cache: MISS`.
    fn admit_miss(
        &self,
        a: &Admission<'_>,
        resp: Response<Body>,
        flight: Option<Flight>,
        lock: Option<SharedLock>,
    ) -> Response<Body> {
        let mut resp = self.admit(a, resp, flight, lock);
        resp.headers_mut().insert(X_CACHE, x_cache(Outcome::Miss));
        resp
    }

    /// Freshness facts and retention for a response, or `None` when storing it would be
    /// useless (no lifetime, no validators, no stale allowance).
    fn meta_for(
        &self,
        policy: &RoutePolicy,
        status: StatusCode,
        headers: &HeaderMap,
        cc: &CacheControl,
        request_time: SystemTime,
        response_time: SystemTime,
    ) -> Option<(StoredMeta, Duration)> {
        let config = &self.inner.config;
        let freshness = Freshness::of(status, headers, cc, response_time, &config.heuristic);
        let lifetime = match policy.ttl {
            Some(ttl) if policy.ttl_override || !Freshness::is_explicit(headers, cc) => ttl,
            _ => freshness.lifetime,
        };
        let initial_age = initial_age(headers, request_time, response_time);
        let secs = |v: Option<u64>, default: Duration| v.map_or(default, Duration::from_secs);
        let must_revalidate = cc.must_revalidate || cc.proxy_revalidate || cc.s_maxage.is_some();
        let meta = StoredMeta {
            response_time,
            initial_age,
            lifetime,
            no_cache: cc.no_cache,
            must_revalidate,
            stale_while_revalidate: secs(cc.stale_while_revalidate, policy.stale_while_revalidate),
            stale_if_error: secs(cc.stale_if_error, policy.stale_if_error),
        };
        let validators = headers.contains_key(header::ETAG)
            || headers.contains_key(header::LAST_MODIFIED)
            || policy.etag;
        let fresh_for = lifetime.saturating_sub(initial_age);
        let stale_use = if must_revalidate {
            Duration::ZERO
        } else {
            meta.stale_while_revalidate.max(meta.stale_if_error)
        };
        // Stale copies are kept a while for revalidation (with validators), for `max-stale`
        // requests and for stale-if-error; not when they may never be used stale.
        let keep = if validators || !must_revalidate {
            config.keep_stale
        } else {
            Duration::ZERO
        };
        let retain = fresh_for + stale_use.max(keep);
        if retain.is_zero() || (fresh_for.is_zero() && !validators && stale_use.is_zero()) {
            return None;
        }
        Some((meta, retain))
    }

    /// Validates a stale response with the origin (one request per key; concurrent requests
    /// wait for it), serving it stale if the origin fails and that is allowed.
    async fn revalidate<F: Fetch>(
        &self,
        policy: &Arc<RoutePolicy>,
        key: CacheKey,
        mut req: Request<Body>,
        stored: Arc<StoredResponse>,
        req_cc: &CacheControl,
        fetch: F,
    ) -> Response<Body> {
        let head = req.method() == Method::HEAD;
        let flight = match self.inner.coalescer.join(key.digest) {
            Joined::Leader(flight) => Some(flight),
            Joined::Waiter(waiter) => {
                if waiter.wait(self.inner.config.lock_timeout).await {
                    let now = self.now();
                    if let Some(fresh) = self.lookup(&key, req.headers())
                        && decide(&fresh.meta, req_cc, false, now) == Decision::Fresh
                    {
                        policy.stats.coalesced();
                        return self.hit(policy, &fresh, req.headers(), head, Outcome::Hit, now);
                    }
                }
                None
            }
        };
        let req_headers = req.headers().clone();
        let method = read_method(&req);
        let sent_validators = add_validators(req.headers_mut(), &stored);
        advertise_surrogate(req.headers_mut());
        let since = self.purge_mark();
        let request_time = self.now();
        let resp = fetch.fetch(req).await;
        let response_time = self.now();
        // A 304, or a 200 to a HEAD whose validators match the stored GET response
        // (RFC 9111 §4.3.5): the stored response is freshened with the new metadata.
        let head_confirms = head
            && resp.status() == StatusCode::OK
            && validators_agree(&stored.headers, resp.headers());
        if (resp.status() == StatusCode::NOT_MODIFIED && sent_validators) || head_confirms {
            let fresh = self.freshen(
                policy,
                &key,
                &stored,
                resp.headers(),
                request_time,
                response_time,
            );
            drop(flight);
            return self.hit(
                policy,
                &fresh,
                &req_headers,
                head,
                Outcome::Revalidated,
                response_time,
            );
        }
        if resp.status().is_server_error() && stored.meta.usable_on_error(req_cc, response_time) {
            self.inner.backoff.insert(key.digest, ());
            debug!(route = %policy.name, key = %key.readable, status = %resp.status(),
                   "origin failed; serving stale");
            return self.hit(
                policy,
                &stored,
                &req_headers,
                head,
                Outcome::Stale,
                response_time,
            );
        }
        policy.stats.record(Outcome::Miss);
        let a = Admission {
            policy,
            key,
            method: &method,
            req_headers: &req_headers,
            req_cc,
            request_time,
            response_time,
            since,
        };
        self.admit_miss(&a, resp, flight, None)
    }

    /// Starts one background refresh for `key` unless one is running or the origin is in
    /// back-off.
    fn refresh_in_background<F: Fetch>(
        &self,
        policy: &Arc<RoutePolicy>,
        key: &CacheKey,
        req: &Request<Body>,
        stored: &Arc<StoredResponse>,
        fetch: &F,
        slot: Option<tokio::sync::OwnedSemaphorePermit>,
    ) {
        if self.inner.backoff.contains_key(&key.digest) {
            return;
        }
        let Some(flight) = self.inner.coalescer.try_lead(key.digest) else {
            return;
        };
        let graphql = req.extensions().get::<GraphqlQuery>().cloned();
        let mut refresh = Request::new(
            graphql
                .as_ref()
                .map_or_else(body::empty, |q| body::full(q.body.clone())),
        );
        *refresh.method_mut() = if graphql.is_some() {
            Method::POST
        } else {
            Method::GET
        };
        if let Some(q) = graphql {
            refresh.extensions_mut().insert(q);
        }
        *refresh.uri_mut() = req.uri().clone();
        *refresh.version_mut() = req.version();
        *refresh.headers_mut() = req.headers().clone();
        if let Some(id) = req.extensions().get::<RequestId>() {
            refresh.extensions_mut().insert(id.clone());
        }
        let req_headers = req.headers().clone();
        let req_cc = CacheControl::from_headers(&req_headers);
        let sent_validators = add_validators(refresh.headers_mut(), stored);
        advertise_surrogate(refresh.headers_mut());
        let (this, policy, key, stored, fetch) = (
            self.clone(),
            Arc::clone(policy),
            key.clone(),
            Arc::clone(stored),
            fetch.clone(),
        );
        tokio::spawn(async move {
            // Held for the whole refresh: caps refresh-ahead requests in flight.
            let _slot = slot;
            let since = this.purge_mark();
            let request_time = this.now();
            let resp = fetch.fetch(refresh).await;
            let response_time = this.now();
            if resp.status() == StatusCode::NOT_MODIFIED && sent_validators {
                this.freshen(
                    &policy,
                    &key,
                    &stored,
                    resp.headers(),
                    request_time,
                    response_time,
                );
                return;
            }
            if resp.status().is_server_error() {
                this.inner.backoff.insert(key.digest, ());
                return;
            }
            let a = Admission {
                policy: &policy,
                key,
                method: &Method::GET,
                req_headers: &req_headers,
                req_cc: &req_cc,
                request_time,
                response_time,
                since,
            };
            let resp = this.admit(&a, resp, Some(flight), None);
            drain(resp.into_body()).await;
        });
    }

    /// Applies a 304's headers to a stored response (RFC 9111 §3.2 and §4.3.4) and stores the
    /// result in its place.
    fn freshen(
        &self,
        policy: &RoutePolicy,
        key: &CacheKey,
        stored: &Arc<StoredResponse>,
        new: &HeaderMap,
        request_time: SystemTime,
        response_time: SystemTime,
    ) -> Arc<StoredResponse> {
        // A 304 whose ETag names another representation updates nothing (RFC 9111 §4.3.4);
        // the stored response is used as it is.
        if let Some(etag) = new.get(header::ETAG)
            && !stored
                .etag()
                .is_some_and(|mine| same_entity_tag(mine.as_bytes(), etag.as_bytes()))
        {
            debug!(key = %key.readable, "304 with another ETag; stored response not updated");
            return Arc::clone(stored);
        }
        let mut headers = stored.headers.clone();
        for name in new.keys() {
            if matches!(
                *name,
                header::CONTENT_LENGTH
                    | header::CONTENT_ENCODING
                    | header::TRANSFER_ENCODING
                    | header::CONTENT_RANGE
            ) || *name == X_CACHE
                || *name == CONTENT_MD5
                || (stored.derived && *name == header::ETAG)
                || policy.tag_header.as_ref() == Some(name)
            {
                continue;
            }
            headers.remove(name);
            for v in new.get_all(name) {
                headers.append(name.clone(), v.clone());
            }
        }
        let cc = response_directives(&mut headers);
        for field in &cc.withheld_fields {
            if let Ok(name) = HeaderName::from_bytes(field.as_bytes()) {
                headers.remove(name);
            }
        }
        let age_source = headers.clone();
        headers.remove(header::AGE);
        let (meta, retain) = self
            .meta_for(
                policy,
                stored.status,
                &age_source,
                &cc,
                request_time,
                response_time,
            )
            .unwrap_or((stored.meta, stored.retain));
        let fresh = Arc::new(
            StoredResponse {
                headers,
                meta,
                retain,
                ..StoredResponse::clone(stored)
            }
            .seal(),
        );
        self.inner.store.replace_variant(key, stored, &fresh);
        let since = self.purge_mark();
        self.share(key, &fresh, None, since);
        fresh
    }
}

/// Whether a fresh response read at `now` is in the last `fraction` of its freshness lifetime
/// (refresh-ahead; `fraction` 0 is off).
pub(crate) fn due_for_refresh(fraction: f64, meta: &StoredMeta, now: SystemTime) -> bool {
    if fraction <= 0.0 {
        return false;
    }
    let left = meta.lifetime.saturating_sub(meta.age(now));
    left.as_secs_f64() < meta.lifetime.as_secs_f64() * fraction
}

/// Marks a response read from the Redis tier and counts it by `outcome`.
fn mark_redis(policy: &RoutePolicy, mut resp: Response<Body>, outcome: Outcome) -> Response<Body> {
    policy.stats.redis_hit(outcome == Outcome::Stale);
    resp.headers_mut().insert(X_CACHE_TIER, TIER_REDIS);
    resp
}

/// Inputs of one admission decision.
struct Admission<'a> {
    policy: &'a Arc<RoutePolicy>,
    key: CacheKey,
    method: &'a Method,
    req_headers: &'a HeaderMap,
    req_cc: &'a CacheControl,
    request_time: SystemTime,
    response_time: SystemTime,
    /// The purge log's mark when the origin request was sent.
    since: u64,
}

/// Finishes a store when the teed body ends.
struct StoreJob {
    cache: Cache,
    policy: Arc<RoutePolicy>,
    key: CacheKey,
    template: StoredResponse,
    /// Held until the entry is in the store, so waiters find it when they wake.
    flight: Option<Flight>,
    /// The Redis fill lock, held until the entry is in Redis.
    lock: Option<SharedLock>,
    /// The purge log's mark when the origin request was sent: a purge matching the response
    /// since then means it may predate the change the purge announced, so it is not stored.
    since: u64,
}

impl Sink for StoreJob {
    fn complete(mut self, body: Bytes) {
        if self.policy.etag && !self.template.headers.contains_key(header::ETAG) {
            let tag = format!("\"{:032x}\"", xxhash_rust::xxh3::xxh3_128(&body));
            if let Ok(v) = HeaderValue::from_str(&tag) {
                self.template.headers.insert(header::ETAG, v);
            }
        }
        if self.template.compressible
            && self
                .policy
                .compress
                .as_ref()
                .is_none_or(|c| (body.len() as u64) < c.min_size)
        {
            // Too small to compress after all: one variant for every client.
            self.template.compressible = false;
            self.template
                .vary
                .retain(|(name, _)| name != header::ACCEPT_ENCODING);
        }
        self.template.body = body;
        if self
            .cache
            .purged_since(self.since, self.key.url(), &self.template.tags)
        {
            self.policy.stats.not_stored();
            debug!(route = %self.policy.name, key = %self.key.readable, "purged while it was fetched; not stored");
            return;
        }
        let stored = Arc::new(self.template.seal());
        let inner = &self.cache.inner;
        if self.cache.memory_enabled() {
            inner.store.insert(&self.key, Arc::clone(&stored));
        }
        inner.hit_for_miss.invalidate(&self.key.digest);
        inner.backoff.invalidate(&self.key.digest);
        self.policy.stats.stored();
        drop(self.flight);
        self.cache.share(&self.key, &stored, self.lock, self.since);
    }

    fn abandon(self, too_large: bool) {
        self.policy.stats.not_stored();
        if too_large && self.flight.is_some() {
            self.cache.inner.hit_for_miss.insert(self.key.digest, ());
        }
        debug!(route = %self.policy.name, key = %self.key.readable, too_large, "response not stored");
    }
}

const SURROGATE_CONTROL: HeaderName = HeaderName::from_static("surrogate-control");
const SURROGATE_CAPABILITY: HeaderName = HeaderName::from_static("surrogate-capability");

/// The response directives this cache applies: `Cache-Control`, overridden by a
/// `Surrogate-Control` meant for this cache, which is then removed (it is for surrogates only).
fn response_directives(headers: &mut HeaderMap) -> CacheControl {
    let cc = CacheControl::from_headers(headers);
    match SurrogateControl::from_headers(headers) {
        Some(sc) => {
            headers.remove(SURROGATE_CONTROL);
            sc.apply(&cc)
        }
        None => cc,
    }
}

/// Tells the origin this cache honours `Surrogate-Control` targeted at its token.
fn advertise_surrogate(headers: &mut HeaderMap) {
    static VALUE: std::sync::OnceLock<HeaderValue> = std::sync::OnceLock::new();
    let value = VALUE.get_or_init(|| {
        HeaderValue::from_str(&format!("{SURROGATE_TOKEN}=\"Surrogate/1.0\""))
            .unwrap_or_else(|_| HeaderValue::from_static("portcullis=\"Surrogate/1.0\""))
    });
    headers.append(SURROGATE_CAPABILITY, value.clone());
}

/// `Content-MD5` describes the stored bytes; a 304 never replaces it (the stored body stays).
const CONTENT_MD5: HeaderName = HeaderName::from_static("content-md5");

/// Whether `method` is not known to be safe, so a success invalidates (RFC 9111 §4.4:
/// "including methods whose safety is unknown"). Safe: GET, HEAD, OPTIONS, TRACE.
pub fn is_write(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

async fn drain(body: Body) {
    if let Err(e) = body.collect().await {
        debug!(error = %e, "background fill failed");
    }
}

fn key_input<'a>(
    target: RequestTarget<'a>,
    query: Option<&'a str>,
    consumer: Option<&'a str>,
) -> KeyInput<'a> {
    KeyInput {
        scheme: target.scheme,
        host: target.host,
        path: target.path,
        query,
        consumer,
        operation: None,
    }
}

/// Marks a GraphQL query read from a POST body: the operation digest for the key, and the
/// body to send again for background refreshes.
#[derive(Debug, Clone)]
struct GraphqlQuery {
    digest: u128,
    body: Bytes,
}

/// Larger bodies are compressed on the blocking pool rather than on the request's thread.
const INLINE_COMPRESS_MAX: usize = 64 * 1024;

/// Bodies of GraphQL requests are read whole to classify them; larger ones pass through.
const GRAPHQL_MAX_BODY: u64 = 1 << 20;

/// Reads a body whole, up to `limit` bytes. Boxed as a `dyn Future + Send` here, in a
/// non-generic function: inside the generic `serve` future the compiler's higher-ranked `Send`
/// check on `Box<dyn Error>` fails (rust-lang/rust#102211).
fn collect_limited(
    body: Body,
    limit: u64,
) -> Pin<Box<dyn Future<Output = Result<Bytes, BoxError>> + Send>> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    Box::pin(async move {
        let mut body = body;
        let mut out = bytes::BytesMut::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                if out.len() + data.len() > limit {
                    return Err(BoxError::from(BodyTooLarge));
                }
                out.extend_from_slice(&data);
            }
        }
        Ok(out.freeze())
    })
}

/// A body over the limit of [`collect_limited`].
#[derive(Debug)]
struct BodyTooLarge;

impl std::fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("body too large")
    }
}

impl std::error::Error for BodyTooLarge {}

/// The method a request counts as for storage: a GraphQL query is a read.
fn read_method(req: &Request<Body>) -> Method {
    if req.extensions().get::<GraphqlQuery>().is_some() {
        Method::GET
    } else {
        req.method().clone()
    }
}

/// The consumer a per-consumer key belongs to: the authenticated consumer id; else a digest of
/// the credentials (`Authorization`, session cookies), so the key holds no secret; else none.
fn consumer_identity(req: &Request<Body>, session_cookies: &[String]) -> Option<String> {
    if let Some(ConsumerId(id)) = req.extensions().get::<ConsumerId>() {
        return Some(format!("id:{id}"));
    }
    let digest = |bytes: &[u8]| xxhash_rust::xxh3::xxh3_128(bytes);
    if let Some(auth) = req.headers().get(header::AUTHORIZATION) {
        return Some(format!("auth:{:032x}", digest(auth.as_bytes())));
    }
    session_cookies
        .iter()
        .find_map(|name| key::cookie(req.headers(), name))
        .map(|value| format!("session:{:032x}", digest(value.as_bytes())))
}

fn has_cookie(headers: &HeaderMap, names: &[String]) -> bool {
    !names.is_empty() && names.iter().any(|n| key::cookie(headers, n).is_some())
}

fn pragma_no_cache(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::PRAGMA)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|d| d.trim().eq_ignore_ascii_case("no-cache"))
        })
}

/// The `Content-Length` a message declares, when it is one valid number.
pub(crate) fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn strip_tag_header(policy: &RoutePolicy, headers: &mut HeaderMap) {
    if let Some(name) = &policy.tag_header {
        headers.remove(name);
    }
}

/// The route's tags plus those the origin sent, with the origin's header removed.
fn take_tags(policy: &RoutePolicy, headers: &mut HeaderMap) -> Vec<Arc<str>> {
    let mut tags = policy.tags.clone();
    if let Some(name) = &policy.tag_header {
        for v in headers.get_all(name) {
            let Ok(text) = v.to_str() else { continue };
            for t in text.split([' ', ',']).filter(|t| !t.is_empty()) {
                if !tags.iter().any(|x| &**x == t) {
                    tags.push(Arc::from(t));
                }
            }
        }
        headers.remove(name);
    }
    tags
}

const CONDITIONALS: [HeaderName; 2] = [header::IF_NONE_MATCH, header::IF_MODIFIED_SINCE];

fn remove_conditionals(headers: &mut HeaderMap) {
    for name in &CONDITIONALS {
        headers.remove(name);
    }
}

/// Replaces the client's validators with the stored response's; returns whether any were set.
fn add_validators(headers: &mut HeaderMap, stored: &StoredResponse) -> bool {
    remove_conditionals(headers);
    let mut any = false;
    if let Some(etag) = stored.etag() {
        headers.insert(header::IF_NONE_MATCH, etag.clone());
        any = true;
    }
    if let Some(lm) = stored.headers.get(header::LAST_MODIFIED) {
        headers.insert(header::IF_MODIFIED_SINCE, lm.clone());
        any = true;
    }
    any
}

/// Whether a GET with `req` validators may be answered 304 for a 200 with `resp` headers
/// (RFC 9110 §13.1.2, §13.1.3): `If-None-Match` (weak comparison) takes precedence over
/// `If-Modified-Since`.
fn not_modified(req: &HeaderMap, resp: &HeaderMap) -> bool {
    if !contains_any(req, &[header::IF_NONE_MATCH, header::IF_MODIFIED_SINCE]) {
        return false;
    }
    if req.contains_key(header::IF_NONE_MATCH) {
        // Compared as bytes: entity tags may carry obs-text, which `to_str` refuses.
        let Some(etag) = resp.get(header::ETAG) else {
            return false;
        };
        return req
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .any(|t| t.trim_ascii() == b"*" || same_entity_tag(t, etag.as_bytes()));
    }
    let Some(since) = http_date(req, header::IF_MODIFIED_SINCE) else {
        return false;
    };
    // Without Last-Modified, the response's Date stands in (RFC 9111 §4.3.2).
    http_date(resp, header::LAST_MODIFIED)
        .or_else(|| http_date(resp, header::DATE))
        .is_some_and(|modified| modified <= since)
}

/// Weak comparison of two entity tags (RFC 9110 §8.8.3.2): equal once a `W/` prefix and
/// surrounding whitespace are ignored. Bytes, not text: tags may carry obs-text.
fn same_entity_tag(a: &[u8], b: &[u8]) -> bool {
    fn opaque(t: &[u8]) -> &[u8] {
        let t = t.trim_ascii();
        t.strip_prefix(b"W/").unwrap_or(t)
    }
    opaque(a) == opaque(b)
}

/// Whether a response's validators name the same representation as a stored response's: the
/// same entity tag (weakly compared) or, without tags, the same `Last-Modified` or none at all.
fn validators_agree(stored: &HeaderMap, new: &HeaderMap) -> bool {
    match (new.get(header::ETAG), stored.get(header::ETAG)) {
        (Some(a), Some(b)) => same_entity_tag(a.as_bytes(), b.as_bytes()),
        (Some(_), None) | (None, Some(_)) => false,
        // Without tags: the same Last-Modified, or none on either side (then the one stored
        // response is the one, RFC 9111 §4.3.4).
        (None, None) => new.get(header::LAST_MODIFIED) == stored.get(header::LAST_MODIFIED),
    }
}

/// A 304 carrying the fields RFC 9110 §15.4.5 requires from the 200 it stands for.
fn not_modified_response(headers: &HeaderMap) -> Response<Body> {
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = StatusCode::NOT_MODIFIED;
    let out = resp.headers_mut();
    for name in [
        header::CACHE_CONTROL,
        header::CONTENT_LOCATION,
        header::DATE,
        header::ETAG,
        header::EXPIRES,
        header::VARY,
        header::LAST_MODIFIED,
    ] {
        for v in headers.get_all(&name) {
            out.append(name.clone(), v.clone());
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    #[test]
    fn if_none_match_uses_weak_comparison_and_beats_if_modified_since() {
        let resp = h(&[
            ("etag", "W/\"v1\""),
            ("last-modified", "Mon, 01 Jan 2024 00:00:00 GMT"),
        ]);
        assert!(not_modified(&h(&[("if-none-match", "\"v1\"")]), &resp));
        assert!(not_modified(
            &h(&[("if-none-match", "\"x\", W/\"v1\"")]),
            &resp
        ));
        assert!(not_modified(&h(&[("if-none-match", "*")]), &resp));
        assert!(!not_modified(&h(&[("if-none-match", "\"v2\"")]), &resp));
        // If-None-Match present: If-Modified-Since is ignored even if it would match.
        let both = h(&[
            ("if-none-match", "\"v2\""),
            ("if-modified-since", "Tue, 02 Jan 2024 00:00:00 GMT"),
        ]);
        assert!(!not_modified(&both, &resp));
        assert!(not_modified(
            &h(&[("if-modified-since", "Mon, 01 Jan 2024 00:00:00 GMT")]),
            &resp
        ));
        assert!(!not_modified(
            &h(&[("if-modified-since", "Sun, 31 Dec 2023 00:00:00 GMT")]),
            &resp
        ));
        assert!(!not_modified(&HeaderMap::new(), &resp));
    }

    #[test]
    fn refresh_ahead_is_due_only_in_the_last_fraction_of_freshness() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let meta = StoredMeta {
            response_time: t0,
            initial_age: Duration::ZERO,
            lifetime: Duration::from_secs(100),
            no_cache: false,
            must_revalidate: false,
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
        };
        let at = |s| t0 + Duration::from_secs(s);
        assert!(!due_for_refresh(0.1, &meta, at(89)));
        assert!(due_for_refresh(0.1, &meta, at(91)));
        assert!(!due_for_refresh(0.0, &meta, at(99)), "0 is off");
        assert!(due_for_refresh(0.5, &meta, at(51)));
    }

    #[test]
    fn origin_tags_are_collected_and_the_header_removed() {
        let mut policy = RoutePolicy::new("r");
        policy.tags = vec![Arc::from("route")];
        let mut headers = h(&[("surrogate-key", "a b,c"), ("surrogate-key", "route")]);
        let tags = take_tags(&policy, &mut headers);
        let names: Vec<&str> = tags.iter().map(|t| &**t).collect();
        assert_eq!(names, ["route", "a", "b", "c"]);
        assert!(headers.is_empty());
    }
}
