//! The authenticated consumer, as request extensions shared by the layers that need it.
//!
//! The auth layer inserts both after it authenticated a request; the cache (per-consumer keys),
//! the rate limiter (keys and tiers), the access log and header forwarding read them. Requests
//! that were not authenticated carry neither.

use std::sync::Arc;

/// The id of the consumer a request was authenticated as.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConsumerId(pub Arc<str>);

/// The tier (plan) of the consumer a request was authenticated as, e.g. `free` or `premium`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConsumerTier(pub Arc<str>);
