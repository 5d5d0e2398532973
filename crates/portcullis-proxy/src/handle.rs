//! The gateway's current state behind one atomic pointer, and its reload.
//!
//! Every request loads the current [`Shared`] (routes, upstreams, cache policies) once, at its
//! start, and keeps it to the end, so a reload never changes a request midway; in-flight
//! requests finish on the state they started with. A reload builds the new state completely
//! (anything invalid fails before a thing changes) and swaps it in with one store (arc-swap).
//! What lives across reloads: the cache and its entries, the metrics registry, upstreams whose
//! table did not change (with their pooled connections and balancer state), cache counters per
//! route name, and the access log when `[log]` did not change. The listener itself (address,
//! TLS, HTTP/2, timeouts), `[cache]` sizing and `[admin]` are read once at start; a reload that
//! changes them reports which keys need a restart.

use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use parking_lot::Mutex;
use portcullis_config::{CacheConfig, Config, ServerConfig};

use crate::{
    service::Shared,
    stack::{BuildError, build_shared},
};

/// Reads and reloads a running gateway's state. Cheap to clone.
#[derive(Debug, Clone)]
pub struct GatewayHandle {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    current: ArcSwap<Shared>,
    /// What was read once at start, to tell which changes need a restart; the lock also
    /// serializes reloads.
    fixed: Mutex<Fixed>,
}

#[derive(Debug)]
struct Fixed {
    server: ServerConfig,
    cache: CacheConfig,
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    /// Routes now configured.
    pub routes: usize,
    /// Upstreams now configured.
    pub upstreams: usize,
    /// Upstreams kept as they were (same table), with their connections.
    pub upstreams_kept: usize,
    /// Changed keys that only take effect after a restart.
    pub needs_restart: Vec<&'static str>,
}

impl GatewayHandle {
    pub(crate) fn new(shared: Shared, config: &Config) -> Self {
        Self {
            inner: Arc::new(Inner {
                current: ArcSwap::from_pointee(shared),
                fixed: Mutex::new(Fixed {
                    server: config.server.clone(),
                    cache: config.cache.clone(),
                }),
            }),
        }
    }

    /// The current state (for inspection; requests use [`GatewayHandle::load`]).
    pub fn current(&self) -> Arc<Shared> {
        self.inner.current.load_full()
    }

    /// The current state for one request: cheaper than [`GatewayHandle::current`].
    pub(crate) fn load(&self) -> Guard<Arc<Shared>> {
        self.inner.current.load()
    }

    /// Builds the state for `config` (validated) and swaps it in. On error nothing changes.
    pub fn reload(&self, config: &Config) -> Result<ReloadReport, BuildError> {
        let fixed = self.inner.fixed.lock();
        let old = self.current();
        let shared = build_shared(
            config,
            old.cache.clone(),
            Arc::clone(&old.observe.base),
            Some(&old),
        )?;
        let upstreams_kept = shared
            .upstreams
            .iter()
            .filter(|u| old.upstreams.iter().any(|o| Arc::ptr_eq(o, u)))
            .count();
        let report = ReloadReport {
            routes: shared.routes.len(),
            upstreams: shared.upstreams.len(),
            upstreams_kept,
            needs_restart: needs_restart(&fixed, config),
        };
        self.inner.current.store(Arc::new(shared));
        Ok(report)
    }
}

/// The keys read only at start whose values differ in `config`.
fn needs_restart(fixed: &Fixed, config: &Config) -> Vec<&'static str> {
    let (old, new) = (&fixed.server, &config.server);
    let mut keys = Vec::new();
    let mut check = |changed: bool, key: &'static str| {
        if changed {
            keys.push(key);
        }
    };
    check(old.listen != new.listen, "server.listen");
    check(
        old.handover_socket != new.handover_socket,
        "server.handover_socket",
    );
    check(old.tls != new.tls, "server.tls");
    check(old.http2 != new.http2, "server.http2");
    check(
        old.drain_timeout != new.drain_timeout,
        "server.drain_timeout",
    );
    check(
        old.header_read_timeout != new.header_read_timeout,
        "server.header_read_timeout",
    );
    check(
        old.max_header_bytes != new.max_header_bytes,
        "server.max_header_bytes",
    );
    check(
        fixed.cache.memory_max != config.cache.memory_max,
        "cache.memory_max",
    );
    check(
        fixed.cache.max_object_size != config.cache.max_object_size,
        "cache.max_object_size",
    );
    check(
        fixed.cache.lock_timeout != config.cache.lock_timeout,
        "cache.lock_timeout",
    );
    check(
        fixed.cache.hit_for_miss != config.cache.hit_for_miss,
        "cache.hit_for_miss",
    );
    check(
        fixed.cache.error_backoff != config.cache.error_backoff,
        "cache.error_backoff",
    );
    check(
        fixed.cache.keep_stale != config.cache.keep_stale,
        "cache.keep_stale",
    );
    keys
}
