//! A [`Breaker`] as a tower layer: refuses with 503 while it is open, reports each answer's
//! outcome while it is closed or probing.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use portcullis_http::{Body, BoxError, RequestId};
use tokio::time::Instant;
use tower::{Layer, Service};

use super::into_body;
use crate::{Breaker, Refusal, Ticket};

/// Puts a [`Breaker`] in front of a service.
///
/// - While the breaker refuses, a request is answered `503 Service Unavailable` with the
///   contract's JSON error and `Retry-After` (the seconds until it lets a probe through,
///   rounded up, at least 1); the inner service is not called.
/// - Otherwise the inner service is called, and its answer reported to the breaker once the
///   response head arrives: a failure is an inner error or a 5xx (see
///   [`with_failure_status`](Self::with_failure_status)), or, when
///   [`with_slow_call`](Self::with_slow_call) is set, a head later than that. A request
///   dropped before its answer reports nothing (and frees its half-open probe slot).
///
/// Time is tokio's clock, so tests may pause it.
///
/// ```
/// use std::time::Duration;
/// use portcullis_resilience::{Breaker, BreakerConfig, BreakerLayer};
///
/// let layer = BreakerLayer::new(Breaker::new(BreakerConfig::default()))
///     .with_slow_call(Duration::from_secs(2));
/// # let _ = layer;
/// ```
#[derive(Debug, Clone)]
pub struct BreakerLayer {
    breaker: Arc<Breaker>,
    class: FailureClass,
}

impl BreakerLayer {
    /// A layer reporting to `breaker` (a [`Breaker`] or an `Arc` of one, to share it with
    /// other layers or read its [`snapshot`](Breaker::snapshot)).
    pub fn new(breaker: impl Into<Arc<Breaker>>) -> Self {
        Self {
            breaker: breaker.into(),
            class: FailureClass::SERVER_ERRORS,
        }
    }

    /// Which response statuses count as failures (default: 5xx).
    #[must_use]
    pub fn with_failure_status(mut self, failed: fn(StatusCode) -> bool) -> Self {
        self.class.status = failed;
        self
    }

    /// Counts a response head later than `after` as a failure, whatever its status (default:
    /// off).
    #[must_use]
    pub fn with_slow_call(mut self, after: Duration) -> Self {
        self.class.slow_call = Some(after);
        self
    }
}

impl<S> Layer<S> for BreakerLayer {
    type Service = BreakerService<S>;

    fn layer(&self, inner: S) -> BreakerService<S> {
        BreakerService {
            inner,
            breaker: Arc::clone(&self.breaker),
            class: self.class,
        }
    }
}

/// The service [`BreakerLayer`] builds.
#[derive(Clone)]
pub struct BreakerService<S> {
    inner: S,
    breaker: Arc<Breaker>,
    class: FailureClass,
}

impl<S> fmt::Debug for BreakerService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerService")
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for BreakerService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BreakerFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let state = match self.breaker.admit(Instant::now().into_std()) {
            Ok(ticket) => State::Called {
                inner: self.inner.call(req),
                outcome: Outcome {
                    breaker: Arc::clone(&self.breaker),
                    ticket: Some(ticket),
                },
                class: self.class,
                started: Instant::now(),
            },
            Err(rejected) => State::Refused {
                refusal: Refusal::BreakerOpen {
                    retry_after: rejected.retry_after,
                },
                request_id: req.extensions().get::<RequestId>().cloned(),
            },
        };
        BreakerFuture { state }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`BreakerService`].
    pub struct BreakerFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F> {
        Refused { refusal: Refusal, request_id: Option<RequestId> },
        Called { #[pin] inner: F, outcome: Outcome, class: FailureClass, started: Instant },
    }
}

impl<F> fmt::Debug for BreakerFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerFuture").finish_non_exhaustive()
    }
}

impl<F, ResBody, E> Future for BreakerFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Refused {
                refusal,
                request_id,
            } => Poll::Ready(Ok(refusal.into_response(request_id.as_ref()))),
            StateProj::Called {
                inner,
                outcome,
                class,
                started,
            } => {
                let answered = ready!(inner.poll(cx));
                let failed = match &answered {
                    Ok(response) => class.failed(response.status(), started.elapsed()),
                    Err(_) => true,
                };
                outcome.record(failed);
                Poll::Ready(answered.map(|response| response.map(into_body)))
            }
        }
    }
}

/// Which answers count as failures.
#[derive(Debug, Clone, Copy)]
struct FailureClass {
    status: fn(StatusCode) -> bool,
    slow_call: Option<Duration>,
}

impl FailureClass {
    /// A 5xx, nothing slow.
    const SERVER_ERRORS: Self = Self {
        status: |s| s.is_server_error(),
        slow_call: None,
    };

    fn failed(&self, status: StatusCode, latency: Duration) -> bool {
        (self.status)(status) || self.slow_call.is_some_and(|limit| latency > limit)
    }
}

/// An admitted call's ticket: reported once, or given back when the call is dropped unanswered.
struct Outcome {
    breaker: Arc<Breaker>,
    ticket: Option<Ticket>,
}

impl Outcome {
    fn record(&mut self, failed: bool) {
        if let Some(ticket) = self.ticket.take() {
            self.breaker
                .record(ticket, failed, Instant::now().into_std());
        }
    }
}

impl Drop for Outcome {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.breaker.release(ticket);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        convert::Infallible,
        sync::atomic::{AtomicUsize, Ordering},
    };

    use portcullis_http::body;
    use tower::{ServiceExt, service_fn};

    use super::*;
    use crate::{BreakerConfig, BreakerState};

    fn breaker(consecutive_failures: u32, half_open_probes: u32) -> Arc<Breaker> {
        Arc::new(Breaker::new(BreakerConfig {
            consecutive_failures,
            failure_rate: 0.0,
            half_open_probes,
            open_for: Duration::from_secs(30),
            ..BreakerConfig::default()
        }))
    }

    /// Answers 200 after `delay` (on tokio's clock), counting calls.
    fn slow_app(
        delay: Duration,
        calls: &Arc<AtomicUsize>,
    ) -> impl Service<
        Request<()>,
        Response = Response<Body>,
        Error = Infallible,
        Future = impl Future + Send,
    > + Clone {
        let calls = Arc::clone(calls);
        service_fn(move |_req: Request<()>| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(delay).await;
                Ok::<_, Infallible>(Response::new(body::full("ok")))
            }
        })
    }

    #[tokio::test(start_paused = true)]
    async fn slow_calls_count_as_failures_when_asked() {
        let b = breaker(2, 1);
        let calls = Arc::new(AtomicUsize::new(0));
        let svc = BreakerLayer::new(Arc::clone(&b))
            .with_slow_call(Duration::from_secs(1))
            .layer(slow_app(Duration::from_secs(2), &calls));
        for _ in 0..2 {
            let response = svc.clone().oneshot(Request::new(())).await.unwrap();
            assert_eq!(
                response.status(),
                StatusCode::OK,
                "the answer itself passes"
            );
        }
        assert_eq!(b.state(), BreakerState::Open);
        let refused = svc.clone().oneshot(Request::new(())).await.unwrap();
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.headers()["retry-after"], "30");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_dropped_before_its_answer_frees_the_probe_slot() {
        let b = breaker(1, 1);
        let calls = Arc::new(AtomicUsize::new(0));
        let failing = service_fn(|_req: Request<()>| async {
            let mut r = Response::new(body::empty());
            *r.status_mut() = StatusCode::BAD_GATEWAY;
            Ok::<_, Infallible>(r)
        });
        let svc = BreakerLayer::new(Arc::clone(&b)).layer(failing);
        svc.oneshot(Request::new(())).await.unwrap();
        assert_eq!(b.state(), BreakerState::Open);
        tokio::time::advance(Duration::from_secs(30)).await;

        let slow =
            BreakerLayer::new(Arc::clone(&b)).layer(slow_app(Duration::from_secs(5), &calls));
        let probe = tokio::time::timeout(
            Duration::from_secs(1),
            slow.clone().oneshot(Request::new(())),
        );
        assert!(probe.await.is_err(), "the caller gave up");
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let next = slow.oneshot(Request::new(())).await.unwrap();
        assert_eq!(next.status(), StatusCode::OK, "another probe went through");
        assert_eq!(b.state(), BreakerState::Closed);
    }
}
