//! The resilience capabilities as tower layers, for any service that answers
//! `Request<B>` with `Response<impl Body>` (an axum router, a hyper service), without the
//! gateway. Each answers with `Response<portcullis_http::Body>`, and makes its refusals itself
//! with the contract's JSON error ([`Refusal::into_response`](crate::Refusal::into_response)),
//! naming the request by its [`RequestId`](portcullis_http::RequestId) extension when it has
//! one.
//!
//! A sensible order, outermost first:
//!
//! 1. [`LoadShedLayer`]: refuse at once what is beyond any reasonable load;
//! 2. [`ConcurrencyLimitLayer`]: queue briefly for a slot;
//! 3. [`BreakerLayer`]: fail fast while the service is failing;
//! 4. [`DeadlineLayer`]: inside the breaker, so calls that time out count as failures.
//!
//! ```
//! use std::{sync::Arc, time::Duration};
//! use portcullis_resilience::{
//!     Breaker, BreakerConfig, BreakerLayer, ConcurrencyConfig, ConcurrencyLimit,
//!     ConcurrencyLimitLayer, DeadlineLayer, LoadShedLayer,
//! };
//! use tower::ServiceBuilder;
//!
//! let limit = Arc::new(ConcurrencyLimit::new(ConcurrencyConfig {
//!     max_in_flight: 64,
//!     max_queue: 128,
//!     queue_timeout: Duration::from_millis(500),
//!     adaptive: None,
//! }));
//! let layers = ServiceBuilder::new()
//!     .layer(LoadShedLayer::new(1_000))
//!     .layer(ConcurrencyLimitLayer::new(limit))
//!     .layer(BreakerLayer::new(Breaker::new(BreakerConfig::default())))
//!     .layer(DeadlineLayer::new(Duration::from_secs(10)));
//! # let _ = layers;
//! ```

mod breaker;
mod concurrency;
mod deadline;
mod guarded_body;
mod load_shed;

use std::any::Any;

use bytes::Bytes;
use portcullis_http::{Body, BoxError, body};

pub use breaker::{BreakerFuture, BreakerLayer, BreakerService};
pub use concurrency::{ConcurrencyLimitLayer, ConcurrencyLimitService};
pub use deadline::{DeadlineFuture, DeadlineLayer, DeadlineService};
pub use load_shed::{LoadShedFuture, LoadShedLayer, LoadShedService};

/// The inner service's response body as the one body type; a body that already is one is
/// passed on as it is rather than boxed twice.
fn into_body<B>(inner: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let mut slot = Some(inner);
    if let Some(already) = (&mut slot as &mut dyn Any).downcast_mut::<Option<Body>>()
        && let Some(already) = already.take()
    {
        return already;
    }
    slot.map_or_else(body::empty, body::boxed)
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, Full};

    use super::*;

    #[tokio::test]
    async fn a_boxed_body_is_passed_on_and_others_are_boxed() {
        let b = into_body(body::full("one"));
        assert_eq!(b.collect().await.unwrap().to_bytes(), "one");
        let b = into_body(Full::new(Bytes::from_static(b"two")));
        assert_eq!(b.collect().await.unwrap().to_bytes(), "two");
    }
}
