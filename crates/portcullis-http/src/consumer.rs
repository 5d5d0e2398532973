//! The authenticated consumer, as a request extension shared by the layers that need it.

use std::sync::Arc;

/// The id of the consumer a request was authenticated as. The auth layer inserts it; the cache
/// (per-consumer keys) and the rate limiter read it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConsumerId(pub Arc<str>);
