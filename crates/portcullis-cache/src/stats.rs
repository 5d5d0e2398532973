//! Counters per route and for the whole cache, readable through [`crate::Cache::stats`].

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

/// How a response was produced, as reported in `X-Cache`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Served from the cache, fresh.
    Hit,
    /// Fetched from the origin.
    Miss,
    /// Served stale (stale-while-revalidate, stale-if-error, or the client's `max-stale`).
    Stale,
    /// The cache was not consulted (method, credentials, bypass cookie).
    Bypass,
    /// A stored response was validated with the origin (304) and served.
    Revalidated,
}

impl Outcome {
    /// The `X-Cache` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "HIT",
            Self::Miss => "MISS",
            Self::Stale => "STALE",
            Self::Bypass => "BYPASS",
            Self::Revalidated => "REVALIDATED",
        }
    }
}

/// Counters of one route.
#[derive(Debug, Default)]
pub struct RouteStats {
    hits: AtomicU64,
    misses: AtomicU64,
    stale: AtomicU64,
    bypass: AtomicU64,
    revalidated: AtomicU64,
    stores: AtomicU64,
    not_stored: AtomicU64,
    coalesced: AtomicU64,
    invalidations: AtomicU64,
    redis_hits: AtomicU64,
    redis_stale: AtomicU64,
}

impl RouteStats {
    pub(crate) fn record(&self, outcome: Outcome) {
        let counter = match outcome {
            Outcome::Hit => &self.hits,
            Outcome::Miss => &self.misses,
            Outcome::Stale => &self.stale,
            Outcome::Bypass => &self.bypass,
            Outcome::Revalidated => &self.revalidated,
        };
        counter.fetch_add(1, Relaxed);
    }

    pub(crate) fn stored(&self) {
        self.stores.fetch_add(1, Relaxed);
    }

    pub(crate) fn not_stored(&self) {
        self.not_stored.fetch_add(1, Relaxed);
    }

    pub(crate) fn coalesced(&self) {
        self.coalesced.fetch_add(1, Relaxed);
    }

    pub(crate) fn redis_hit(&self, stale: bool) {
        if stale {
            self.redis_stale.fetch_add(1, Relaxed);
        } else {
            self.redis_hits.fetch_add(1, Relaxed);
        }
    }

    pub(crate) fn invalidated(&self, n: usize) {
        self.invalidations.fetch_add(n as u64, Relaxed);
    }

    /// A consistent-enough copy of the counters.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            hits: self.hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            stale: self.stale.load(Relaxed),
            bypass: self.bypass.load(Relaxed),
            revalidated: self.revalidated.load(Relaxed),
            stores: self.stores.load(Relaxed),
            not_stored: self.not_stored.load(Relaxed),
            coalesced: self.coalesced.load(Relaxed),
            invalidations: self.invalidations.load(Relaxed),
            redis_hits: self.redis_hits.load(Relaxed),
            redis_stale: self.redis_stale.load(Relaxed),
        }
    }
}

/// Counter values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    /// Fresh hits.
    pub hits: u64,
    /// Origin fetches for lookups that found nothing usable.
    pub misses: u64,
    /// Stale responses served.
    pub stale: u64,
    /// Requests that did not consult the cache.
    pub bypass: u64,
    /// Stored responses validated with a 304 and served.
    pub revalidated: u64,
    /// Responses stored.
    pub stores: u64,
    /// Origin responses that could not be stored.
    pub not_stored: u64,
    /// Requests that waited for another request's fetch instead of going upstream.
    pub coalesced: u64,
    /// Keys removed by writes and purges.
    pub invalidations: u64,
    /// Of the fresh hits, those read from the Redis tier (the rest came from memory).
    pub redis_hits: u64,
    /// Of the stale responses served, those read from the Redis tier.
    pub redis_stale: u64,
}

impl StatsSnapshot {
    /// Hits (fresh, stale and revalidated) over all lookups; `0.0` before any.
    pub fn hit_ratio(&self) -> f64 {
        let served = self.hits + self.stale + self.revalidated;
        let total = served + self.misses;
        if total == 0 {
            0.0
        } else {
            served as f64 / total as f64
        }
    }

    pub(crate) fn add(&mut self, o: &Self) {
        self.hits += o.hits;
        self.misses += o.misses;
        self.stale += o.stale;
        self.bypass += o.bypass;
        self.revalidated += o.revalidated;
        self.stores += o.stores;
        self.not_stored += o.not_stored;
        self.coalesced += o.coalesced;
        self.invalidations += o.invalidations;
        self.redis_hits += o.redis_hits;
        self.redis_stale += o.redis_stale;
    }

    /// Of the lookups, the share answered from memory and from Redis; `(0.0, 0.0)` before any.
    pub fn tier_ratios(&self) -> (f64, f64) {
        let served = self.hits + self.stale + self.revalidated;
        let total = served + self.misses;
        if total == 0 {
            return (0.0, 0.0);
        }
        let redis = (self.redis_hits + self.redis_stale).min(served);
        (
            (served - redis) as f64 / total as f64,
            redis as f64 / total as f64,
        )
    }
}

/// The whole cache: totals, per route, and memory use.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CacheStats {
    /// Sum over routes.
    pub total: StatsSnapshot,
    /// By route name.
    pub routes: Vec<(String, StatsSnapshot)>,
    /// Bytes accounted to the memory tier.
    pub memory_bytes: u64,
    /// Keys in the memory tier.
    pub memory_entries: u64,
    /// The Redis tier's counters, when it is configured.
    pub redis: Option<crate::redis_tier::TierStats>,
}
