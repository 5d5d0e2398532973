//! A [`ConcurrencyLimit`] as a tower layer: a slot per request, held until its response body
//! ends.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{Request, Response};
use portcullis_http::{Body, BoxError, RequestId, body};
use tokio::time::Instant;
use tower::{Layer, Service};

use super::{guarded_body::GuardedBody, into_body};
use crate::{ConcurrencyLimit, Refusal};

/// Puts a [`ConcurrencyLimit`] in front of a service.
///
/// - A request takes a slot (waiting in line for one, up to the limit's queue timeout) before
///   the inner service is called, and holds it until its response body has been sent in full
///   (or dropped), so a long download counts for as long as it streams.
/// - When the queue is full or the wait times out, the request is answered `503 Service
///   Unavailable` with the contract's JSON error and `Retry-After: 1`; the inner service is not
///   called.
/// - In adaptive mode each answer is a sample: its latency from taking the slot to the response
///   head, and whether it failed (an inner error or a 5xx).
///
/// ```
/// use std::{sync::Arc, time::Duration};
/// use portcullis_resilience::{AdaptiveConfig, ConcurrencyConfig, ConcurrencyLimit, ConcurrencyLimitLayer};
///
/// let limit = Arc::new(ConcurrencyLimit::new(ConcurrencyConfig {
///     max_in_flight: 32,
///     max_queue: 64,
///     queue_timeout: Duration::from_millis(200),
///     adaptive: Some(AdaptiveConfig { min_limit: 4, max_limit: 256, ..AdaptiveConfig::default() }),
/// }));
/// let layer = ConcurrencyLimitLayer::new(Arc::clone(&limit));
/// // `limit.limit()`, `limit.in_flight()` and `limit.waiting()` feed the metrics.
/// # let _ = layer;
/// ```
#[derive(Debug, Clone)]
pub struct ConcurrencyLimitLayer {
    limit: Arc<ConcurrencyLimit>,
}

impl ConcurrencyLimitLayer {
    /// A layer taking slots from `limit` (a [`ConcurrencyLimit`] or an `Arc` of one, to keep
    /// reading its counts or share it between services).
    pub fn new(limit: impl Into<Arc<ConcurrencyLimit>>) -> Self {
        Self {
            limit: limit.into(),
        }
    }
}

impl<S> Layer<S> for ConcurrencyLimitLayer {
    type Service = ConcurrencyLimitService<S>;

    fn layer(&self, inner: S) -> ConcurrencyLimitService<S> {
        ConcurrencyLimitService {
            inner,
            limit: Arc::clone(&self.limit),
        }
    }
}

/// The service [`ConcurrencyLimitLayer`] builds.
#[derive(Clone)]
pub struct ConcurrencyLimitService<S> {
    inner: S,
    limit: Arc<ConcurrencyLimit>,
}

impl<S> fmt::Debug for ConcurrencyLimitService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyLimitService")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ConcurrencyLimitService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: 'static,
    ReqBody: Send + 'static,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<S::Error>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        // The service that was polled ready handles this request; a clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        // Boxed outside the async block: naming the inner future's type inside it trips the
        // compiler's higher-ranked `Send` check on `Box<dyn Error>` (rust-lang/rust#102211).
        let mut call = move |req| -> InnerFuture<ResBody, S::Error> { Box::pin(inner.call(req)) };
        let limit = Arc::clone(&self.limit);
        Box::pin(async move {
            let mut permit = match limit.acquire().await {
                Ok(permit) => permit,
                Err(overloaded) => {
                    let request_id = req.extensions().get::<RequestId>();
                    return Ok(Refusal::from(overloaded).into_response(request_id));
                }
            };
            let started = Instant::now();
            let answered = call(req).await;
            let failed = answered
                .as_ref()
                .map_or(true, |response| response.status().is_server_error());
            permit.record(started.elapsed(), failed);
            let response = answered?;
            Ok(response.map(|b| body::boxed(GuardedBody::new(into_body(b), permit))))
        })
    }
}

/// The future of [`ConcurrencyLimitService`].
type BoxFuture<E> = Pin<Box<dyn Future<Output = Result<Response<Body>, E>> + Send>>;

/// The inner service's future, boxed.
type InnerFuture<B, E> = Pin<Box<dyn Future<Output = Result<Response<B>, E>> + Send>>;
