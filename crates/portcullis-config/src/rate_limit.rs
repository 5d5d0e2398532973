//! `[redis]`, `[rate_limit]` and a route's `rate_limit = { ... }`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::{Secret, units::Duration};

/// The environment variable that overrides `redis.url`.
pub const REDIS_URL_ENV: &str = "PORTCULLIS_REDIS_URL";

/// `[redis]`: the Redis shared by every instance (absent: memory only, local limits).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedisTable {
    /// `redis://[user:password@]host:port[/db]`, `rediss://` for TLS. `PORTCULLIS_REDIS_URL`
    /// overrides it.
    #[serde(default)]
    pub url: Option<Spanned<Secret>>,
    /// Redis Cluster seed nodes (instead of `url`).
    #[serde(default)]
    pub cluster: Vec<Spanned<Secret>>,
    /// Sentinels (`redis://host:26379`) that name the master; with them, `url` (optional)
    /// gives only the data nodes' scheme, credentials and database.
    #[serde(default)]
    pub sentinel: Vec<Spanned<Secret>>,
    /// The master's name at the Sentinels.
    #[serde(default)]
    pub sentinel_master: Option<Spanned<String>>,
    /// PEM file of the CA certificates trusted for `rediss://` servers, instead of the
    /// system's roots (anchored at the config file's directory).
    #[serde(default)]
    pub tls_ca_file: Option<Spanned<std::path::PathBuf>>,
    /// Prefix of every key the gateway writes.
    #[serde(default = "RedisTable::default_prefix")]
    pub prefix: String,
    /// Budget for one Redis call; beyond it the gateway uses its local fallback.
    #[serde(default = "RedisTable::default_timeout")]
    pub timeout: Duration,
    /// Budget for connecting.
    #[serde(default = "RedisTable::default_connect_timeout")]
    pub connect_timeout: Duration,
}

impl RedisTable {
    fn default_prefix() -> String {
        "pc:".into()
    }

    fn default_timeout() -> Duration {
        Duration::from_millis(50)
    }

    fn default_connect_timeout() -> Duration {
        Duration::from_secs(1)
    }

    /// The URL in force: `PORTCULLIS_REDIS_URL` when set and non-empty, else `url`.
    pub fn effective_url(&self) -> Option<Secret> {
        match std::env::var(REDIS_URL_ENV) {
            Ok(v) if !v.is_empty() => Some(Secret::new(v)),
            _ => self.url.as_ref().map(|u| u.get_ref().clone()),
        }
    }
}

/// Where limits are decided.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitBackend {
    /// Redis when `[redis]` is configured, else this process.
    #[default]
    Auto,
    /// Always this process (each instance counts alone).
    Local,
    /// Redis (requires `[redis]`).
    Redis,
}

/// `[rate_limit]`: settings for every limited route.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitDefaults {
    /// Where limits are decided.
    pub backend: LimitBackend,
    /// Gateway instances sharing the limits: while Redis is unavailable each enforces
    /// `limit / instances`.
    pub instances: u64,
    /// Send `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` on limited routes.
    pub headers: bool,
    /// Also send the structured `RateLimit-Policy` and `RateLimit` fields.
    pub policy_headers: bool,
    /// Header carrying API keys for `by = "api_key"` (and `consumer` before authentication).
    pub api_key_header: Spanned<String>,
    /// Client networks never limited (on every route).
    pub exempt_cidrs: Vec<Spanned<String>>,
    /// Consumers never limited (on every route).
    pub exempt_consumers: Vec<String>,
    /// Limits per consumer tier for routes that do not set their own `tiers`.
    pub tiers: BTreeMap<String, Spanned<TierLimits>>,
    /// Redis backend: requests' worth of units one Redis call takes for a caller, spent locally
    /// by the following requests (0 or 1: every request is decided on Redis).
    pub lease: u64,
    /// How long leased units stay usable.
    pub lease_ttl: Duration,
}

impl Default for RateLimitDefaults {
    fn default() -> Self {
        Self {
            backend: LimitBackend::Auto,
            instances: 1,
            headers: true,
            policy_headers: false,
            api_key_header: Spanned::new(0..0, "x-api-key".into()),
            exempt_cidrs: Vec::new(),
            exempt_consumers: Vec::new(),
            tiers: BTreeMap::new(),
            lease: 0,
            lease_ttl: Duration::from_millis(250),
        }
    }
}

/// A limit's algorithm.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlgorithmName {
    /// GCRA: smooth, with bursts up to `burst`.
    #[default]
    Gcra,
    /// Sliding-window counter: N per window.
    SlidingWindow,
}

/// What keys a limit: one of `ip`, `api_key`, `consumer`, `tier`, `route` (global),
/// `header:NAME`, or a list of them.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum KeyBy {
    /// One part.
    One(String),
    /// A combination.
    Many(Vec<String>),
}

impl KeyBy {
    /// The parts.
    pub fn parts(&self) -> &[String] {
        match self {
            Self::One(one) => std::slice::from_ref(one),
            Self::Many(many) => many,
        }
    }
}

// A visitor rather than `#[serde(untagged)]`: untagged enums buffer their input, which loses
// the spans that error messages point at.
impl<'de> Deserialize<'de> for KeyBy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = KeyBy;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a key part like \"ip\" or a list of them")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<KeyBy, E> {
                Ok(KeyBy::One(v.to_owned()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<KeyBy, A::Error> {
                let mut parts = Vec::new();
                while let Some(p) = seq.next_element::<String>()? {
                    parts.push(p);
                }
                Ok(KeyBy::Many(parts))
            }
        }
        d.deserialize_any(V)
    }
}

/// One limit: `{ rate = "10/s", burst = 20, algorithm = "gcra", by = "ip", name = "..." }`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitTable {
    /// `N/unit` (`100/h`, `10/s`, `5/min`) or `N/DURATION` (`100/15m`).
    pub rate: Spanned<String>,
    /// GCRA: requests allowed at once from an idle key; default: the rate's N.
    #[serde(default)]
    pub burst: Option<Spanned<u64>>,
    /// Default: the route's `algorithm`.
    #[serde(default)]
    pub algorithm: Option<AlgorithmName>,
    /// Default: the route's `by`.
    #[serde(default)]
    pub by: Option<Spanned<KeyBy>>,
    /// Names the limit in keys and headers; default: its position.
    #[serde(default)]
    pub name: Option<String>,
}

/// A tier's limits: one rate (`"1000/h"`) or a list of limit tables.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum TierLimits {
    /// One rate, with the route's algorithm and key.
    Rate(String),
    /// Several limits.
    Limits(Vec<LimitTable>),
}

impl<'de> Deserialize<'de> for TierLimits {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = TierLimits;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a rate like \"100/h\" or a list of limit tables")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<TierLimits, E> {
                Ok(TierLimits::Rate(v.to_owned()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<TierLimits, A::Error> {
                let mut limits = Vec::new();
                while let Some(l) = seq.next_element::<LimitTable>()? {
                    limits.push(l);
                }
                Ok(TierLimits::Limits(limits))
            }
        }
        d.deserialize_any(V)
    }
}

/// `rate_limit = { ... }` of a route.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRateLimit {
    /// Shorthand for one limit: `rate`, `burst`.
    #[serde(default)]
    pub rate: Option<Spanned<String>>,
    /// Burst of the shorthand limit.
    #[serde(default)]
    pub burst: Option<Spanned<u64>>,
    /// Algorithm of every limit that does not name one.
    #[serde(default)]
    pub algorithm: AlgorithmName,
    /// Key of every limit that does not name one; default `ip`.
    #[serde(default)]
    pub by: Option<Spanned<KeyBy>>,
    /// Several limits at once (all must allow a request).
    #[serde(default)]
    pub limits: Vec<LimitTable>,
    /// Limits per consumer tier, replacing the others for consumers of that tier.
    #[serde(default)]
    pub tiers: BTreeMap<String, Spanned<TierLimits>>,
    /// Routes with the same scope share counts; default: the route's name.
    #[serde(default)]
    pub scope: Option<String>,
    /// Cost per request: `{ default = 1, POST = 5 }`.
    #[serde(default)]
    pub cost: BTreeMap<String, Spanned<u64>>,
    /// Whether answers from the cache count against the limit.
    #[serde(default = "yes")]
    pub count_cache_hits: bool,
    /// Client networks never limited on this route (besides `[rate_limit] exempt_cidrs`).
    #[serde(default)]
    pub exempt_cidrs: Vec<Spanned<String>>,
    /// Consumers never limited on this route.
    #[serde(default)]
    pub exempt_consumers: Vec<String>,
}

fn yes() -> bool {
    true
}
