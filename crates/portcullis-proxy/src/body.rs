//! The upstream response body as the client receives it. It holds the target's in-flight guard
//! until the body ends or is dropped (so `least_request` counts streaming bodies), and returns the
//! pooled connection when the body has been read to the end (a body dropped early closes it).

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::{balance::InFlight, pool::Lease};

pin_project! {
    /// Wraps a body; releases the guard and the connection at its end.
    pub(crate) struct GuardedBody<B> {
        #[pin]
        inner: B,
        guard: Option<InFlight>,
        lease: Option<Lease>,
        // The upstream's concurrency slot (`pool.max_in_flight`), held until the body ends.
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    }
}

impl<B> GuardedBody<B> {
    /// Wraps `inner`, holding `guard` and `lease`. An already finished body (HEAD, 204,
    /// `Content-Length: 0`) returns its connection at once: hyper may never poll it.
    pub(crate) fn new(
        inner: B,
        guard: InFlight,
        lease: Option<Lease>,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Self
    where
        B: Body,
    {
        let mut body = Self {
            inner,
            guard: Some(guard),
            lease,
            permit,
        };
        if body.inner.is_end_stream() {
            body.finish();
        }
        body
    }

    fn finish(&mut self) {
        release(&mut self.guard, &mut self.lease, &mut self.permit);
    }
}

/// The body ended: the target is no longer in flight, the connection goes back to the pool,
/// the upstream's concurrency slot frees.
fn release(
    guard: &mut Option<InFlight>,
    lease: &mut Option<Lease>,
    permit: &mut Option<tokio::sync::OwnedSemaphorePermit>,
) {
    guard.take();
    permit.take();
    if let Some(lease) = lease.take() {
        lease.release();
    }
}

impl<B: Body<Data = Bytes>> Body for GuardedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        match &polled {
            // The end, or the last data frame (hyper stops polling once `is_end_stream`).
            Poll::Ready(None) => release(this.guard, this.lease, this.permit),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => {
                release(this.guard, this.lease, this.permit)
            }
            Poll::Ready(Some(Err(_))) => {
                this.guard.take();
                this.lease.take();
                this.permit.take();
            }
            _ => {}
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
