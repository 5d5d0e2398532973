//! Load shedding as a tower layer: a cap on requests in flight across every clone of the
//! service, beyond which requests are refused at once.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http::{Request, Response};
use portcullis_http::{Body, BoxError, RequestId, body};
use tower::{Layer, Service};

use super::{guarded_body::GuardedBody, into_body};
use crate::Refusal;

/// Caps the requests in flight (from the call until the response body ends) across every
/// service the layer builds; beyond the cap a request is answered `503 Service Unavailable`
/// with the contract's JSON error and `Retry-After: 1` at once, without waiting and without
/// calling the inner service.
///
/// Unlike `tower::load_shed::LoadShed`, which sheds when the inner service is not ready, this
/// sheds on a count, and answers with the gateway's error response itself. For a short wait
/// instead of an immediate refusal, use [`ConcurrencyLimitLayer`](crate::ConcurrencyLimitLayer).
///
/// ```
/// use portcullis_resilience::LoadShedLayer;
///
/// let layer = LoadShedLayer::new(10_000);
/// assert_eq!(layer.in_flight(), 0);
/// ```
#[derive(Debug, Clone)]
pub struct LoadShedLayer {
    cap: Arc<Cap>,
}

#[derive(Debug)]
struct Cap {
    max_in_flight: usize,
    in_flight: AtomicUsize,
}

impl LoadShedLayer {
    /// A layer letting at most `max_in_flight` requests in at once.
    pub fn new(max_in_flight: usize) -> Self {
        Self {
            cap: Arc::new(Cap {
                max_in_flight,
                in_flight: AtomicUsize::new(0),
            }),
        }
    }

    /// Requests in flight now, across every service the layer built (for metrics).
    pub fn in_flight(&self) -> usize {
        self.cap.in_flight.load(Ordering::Acquire)
    }
}

impl<S> Layer<S> for LoadShedLayer {
    type Service = LoadShedService<S>;

    fn layer(&self, inner: S) -> LoadShedService<S> {
        LoadShedService {
            inner,
            cap: Arc::clone(&self.cap),
        }
    }
}

/// The service [`LoadShedLayer`] builds.
#[derive(Clone)]
pub struct LoadShedService<S> {
    inner: S,
    cap: Arc<Cap>,
}

impl<S> fmt::Debug for LoadShedService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadShedService")
            .field("cap", &self.cap)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for LoadShedService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = LoadShedFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let cap = &self.cap;
        let counted = cap
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < cap.max_in_flight).then_some(n + 1)
            });
        let state = match counted {
            Ok(_) => State::Called {
                inner: self.inner.call(req),
                count: Some(Count(Arc::clone(cap))),
            },
            Err(_) => State::Shed {
                request_id: req.extensions().get::<RequestId>().cloned(),
            },
        };
        LoadShedFuture { state }
    }
}

/// One request counted in flight until dropped.
struct Count(Arc<Cap>);

impl Drop for Count {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`LoadShedService`].
    pub struct LoadShedFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F> {
        Shed { request_id: Option<RequestId> },
        Called { #[pin] inner: F, count: Option<Count> },
    }
}

impl<F> fmt::Debug for LoadShedFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadShedFuture").finish_non_exhaustive()
    }
}

impl<F, ResBody, E> Future for LoadShedFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Shed { request_id } => {
                Poll::Ready(Ok(Refusal::Shed.into_response(request_id.as_ref())))
            }
            StateProj::Called { inner, count } => {
                let answered = ready!(inner.poll(cx));
                Poll::Ready(answered.map(|response| {
                    response.map(|b| match count.take() {
                        Some(count) => body::boxed(GuardedBody::new(into_body(b), count)),
                        None => into_body(b),
                    })
                }))
            }
        }
    }
}
