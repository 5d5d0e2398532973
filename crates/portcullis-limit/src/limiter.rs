//! A route's rate limiter: its policy (limits, tiers, cost, exemptions), the backend that
//! decides, and the fallback when Redis cannot.

use std::{
    collections::HashMap,
    fmt::Write as _,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use http::Method;
use ipnet::IpNet;
use portcullis_redis::Redis;
use smallvec::SmallVec;
use xxhash_rust::xxh3::{xxh3_64, xxh3_128_with_seed};

use crate::{
    key::{Caller, KeyPart, identity},
    lease::Leases,
    local::{Check, LocalStore, Verdict},
    quota::Quota,
    redis_script,
};

/// One limit of a policy.
#[derive(Debug, Clone)]
pub struct Limit {
    /// Names the limit in keys and in the `RateLimit-Policy` header.
    pub name: Arc<str>,
    /// What it allows.
    pub quota: Quota,
    /// What identifies the caller; empty: one limit for the whole scope.
    pub key: Vec<KeyPart>,
}

/// The cost of a request: a default and per-method overrides.
#[derive(Debug, Clone)]
pub struct Cost {
    /// Cost of methods not listed.
    pub default: u64,
    /// Per-method costs.
    pub methods: Vec<(Method, u64)>,
}

impl Default for Cost {
    fn default() -> Self {
        Self {
            default: 1,
            methods: Vec::new(),
        }
    }
}

impl Cost {
    fn of(&self, method: &Method) -> u64 {
        self.methods
            .iter()
            .find(|(m, _)| m == method)
            .map_or(self.default, |(_, c)| *c)
    }
}

/// Everything a route's limiter enforces.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Names the state: routes with the same scope share their limits' counts.
    pub scope: Arc<str>,
    /// Limits for callers without a tier listed in `tiers`.
    pub limits: Vec<Limit>,
    /// Limits per consumer tier; they replace `limits` for consumers of that tier.
    pub tiers: HashMap<Arc<str>, Vec<Limit>>,
    /// Cost per request.
    pub cost: Cost,
    /// Client networks never limited.
    pub exempt_cidrs: Vec<IpNet>,
    /// Consumers never limited.
    pub exempt_consumers: Vec<Arc<str>>,
    /// Gateway instances sharing the limits, for the local fallback (each enforces its share).
    pub instances: u64,
}

/// Which backend decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// In this process (no Redis configured).
    Local,
    /// On Redis, shared by all instances.
    Redis,
    /// In this process, with each instance's share, because Redis was unavailable.
    Fallback,
}

impl Backend {
    /// `local`, `redis` or `fallback`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Redis => "redis",
            Self::Fallback => "fallback",
        }
    }
}

/// A request's decision.
#[derive(Debug, Clone)]
pub struct Decision {
    /// The verdict over all limits.
    pub verdict: Verdict,
    /// The binding limit's name.
    pub name: Arc<str>,
    /// The binding limit's window, for `RateLimit-Policy`.
    pub window: std::time::Duration,
    /// Who decided.
    pub backend: Backend,
    /// `RateLimit-Limit`'s value, built once per limit (the binding limit's size rarely
    /// changes, so formatting it per response would be wasted work).
    pub(crate) limit_header: Option<http::HeaderValue>,
}

/// A request's limits, resolved from the request once (keys hashed, cost known).
#[derive(Debug)]
pub struct Pending {
    set: usize,
    /// Per limit: the state's digest (scope, set, limit and caller) and the caller's identity;
    /// inline for up to two limits, so the common request allocates nothing here.
    keys: SmallVec<[(u128, u128); 2]>,
    cost: u64,
}

/// Counts of decisions, for metrics.
#[derive(Debug, Default)]
pub struct LimitStats {
    counts: [[AtomicU64; 2]; 3],
}

impl LimitStats {
    fn record(&self, backend: Backend, allowed: bool) {
        self.counts[backend as usize][usize::from(!allowed)].fetch_add(1, Ordering::Relaxed);
    }

    /// `(backend, allowed, limited)` for each backend.
    pub fn snapshot(&self) -> [(Backend, u64, u64); 3] {
        [Backend::Local, Backend::Redis, Backend::Fallback].map(|b| {
            let c = &self.counts[b as usize];
            (
                b,
                c[0].load(Ordering::Relaxed),
                c[1].load(Ordering::Relaxed),
            )
        })
    }
}

#[derive(Debug)]
struct LimitSet {
    /// `""` for the default limits, `tier:NAME` for a tier's.
    label: Arc<str>,
    limits: Vec<Limit>,
    /// Per limit: a seed naming scope, set and limit, so one caller's states differ per limit.
    seeds: Vec<u64>,
    /// Their quotas divided among the instances, for the fallback.
    fallback: Vec<Quota>,
    /// Per limit: `RateLimit-Limit` for its full quota and for its fallback share.
    limit_headers: Vec<[(u64, http::HeaderValue); 2]>,
    /// Every limit keys on the same parts: one Redis hash tag per caller spreads them over a
    /// cluster; otherwise the scope is the tag, so one script sees all keys in one slot.
    same_key: bool,
}

/// A route's limiter.
#[derive(Debug)]
pub struct RateLimiter {
    scope: Arc<str>,
    sets: Vec<LimitSet>,
    tiers: HashMap<Arc<str>, usize>,
    cost: Cost,
    exempt_cidrs: Vec<IpNet>,
    exempt_consumers: Vec<Arc<str>>,
    redis: Option<Redis>,
    leases: Option<Leases>,
    local: LocalStore,
    fallback: LocalStore,
    stats: LimitStats,
}

impl RateLimiter {
    /// A limiter deciding in this process.
    pub fn local(policy: Policy) -> Self {
        Self::build(policy, None)
    }

    /// A limiter deciding on Redis, exact across every instance sharing it, falling back to
    /// local limits (each instance's share) while Redis is unavailable.
    pub fn shared(policy: Policy, redis: Redis) -> Self {
        Self::build(policy, Some(redis))
    }

    fn build(policy: Policy, redis: Option<Redis>) -> Self {
        let instances = policy.instances.max(1);
        let scope = Arc::clone(&policy.scope);
        let set = |label: Arc<str>, limits: Vec<Limit>| {
            let fallback: Vec<Quota> = limits.iter().map(|l| l.quota.divided(instances)).collect();
            LimitSet {
                seeds: limits
                    .iter()
                    .map(|l| {
                        let mut named = Vec::new();
                        for part in [&*scope, &*label, &*l.name] {
                            named.extend_from_slice(&(part.len() as u64).to_le_bytes());
                            named.extend_from_slice(part.as_bytes());
                        }
                        xxh3_64(&named)
                    })
                    .collect(),
                label,
                limit_headers: limits
                    .iter()
                    .zip(&fallback)
                    .map(|(l, share)| {
                        [l.quota, *share]
                            .map(|q| (q.rate.limit, crate::headers::number(q.rate.limit)))
                    })
                    .collect(),
                fallback,
                same_key: limits.windows(2).all(|w| w[0].key == w[1].key),
                limits,
            }
        };
        let mut sets = vec![set(Arc::from(""), policy.limits)];
        let mut tiers = HashMap::new();
        for (tier, limits) in policy.tiers {
            tiers.insert(Arc::clone(&tier), sets.len());
            sets.push(set(Arc::from(format!("tier:{tier}")), limits));
        }
        let leases = redis
            .is_some()
            .then(|| Leases::new(1, std::time::Duration::from_millis(250)));
        Self {
            scope: policy.scope,
            sets,
            tiers,
            cost: policy.cost,
            exempt_cidrs: policy.exempt_cidrs,
            exempt_consumers: policy.exempt_consumers,
            redis,
            leases,
            local: LocalStore::default(),
            fallback: LocalStore::default(),
            stats: LimitStats::default(),
        }
    }

    /// Takes `size` requests' worth of units per Redis call while they are available, spending
    /// them locally for `ttl` (see the `lease` module for the bound on exactness). `size` 0 or
    /// 1: every request is decided on Redis.
    #[must_use]
    pub fn with_leases(mut self, size: u64, ttl: std::time::Duration) -> Self {
        if self.redis.is_some() {
            self.leases = Some(Leases::new(size.max(1), ttl));
        }
        self
    }

    /// Whether decisions need Redis (and so an `.await`).
    pub fn is_shared(&self) -> bool {
        self.redis.is_some()
    }

    /// Decision counts.
    pub fn stats(&self) -> &LimitStats {
        &self.stats
    }

    /// Resolves the request's limits; `None` when it is exempt or nothing applies.
    pub fn prepare<B>(&self, req: &http::Request<B>, caller: Caller<'_>) -> Option<Pending> {
        if self
            .exempt_cidrs
            .iter()
            .any(|n| n.contains(&caller.ip.to_canonical()))
        {
            return None;
        }
        if !self.exempt_consumers.is_empty()
            && let Some(id) = caller.consumer
            && self.exempt_consumers.iter().any(|e| **e == *id)
        {
            return None;
        }
        let set = caller
            .tier
            .and_then(|t| self.tiers.get(t).copied())
            .unwrap_or(0);
        let limits = &self.sets[set];
        if limits.limits.is_empty() {
            return None;
        }
        let mut keys = SmallVec::with_capacity(limits.limits.len());
        let mut last: Option<(&[KeyPart], u128)> = None;
        for (limit, &seed) in limits.limits.iter().zip(&limits.seeds) {
            // Limits usually share their key parts: hash the caller once.
            let id = match last {
                Some((parts, id)) if parts == limit.key.as_slice() => id,
                _ => identity(&limit.key, req, &caller),
            };
            last = Some((&limit.key, id));
            keys.push((xxh3_128_with_seed(&id.to_le_bytes(), seed), id));
        }
        Some(Pending {
            set,
            keys,
            cost: self.cost.of(req.method()),
        })
    }

    /// Decides in this process (for limiters that are not [shared](Self::is_shared)).
    pub fn decide_local(&self, pending: &Pending) -> Option<Decision> {
        let set = &self.sets[pending.set];
        self.decide_in(
            &self.local,
            set,
            |i| &set.limits[i].quota,
            pending,
            Backend::Local,
        )
    }

    /// Decides on Redis when shared (falling back to local shares when Redis is unavailable),
    /// else in this process.
    pub async fn decide(&self, pending: &Pending) -> Option<Decision> {
        let Some(redis) = &self.redis else {
            return self.decide_local(pending);
        };
        let set = &self.sets[pending.set];
        let lease_key = pending
            .keys
            .iter()
            .fold(0u128, |acc, (digest, _)| acc.rotate_left(17) ^ digest);
        if let Some(leases) = &self.leases
            && let Some(verdict) = leases.spend(lease_key, pending.cost)
        {
            return Some(self.decision(set, verdict, Backend::Redis));
        }
        let quotas: Vec<&Quota> = set.limits.iter().map(|l| &l.quota).collect();
        let keys = self.redis_keys(redis.prefix(), set, pending);
        let lease = self
            .leases
            .as_ref()
            .map_or(0, |l| l.size.saturating_mul(pending.cost))
            .max(pending.cost);
        match redis_script::decide(redis, &keys, &quotas, pending.cost, lease).await {
            Ok((verdict, granted)) => {
                let verdict = match &self.leases {
                    Some(leases) if granted > pending.cost => {
                        leases.keep(lease_key, granted - pending.cost, verdict)
                    }
                    Some(leases) if !verdict.allowed => {
                        leases.refuse(lease_key, pending.cost, verdict);
                        verdict
                    }
                    _ => verdict,
                };
                Some(self.decision(set, verdict, Backend::Redis))
            }
            Err(e) => {
                tracing::debug!(scope = %self.scope, error = %e, "rate limit decided locally");
                self.decide_in(
                    &self.fallback,
                    set,
                    |i| &set.fallback[i],
                    pending,
                    Backend::Fallback,
                )
            }
        }
    }

    /// Counts `verdict` and names its binding limit.
    fn decision(&self, set: &LimitSet, verdict: Verdict, backend: Backend) -> Decision {
        self.stats.record(backend, verdict.allowed);
        let rule = verdict.rule.min(set.limits.len() - 1);
        let limit = &set.limits[rule];
        let limit_header = set.limit_headers[rule]
            .iter()
            .find(|(n, _)| *n == verdict.binding.limit)
            .map(|(_, v)| v.clone());
        Decision {
            verdict,
            name: Arc::clone(&limit.name),
            window: limit.quota.rate.period,
            backend,
            limit_header,
        }
    }

    fn decide_in<'a>(
        &self,
        store: &LocalStore,
        set: &LimitSet,
        quota: impl Fn(usize) -> &'a Quota,
        pending: &Pending,
        backend: Backend,
    ) -> Option<Decision> {
        let now = store.now();
        let verdict = if let [(key, _)] = pending.keys[..] {
            // One limit (the common case): no allocation.
            store.decide(
                &[Check {
                    key,
                    quota: quota(0),
                }],
                pending.cost,
                now,
            )?
        } else {
            let checks: Vec<Check<'_>> = pending
                .keys
                .iter()
                .enumerate()
                .map(|(i, &(key, _))| Check {
                    key,
                    quota: quota(i),
                })
                .collect();
            store.decide(&checks, pending.cost, now)?
        };
        Some(self.decision(set, verdict, backend))
    }

    /// `{prefix}rl:{TAG}:...`: every key of one decision shares the hash tag, so the script's
    /// keys live in one Redis Cluster slot.
    fn redis_keys(&self, prefix: &str, set: &LimitSet, pending: &Pending) -> Vec<String> {
        set.limits
            .iter()
            .zip(&pending.keys)
            .map(|(limit, (_, id))| {
                let mut key = String::with_capacity(64);
                let label = if set.label.is_empty() {
                    "-"
                } else {
                    &set.label
                };
                if set.same_key {
                    let _ = write!(
                        key,
                        "{prefix}rl:{{{}:{id:032x}}}:{label}:{}",
                        self.scope, limit.name
                    );
                } else {
                    let _ = write!(
                        key,
                        "{prefix}rl:{{{}}}:{label}:{}:{id:032x}",
                        self.scope, limit.name
                    );
                }
                key
            })
            .collect()
    }
}
