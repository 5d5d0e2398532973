//! A rate limiter as a tower layer, for any service that speaks `Request<Body>` →
//! `Response<Body>` (an axum router, a hyper service), without the gateway.
//!
//! The gateway decides its routes' limits itself (locally while routing, or on Redis in the
//! request's future); this layer makes the same decision in front of an inner service and
//! answers refusals itself.

use std::{
    fmt,
    future::Future,
    net::{IpAddr, Ipv4Addr},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response, StatusCode};
use portcullis_http::{Body, ClientIp, RequestId, error_response};
use tower::{Layer, Service};

use crate::{Caller, Decision, RateLimiter};

/// Puts a [`RateLimiter`] in front of a service.
///
/// What the service does with a request:
///
/// 1. It identifies the caller: the client address from the [`ClientIp`] request extension
///    (insert it where connections are accepted; behind proxies, the resolved client), and
///    the [`ConsumerId`](portcullis_http::ConsumerId) and
///    [`ConsumerTier`](portcullis_http::ConsumerTier) extensions an auth layer in front of
///    this one inserted. Header key parts ([`KeyPart::ApiKey`](crate::KeyPart::ApiKey),
///    [`KeyPart::Header`](crate::KeyPart::Header)) read the request as it reaches this layer:
///    behind `portcullis_auth::SecurityLayer`, which removes the API key, key on
///    [`KeyPart::Consumer`](crate::KeyPart::Consumer) instead. **Requests without
///    [`ClientIp`] share one address (`0.0.0.0`)**: per-IP limits then count them together
///    rather than not at all.
/// 2. Exempt callers, and callers no limit applies to, go straight through.
/// 3. A refused request is answered `429 Too Many Requests` with the contract's JSON error,
///    `Retry-After` and the `RateLimit-*` headers; the inner service is not called, and the
///    refusal consumes no quota.
/// 4. An allowed request's response (whatever the inner service answered) gets the
///    `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` headers, unless turned off
///    with [`with_headers`](Self::with_headers). Inner errors are passed through untouched.
///
/// A limiter built with [`RateLimiter::shared`] decides on Redis, exact across every process
/// sharing it; one built with [`RateLimiter::local`] in this process.
///
/// ```
/// use std::time::Duration;
/// use portcullis_limit::{KeyPart, Limit, Policy, Quota, Rate, RateLimitLayer, RateLimiter};
///
/// let limiter = RateLimiter::local(Policy {
///     scope: "api".into(),
///     limits: vec![Limit {
///         name: "per-ip".into(),
///         quota: Quota::gcra(Rate::new(100, Duration::from_secs(60))),
///         key: vec![KeyPart::ClientIp],
///     }],
///     ..Policy::default()
/// });
/// let layer = RateLimitLayer::new(limiter).with_policy_headers(true);
/// # let _ = layer;
/// ```
#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    limiter: Arc<RateLimiter>,
    headers: Headers,
}

/// Which rate-limit headers go on allowed responses.
#[derive(Debug, Clone, Copy)]
struct Headers {
    on_allowed: bool,
    structured: bool,
}

impl RateLimitLayer {
    /// A layer deciding with `limiter` (a [`RateLimiter`] or an `Arc` of one, to keep reading
    /// its [`stats`](RateLimiter::stats)).
    pub fn new(limiter: impl Into<Arc<RateLimiter>>) -> Self {
        Self {
            limiter: limiter.into(),
            headers: Headers {
                on_allowed: true,
                structured: false,
            },
        }
    }

    /// Whether allowed responses carry the `RateLimit-*` headers (default `true`; a 429 always
    /// carries them).
    #[must_use]
    pub fn with_headers(mut self, on: bool) -> Self {
        self.headers.on_allowed = on;
        self
    }

    /// Whether the structured `RateLimit-Policy` and `RateLimit` headers are added too
    /// (default `false`).
    #[must_use]
    pub fn with_policy_headers(mut self, on: bool) -> Self {
        self.headers.structured = on;
        self
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimitService<S>;

    fn layer(&self, inner: S) -> RateLimitService<S> {
        RateLimitService {
            inner,
            limiter: Arc::clone(&self.limiter),
            headers: self.headers,
        }
    }
}

/// The service [`RateLimitLayer`] builds.
#[derive(Clone)]
pub struct RateLimitService<S> {
    inner: S,
    limiter: Arc<RateLimiter>,
    headers: Headers,
}

impl<S> fmt::Debug for RateLimitService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitService")
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

impl<S> Service<Request<Body>> for RateLimitService<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        // The service that was polled ready handles this request; a clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        // Boxed outside the async block: naming the inner future's type inside it trips the
        // compiler's higher-ranked `Send` check on `Box<dyn Error>` (rust-lang/rust#102211).
        let mut call = move |req| -> BoxFuture<S::Error> { Box::pin(inner.call(req)) };
        let ip = ClientIp::of(&req).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let Some(pending) = self.limiter.prepare(&req, Caller::of(&req, ip)) else {
            return call(req);
        };
        let (limiter, headers) = (Arc::clone(&self.limiter), self.headers);
        Box::pin(async move {
            let decision = if limiter.is_shared() {
                limiter.decide(&pending).await
            } else {
                limiter.decide_local(&pending)
            };
            let Some(decision) = decision else {
                return call(req).await;
            };
            if !decision.verdict.allowed {
                let request_id = req.extensions().get::<RequestId>();
                return Ok(refusal(&decision, request_id, headers.structured));
            }
            let mut response = call(req).await?;
            if headers.on_allowed {
                decision.write_headers(response.headers_mut(), headers.structured);
            }
            Ok(response)
        })
    }
}

/// The future of a layered service (and of the inner call it wraps).
type BoxFuture<E> = Pin<Box<dyn Future<Output = Result<Response<Body>, E>> + Send>>;

/// The 429 of a refused request: the JSON error, `Retry-After` and the rate-limit headers.
fn refusal(
    decision: &Decision,
    request_id: Option<&RequestId>,
    structured: bool,
) -> Response<Body> {
    let mut response = error_response(
        StatusCode::TOO_MANY_REQUESTS,
        "rate limit exceeded",
        request_id,
    );
    decision.write_headers(response.headers_mut(), structured);
    response
}
