//! What every tier of the cache offers, memory (in-process, [`MemoryStore`]) and Redis (shared,
//! [`RedisTier`]): entries (all variants of one key) loaded, saved and purged.
//!
//! The cache's hit path calls the memory tier's synchronous methods directly (no future, no
//! allocation); the tiering, purge and warming code goes through this trait, so another shared
//! store could stand where Redis does. Coalescing locks and invalidation messages are not part
//! of it: they belong to the shared tier alone ([`RedisTier`]).

use std::{future::Future, pin::Pin, sync::Arc, time::SystemTime};

use crate::{
    entry::Slot, key::CacheKey, purge::Purge, redis_tier::RedisTier, store::MemoryStore,
    store::url_tag,
};

/// Why a tier could not do what was asked (the memory tier never fails).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

/// A tier's answer, later.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A tier of the cache.
pub trait Store: Send + Sync {
    /// Its name in `X-Cache-Tier` and in statistics.
    fn tier(&self) -> &'static str;

    /// Everything stored under `key` (a digest collision is `None`), with variants whose
    /// retention ended before `now` left out.
    fn load<'a>(&'a self, key: &'a CacheKey, now: SystemTime)
    -> StoreFuture<'a, Option<Arc<Slot>>>;

    /// Stores `slot` under `digest` (adding to what is there, variant by variant).
    fn save<'a>(&'a self, digest: u128, slot: &'a Slot, now: SystemTime) -> StoreFuture<'a, ()>;

    /// Applies `purge` (deleting, or marking stale as of `at` when soft); returns how many
    /// entries it affected.
    fn purge<'a>(&'a self, purge: &'a Purge, at: SystemTime) -> StoreFuture<'a, usize>;
}

impl Store for MemoryStore {
    fn tier(&self) -> &'static str {
        "memory"
    }

    fn load<'a>(
        &'a self,
        key: &'a CacheKey,
        _now: SystemTime,
    ) -> StoreFuture<'a, Option<Arc<Slot>>> {
        let found = self.get(key);
        Box::pin(std::future::ready(Ok(found)))
    }

    fn save<'a>(&'a self, digest: u128, slot: &'a Slot, _now: SystemTime) -> StoreFuture<'a, ()> {
        self.fill(digest, slot);
        Box::pin(std::future::ready(Ok(())))
    }

    fn purge<'a>(&'a self, purge: &'a Purge, at: SystemTime) -> StoreFuture<'a, usize> {
        let n = self.apply(purge, at);
        Box::pin(std::future::ready(Ok(n)))
    }
}

impl Store for RedisTier {
    fn tier(&self) -> &'static str {
        "redis"
    }

    fn load<'a>(
        &'a self,
        key: &'a CacheKey,
        now: SystemTime,
    ) -> StoreFuture<'a, Option<Arc<Slot>>> {
        Box::pin(async move {
            let decoded = self
                .get(key.digest, now)
                .await
                .map_err(|e| StoreError(e.to_string()))?;
            Ok(decoded
                .map(|d| d.slot)
                .filter(|slot| slot.key == key.readable)
                .map(Arc::new))
        })
    }

    fn save<'a>(&'a self, digest: u128, slot: &'a Slot, now: SystemTime) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.put(digest, slot, now)
                .await
                .map_err(|e| StoreError(e.to_string()))
        })
    }

    fn purge<'a>(&'a self, purge: &'a Purge, at: SystemTime) -> StoreFuture<'a, usize> {
        Box::pin(async move {
            let mut n = 0;
            let fail = |e: portcullis_redis::Unavailable| StoreError(e.to_string());
            for url in &purge.urls {
                n += self
                    .purge_tag(&url_tag(url), purge.soft, at)
                    .await
                    .map_err(fail)?;
            }
            for tag in &purge.tags {
                n += self.purge_tag(tag, purge.soft, at).await.map_err(fail)?;
            }
            for prefix in &purge.prefixes {
                n += self
                    .purge_prefix(prefix, purge.soft, at)
                    .await
                    .map_err(fail)?;
            }
            Ok(n)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use http::{HeaderMap, StatusCode};

    use super::*;
    use crate::{
        StoredMeta,
        entry::StoredResponse,
        key::{KeyInput, KeyParts, build},
    };

    fn key(path: &str) -> CacheKey {
        let input = KeyInput {
            scheme: "http",
            host: "h",
            path,
            query: None,
            consumer: None,
            operation: None,
        };
        build(&input, &HeaderMap::new(), &KeyParts::default())
    }

    fn slot(key: &CacheKey, tags: &[&str], now: SystemTime) -> Slot {
        Slot {
            key: Arc::clone(&key.readable),
            url_len: key.url_len,
            variants: vec![Arc::new(
                StoredResponse {
                    status: StatusCode::OK,
                    headers: HeaderMap::new(),
                    body: Bytes::from_static(b"x"),
                    meta: StoredMeta {
                        response_time: now,
                        initial_age: Duration::ZERO,
                        lifetime: Duration::from_secs(60),
                        no_cache: false,
                        must_revalidate: false,
                        stale_while_revalidate: Duration::ZERO,
                        stale_if_error: Duration::ZERO,
                    },
                    vary: Vec::new(),
                    tags: tags.iter().map(|t| Arc::from(*t)).collect(),
                    retain: Duration::from_secs(60),
                    compressible: false,
                    derived: false,
                }
                .seal(),
            )],
        }
    }

    #[tokio::test]
    async fn the_memory_tier_loads_saves_and_purges_through_the_trait() {
        let store: &dyn Store = &MemoryStore::new(1 << 20);
        let now = SystemTime::now();
        let (a, b) = (key("/a"), key("/b"));
        store
            .save(a.digest, &slot(&a, &["t1"], now), now)
            .await
            .unwrap();
        store
            .save(b.digest, &slot(&b, &["t2"], now), now)
            .await
            .unwrap();
        assert_eq!(store.tier(), "memory");
        assert!(store.load(&a, now).await.unwrap().is_some());
        let by_tag = Purge {
            tags: vec!["t1".into()],
            ..Purge::default()
        };
        assert_eq!(store.purge(&by_tag, now).await.unwrap(), 1);
        assert!(store.load(&a, now).await.unwrap().is_none());
        let soft = Purge {
            urls: vec!["http://h/b".into()],
            soft: true,
            ..Purge::default()
        };
        assert_eq!(store.purge(&soft, now).await.unwrap(), 1);
        let softened = store.load(&b, now).await.unwrap().expect("kept, stale");
        assert_eq!(softened.variants[0].meta.lifetime, Duration::ZERO);
    }
}
