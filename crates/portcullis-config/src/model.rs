//! The configuration model: plain serde types, one per TOML table, with defaults.
//!
//! Every table denies unknown keys, so a typo is an error (with a "did you mean") instead of a
//! silently ignored setting. Fields that other fields refer to, or whose validation needs a
//! location, are wrapped in [`Spanned`] so errors can point at them.

use std::{net::SocketAddr, path::PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::units::{ByteSize, Duration};

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The public listener and connection handling.
    #[serde(default)]
    pub server: ServerConfig,
    /// Named groups of upstream targets.
    #[serde(default)]
    pub upstreams: Vec<UpstreamConfig>,
    /// Routes from requests to upstreams; the most specific match wins.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// The response cache shared by every route with a `cache` table.
    #[serde(default)]
    pub cache: CacheConfig,
    /// The admin listener (metrics, health, admin API); absent, there is none.
    pub admin: Option<AdminConfig>,
    /// Logging: the access log.
    #[serde(default)]
    pub log: LogConfig,
    /// SLO alert evaluation and notification.
    #[serde(default)]
    pub alerts: AlertsConfig,
    /// OpenTelemetry span export over OTLP/HTTP (builds with the `otel` feature); absent: none.
    pub otlp: Option<Spanned<OtlpConfig>>,
    /// Redis shared by every instance; absent: memory only and local limits.
    pub redis: Option<crate::RedisTable>,
    /// Settings for every rate-limited route.
    #[serde(default)]
    pub rate_limit: crate::RateLimitDefaults,
    /// Named consumers with tiers, groups and API key hashes (see `security.rs`).
    #[serde(default)]
    pub consumers: Vec<crate::ConsumerConfig>,
    /// How credentials are read (see `security.rs`).
    #[serde(default)]
    pub auth: crate::AuthConfig,
    /// Client address rules for every route (see `security.rs`).
    #[serde(default)]
    pub ip_rules: crate::IpRulesConfig,
    /// `User-Agent` rules for every route (see `security.rs`).
    #[serde(default)]
    pub bot_rules: Option<crate::BotRulesConfig>,
    /// CORS for every route without its own (see `security.rs`).
    #[serde(default)]
    pub cors: Option<crate::CorsConfig>,
    /// Security headers for every route (see `security.rs`).
    #[serde(default)]
    pub security_headers: Option<crate::SecurityHeadersConfig>,
    /// Request limits for every route (see `security.rs`).
    #[serde(default)]
    pub request_limits: crate::RequestLimitsConfig,
}

/// `[log]`: the access log (diagnostic logs go to stderr, filtered by `PORTCULLIS_LOG`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Diagnostic log filter (`info`, `warn,portcullis_proxy=debug`, ...); `PORTCULLIS_LOG`
    /// and then `RUST_LOG` override it.
    pub level: Option<Spanned<String>>,
    /// Access log format: one line per request, written when its response has been sent.
    pub access: AccessLogFormat,
    /// Where access lines go; absent: standard output.
    pub access_file: Option<Spanned<PathBuf>>,
}

/// The access log's format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessLogFormat {
    /// No access log (the default: no per-request cost).
    #[default]
    Off,
    /// One JSON object per line.
    Json,
    /// The combined log format (Apache/nginx), with the request id, route, cache result and
    /// durations appended.
    Combined,
}

/// The environment variable that overrides `admin.token`.
pub const ADMIN_TOKEN_ENV: &str = "PORTCULLIS_ADMIN_TOKEN";

/// `[admin]`: the admin listener: `/metrics`, `/health/*` and the admin API under `/admin/`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin listener; never the public one. Non-loopback needs a token.
    pub listen: Spanned<SocketAddr>,
    /// Bearer token for `/admin/*` (`PORTCULLIS_ADMIN_TOKEN` overrides it). Without one, only
    /// a loopback listener is allowed, and it is open to local clients.
    #[serde(default)]
    pub token: Option<Spanned<Secret>>,
    /// Require the token for `/metrics` too (health probes never need it).
    #[serde(default)]
    pub metrics_require_token: bool,
}

impl AdminConfig {
    /// The token in force: `PORTCULLIS_ADMIN_TOKEN` when set and non-empty, else `token`.
    pub fn effective_token(&self) -> Option<Secret> {
        match std::env::var(ADMIN_TOKEN_ENV) {
            Ok(v) if !v.is_empty() => Some(Secret(v)),
            _ => self.token.as_ref().map(|t| t.get_ref().clone()),
        }
    }
}

/// `[otlp]`: one span per request, exported over OTLP/HTTP (protobuf) to a collector.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// The collector's traces URL, e.g. `http://127.0.0.1:4318/v1/traces`.
    pub endpoint: String,
    /// `service.name` of the exported spans.
    #[serde(default = "OtlpConfig::default_service_name")]
    pub service_name: String,
    /// Share of new traces exported (0 to 1); a caller's `traceparent` decides for its own.
    #[serde(default = "OtlpConfig::default_sample_ratio")]
    pub sample_ratio: f64,
    /// Headers sent with every export (an API key, say); never shown.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, Secret>,
    /// Limit on one export request.
    #[serde(default = "OtlpConfig::default_timeout")]
    pub timeout: Duration,
    /// Spans wait at most this long before they are sent (fewer if a batch of 512 fills).
    #[serde(default = "OtlpConfig::default_flush_interval")]
    pub flush_interval: Duration,
    /// Spans that may wait; beyond, new ones are dropped (and counted).
    #[serde(default = "OtlpConfig::default_max_queue")]
    pub max_queue: usize,
}

impl OtlpConfig {
    fn default_service_name() -> String {
        "portcullis".into()
    }
    fn default_sample_ratio() -> f64 {
        1.0
    }
    fn default_timeout() -> Duration {
        Duration::from_secs(10)
    }
    fn default_flush_interval() -> Duration {
        Duration::from_secs(1)
    }
    fn default_max_queue() -> usize {
        4096
    }
}

/// A secret from config (a token, a password): its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for comparing or sending; never for logs.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl Serialize for Secret {
    /// Never the secret: views of the configuration show that one is set.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("<redacted>")
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// `[cache]`: the memory tier and defaults for every cached route.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Bytes the memory tier may hold (headers, bodies and keys counted); `0` turns the
    /// memory tier off (only with the Redis tier).
    pub memory_max: Spanned<ByteSize>,
    /// Use the `[redis]` table as the shared second tier when it is present.
    pub redis: Spanned<bool>,
    /// The signed invalidation webhook (`POST /hooks/cache/purge` on the admin listener).
    pub webhook: Option<CacheWebhook>,
    /// URLs fetched into the cache at start-up (and on `POST /admin/cache/warm`).
    pub warm: Option<CacheWarm>,
    /// Refresh a fresh entry in the background when it is read in this last fraction of its
    /// freshness lifetime (`0.1`: the last 10%); `0` turns refresh-ahead off.
    pub refresh_ahead: Spanned<f64>,
    /// Most refresh-ahead requests in flight at once (beyond it, a read does not start one;
    /// a later read will).
    pub refresh_concurrency: usize,
    /// Redis tier entries of at least this size are stored zstd-compressed.
    pub redis_compress_min: ByteSize,
    /// Larger responses are passed through, never stored or buffered whole.
    pub max_object_size: Spanned<ByteSize>,
    /// Lifetime for responses that state none, on every cached route (unset: RFC 9111
    /// heuristics only). A route's `ttl` takes precedence.
    pub default_ttl: Option<Duration>,
    /// Default `stale-while-revalidate` when a response gives none.
    pub stale_while_revalidate: Duration,
    /// Default `stale-if-error` when a response gives none.
    pub stale_if_error: Duration,
    /// How long concurrent misses wait for the request already fetching the same key.
    pub lock_timeout: Duration,
    /// How long a key whose response was not storable skips the coalescing lock.
    pub hit_for_miss: Duration,
    /// After an origin error, serve stale without retrying the origin for this long per key.
    pub error_backoff: Duration,
    /// How long stale responses with validators are kept for conditional revalidation.
    pub keep_stale: Duration,
    /// Requests carrying any of these cookies bypass the cache (shared routes) or are keyed
    /// by them (per-consumer routes).
    pub bypass_cookies: Vec<String>,
    /// Response header the origin uses to tag responses; removed before clients see it.
    pub tag_header: Spanned<String>,
    /// On routes with `compress = true`: smaller bodies are not compressed.
    pub compress_min_size: ByteSize,
    /// On routes with `compress = true`: media types compressed (`text/*` or exact types);
    /// unset: text, JSON, JavaScript, XML and SVG (the cache's own default list).
    pub compress_types: Option<Vec<String>>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            memory_max: Spanned::new(0..0, ByteSize(256 << 20)),
            redis: Spanned::new(0..0, true),
            webhook: None,
            warm: None,
            refresh_ahead: Spanned::new(0..0, 0.0),
            refresh_concurrency: 8,
            redis_compress_min: ByteSize(8 << 10),
            max_object_size: Spanned::new(0..0, ByteSize(8 << 20)),
            default_ttl: None,
            stale_while_revalidate: Duration::from_secs(0),
            stale_if_error: Duration::from_secs(0),
            lock_timeout: Duration::from_secs(10),
            hit_for_miss: Duration::from_secs(30),
            error_backoff: Duration::from_secs(5),
            keep_stale: Duration::from_secs(600),
            bypass_cookies: Vec::new(),
            tag_header: Spanned::new(0..0, "Surrogate-Key".to_owned()),
            compress_min_size: ByteSize(1024),
            compress_types: None,
        }
    }
}

/// `[cache.warm]`: URLs fetched into the cache ahead of the first client.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CacheWarm {
    /// Absolute URLs (`http://host/path?query`): the host picks the route as a request's
    /// `Host` header would, and is part of the cache key.
    pub urls: Vec<Spanned<String>>,
    /// Most warming requests in flight at once.
    #[serde(default = "CacheWarm::default_concurrency")]
    pub concurrency: Spanned<usize>,
    /// Warm when the gateway starts (otherwise only on `POST /admin/cache/warm`).
    #[serde(default = "CacheWarm::default_on_start")]
    pub on_start: bool,
}

impl CacheWarm {
    fn default_concurrency() -> Spanned<usize> {
        Spanned::new(0..0, 4)
    }

    fn default_on_start() -> bool {
        true
    }
}

/// `[cache.webhook]`: backends purge the cache with signed requests.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CacheWebhook {
    /// The HMAC-SHA256 key shared with the senders.
    pub secret: Spanned<Secret>,
    /// How far a request's timestamp may be from the gateway's clock (and how long its
    /// signature is remembered against replays, twice this).
    #[serde(default = "CacheWebhook::default_tolerance")]
    pub tolerance: Duration,
}

impl CacheWebhook {
    fn default_tolerance() -> Duration {
        Duration::from_secs(300)
    }
}

/// `cache = { ... }` of a route: its presence turns caching on for the route.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouteCacheConfig {
    /// Lifetime for responses that state none (overrides `[cache].default_ttl`).
    pub ttl: Option<Duration>,
    /// Use `ttl` even when the response states a lifetime. Never overrides `no-store`,
    /// `private` or `no-cache`.
    pub ttl_override: bool,
    /// Overrides `[cache].stale_while_revalidate`.
    pub stale_while_revalidate: Option<Duration>,
    /// Overrides `[cache].stale_if_error`.
    pub stale_if_error: Option<Duration>,
    /// Key by consumer, so `private` and authorized responses are cached per consumer.
    pub per_consumer: bool,
    /// Add a strong `ETag` to stored responses without one.
    pub etag: bool,
    /// Compress stored responses (br, zstd, gzip) once per coding clients ask for; hits never
    /// compress.
    pub compress: bool,
    /// Cache GraphQL queries sent by POST, keyed by the normalized operation and variables;
    /// mutations pass through and invalidate.
    pub graphql: bool,
    /// Query parameters left out of the key: names, or prefixes like `utm_*`.
    pub ignore_query: Vec<String>,
    /// Request headers whose values are part of the key.
    pub key_headers: Vec<Spanned<String>>,
    /// Cookies whose values are part of the key.
    pub key_cookies: Vec<String>,
    /// Overrides `[cache].bypass_cookies`.
    pub bypass_cookies: Option<Vec<String>>,
    /// Tags given to every response stored by this route.
    pub tags: Vec<String>,
    /// Overrides `[cache].refresh_ahead`.
    pub refresh_ahead: Option<Spanned<f64>>,
}

/// `[server]`: the public listener.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address of the public listener.
    pub listen: SocketAddr,
    /// Serve TLS (HTTP/1.1 and HTTP/2 by ALPN) with this certificate and key.
    pub tls: Option<TlsConfig>,
    /// Accept HTTP/2 (prior knowledge on plain TCP, ALPN `h2` on TLS).
    pub http2: bool,
    /// Peers whose `X-Forwarded-*` and `Forwarded` headers are believed (CIDRs or addresses).
    pub trusted_proxies: Vec<Spanned<String>>,
    /// On shutdown, how long in-flight requests may take to finish.
    pub drain_timeout: Duration,
    /// How long a client may take to send a request's headers (slow-loris protection).
    pub header_read_timeout: Duration,
    /// Largest request head (request line and headers) accepted; beyond it, 431.
    pub max_header_bytes: Spanned<ByteSize>,
    /// Name used in the `Via` header.
    pub via: String,
    /// The request id header: a valid incoming value is kept, else one is generated; it is
    /// sent upstream and returned to the client.
    pub request_id_header: Spanned<String>,
    /// Continue (or start) a W3C trace: `traceparent` upstream carries the gateway's hop.
    pub trace_context: bool,
    /// Add `X-Response-Time` and `Server-Timing` (upstream, cache) to responses.
    pub timing_headers: bool,
    /// A Unix socket where a new process (`serve --takeover`) can take the listening sockets
    /// over for a zero-downtime restart.
    pub handover_socket: Option<PathBuf>,
    /// Requests being served at once beyond which new ones are refused with 503 at once (load
    /// shedding; 0: no limit).
    pub max_in_flight: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tls: None,
            http2: true,
            trusted_proxies: Vec::new(),
            drain_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(30),
            max_header_bytes: Spanned::new(0..0, ByteSize(64 * 1024)),
            via: "portcullis".to_owned(),
            request_id_header: Spanned::new(0..0, "x-request-id".to_owned()),
            trace_context: true,
            timing_headers: false,
            handover_socket: None,
            max_in_flight: 0,
        }
    }
}

/// `[server.tls]`: certificate chain and private key, PEM files.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain (PEM); relative paths are relative to the config file.
    pub cert: Spanned<PathBuf>,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1); relative to the config file.
    pub key: Spanned<PathBuf>,
}

/// `[[upstreams]]`: a named group of targets with a balancer and a connection pool.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Name routes refer to.
    pub name: Spanned<String>,
    /// The servers behind this upstream.
    pub targets: Spanned<Vec<TargetConfig>>,
    /// How a target is chosen per request.
    #[serde(default)]
    pub balance: Balance,
    /// For `consistent_hash`: `"header:NAME"`, `"cookie:NAME"` or `"client_ip"`.
    #[serde(default)]
    pub hash_on: Option<Spanned<String>>,
    /// Protocol spoken to the targets.
    #[serde(default)]
    pub protocol: Protocol,
    /// Connection pool and timeouts.
    #[serde(default)]
    pub pool: PoolConfig,
    /// Active health checks of every target.
    #[serde(default)]
    pub health: Option<HealthConfig>,
    /// When every target is unhealthy: use them anyway (`fail_open`) or answer 503
    /// (`fail_closed`).
    #[serde(default)]
    pub when_all_unhealthy: AllUnhealthy,
    /// Passive outlier ejection: targets failing in a row are set aside for a while.
    #[serde(default)]
    pub outlier: Option<OutlierConfig>,
    /// Retries of idempotent requests without a body.
    #[serde(default)]
    pub retry: Option<RetryConfig>,
    /// A circuit breaker around the whole upstream.
    #[serde(default)]
    pub breaker: Option<BreakerTable>,
}

/// `breaker = { ... }` of an upstream.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerTable {
    /// Failures in a row that open it (0: off).
    pub consecutive_failures: u32,
    /// Failure share over `window` that opens it (0: off).
    pub failure_rate: f64,
    /// Requests the window needs before the rate counts.
    pub min_requests: u32,
    /// The rolling window of the failure rate.
    pub window: Duration,
    /// Calls slower than this count as failures (absent: only errors and 5xx).
    pub slow_call: Option<Duration>,
    /// First open period; doubled after a failed half-open probe.
    pub open_for: Duration,
    /// The longest open period.
    pub max_open_for: Duration,
    /// Probe requests let through half-open; that many successes close it.
    pub half_open_probes: u32,
}

impl Default for BreakerTable {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_rate: 0.5,
            min_requests: 10,
            window: Duration::from_secs(10),
            slow_call: None,
            open_for: Duration::from_secs(30),
            max_open_for: Duration::from_secs(300),
            half_open_probes: 2,
        }
    }
}

/// `retry = { ... }` of an upstream.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Tries per request, the first included.
    pub attempts: u32,
    /// Response statuses that are retried (besides refused or reset connections and timeouts).
    pub statuses: Vec<u16>,
    /// Back-off before the n-th retry: random up to `backoff * 2^(n-1)` (full jitter).
    pub backoff: Duration,
    /// Retries may add at most this percentage to the requests of the last 10 s...
    pub budget_percent: u32,
    /// ...plus this many retries per second, so a quiet upstream can still be retried.
    pub min_per_second: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            attempts: 2,
            statuses: vec![502, 503, 504],
            backoff: Duration::from_millis(25),
            budget_percent: 20,
            min_per_second: 3,
        }
    }
}

/// `outlier = { ... }` of an upstream (Envoy-style passive ejection).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutlierConfig {
    /// Consecutive failures (5xx, refused or reset connections, timeouts) that eject a target.
    pub consecutive_failures: u32,
    /// First ejection; each further ejection of the same target doubles it.
    pub base_ejection: Duration,
    /// The longest ejection.
    pub max_ejection: Duration,
    /// At most this share of the targets is ejected at once, in percent.
    pub max_ejected_percent: u32,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejected_percent: 50,
        }
    }
}

/// `health = { ... }` of an upstream: an HTTP probe of each target.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Path requested with GET.
    pub path: Spanned<String>,
    /// Time between probes of one target (plus up to 10% random jitter).
    pub interval: Duration,
    /// A probe without a response within this fails.
    pub timeout: Duration,
    /// Consecutive passing probes that make an unhealthy target healthy.
    pub healthy: u32,
    /// Consecutive failing probes that make a healthy target unhealthy.
    pub unhealthy: u32,
    /// Statuses that pass (default: any 2xx or 3xx).
    pub statuses: Vec<u16>,
    /// Readiness (`/health/ready`) fails while this upstream has no healthy target.
    pub required: bool,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            path: Spanned::new(0..0, "/health".to_owned()),
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            healthy: 2,
            unhealthy: 3,
            statuses: Vec::new(),
            required: false,
        }
    }
}

/// What an upstream does when no target is healthy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AllUnhealthy {
    /// Use the targets anyway: a health check can be wrong, the traffic may still succeed.
    #[default]
    FailOpen,
    /// Answer 503 without trying.
    FailClosed,
}

/// One target of an upstream.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// `http://host:port` of the target.
    pub url: Spanned<String>,
    /// Relative share for `weighted` (and tie-breaking for other balancers); at least 1.
    #[serde(default = "default_weight")]
    pub weight: Spanned<u32>,
}

fn default_weight() -> Spanned<u32> {
    Spanned::new(0..0, 1)
}

/// Load-balancing algorithm of an upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Each target in turn.
    #[default]
    RoundRobin,
    /// Smooth weighted round robin (nginx's algorithm): shares follow the weights, evenly spread.
    Weighted,
    /// Power of two random choices on in-flight requests.
    LeastRequest,
    /// Maglev hashing on `hash_on`: the same key goes to the same target; adding a target moves
    /// about 1/n of the keys.
    ConsistentHash,
    /// Uniformly random.
    Random,
}

/// Protocol spoken to upstream targets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// HTTP/1.1 with keep-alive.
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge (h2c), multiplexed over one connection per target.
    Http2,
}

/// `pool = { ... }` of an upstream.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// Limit on establishing a TCP connection; beyond it, 504.
    pub connect_timeout: Duration,
    /// Limit from sending the request to receiving the response head; beyond it, 504.
    pub timeout: Duration,
    /// Idle keep-alive connections are closed after this long.
    pub idle_timeout: Duration,
    /// Idle connections kept per target.
    pub max_idle_per_target: usize,
    /// Requests in flight to this upstream at once (0: no limit); more wait in a queue.
    pub max_in_flight: usize,
    /// Requests that may wait for a slot; beyond, 503 at once.
    pub max_queue: usize,
    /// How long a request may wait for a slot; beyond, 503.
    pub queue_timeout: Duration,
    /// Moves the limit of requests in flight with the upstream's latency and failures (AIMD),
    /// starting at `max_in_flight`.
    pub adaptive: Option<AdaptiveTable>,
    /// Longest silence of the upstream within a response body; beyond it the response is cut
    /// off (the client sees it end early) and the connection closed. `"0s"`: no limit.
    pub stream_idle_timeout: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(90),
            max_idle_per_target: 256,
            max_in_flight: 0,
            max_queue: 1000,
            queue_timeout: Duration::from_secs(5),
            stream_idle_timeout: Duration::from_secs(300),
            adaptive: None,
        }
    }
}

/// `pool.adaptive = { ... }`: an adaptive concurrency limit (AIMD on latency).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdaptiveTable {
    /// The limit never goes below this.
    pub min_limit: usize,
    /// The limit never goes above this.
    pub max_limit: usize,
    /// A call slower than this many times the usual latency counts as slow.
    pub tolerance: f64,
    /// A slow or failed call multiplies the limit by this.
    pub backoff: f64,
}

impl Default for AdaptiveTable {
    fn default() -> Self {
        Self {
            min_limit: 1,
            max_limit: 1000,
            tolerance: 2.0,
            backoff: 0.9,
        }
    }
}

/// `[[routes]]`: which requests go to which upstream, and how they are rewritten.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Name used in logs and errors.
    pub name: Spanned<String>,
    /// What requests this route takes; an empty match takes everything.
    #[serde(default, rename = "match")]
    pub matcher: MatchConfig,
    /// Name of the upstream to forward to.
    pub upstream: Spanned<String>,
    /// Send the client's `Host` upstream (true) or the target's authority (false).
    #[serde(default)]
    pub preserve_host: bool,
    /// Remove this path prefix before forwarding (`/api/users` → `/users`).
    #[serde(default)]
    pub strip_prefix: Option<Spanned<String>>,
    /// Prepend this prefix after stripping (`/users` → `/v2/users`).
    #[serde(default)]
    pub add_prefix: Option<Spanned<String>>,
    /// Overrides the upstream's `pool.timeout` for this route.
    #[serde(default)]
    pub timeout: Option<Duration>,
    /// The whole request's deadline: from its arrival to the response head, across the wait
    /// for an upstream slot, every retry and back-off; beyond it, 504. Absent: only the per-try
    /// `timeout` bounds it.
    #[serde(default)]
    pub deadline: Option<Spanned<Duration>>,
    /// A circuit breaker of this route alone, besides the upstream's (same keys).
    #[serde(default)]
    pub breaker: Option<BreakerTable>,
    /// The answer instead of the gateway's own 502/503/504 when the upstream cannot answer
    /// (breaker open, no healthy target, queue full, unreachable, timeout, deadline).
    #[serde(default)]
    pub fallback: Option<Spanned<FallbackConfig>>,
    /// Cache responses of this route (see `[cache]`).
    #[serde(default)]
    pub cache: Option<RouteCacheConfig>,
    /// Tags purged from the cache when a POST, PUT, PATCH or DELETE through this route
    /// succeeds.
    #[serde(default)]
    pub invalidate_tags_on_write: Vec<String>,
    /// Service-level objectives, evaluated over a sliding window (see `[alerts]`).
    #[serde(default)]
    pub slo: Option<Spanned<SloConfig>>,
    /// Rate limits (see `[rate_limit]`).
    #[serde(default)]
    pub rate_limit: Option<Spanned<crate::RouteRateLimit>>,
    /// Credentials the route requires: `none` (default), `api_key`, `jwt` or `any`.
    #[serde(default)]
    pub auth: Option<Spanned<crate::AuthMode>>,
    /// Who may use the route once authenticated (403 otherwise).
    #[serde(default)]
    pub acl: Option<Spanned<crate::AclConfig>>,
    /// Client address rules (allow replaces the global list, deny adds to it).
    #[serde(default)]
    pub ip_rules: Option<crate::IpRulesConfig>,
    /// CORS (replaces `[cors]`), or `false` for none even when `[cors]` exists.
    #[serde(default)]
    pub cors: Option<crate::Toggle<crate::CorsConfig>>,
    /// `User-Agent` rules (replace `[bot_rules]`), or `false` for none.
    #[serde(default)]
    pub bot_rules: Option<crate::Toggle<crate::BotRulesConfig>>,
    /// Security header overrides (over `[security_headers]`).
    #[serde(default)]
    pub security_headers: Option<crate::SecurityHeadersConfig>,
    /// The largest request body (overrides `[request_limits]`).
    #[serde(default)]
    pub max_body_size: Option<Spanned<crate::ByteSize>>,
    /// Request header transform (remove, rename, add with templates).
    #[serde(default)]
    pub request_headers: Option<crate::HeaderTransformConfig>,
    /// Response header transform (remove, rename, add with templates).
    #[serde(default)]
    pub response_headers: Option<crate::HeaderTransformConfig>,
    /// API versions: where the version is read, the default, per-version upstreams, path
    /// prefixes and deprecation (see `versioning.rs`).
    #[serde(default)]
    pub versioning: Option<crate::VersioningConfig>,
}

/// `fallback = { ... }` of a route: a static response served when the upstream fails.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackConfig {
    /// The status (200 by default).
    #[serde(default = "FallbackConfig::default_status")]
    pub status: u16,
    /// The body, sent as is.
    #[serde(default)]
    pub body: String,
    /// Its `Content-Type`.
    #[serde(default = "FallbackConfig::default_content_type")]
    pub content_type: String,
    /// Further headers (`Cache-Control: no-store` is sent unless given here).
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
}

impl FallbackConfig {
    fn default_status() -> u16 {
        200
    }

    fn default_content_type() -> String {
        "application/json".into()
    }
}

/// `slo = { ... }` of a route: objectives that raise alerts when missed.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SloConfig {
    /// 95th percentile latency budget.
    #[serde(default)]
    pub p95: Option<Duration>,
    /// 99th percentile latency budget.
    #[serde(default)]
    pub p99: Option<Duration>,
    /// Largest acceptable share of 5xx responses, 0 to 1 (0.01 = 1%).
    #[serde(default)]
    pub error_rate: Option<f64>,
    /// The sliding window the objectives are judged over (at most 15 minutes).
    #[serde(default = "SloConfig::default_window")]
    pub window: Duration,
    /// Fewer requests than this in the window judge nothing (no alerts from a handful).
    #[serde(default = "SloConfig::default_min_requests")]
    pub min_requests: u64,
}

impl SloConfig {
    fn default_window() -> Duration {
        Duration::from_secs(300)
    }

    fn default_min_requests() -> u64 {
        20
    }
}

/// `[alerts]`: how SLO violations are evaluated and announced.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// How often objectives are evaluated.
    pub evaluate_every: Duration,
    /// `http://` URL that receives a JSON POST when an alert fires and when it resolves.
    pub webhook: Option<Spanned<String>>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            evaluate_every: Duration::from_secs(10),
            webhook: None,
        }
    }
}

/// `match = { ... }` of a route. All given conditions must hold.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// `api.example.com` (exact) or `*.example.com` (any subdomain); case-insensitive.
    pub host: Option<Spanned<String>>,
    /// Exact path (`/health`) or a pattern with whole-segment parameters (`/projects/{id}`).
    pub path: Option<Spanned<String>>,
    /// Path prefix on segment boundaries: `/api` takes `/api` and `/api/x`, not `/apix`.
    pub path_prefix: Option<Spanned<String>>,
    /// Allowed methods; empty means all.
    #[serde(default)]
    pub methods: Vec<Spanned<String>>,
}
