//! The upstream response body as the client receives it. It holds the target's in-flight guard
//! until the body ends or is dropped (so `least_request` counts streaming bodies), and returns the
//! pooled connection when the body has been read to the end (a body dropped early closes it).
//! An upstream silent for longer than `pool.stream_idle_timeout` mid-body cuts the body off.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use portcullis_http::BoxError;
use tokio::time::{Instant, Sleep};

use crate::{balance::InFlight, h1_client::H1Body, pool::Lease};

/// A response body as the upstream client gives it: hyper's (requests with a body, upgrades,
/// HTTP/2) or the inline HTTP/1.1 client's ([`crate::h1_client`]); errors are boxed.
pub(crate) type UpstreamBody = http_body_util::Either<hyper::body::Incoming, H1Body>;

pin_project! {
    /// Wraps a body; releases the guard and the connection at its end.
    pub(crate) struct GuardedBody<B> {
        #[pin]
        inner: B,
        guard: Option<InFlight>,
        lease: Option<Lease>,
        // The upstream's concurrency slot (`pool.max_in_flight`), held until the body ends.
        permit: Option<portcullis_resilience::Permit>,
        idle: Option<IdleTimer>,
    }
}

/// `pool.stream_idle_timeout`: armed only when the body first has to wait (a body that is
/// ready at once, as most small ones are, never touches the timer wheel).
struct IdleTimer {
    limit: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    /// A frame arrived since the timer was (re)armed.
    progressed: bool,
}

impl IdleTimer {
    /// Called when the body is pending: true once the upstream has been silent too long.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let sleep = match &mut self.sleep {
            None => self.sleep.insert(Box::pin(tokio::time::sleep(self.limit))),
            Some(sleep) => {
                if self.progressed {
                    sleep.as_mut().reset(Instant::now() + self.limit);
                }
                sleep
            }
        };
        self.progressed = false;
        sleep.as_mut().poll(cx).is_ready()
    }
}

/// The error a body cut off for silence ends with.
#[derive(Debug, thiserror::Error)]
#[error("the upstream sent nothing for {0:?} within the response body")]
pub(crate) struct StreamIdle(Duration);

impl<B> GuardedBody<B> {
    /// Wraps `inner`, holding `guard` and `lease`. An already finished body (HEAD, 204,
    /// `Content-Length: 0`) returns its connection at once: hyper may never poll it.
    pub(crate) fn new(
        inner: B,
        guard: InFlight,
        lease: Option<Lease>,
        permit: Option<portcullis_resilience::Permit>,
        idle_limit: Duration,
    ) -> Self
    where
        B: Body,
    {
        let mut body = Self {
            inner,
            guard: Some(guard),
            lease,
            permit,
            idle: (!idle_limit.is_zero()).then_some(IdleTimer {
                limit: idle_limit,
                sleep: None,
                progressed: false,
            }),
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
    permit: &mut Option<portcullis_resilience::Permit>,
) {
    guard.take();
    // The connection goes back before the slot frees, so the request that takes the slot
    // finds it idle: HTTP/1.1 connections stay within `pool.max_in_flight`.
    if let Some(lease) = lease.take() {
        lease.release();
    }
    permit.take();
}

/// The body failed or was cut off mid-response: the same as [`release`], except that the
/// connection is closed (dropping the lease) rather than pooled.
fn abandon(
    guard: &mut Option<InFlight>,
    lease: &mut Option<Lease>,
    permit: &mut Option<portcullis_resilience::Permit>,
) {
    guard.take();
    lease.take();
    permit.take();
}

impl<B> Body for GuardedBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        if let Some(idle) = this.idle.as_mut() {
            match &polled {
                Poll::Ready(Some(Ok(_))) => idle.progressed = true,
                Poll::Pending if idle.expired(cx) => {
                    abandon(this.guard, this.lease, this.permit);
                    tracing::warn!(idle = ?idle.limit, "upstream silent mid-body; response cut off");
                    return Poll::Ready(Some(Err(StreamIdle(idle.limit).into())));
                }
                _ => {}
            }
        }
        let polled = polled.map(|frame| frame.map(|r| r.map_err(Into::into)));
        match &polled {
            // The end, or the last data frame (hyper stops polling once `is_end_stream`).
            Poll::Ready(None) => release(this.guard, this.lease, this.permit),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => {
                release(this.guard, this.lease, this.permit)
            }
            Poll::Ready(Some(Err(_))) => abandon(this.guard, this.lease, this.permit),
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
