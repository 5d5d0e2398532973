//! A response body that holds a guard (a concurrency permit, a load-shedding count) until the
//! body has been sent in full, fails, or is dropped: a streaming response counts as in flight
//! for as long as it streams.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use portcullis_http::{Body, BoxError};

pin_project_lite::pin_project! {
    /// `inner`, holding `guard` until its end.
    pub(crate) struct GuardedBody<G> {
        #[pin]
        inner: Body,
        guard: Option<G>,
    }
}

impl<G> GuardedBody<G> {
    /// `inner`, releasing `guard` when it ends.
    pub(crate) fn new(inner: Body, guard: G) -> Self {
        Self {
            inner,
            guard: Some(guard),
        }
    }
}

impl<G> http_body::Body for GuardedBody<G> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        let over = match &polled {
            Poll::Ready(None | Some(Err(_))) => true,
            Poll::Ready(Some(Ok(_))) => this.inner.is_end_stream(),
            Poll::Pending => false,
        };
        if over {
            this.guard.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    };

    use http_body_util::BodyExt;
    use portcullis_http::body;

    use super::*;

    struct Flag(Arc<AtomicBool>);

    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn the_guard_is_released_when_the_last_frame_is_read() {
        let released = Arc::new(AtomicBool::new(false));
        let mut b = GuardedBody::new(body::full("abc"), Flag(Arc::clone(&released)));
        assert!(!released.load(Ordering::SeqCst));
        let frame = b.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "abc");
        assert!(
            released.load(Ordering::SeqCst),
            "released with the body still alive"
        );
        assert!(b.frame().await.is_none());
    }
}
