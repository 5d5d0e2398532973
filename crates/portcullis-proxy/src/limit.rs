//! Rate limiting on routes: lowering `rate_limit` config into limiters, the decision's place in
//! the request path, and the limiter metrics.
//!
//! A route's limit is decided after routing and before the cache answers (unless the route says
//! `count_cache_hits = false`, when hits are served first and not counted). Local limiters
//! decide synchronously; Redis-backed ones in the request's future.

use std::{collections::HashMap, sync::Arc};

use arc_swap::{ArcSwap, ArcSwapOption};
use http::Method;
use portcullis_config::{
    AlgorithmName, Config, KeyBy, LimitBackend, LimitKey, LimitTable, RateLimitDefaults,
    RedisTable, RouteConfig, RouteRateLimit, TierLimits, parse_cidr, parse_header_name,
    parse_limit_key, parse_rate,
};
use portcullis_limit::{Cost, Decision, KeyPart, Limit, Policy, Quota, Rate, RateLimiter};
use portcullis_redis::{Redis, RedisConfig};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::counter::ConstCounter,
};

use crate::stack::BuildError;

/// A route's limiter and how its decisions show.
#[derive(Debug)]
pub(crate) struct RouteLimit {
    pub(crate) limiter: Arc<RateLimiter>,
    /// Whether cache hits are decided (and counted) too.
    pub(crate) count_cache_hits: bool,
    /// `RateLimit-*` headers on responses.
    pub(crate) headers: bool,
    /// The structured `RateLimit-Policy`/`RateLimit` pair too.
    pub(crate) structured: bool,
    /// The config it was built from, to carry the limiter (and its counts) over reloads.
    config: (RouteRateLimit, RateLimitDefaults, Option<RedisTable>),
}

impl RouteLimit {
    /// Adds the decision's headers to a response.
    pub(crate) fn annotate(&self, decision: &Decision, headers: &mut http::HeaderMap) {
        if self.headers || !decision.verdict.allowed {
            decision.write_headers(headers, self.structured);
        }
    }
}

/// The Redis handle for `[redis]`, reusing `previous` when the table is unchanged.
pub(crate) fn redis_handle(
    config: &Config,
    previous: Option<(&RedisTable, &Redis)>,
) -> Result<Option<Redis>, BuildError> {
    let Some(table) = &config.redis else {
        return Ok(None);
    };
    if let Some((old, handle)) = previous
        && old == table
    {
        return Ok(Some(handle.clone()));
    }
    let tls_ca = match &table.tls_ca_file {
        Some(path) => Some(std::fs::read(path.get_ref()).map_err(|e| {
            BuildError::Config(format!(
                "redis.tls_ca_file {}: {e}",
                path.get_ref().display()
            ))
        })?),
        None => None,
    };
    let redis = Redis::connect(&RedisConfig {
        tls_ca,
        url: table.effective_url().map(|u| u.expose().to_owned()),
        cluster: table
            .cluster
            .iter()
            .map(|u| u.get_ref().expose().to_owned())
            .collect(),
        sentinels: table
            .sentinel
            .iter()
            .map(|u| u.get_ref().expose().to_owned())
            .collect(),
        sentinel_master: table.sentinel_master.as_ref().map(|n| n.get_ref().clone()),
        prefix: table.prefix.clone(),
        timeout: table.timeout.0,
        connect_timeout: table.connect_timeout.0,
    })
    .map_err(|e| BuildError::Config(e.to_string()))?;
    tracing::info!(servers = redis.describe(), "redis configured");
    Ok(Some(redis))
}

/// The limiter of route `r`, or `None` without `rate_limit`. An unchanged route keeps its
/// limiter (and the counts in it) across reloads.
pub(crate) fn route_limit(
    config: &Config,
    r: &RouteConfig,
    redis: Option<&Redis>,
    previous: Option<&RouteLimit>,
) -> Result<Option<Arc<RouteLimit>>, BuildError> {
    let Some(rl) = &r.rate_limit else {
        return Ok(None);
    };
    let rl = rl.get_ref();
    let d = &config.rate_limit;
    let key = (rl.clone(), d.clone(), config.redis.clone());
    let limiter = match previous {
        Some(p) if p.config == key => Arc::clone(&p.limiter),
        _ => Arc::new(build_limiter(config, r.name.get_ref(), rl, redis)?),
    };
    Ok(Some(Arc::new(RouteLimit {
        limiter,
        count_cache_hits: rl.count_cache_hits,
        headers: d.headers,
        structured: d.policy_headers,
        config: key,
    })))
}

fn build_limiter(
    config: &Config,
    route: &str,
    rl: &RouteRateLimit,
    redis: Option<&Redis>,
) -> Result<RateLimiter, BuildError> {
    let d = &config.rate_limit;
    let err = |e: String| BuildError::Config(format!("route {route:?}: rate_limit: {e}"));
    let api_key = parse_header_name(d.api_key_header.get_ref()).map_err(err)?;
    let by = |by: Option<&KeyBy>| -> Result<Vec<KeyPart>, BuildError> {
        let default = ["ip".to_owned()];
        let parts = by.map_or(&default[..], KeyBy::parts);
        let mut out = Vec::new();
        for p in parts {
            match parse_limit_key(p).map_err(err)? {
                LimitKey::Ip => out.push(KeyPart::ClientIp),
                LimitKey::ApiKey => out.push(KeyPart::ApiKey(api_key.clone())),
                LimitKey::Consumer => out.push(KeyPart::Consumer(api_key.clone())),
                LimitKey::Tier => out.push(KeyPart::Tier),
                LimitKey::Header(h) => out.push(KeyPart::Header(h)),
                LimitKey::Route => {}
            }
        }
        Ok(out)
    };
    let route_by = rl.by.as_ref().map(|b| b.get_ref());
    let quota = |rate: &str, burst: Option<u64>, algorithm: AlgorithmName| {
        let (n, period) = parse_rate(rate).map_err(err)?;
        let rate = Rate::new(n, period);
        let q = match algorithm {
            AlgorithmName::Gcra => Quota::gcra(rate),
            AlgorithmName::SlidingWindow => Quota::sliding_window(rate),
        };
        Ok::<_, BuildError>(burst.map_or(q, |b| q.with_burst(b)))
    };
    let table = |i: usize, t: &LimitTable| -> Result<Limit, BuildError> {
        Ok(Limit {
            name: t.name.clone().unwrap_or_else(|| format!("l{i}")).into(),
            quota: quota(
                t.rate.get_ref(),
                t.burst.as_ref().map(|b| *b.get_ref()),
                t.algorithm.unwrap_or(rl.algorithm),
            )?,
            key: by(t.by.as_ref().map(|b| b.get_ref()).or(route_by))?,
        })
    };
    let mut limits = Vec::new();
    if let Some(rate) = &rl.rate {
        limits.push(Limit {
            name: "default".into(),
            quota: quota(
                rate.get_ref(),
                rl.burst.as_ref().map(|b| *b.get_ref()),
                rl.algorithm,
            )?,
            key: by(route_by)?,
        });
    }
    for (i, t) in rl.limits.iter().enumerate() {
        limits.push(table(i, t)?);
    }
    let tier_tables = if rl.tiers.is_empty() {
        d.tiers
            .iter()
            .map(|(k, v)| (k, v.get_ref()))
            .collect::<Vec<_>>()
    } else {
        rl.tiers.iter().map(|(k, v)| (k, v.get_ref())).collect()
    };
    let mut tiers = HashMap::new();
    for (tier, spec) in tier_tables {
        let list = match spec {
            TierLimits::Rate(rate) => vec![Limit {
                name: Arc::from(tier.as_str()),
                quota: quota(rate, None, rl.algorithm)?,
                key: by(route_by)?,
            }],
            TierLimits::Limits(tables) => tables
                .iter()
                .enumerate()
                .map(|(i, t)| table(i, t))
                .collect::<Result<_, _>>()?,
        };
        tiers.insert(Arc::from(tier.as_str()), list);
    }
    let mut cost = Cost::default();
    for (method, c) in &rl.cost {
        if method == "default" {
            cost.default = *c.get_ref();
        } else {
            let m = Method::from_bytes(method.to_ascii_uppercase().as_bytes())
                .map_err(|e| err(e.to_string()))?;
            cost.methods.push((m, *c.get_ref()));
        }
    }
    let exempt_cidrs = d
        .exempt_cidrs
        .iter()
        .chain(&rl.exempt_cidrs)
        .map(|c| parse_cidr(c.get_ref()))
        .collect::<Result<_, _>>()
        .map_err(err)?;
    let policy = Policy {
        scope: rl.scope.as_deref().unwrap_or(route).into(),
        limits,
        tiers,
        cost,
        exempt_cidrs,
        exempt_consumers: d
            .exempt_consumers
            .iter()
            .chain(&rl.exempt_consumers)
            .map(|c| Arc::from(c.as_str()))
            .collect(),
        instances: d.instances,
    };
    Ok(match (d.backend, redis) {
        (LimitBackend::Local, _) | (LimitBackend::Auto, None) => RateLimiter::local(policy),
        (_, Some(redis)) => {
            RateLimiter::shared(policy, redis.clone()).with_leases(d.lease, d.lease_ttl.0)
        }
        (LimitBackend::Redis, None) => {
            return Err(err("backend = \"redis\" needs a [redis] table".into()));
        }
    })
}

/// What the metrics collectors read: the Redis handle and the routes' limiters in force
/// (swapped on reload; the registry is built once).
#[derive(Debug, Default)]
pub(crate) struct LimitState {
    pub(crate) redis: ArcSwapOption<Redis>,
    pub(crate) limiters: ArcSwap<Vec<(Arc<str>, Arc<RateLimiter>)>>,
}

/// Encodes `portcullis_rate_limit_decisions_total` and the Redis handle's metrics.
#[derive(Debug)]
pub(crate) struct LimitCollector(pub(crate) Arc<LimitState>);

impl Collector for LimitCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        {
            let limiters = self.0.limiters.load();
            let mut family = encoder.encode_descriptor(
                "portcullis_rate_limit_decisions",
                "Rate limit decisions by route, backend (local, redis, fallback) and result",
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for (route, limiter) in limiters.iter() {
                for (backend, allowed, limited) in limiter.stats().snapshot() {
                    for (result, n) in [("allowed", allowed), ("limited", limited)] {
                        let labels = [
                            ("route", &**route),
                            ("backend", backend.as_str()),
                            ("result", result),
                        ];
                        ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
                    }
                }
            }
        }
        if let Some(redis) = self.0.redis.load_full() {
            redis.collector().encode(encoder)?;
        }
        Ok(())
    }
}
