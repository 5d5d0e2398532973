//! The Portcullis HTTP cache: RFC 9111 semantics in front of any origin, as a tower layer.
//!
//! - Policy, as pure functions of headers and an explicit clock: [`CacheControl`],
//!   [`storability`] (what a *shared* cache may store, with the never-leak rules),
//!   [`freshness`] (lifetime and age) and [`decision`] (fresh, stale-while-revalidate,
//!   revalidate).
//! - Keys ([`key`]): method, scheme, host, normalized path and sorted query, extra parts from
//!   config, a 128-bit digest; `Vary` variants live under one key ([`entry`]).
//! - The memory tier ([`store`]): moka, bounded by bytes, per-entry expiry, tag index.
//! - The Redis tier ([`redis_tier`], entry format in [`codec`]): shared by every instance,
//!   filled in the background, coalesced across instances with fill locks; purges by URL,
//!   tag and prefix reach every instance's memory by pub/sub ([`purge`]).
//! - The flow ([`Cache::serve`]): coalesced fills, hit-for-miss, conditional requests and
//!   304s, revalidation, stale-while-revalidate in the background, stale-if-error with a
//!   back-off, invalidation on writes, `X-Cache` and `Age` on every response.
//! - [`CacheLayer`]: the same as a tower layer, for an axum or hyper app (see
//!   `examples/axum_cache.rs`).

pub mod cache_control;
pub mod clock;
pub mod coalesce;
pub mod codec;
pub mod compress;
mod compress_stream;
pub mod decision;
pub mod entry;
pub mod freshness;
pub mod graphql;
pub mod key;
pub mod layer;
pub mod policy;
pub mod purge;
pub mod range;
pub mod redis_tier;
pub mod serve;
pub mod stats;
pub mod storability;
pub mod store;
mod tee;
pub mod tier;
mod tiered;

pub use cache_control::{CacheControl, MaxStale, SURROGATE_TOKEN, SurrogateControl};
pub use clock::{Clock, ManualClock, SystemClock};
pub use decision::{Decision, StoredMeta, decide};
pub use freshness::{Freshness, HeuristicPolicy};
pub use key::{CacheKey, KeyParts, QueryIgnore};
pub use layer::{CacheLayer, CacheService};
pub use policy::{CacheConfig, RoutePolicy};
pub use purge::{Purge, Purged};
pub use redis_tier::{RedisTier, TierStats};
pub use serve::{Cache, Fetch, RequestTarget};
pub use stats::{CacheStats, Outcome, RouteStats, StatsSnapshot};
pub use storability::{NotStorable, Storable, storable};
pub use store::MemoryStore;
pub use tier::{Store, StoreError, StoreFuture};
