//! The cache as a tower layer, for any service that speaks `Request<Body>` → `Response<Body>`
//! (an axum router, a hyper client wrapper, the gateway's upstream call).

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response, StatusCode, header};
use portcullis_http::{Body, BoxError, RequestId, error_response};
use tower::{Layer, Service, ServiceExt};
use tracing::warn;

use crate::{
    Cache,
    policy::RoutePolicy,
    serve::{Fetch, RequestTarget},
};

/// Adds the cache with one route policy in front of a service.
#[derive(Debug, Clone)]
pub struct CacheLayer {
    cache: Cache,
    policy: Arc<RoutePolicy>,
}

impl CacheLayer {
    /// A layer using `cache` with `policy` (register it with [`Cache::register`] so its
    /// counters show in stats).
    pub fn new(cache: Cache, policy: Arc<RoutePolicy>) -> Self {
        Self { cache, policy }
    }
}

impl<S> Layer<S> for CacheLayer {
    type Service = CacheService<S>;

    fn layer(&self, inner: S) -> CacheService<S> {
        CacheService {
            inner,
            cache: self.cache.clone(),
            policy: Arc::clone(&self.policy),
        }
    }
}

/// The service [`CacheLayer`] builds.
#[derive(Debug, Clone)]
pub struct CacheService<S> {
    inner: S,
    cache: Cache,
    policy: Arc<RoutePolicy>,
}

/// Calls a cloned service per request; service errors become 502 JSON responses.
#[derive(Debug, Clone)]
struct ServiceFetch<S>(S);

impl<S> Fetch for ServiceFetch<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
{
    fn fetch(&self, req: Request<Body>) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>> {
        let id = req.extensions().get::<RequestId>().cloned();
        // Boxed before the async block: naming the inner future's type inside it trips the
        // compiler's higher-ranked `Send` check on `Box<dyn Error>` (rust-lang/rust#102211).
        let call: Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>> =
            Box::pin(self.0.clone().oneshot(req));
        Box::pin(async move {
            match call.await {
                Ok(resp) => resp,
                Err(e) => {
                    let e: BoxError = e.into();
                    warn!(error = %e, "inner service failed");
                    error_response(
                        StatusCode::BAD_GATEWAY,
                        "upstream request failed",
                        id.as_ref(),
                    )
                }
            }
        })
    }
}

impl<S> Service<Request<Body>> for CacheService<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
{
    type Response = Response<Body>;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Each request calls a clone of the inner service through `oneshot`, which waits for
        // readiness itself.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let (cache, policy, fetch) = (
            self.cache.clone(),
            Arc::clone(&self.policy),
            ServiceFetch(self.inner.clone()),
        );
        Box::pin(async move {
            let scheme = req.uri().scheme_str().unwrap_or("http").to_owned();
            let host = request_host(&req);
            let path = req.uri().path().to_owned();
            let target = RequestTarget {
                scheme: &scheme,
                host: &host,
                path: &path,
            };
            Ok(cache.serve(&policy, target, req, fetch).await)
        })
    }
}

/// The host from the URI (HTTP/2, absolute form) or the `Host` header, without port.
fn request_host(req: &Request<Body>) -> String {
    if let Some(h) = req.uri().host() {
        return h.to_owned();
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match host.rsplit_once(':') {
        Some((h, port)) if !h.ends_with(']') || port.bytes().all(|b| b.is_ascii_digit()) => {
            h.to_owned()
        }
        _ => host.to_owned(),
    }
}
