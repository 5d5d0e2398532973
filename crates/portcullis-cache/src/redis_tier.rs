//! The shared tier (L2) in Redis: entries every gateway instance reads and writes, the tag
//! and URL indexes purges use, the fill locks that coalesce misses across instances, and the
//! invalidation channel.
//!
//! Keys (`p` is the `[redis]` prefix, `d` an entry's digest in hex):
//!
//! | key | type | holds |
//! |-----|------|-------|
//! | `p` `e:{d}` | string | the entry ([`crate::codec`]), expiring with its longest-kept variant |
//! | `p` `l:{d}` | string | the fill lock: the instance fetching `d` (`SET NX PX`) |
//! | `p` `t:{tag}` | set | digests of entries carrying `tag` (`url:<url>` for every entry), expiring with the last of them |
//! | `p` `{urls}` / `p` `{urls}:exp` | sorted sets | stored URLs, by name (for purges by prefix, `ZRANGEBYLEX`) and by expiry (for trimming) |
//!
//! An entry and its lock share a hash tag (`{d}`), so the scripts touching both are
//! slot-safe in Redis Cluster; every other script touches one key (or the two URL indexes,
//! which share `{urls}`). Nothing uses `KEYS`; purges walk a tag's set with `SSCAN` and a
//! prefix with `ZRANGEBYLEX`, both bounded by what they purge.
//!
//! Every call goes through the gateway's Redis handle: a time budget and a breaker, so a slow
//! or absent Redis costs a lookup nothing (the call is not attempted) and the cache carries on
//! with memory alone.

use std::{
    sync::{
        LazyLock,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use futures_util::future::join_all;
use portcullis_redis::{Notice, Redis, Unavailable};
use redis::Script;
use serde::Serialize;

use crate::{
    codec::{self, Decoded},
    entry::Slot,
    store::url_tag,
};

/// Adds a member to a tag set and extends the set's life to cover it.
static ADD_MEMBER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"redis.call('SADD', KEYS[1], ARGV[1])
local ttl = tonumber(ARGV[2])
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1",
    )
});

/// Records a URL in the prefix index and trims URLs whose entries have expired.
static INDEX_URL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"redis.call('ZADD', KEYS[1], 0, ARGV[1])
redis.call('ZADD', KEYS[2], 'GT', ARGV[2], ARGV[1])
local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[3], 'LIMIT', 0, 64)
if #old > 0 then
  redis.call('ZREM', KEYS[1], unpack(old))
  redis.call('ZREM', KEYS[2], unpack(old))
end
return #old",
    )
});

/// Stamps an existing entry as soft-purged (the stamp sits at a fixed offset; see codec).
static SOFTEN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('SETRANGE', KEYS[1], tonumber(ARGV[2]), ARGV[1])
  return 1
end
return 0",
    )
});

/// Releases a fill lock if this instance still holds it.
static UNLOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0",
    )
});

/// The entry if it is there; otherwise 1 while the fill lock is held, 0 once it is not.
static POLL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local v = redis.call('GET', KEYS[1])
if v then return v end
return redis.call('EXISTS', KEYS[2])",
    )
});

/// Members handled per `SSCAN`/`ZRANGEBYLEX` page.
const PAGE: usize = 500;
/// Most pages one purge walks (a bound on its cost: 500 000 members).
const MAX_PAGES: usize = 1000;

/// What a poll of a locked key found.
#[derive(Debug)]
pub enum Poll {
    /// The entry arrived.
    Filled(Box<Decoded>),
    /// Still being fetched elsewhere.
    Locked,
    /// Neither the entry nor a lock: the other instance gave up (or did not store).
    Released,
}

/// Counters of the shared tier.
#[derive(Debug, Default)]
struct Counters {
    reads: AtomicU64,
    read_errors: AtomicU64,
    writes: AtomicU64,
    write_errors: AtomicU64,
    published: AtomicU64,
    received: AtomicU64,
    gaps: AtomicU64,
    lock_waits: AtomicU64,
}

/// The shared tier's counters, for the admin API and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TierStats {
    /// `up`, `down` or `probing` (the Redis breaker).
    pub state: &'static str,
    /// Lookups sent to Redis.
    pub reads: u64,
    /// Lookups that failed or were skipped while Redis was unavailable.
    pub read_errors: u64,
    /// Entries written, with their tag and URL indexes.
    pub writes: u64,
    /// Writes that failed or were skipped.
    pub write_errors: u64,
    /// Invalidation messages this instance published.
    pub invalidations_published: u64,
    /// Invalidation messages from other instances applied here.
    pub invalidations_received: u64,
    /// Times the invalidation subscription was re-established after a break (the memory tier
    /// is cleared each time, since messages may have been missed).
    pub subscription_gaps: u64,
    /// Misses that waited for another instance's fill instead of going upstream.
    pub lock_waits: u64,
}

/// The Redis tier.
#[derive(Debug)]
pub struct RedisTier {
    redis: Redis,
    prefix: String,
    channel: String,
    instance: String,
    compress_min: usize,
    max_payload: usize,
    counters: Counters,
    /// Counts invalidation messages applied, for whoever waits on one (tests, measurements).
    applied: tokio::sync::watch::Sender<u64>,
}

impl RedisTier {
    /// The tier on `redis`: payloads of `compress_min` bytes or more are zstd-compressed;
    /// entries are at most `max_object_size` bytes of body (decompression is bounded by it).
    pub fn new(redis: Redis, compress_min: u64, max_object_size: u64) -> Self {
        let prefix = redis.prefix().to_owned();
        Self {
            channel: format!("{prefix}invalidate"),
            instance: format!("{:016x}", fastrand::u64(..)),
            redis,
            prefix,
            compress_min: usize::try_from(compress_min).unwrap_or(usize::MAX),
            max_payload: usize::try_from(max_object_size)
                .unwrap_or(usize::MAX)
                .saturating_mul(2)
                .saturating_add(1 << 20),
            counters: Counters::default(),
            applied: tokio::sync::watch::Sender::new(0),
        }
    }

    /// The Redis handle.
    pub fn redis(&self) -> &Redis {
        &self.redis
    }

    /// This instance's id in invalidation messages and locks.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The invalidation channel.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    fn entry_key(&self, digest: u128) -> String {
        format!("{}e:{{{digest:032x}}}", self.prefix)
    }

    fn entry_key_hex(&self, hex: &str) -> String {
        format!("{}e:{{{hex}}}", self.prefix)
    }

    fn lock_key(&self, digest: u128) -> String {
        format!("{}l:{{{digest:032x}}}", self.prefix)
    }

    fn tag_key(&self, tag: &str) -> String {
        format!("{}t:{{{tag}}}", self.prefix)
    }

    fn url_index(&self) -> [String; 2] {
        [
            format!("{}{{urls}}", self.prefix),
            format!("{}{{urls}}:exp", self.prefix),
        ]
    }

    /// The entry stored under `digest`, with variants kept past `now` (a decoding failure,
    /// e.g. an entry of another format version, is a miss).
    pub async fn get(&self, digest: u128, now: SystemTime) -> Result<Option<Decoded>, Unavailable> {
        self.counters.reads.fetch_add(1, Relaxed);
        let bytes: Option<Vec<u8>> = self
            .redis
            .query("cache_get", redis::cmd("GET").arg(self.entry_key(digest)))
            .await
            .inspect_err(|_| {
                self.counters.read_errors.fetch_add(1, Relaxed);
            })?;
        Ok(bytes.and_then(|b| self.decode(b, now)))
    }

    fn decode(&self, bytes: Vec<u8>, now: SystemTime) -> Option<Decoded> {
        match codec::decode(bytes, now, self.max_payload) {
            Ok(d) => Some(d),
            Err(e) => {
                tracing::debug!(error = %e, "shared cache entry not readable; treated as a miss");
                None
            }
        }
    }

    /// Writes `slot` under `digest` and indexes it under its tags and URL. Variants whose
    /// retention has ended by `now` are left out; nothing is written when none is left.
    pub async fn put(&self, digest: u128, slot: &Slot, now: SystemTime) -> Result<(), Unavailable> {
        let until = slot
            .variants
            .iter()
            .map(|v| codec::retain_until(v))
            .max()
            .unwrap_or(UNIX_EPOCH);
        let Ok(ttl) = until.duration_since(now) else {
            return Ok(());
        };
        let ttl_ms = px(ttl);
        let bytes = codec::encode(slot, self.compress_min);
        let written: Result<(), Unavailable> = self
            .redis
            .query(
                "cache_put",
                redis::cmd("SET")
                    .arg(self.entry_key(digest))
                    .arg(bytes)
                    .arg("PX")
                    .arg(ttl_ms),
            )
            .await;
        if let Err(e) = written {
            self.counters.write_errors.fetch_add(1, Relaxed);
            return Err(e);
        }
        let hex = format!("{digest:032x}");
        let url = slot.url();
        let mut tags: Vec<String> = vec![url_tag(url).to_string()];
        for v in &slot.variants {
            for t in &v.tags {
                if !tags.iter().any(|have| **have == **t) {
                    tags.push(t.to_string());
                }
            }
        }
        let ttl_arg = ttl_ms.to_string();
        let adds = tags.iter().map(|tag| {
            let key = self.tag_key(tag);
            let args = [hex.as_str(), ttl_arg.as_str()];
            async move {
                self.redis
                    .run_script::<i64>("cache_index", &ADD_MEMBER, &[key], &args)
                    .await
            }
        });
        let expires = (crate::codec::millis(now) + ttl_ms).to_string();
        let now_ms = crate::codec::millis(now).to_string();
        let index_keys = self.url_index();
        let index_args = [url, expires.as_str(), now_ms.as_str()];
        let index =
            self.redis
                .run_script::<i64>("cache_index", &INDEX_URL, &index_keys, &index_args);
        let (added, indexed) = futures_util::future::join(join_all(adds), index).await;
        // Counted once the entry can be found by its tags and URL too, so a purge that follows
        // a counted write reaches it.
        let done = added
            .into_iter()
            .collect::<Result<Vec<_>, _>>()
            .and(indexed.map(drop));
        match &done {
            Ok(()) => self.counters.writes.fetch_add(1, Relaxed),
            Err(_) => self.counters.write_errors.fetch_add(1, Relaxed),
        };
        done
    }

    /// Deletes the entry under `digest` (best effort: a failure leaves it to its TTL).
    pub async fn remove(&self, digest: u128) {
        let _: Result<i64, _> = self
            .redis
            .query(
                "cache_purge",
                redis::cmd("UNLINK").arg(self.entry_key(digest)),
            )
            .await;
    }

    /// Removes (or, when `soft`, stamps stale as of `at`) every entry carrying `tag`. Returns
    /// how many entries were affected.
    pub async fn purge_tag(
        &self,
        tag: &str,
        soft: bool,
        at: SystemTime,
    ) -> Result<usize, Unavailable> {
        let set = self.tag_key(tag);
        let stamp = codec::stamp(at);
        let offset = codec::STAMP_OFFSET.to_string();
        let mut cursor: u64 = 0;
        let mut affected = 0;
        for _ in 0..MAX_PAGES {
            let (next, members): (u64, Vec<String>) = self
                .redis
                .query(
                    "cache_purge",
                    redis::cmd("SSCAN")
                        .arg(&set)
                        .arg(cursor)
                        .arg("COUNT")
                        .arg(PAGE),
                )
                .await?;
            let done = join_all(members.iter().map(|hex| {
                let key = self.entry_key_hex(hex);
                let (stamp, offset) = (&stamp, &offset);
                async move {
                    if soft {
                        self.redis
                            .run_script::<i64>(
                                "cache_purge",
                                &SOFTEN,
                                &[key],
                                &[stamp.as_slice(), offset.as_bytes()],
                            )
                            .await
                    } else {
                        self.redis
                            .query::<i64>("cache_purge", redis::cmd("UNLINK").arg(key))
                            .await
                    }
                }
            }))
            .await;
            for r in done {
                affected += usize::try_from(r?).unwrap_or(0);
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        if !soft {
            let _: i64 = self
                .redis
                .query("cache_purge", redis::cmd("UNLINK").arg(&set))
                .await?;
        }
        Ok(affected)
    }

    /// Removes (or soft-purges) every entry whose URL starts with `prefix`.
    pub async fn purge_prefix(
        &self,
        prefix: &str,
        soft: bool,
        at: SystemTime,
    ) -> Result<usize, Unavailable> {
        let [by_name, by_expiry] = self.url_index();
        let mut start = b"[".to_vec();
        start.extend_from_slice(prefix.as_bytes());
        let mut end = b"(".to_vec();
        end.extend_from_slice(prefix.as_bytes());
        end.push(0xff);
        let mut affected = 0;
        let mut offset = 0;
        for _ in 0..MAX_PAGES {
            let urls: Vec<String> = self
                .redis
                .query(
                    "cache_purge",
                    redis::cmd("ZRANGEBYLEX")
                        .arg(&by_name)
                        .arg(&start)
                        .arg(&end)
                        .arg("LIMIT")
                        .arg(offset)
                        .arg(PAGE),
                )
                .await?;
            for url in &urls {
                affected += self.purge_tag(&url_tag(url), soft, at).await?;
            }
            if soft {
                offset += urls.len();
            } else if !urls.is_empty() {
                for index in [&by_name, &by_expiry] {
                    let _: i64 = self
                        .redis
                        .query("cache_purge", redis::cmd("ZREM").arg(index).arg(&urls))
                        .await?;
                }
            }
            if urls.len() < PAGE {
                break;
            }
        }
        Ok(affected)
    }

    /// Takes the fill lock for `digest` for at most `ttl`; false when another instance holds
    /// it.
    pub async fn try_lock(&self, digest: u128, ttl: Duration) -> Result<bool, Unavailable> {
        let ttl_ms = px(ttl);
        let set: Option<String> = self
            .redis
            .query(
                "cache_lock",
                redis::cmd("SET")
                    .arg(self.lock_key(digest))
                    .arg(&self.instance)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_ms),
            )
            .await?;
        Ok(set.is_some())
    }

    /// Releases the fill lock for `digest` if this instance holds it.
    pub async fn unlock(&self, digest: u128) {
        let _ = self
            .redis
            .run_script::<i64>(
                "cache_lock",
                &UNLOCK,
                &[self.lock_key(digest)],
                &[self.instance.as_str()],
            )
            .await;
    }

    /// Looks for the entry another instance is filling.
    pub async fn poll(&self, digest: u128, now: SystemTime) -> Result<Poll, Unavailable> {
        self.counters.reads.fetch_add(1, Relaxed);
        let v: redis::Value = self
            .redis
            .run_script(
                "cache_get",
                &POLL,
                &[self.entry_key(digest), self.lock_key(digest)],
                &[] as &[&str],
            )
            .await?;
        Ok(match v {
            redis::Value::BulkString(bytes) => match self.decode(bytes, now) {
                Some(d) => Poll::Filled(Box::new(d)),
                None => Poll::Released,
            },
            redis::Value::Int(1) => Poll::Locked,
            _ => Poll::Released,
        })
    }

    /// Records `id` for `ttl` across every instance; false when it was recorded already (a
    /// replay guard for signed webhooks).
    pub async fn first_use(&self, id: &str, ttl: Duration) -> Result<bool, Unavailable> {
        let ttl_ms = px(ttl);
        let set: Option<String> = self
            .redis
            .query(
                "cache_webhook",
                redis::cmd("SET")
                    .arg(format!("{}{id}", self.prefix))
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_ms),
            )
            .await?;
        Ok(set.is_some())
    }

    /// Publishes an invalidation message.
    pub async fn publish(&self, payload: &[u8]) -> Result<(), Unavailable> {
        self.redis.publish(&self.channel, payload).await?;
        self.counters.published.fetch_add(1, Relaxed);
        Ok(())
    }

    /// Subscribes to the invalidation channel.
    pub fn subscribe(&self) -> tokio::sync::mpsc::Receiver<Notice> {
        self.redis.subscribe(&self.channel)
    }

    pub(crate) fn received(&self) {
        self.counters.received.fetch_add(1, Relaxed);
        self.applied.send_modify(|n| *n += 1);
    }

    /// A receiver whose value is the number of other instances' invalidation messages applied
    /// here so far; it changes as each is applied.
    pub fn applied(&self) -> tokio::sync::watch::Receiver<u64> {
        self.applied.subscribe()
    }

    pub(crate) fn gap(&self) {
        self.counters.gaps.fetch_add(1, Relaxed);
    }

    pub(crate) fn lock_waited(&self) {
        self.counters.lock_waits.fetch_add(1, Relaxed);
    }

    /// The counters.
    pub fn stats(&self) -> TierStats {
        let c = &self.counters;
        TierStats {
            state: self.redis.health().state().as_str(),
            reads: c.reads.load(Relaxed),
            read_errors: c.read_errors.load(Relaxed),
            writes: c.writes.load(Relaxed),
            write_errors: c.write_errors.load(Relaxed),
            invalidations_published: c.published.load(Relaxed),
            invalidations_received: c.received.load(Relaxed),
            subscription_gaps: c.gaps.load(Relaxed),
            lock_waits: c.lock_waits.load(Relaxed),
        }
    }
}

/// A time to live as Redis' `PX` argument: whole milliseconds, at least 1.
fn px(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}
