//! A deadline on the response head as a tower layer: 504 when the service has not answered
//! in time.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response};
use portcullis_http::{Body, BoxError, RequestId};
use tokio::time::Sleep;
use tower::{Layer, Service};

use super::into_body;
use crate::Refusal;

/// Gives a service `deadline` to answer each request with a response head.
///
/// When the deadline passes first, the inner call is dropped (cancelling it) and the request is
/// answered `504 Gateway Timeout` with the contract's JSON error ("upstream deadline
/// exceeded"). The response body, once the head is in, is not timed. Time is tokio's clock.
///
/// Unlike `tower::timeout::Timeout`, which fails with an error the caller must map, this layer
/// answers with the gateway's error response itself.
///
/// ```
/// use std::time::Duration;
/// use portcullis_resilience::DeadlineLayer;
///
/// let layer = DeadlineLayer::new(Duration::from_secs(5));
/// # let _ = layer;
/// ```
#[derive(Debug, Clone, Copy)]
pub struct DeadlineLayer {
    deadline: Duration,
}

impl DeadlineLayer {
    /// A layer giving each call `deadline` to produce its response head.
    pub fn new(deadline: Duration) -> Self {
        Self { deadline }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = DeadlineService<S>;

    fn layer(&self, inner: S) -> DeadlineService<S> {
        DeadlineService {
            inner,
            deadline: self.deadline,
        }
    }
}

/// The service [`DeadlineLayer`] builds.
#[derive(Clone)]
pub struct DeadlineService<S> {
    inner: S,
    deadline: Duration,
}

impl<S> fmt::Debug for DeadlineService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadlineService")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for DeadlineService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = DeadlineFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        // A reference-counted clone, for the 504's body.
        let request_id = req.extensions().get::<RequestId>().cloned();
        DeadlineFuture {
            inner: self.inner.call(req),
            sleep: tokio::time::sleep(self.deadline),
            request_id,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`DeadlineService`].
    pub struct DeadlineFuture<F> {
        #[pin]
        inner: F,
        #[pin]
        sleep: Sleep,
        request_id: Option<RequestId>,
    }
}

impl<F> fmt::Debug for DeadlineFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadlineFuture")
            .field("deadline", &self.sleep.deadline())
            .finish_non_exhaustive()
    }
}

impl<F, ResBody, E> Future for DeadlineFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        // The answer first: one that is ready wins over a deadline that just passed.
        if let Poll::Ready(answered) = this.inner.poll(cx) {
            return Poll::Ready(answered.map(|response| response.map(into_body)));
        }
        if this.sleep.poll(cx).is_ready() {
            let response = Refusal::DeadlineExceeded.into_response(this.request_id.as_ref());
            return Poll::Ready(Ok(response));
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http::StatusCode;
    use portcullis_http::body;
    use tower::{ServiceExt, service_fn};

    use super::*;

    fn answers_after(
        delay: Duration,
    ) -> DeadlineService<impl Service<Request<()>, Response = Response<Body>, Error = Infallible>>
    {
        DeadlineLayer::new(Duration::from_secs(1)).layer(service_fn(
            move |_req: Request<()>| async move {
                tokio::time::sleep(delay).await;
                Ok::<_, Infallible>(Response::new(body::full("ok")))
            },
        ))
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_within_the_deadline_passes() {
        let response = answers_after(Duration::from_millis(999))
            .oneshot(Request::new(()))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_answer_is_a_504_naming_the_request() {
        let id = RequestId::generate();
        let mut req = Request::new(());
        req.extensions_mut().insert(id.clone());
        let response = answers_after(Duration::from_secs(2))
            .oneshot(req)
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(response.headers()["x-request-id"], id.as_str());
    }
}
