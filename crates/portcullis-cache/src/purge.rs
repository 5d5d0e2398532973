//! Purges: by URL, tag or URL prefix, hard (delete) or soft (mark stale), in this instance's
//! memory, in the Redis tier, and — through an invalidation message on Redis pub/sub — in the
//! memory of every other instance.
//!
//! An instance whose subscription broke may have missed messages; when it resubscribes it
//! clears its memory tier (the Redis tier, already purged, refills it), so a purge is never
//! silently lost.

use std::{
    sync::{Arc, Weak},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use portcullis_redis::Notice;
use serde::{Deserialize, Serialize};

use crate::{Cache, redis_tier::RedisTier, serve::Inner, tier::Store};

/// What to purge.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Purge {
    /// Resources by URL (`scheme://host/path?query`; the query is normalized as in keys), with
    /// every variant and extra-key form.
    #[serde(default, alias = "keys")]
    pub urls: Vec<String>,
    /// Entries carrying any of these tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Resources whose URL starts with any of these.
    #[serde(default)]
    pub prefixes: Vec<String>,
    /// Mark stale (revalidated on next use, still usable for stale-if-error) instead of
    /// deleting.
    #[serde(default)]
    pub soft: bool,
}

impl Purge {
    /// Whether it names nothing.
    pub fn is_empty(&self) -> bool {
        self.urls.is_empty() && self.tags.is_empty() && self.prefixes.is_empty()
    }
}

/// What a purge did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Purged {
    /// Keys affected in this instance's memory tier.
    pub memory: usize,
    /// Entries affected in the Redis tier (`None` without one, or when it failed).
    pub redis: Option<usize>,
    /// Whether other instances were told (always true without a Redis tier: there are none
    /// sharing this cache).
    pub propagated: bool,
    /// Why the Redis part failed, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Purged {
    /// Keys removed in the larger of the two tiers this instance sees (the same entry usually
    /// goes from both).
    pub fn removed(&self) -> usize {
        self.memory.max(self.redis.unwrap_or(0))
    }
}

/// The message other instances receive.
#[derive(Debug, Serialize, Deserialize)]
struct Invalidation {
    /// The publishing instance (it has purged its own memory already).
    from: String,
    /// When the purge happened, ms since the epoch (soft purges mark staleness from here).
    at: u64,
    purge: Purge,
}

impl Cache {
    /// Purges `what` here, in the Redis tier, and in every instance's memory.
    pub async fn purge(&self, what: &Purge) -> Purged {
        let at = self.now();
        let memory = self.purge_memory(what, at);
        let Some(tier) = self.tier() else {
            return Purged {
                memory,
                redis: None,
                propagated: true,
                error: None,
            };
        };
        let mut purged = Purged {
            memory,
            ..Purged::default()
        };
        match Store::purge(&*tier, what, at).await {
            Ok(n) => purged.redis = Some(n),
            Err(e) => purged.error = Some(e.to_string()),
        }
        let message = Invalidation {
            from: tier.instance().to_owned(),
            at: crate::codec::millis(at),
            purge: what.clone(),
        };
        match serde_json::to_vec(&message) {
            Ok(bytes) => match tier.publish(&bytes).await {
                Ok(()) => purged.propagated = true,
                Err(e) => {
                    tracing::warn!(error = %e, "cache purge not propagated to other instances");
                    purged.error.get_or_insert_with(|| e.to_string());
                }
            },
            Err(e) => purged.error = Some(e.to_string()),
        }
        purged
    }

    /// Applies `what` to this instance's memory tier only (and logs it, so fills under way
    /// do not store what it purged).
    pub(crate) fn purge_memory(&self, what: &Purge, at: SystemTime) -> usize {
        self.inner.purges.record(what);
        self.memory().apply(what, at)
    }
}

/// Applies other instances' invalidation messages to the memory tier until the cache or the
/// tier is gone.
pub(crate) async fn listen(
    cache: Weak<Inner>,
    tier: Weak<RedisTier>,
    mut notices: tokio::sync::mpsc::Receiver<Notice>,
) {
    while let Some(notice) = notices.recv().await {
        let (Some(inner), Some(tier)) = (cache.upgrade(), tier.upgrade()) else {
            return;
        };
        let cache = Cache::from_inner(inner);
        match notice {
            Notice::Message(bytes) => {
                let Ok(message) = serde_json::from_slice::<Invalidation>(&bytes) else {
                    tracing::debug!("ignored a malformed cache invalidation message");
                    continue;
                };
                if message.from == tier.instance() {
                    continue;
                }
                let at = UNIX_EPOCH + Duration::from_millis(message.at);
                let n = cache.purge_memory(&message.purge, at);
                tier.received();
                tracing::debug!(from = %message.from, removed = n, "applied a cache invalidation");
            }
            Notice::Resubscribed => {
                cache.memory().clear();
                tier.gap();
                tracing::warn!(
                    "cache invalidation messages may have been missed; memory tier cleared"
                );
            }
        }
        drop(tier);
    }
}

/// A Redis tier and the task applying its invalidation messages; dropping it stops the task.
#[derive(Debug)]
pub(crate) struct Attached {
    pub(crate) tier: Arc<RedisTier>,
    listener: Option<tokio::task::AbortHandle>,
}

impl Attached {
    /// Attaches `tier` and, inside a tokio runtime, starts applying its messages (outside
    /// one, as in a synchronous unit test, the tier works without them).
    pub(crate) fn start(cache: &Cache, tier: Arc<RedisTier>) -> Self {
        let listener = tokio::runtime::Handle::try_current().ok().map(|rt| {
            let notices = tier.subscribe();
            rt.spawn(listen(cache.downgrade(), Arc::downgrade(&tier), notices))
                .abort_handle()
        });
        Self { tier, listener }
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        if let Some(listener) = &self.listener {
            listener.abort();
        }
    }
}

/// How many recent purges are remembered for fills under way.
const LOG_LEN: usize = 1024;

/// Recent purges, numbered. A fill notes the number when it starts and, before storing,
/// checks the purges logged since: a purge that covers its response wins (the response may
/// predate the change the purge announced). If more purges happened during one fill than the
/// log holds, the fill does not store.
#[derive(Debug, Default)]
pub(crate) struct PurgeLog {
    inner: parking_lot::Mutex<LogInner>,
}

#[derive(Debug, Default)]
struct LogInner {
    /// Number of the last purge logged.
    last: u64,
    entries: std::collections::VecDeque<(u64, Purge)>,
}

impl PurgeLog {
    /// The number of the last purge logged.
    pub(crate) fn mark(&self) -> u64 {
        self.inner.lock().last
    }

    pub(crate) fn record(&self, what: &Purge) {
        let mut log = self.inner.lock();
        log.last += 1;
        let n = log.last;
        if log.entries.len() == LOG_LEN {
            log.entries.pop_front();
        }
        log.entries.push_back((n, what.clone()));
    }

    /// Whether a purge after `mark` covers the resource at `url` carrying `tags`.
    pub(crate) fn covers_since(&self, mark: u64, url: &str, tags: &[Arc<str>]) -> bool {
        let log = self.inner.lock();
        if log.last == mark {
            return false;
        }
        if log.entries.front().is_none_or(|(n, _)| *n > mark + 1) {
            // Purges since `mark` fell out of the log: assume one covered it.
            return true;
        }
        log.entries
            .iter()
            .filter(|(n, _)| *n > mark)
            .any(|(_, p)| p.covers(url, tags))
    }
}

impl Purge {
    /// Whether this purge removes the resource at `url` carrying `tags`.
    pub fn covers(&self, url: &str, tags: &[Arc<str>]) -> bool {
        self.urls.iter().any(|u| u == url)
            || self
                .tags
                .iter()
                .any(|t| tags.iter().any(|have| **have == **t))
            || self.prefixes.iter().any(|p| url.starts_with(p.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(t: &[&str]) -> Vec<Arc<str>> {
        t.iter().map(|s| Arc::from(*s)).collect()
    }

    #[test]
    fn a_fill_sees_only_the_purges_since_it_began_that_cover_it() {
        let log = PurgeLog::default();
        let url = "http://h/items/1";
        let before = log.mark();
        assert!(!log.covers_since(before, url, &tags(&["items"])));
        log.record(&Purge {
            tags: vec!["other".into()],
            ..Purge::default()
        });
        assert!(!log.covers_since(before, url, &tags(&["items"])));
        let mid = log.mark();
        log.record(&Purge {
            prefixes: vec!["http://h/items/".into()],
            ..Purge::default()
        });
        assert!(log.covers_since(before, url, &[]));
        assert!(log.covers_since(mid, url, &[]));
        assert!(!log.covers_since(log.mark(), url, &[]), "nothing since");
        assert!(!log.covers_since(mid, "http://h/other", &[]));
        let url_purge = Purge {
            urls: vec![url.into()],
            ..Purge::default()
        };
        assert!(url_purge.covers(url, &[]));
        assert!(!url_purge.covers("http://h/items/10", &[]));
    }

    #[test]
    fn a_fill_older_than_the_log_assumes_it_was_purged() {
        let log = PurgeLog::default();
        let start = log.mark();
        for _ in 0..=LOG_LEN {
            log.record(&Purge {
                tags: vec!["unrelated".into()],
                ..Purge::default()
            });
        }
        assert!(log.covers_since(start, "http://h/x", &[]));
    }
}
