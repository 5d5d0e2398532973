//! The two tiers together: a memory miss asks Redis (and a Redis hit fills memory), a store
//! writes memory at once and Redis in the background, and a miss nobody holds locally takes
//! a Redis fill lock so that instances missing the same key at once send about one request
//! upstream.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use http::{HeaderMap, HeaderValue};
use portcullis_redis::Redis;

use crate::{
    Cache,
    entry::{Slot, StoredResponse},
    key::CacheKey,
    purge::Attached,
    redis_tier::{Poll, RedisTier},
    tier::Store,
};

/// `X-Cache-Tier` on responses read from Redis.
pub(crate) const TIER_REDIS: HeaderValue = HeaderValue::from_static("redis");

/// First and longest pause between polls for another instance's fill.
const POLL_FIRST: Duration = Duration::from_millis(2);
const POLL_MAX: Duration = Duration::from_millis(50);

/// A held Redis fill lock; dropping it releases the lock (in the background).
#[derive(Debug)]
pub(crate) struct SharedLock {
    tier: Arc<RedisTier>,
    digest: u128,
}

impl Drop for SharedLock {
    fn drop(&mut self) {
        let (tier, digest) = (Arc::clone(&self.tier), self.digest);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { tier.unlock(digest).await });
        }
    }
}

impl Cache {
    /// Uses `redis` as the shared tier (or none). Keeps the current tier when it is on the
    /// same handle, so a config reload does not resubscribe.
    pub fn attach_redis(&self, redis: Option<&Redis>, compress_min: u64) {
        let current = self.inner.tier.load_full();
        match (redis, current.as_deref()) {
            (Some(r), Some(a)) if a.tier.redis().same(r) => {}
            (Some(r), _) => {
                let tier = Arc::new(RedisTier::new(
                    r.clone(),
                    compress_min,
                    self.inner.config.max_object_size,
                ));
                tracing::info!(servers = r.describe(), "cache: redis tier attached");
                self.inner
                    .tier
                    .store(Some(Arc::new(Attached::start(self, tier))));
            }
            (None, Some(_)) => self.inner.tier.store(None),
            (None, None) => {}
        }
    }

    /// The Redis tier, when one is attached.
    pub fn tier(&self) -> Option<Arc<RedisTier>> {
        self.inner.tier.load().as_ref().map(|a| Arc::clone(&a.tier))
    }

    /// Reads `key` from the Redis tier; a hit fills memory (with the variants' remaining
    /// retention) and returns the variant for `headers`.
    pub(crate) async fn shared_lookup(
        &self,
        tier: &RedisTier,
        key: &CacheKey,
        headers: &HeaderMap,
    ) -> Option<Arc<StoredResponse>> {
        let slot = Store::load(tier, key, self.now()).await.ok()??;
        self.adopt(key, &slot, headers)
    }

    fn adopt(
        &self,
        key: &CacheKey,
        slot: &Slot,
        headers: &HeaderMap,
    ) -> Option<Arc<StoredResponse>> {
        if slot.key != key.readable {
            return None;
        }
        if self.memory_enabled() {
            self.inner.store.fill(key.digest, slot);
        }
        slot.select(headers).cloned()
    }

    /// Takes the Redis fill lock for `key`. When another instance holds it, waits (polling,
    /// within the lock timeout) for its entry: `Err` carries the stored response it found.
    pub(crate) async fn lock_or_wait(
        &self,
        tier: &Arc<RedisTier>,
        key: &CacheKey,
        headers: &HeaderMap,
    ) -> Result<Option<SharedLock>, Arc<StoredResponse>> {
        let timeout = self.inner.config.lock_timeout;
        match tier.try_lock(key.digest, timeout).await {
            Ok(true) => {
                return Ok(Some(SharedLock {
                    tier: Arc::clone(tier),
                    digest: key.digest,
                }));
            }
            Ok(false) => {}
            Err(_) => return Ok(None),
        }
        tier.lock_waited();
        let deadline = Instant::now() + timeout;
        let mut pause = POLL_FIRST;
        loop {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(POLL_MAX);
            match tier.poll(key.digest, self.now()).await {
                Ok(Poll::Filled(decoded)) => {
                    return match self.adopt(key, &decoded.slot, headers) {
                        Some(found) => Err(found),
                        None => Ok(None),
                    };
                }
                Ok(Poll::Locked) if Instant::now() < deadline => {}
                _ => return Ok(None),
            }
        }
    }

    /// Writes what is stored for `key` to the Redis tier in the background (memory's slot, so
    /// every variant goes; `variant` alone when memory is off), then releases `lock`.
    pub(crate) fn share(
        &self,
        key: &CacheKey,
        variant: &Arc<StoredResponse>,
        lock: Option<SharedLock>,
        since: u64,
    ) {
        let Some(tier) = self.tier() else { return };
        let slot = self
            .inner
            .store
            .get(key)
            .filter(|_| self.memory_enabled())
            .map_or_else(
                || Slot {
                    key: Arc::clone(&key.readable),
                    url_len: key.url_len,
                    variants: vec![Arc::clone(variant)],
                },
                |s| Slot::clone(&s),
            );
        let (digest, now, cache) = (key.digest, self.now(), self.clone());
        tokio::spawn(async move {
            // A purge that arrived since the fill began (from any instance) wins: the entry
            // may predate what it announced. Checked again after the write, which a purge may
            // have overtaken (its tag sets did not list the entry yet): then it is taken back.
            let purged = || {
                slot.variants
                    .iter()
                    .any(|v| cache.purged_since(since, slot.url(), &v.tags))
            };
            if !purged() {
                match Store::save(&*tier, digest, &slot, now).await {
                    Err(e) => tracing::debug!(error = %e, "cache entry not written to redis"),
                    Ok(()) if purged() => tier.remove(digest).await,
                    Ok(()) => {}
                }
            }
            drop(lock);
        });
    }

    /// The purge log's current mark (see [`Cache::purged_since`]).
    pub(crate) fn purge_mark(&self) -> u64 {
        self.inner.purges.mark()
    }

    /// Whether a purge logged after `mark` (here or, by message, on another instance) covers
    /// the resource at `url` with `tags`.
    pub(crate) fn purged_since(&self, mark: u64, url: &str, tags: &[Arc<str>]) -> bool {
        self.inner.purges.covers_since(mark, url, tags)
    }

    pub(crate) fn memory_enabled(&self) -> bool {
        self.inner.config.memory_max > 0
    }
}
