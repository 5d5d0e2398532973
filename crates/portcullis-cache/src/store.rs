//! The memory tier (L1): moka's TinyLFU cache bounded by bytes, with per-entry expiry, plus a
//! tag index for purges.
//!
//! moka is used (not hand-written) because it is the one well-kept crate with a weigher,
//! per-entry expiry and an eviction listener together (see shared/STACK.md §2.3). Its `sync`
//! flavour never awaits, so calling it from async code is fine. The tag index is ours: moka has
//! no secondary indexes. Each entry is also indexed under its URL (an implicit tag), which is
//! how writes invalidate every stored variant and extra-key form of a resource.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use moka::{notification::RemovalCause, ops::compute::Op, sync::Cache};
use parking_lot::Mutex;

use crate::{
    entry::{Slot, StoredResponse},
    key::CacheKey,
};

type TagIndex = Arc<Mutex<HashMap<Arc<str>, HashSet<u128>>>>;

/// The in-process store.
#[derive(Clone)]
pub struct MemoryStore {
    cache: Cache<u128, Arc<Slot>>,
    tags: TagIndex,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("entries", &self.cache.entry_count())
            .field("bytes", &self.cache.weighted_size())
            .finish()
    }
}

struct RetainExpiry;

impl moka::Expiry<u128, Arc<Slot>> for RetainExpiry {
    fn expire_after_create(&self, _: &u128, slot: &Arc<Slot>, _: Instant) -> Option<Duration> {
        Some(slot.retain())
    }

    fn expire_after_update(
        &self,
        _: &u128,
        slot: &Arc<Slot>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(slot.retain())
    }
}

impl MemoryStore {
    /// A store holding at most `max_bytes` (headers, bodies and keys counted).
    pub fn new(max_bytes: u64) -> Self {
        let tags: TagIndex = Arc::default();
        let listener_tags = Arc::clone(&tags);
        let cache = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_: &u128, slot: &Arc<Slot>| slot.weight())
            .expire_after(RetainExpiry)
            .eviction_listener(move |digest: Arc<u128>, slot: Arc<Slot>, cause| {
                if cause != RemovalCause::Replaced {
                    unindex(&listener_tags, *digest, &slot);
                }
            })
            .build();
        Self { cache, tags }
    }

    /// The slot stored under `key`, if its readable key matches (a digest collision is a miss).
    pub fn get(&self, key: &CacheKey) -> Option<Arc<Slot>> {
        self.cache
            .get(&key.digest)
            .filter(|slot| slot.key == key.readable)
    }

    /// The slot stored under `digest` if its readable key is `readable`.
    pub fn get_raw(&self, digest: u128, readable: &str) -> Option<Arc<Slot>> {
        self.cache
            .get(&digest)
            .filter(|slot| &*slot.key == readable)
    }

    /// Stores `response` as a variant of `key`, replacing the variant it supersedes.
    pub fn insert(&self, key: &CacheKey, response: Arc<StoredResponse>) {
        let tags: Vec<Arc<str>> = response
            .tags
            .iter()
            .cloned()
            .chain(std::iter::once(url_tag(key.url())))
            .collect();
        self.cache.entry(key.digest).and_compute_with(|existing| {
            let slot = match existing {
                Some(e) if e.value().key == key.readable => e.value().with(&response),
                _ => Slot {
                    key: Arc::clone(&key.readable),
                    url_len: key.url_len,
                    variants: vec![response],
                },
            };
            Op::Put(Arc::new(slot))
        });
        let mut index = self.tags.lock();
        for tag in tags {
            index.entry(tag).or_default().insert(key.digest);
        }
    }

    /// Replaces the stored slot for `key` with one whose `old` variant is `new` (used when a
    /// revalidation freshens a response). Does nothing if `old` is gone.
    pub fn replace_variant(
        &self,
        key: &CacheKey,
        old: &Arc<StoredResponse>,
        new: &Arc<StoredResponse>,
    ) {
        self.cache
            .entry(key.digest)
            .and_compute_with(|existing| match existing {
                Some(e) if e.value().key == key.readable => {
                    let slot = e.value();
                    if !slot.variants.iter().any(|v| Arc::ptr_eq(v, old)) {
                        return Op::Nop;
                    }
                    let variants = slot
                        .variants
                        .iter()
                        .map(|v| {
                            if Arc::ptr_eq(v, old) {
                                Arc::clone(new)
                            } else {
                                Arc::clone(v)
                            }
                        })
                        .collect();
                    Op::Put(Arc::new(Slot {
                        key: Arc::clone(&slot.key),
                        url_len: slot.url_len,
                        variants,
                    }))
                }
                _ => Op::Nop,
            });
    }

    /// Removes whatever is stored under `key`.
    pub fn remove(&self, key: &CacheKey) -> bool {
        self.cache.remove(&key.digest).is_some()
    }

    /// Removes every entry of the resource at `url` (`scheme://host/path?query`), whatever its
    /// extra key parts. Returns how many keys were removed.
    pub fn purge_url(&self, url: &str) -> usize {
        self.purge_tag(&url_tag(url))
    }

    /// Removes every entry carrying `tag`. Returns how many keys were removed.
    pub fn purge_tag(&self, tag: &str) -> usize {
        let digests = self.tags.lock().remove(tag).unwrap_or_default();
        digests
            .into_iter()
            .filter(|d| self.cache.remove(d).is_some())
            .count()
    }

    /// Applies `what`: removes (or, when soft, marks stale as of `at`) the entries of its URLs,
    /// tags and prefixes. Returns how many keys were affected.
    pub fn apply(&self, what: &crate::purge::Purge, at: SystemTime) -> usize {
        let mut n = 0;
        for url in &what.urls {
            n += if what.soft {
                self.soften_url(url, at)
            } else {
                self.purge_url(url)
            };
        }
        for tag in &what.tags {
            n += if what.soft {
                self.soften_tag(tag, at)
            } else {
                self.purge_tag(tag)
            };
        }
        for prefix in &what.prefixes {
            n += self.purge_prefix(prefix, what.soft, at);
        }
        n
    }

    /// Marks every entry carrying `tag` stale as of `at` (a soft purge: see
    /// [`StoredResponse::softened`]). Returns how many keys were affected.
    pub fn soften_tag(&self, tag: &str, at: SystemTime) -> usize {
        let digests: Vec<u128> = self
            .tags
            .lock()
            .get(tag)
            .map(|set| set.iter().copied().collect())
            .unwrap_or_default();
        digests.into_iter().filter(|d| self.soften(*d, at)).count()
    }

    /// Marks every entry of the resource at `url` stale as of `at`.
    pub fn soften_url(&self, url: &str, at: SystemTime) -> usize {
        self.soften_tag(&url_tag(url), at)
    }

    /// Removes (or, when `soft`, marks stale as of `at`) every entry whose URL starts with
    /// `prefix`. Walks the whole tier: purges by prefix are rare operator actions.
    pub fn purge_prefix(&self, prefix: &str, soft: bool, at: SystemTime) -> usize {
        let digests: Vec<u128> = self
            .cache
            .iter()
            .filter(|(_, slot)| slot.url().starts_with(prefix))
            .map(|(digest, _)| *digest)
            .collect();
        digests
            .into_iter()
            .filter(|d| {
                if soft {
                    self.soften(*d, at)
                } else {
                    self.cache.remove(d).is_some()
                }
            })
            .count()
    }

    fn soften(&self, digest: u128, at: SystemTime) -> bool {
        let mut changed = false;
        self.cache.entry(digest).and_compute_with(|existing| {
            let Some(e) = existing else { return Op::Nop };
            let slot = e.value();
            changed = true;
            Op::Put(Arc::new(Slot {
                key: Arc::clone(&slot.key),
                url_len: slot.url_len,
                variants: slot
                    .variants
                    .iter()
                    .map(|v| Arc::new(StoredResponse::clone(v).softened(at)))
                    .collect(),
            }))
        });
        changed
    }

    /// Adds the variants of `slot` (read from the shared tier) to what is stored under its
    /// key; a variant already held for the same request headers is replaced.
    pub fn fill(&self, digest: u128, slot: &Slot) {
        if slot.variants.is_empty() {
            return;
        }
        let mut tags: Vec<Arc<str>> = vec![url_tag(slot.url())];
        for v in &slot.variants {
            tags.extend(v.tags.iter().cloned());
        }
        self.cache.entry(digest).and_compute_with(|existing| {
            let merged = match existing {
                Some(e) if e.value().key == slot.key => {
                    // Oldest first, so the newest ends up first.
                    slot.variants
                        .iter()
                        .rev()
                        .fold(Slot::clone(e.value()), |acc, v| acc.with(v))
                }
                _ => slot.clone(),
            };
            Op::Put(Arc::new(merged))
        });
        let mut index = self.tags.lock();
        for tag in tags {
            index.entry(tag).or_default().insert(digest);
        }
    }

    /// Drops everything (after the shared tier's invalidation messages may have been missed).
    pub fn clear(&self) {
        self.cache.invalidate_all();
        self.cache.run_pending_tasks();
        self.tags.lock().clear();
    }

    /// Bytes accounted to stored entries (after pending maintenance).
    pub fn weighted_size(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.weighted_size()
    }

    /// Number of keys stored (after pending maintenance).
    pub fn entry_count(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }
}

/// The implicit tag every entry of the resource at `url` carries, in both tiers.
pub(crate) fn url_tag(url: &str) -> Arc<str> {
    Arc::from(format!("url:{url}"))
}

fn unindex(tags: &TagIndex, digest: u128, slot: &Slot) {
    let url = url_tag(slot.url());
    let mut index = tags.lock();
    let names = slot
        .variants
        .iter()
        .flat_map(|v| v.tags.iter().cloned())
        .chain(std::iter::once(url));
    for tag in names {
        if let Some(set) = index.get_mut(&tag) {
            set.remove(&digest);
            if set.is_empty() {
                index.remove(&tag);
            }
        }
    }
}
