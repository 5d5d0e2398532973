//! Slow-client protection per connection, without a timer per request.
//!
//! hyper's `header_read_timeout` arms and disarms a timer for every request head, which cost
//! about 14% of cache-hit throughput here (BENCHMARKS.md). Instead each connection counts its
//! progress (requests handed to the service, writes to the socket, requests in flight) and one
//! ticker per connection, firing every `header_read_timeout`, closes a connection that made no
//! progress for a whole period while nothing was in flight. That bounds a client that never
//! finishes its request head (slow loris) and an idle keep-alive connection to between one and
//! two periods; a slow upload (a request in flight) or a long download (writes) is never cut.
//! Bytes merely received do not count as progress, so dripping a head byte by byte does not help.

use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicU64, Ordering::Relaxed},
    },
    task::{Context, Poll},
};

use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What one connection has done so far.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    requests: AtomicU64,
    writes: AtomicU64,
    in_flight: AtomicU32,
}

impl Progress {
    /// A request head was complete and reached the service.
    pub(crate) fn request(&self) {
        self.requests.fetch_add(1, Relaxed);
    }

    /// A request that will take a while: counts as in flight until the guard drops.
    pub(crate) fn in_flight(self: &Arc<Self>) -> InFlightGuard {
        self.in_flight.fetch_add(1, Relaxed);
        InFlightGuard(Arc::clone(self))
    }

    /// Requests and writes so far, to compare between ticks.
    pub(crate) fn snapshot(&self) -> (u64, u64) {
        (self.requests.load(Relaxed), self.writes.load(Relaxed))
    }

    /// Whether a request is being served.
    pub(crate) fn busy(&self) -> bool {
        self.in_flight.load(Relaxed) > 0
    }
}

/// Marks a request in flight while alive.
#[derive(Debug)]
pub(crate) struct InFlightGuard(Arc<Progress>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

pin_project! {
    /// A socket that counts successful writes into a [`Progress`].
    #[derive(Debug)]
    pub(crate) struct Counted<S> {
        #[pin]
        inner: S,
        progress: Arc<Progress>,
    }
}

impl<S> Counted<S> {
    pub(crate) fn new(inner: S, progress: Arc<Progress>) -> Self {
        Self { inner, progress }
    }

    /// The wrapped socket.
    pub(crate) fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead> AsyncRead for Counted<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().inner.poll_read(cx, buf)
    }
}

impl<S: AsyncWrite> AsyncWrite for Counted<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.inner.poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &polled
            && *n > 0
        {
            this.progress.writes.fetch_add(1, Relaxed);
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.inner.poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &polled
            && *n > 0
        {
            this.progress.writes.fetch_add(1, Relaxed);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}
