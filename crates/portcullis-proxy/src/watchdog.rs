//! Slow-client protection per connection, without a timer per request or per connection.
//!
//! hyper's `header_read_timeout` arms and disarms a timer for every request head, which cost
//! about 14% of cache-hit throughput here (BENCHMARKS.md). Instead each connection counts its
//! progress (requests handed to the service, writes to the socket, requests in flight) and one
//! sweep over the listener's connections every `header_read_timeout` (`connections.rs`)
//! closes a connection that made no progress for a whole period while nothing was in flight.
//! That bounds a client that never finishes its request head (slow loris) and an idle
//! keep-alive connection to between one and two periods; a slow upload (a request in flight)
//! or a long download (writes) is never cut. Bytes merely received do not count as progress,
//! so dripping a head byte by byte does not help.
//!
//! The same socket wrapper also gives hyper's automatic parse-error responses the contract's
//! JSON body (`parse_error.rs`), since it is the one place that sees what hyper writes.

use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering::Relaxed},
    },
    task::{Context, Poll},
};

use futures_util::task::AtomicWaker;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What one connection has done so far, and what the listener asks of it.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    requests: AtomicU64,
    writes: AtomicU64,
    in_flight: AtomicU32,
    /// A [`Signal`] from the listener (`connections.rs`).
    signal: AtomicU8,
    /// Wakes the connection's task for a signal.
    pub(crate) waker: AtomicWaker,
}

/// What the listener asks of a connection, in rising order: a later signal never replaces a
/// stronger one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Signal {
    None = 0,
    /// Finish what is in flight, then close (graceful shutdown).
    Shutdown = 1,
    /// Close now (no progress for a whole period).
    Close = 2,
}

impl Progress {
    /// Asks the connection to shut down or close, and wakes its task.
    pub(crate) fn signal(&self, signal: Signal) {
        self.signal.fetch_max(signal as u8, Relaxed);
        self.waker.wake();
    }

    /// The strongest signal given so far.
    pub(crate) fn signalled(&self) -> Signal {
        match self.signal.load(Relaxed) {
            0 => Signal::None,
            1 => Signal::Shutdown,
            _ => Signal::Close,
        }
    }

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

/// A write that replaces hyper's automatic error response (see `parse_error.rs`).
#[derive(Debug)]
struct Replacing {
    bytes: Vec<u8>,
    written: usize,
    /// What to report to hyper as written once `bytes` are out: its own response's length.
    report: usize,
}

pin_project! {
    /// The client's socket as hyper sees it: counts successful writes into a [`Progress`], and
    /// puts the contract's JSON error response in place of hyper's bare automatic 400, 414 and
    /// 431 responses (`parse_error.rs`).
    #[derive(Debug)]
    pub(crate) struct Counted<S> {
        #[pin]
        inner: S,
        progress: Arc<Progress>,
        // Requests handed to the service as of the last write: a write while this is
        // unchanged is not the start of a response the service made.
        requests_at_last_write: u64,
        replacing: Option<Replacing>,
        // Set once a replacement is out: hyper closes the connection after its automatic
        // response, and nothing may follow ours.
        closed: bool,
    }
}

impl<S> Counted<S> {
    pub(crate) fn new(inner: S, progress: Arc<Progress>) -> Self {
        Self {
            inner,
            progress,
            requests_at_last_write: 0,
            replacing: None,
            closed: false,
        }
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

impl<S: AsyncWrite> Counted<S> {
    /// Starts replacing the write if it is hyper's automatic error response (`written`, its
    /// only non-empty slice, if it has one) for a request the service never saw. Returns
    /// whether it did.
    fn start_replacing(self: Pin<&mut Self>, written: Option<&[u8]>) -> bool {
        let this = self.project();
        let requests = this.progress.requests.load(Relaxed);
        let since_last = std::mem::replace(this.requests_at_last_write, requests);
        if requests != since_last {
            return false;
        }
        match written.and_then(crate::parse_error::replacement) {
            Some(bytes) => {
                *this.replacing = Some(Replacing {
                    report: written.map_or(0, <[u8]>::len),
                    bytes,
                    written: 0,
                });
                true
            }
            None => false,
        }
    }

    /// Writes the rest of the replacement; reports hyper's length once it is all out.
    fn poll_replacing(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut this = self.project();
        let Some(replacing) = this.replacing.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        while replacing.written < replacing.bytes.len() {
            let rest = &replacing.bytes[replacing.written..];
            match std::task::ready!(this.inner.as_mut().poll_write(cx, rest)) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => replacing.written += n,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        let report = replacing.report;
        *this.replacing = None;
        *this.closed = true;
        this.progress.writes.fetch_add(1, Relaxed);
        Poll::Ready(Ok(report))
    }
}

fn closed() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "connection closed after an error response",
    )
}

impl<S: AsyncWrite> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.closed {
            return Poll::Ready(Err(closed()));
        }
        if self.replacing.is_some() || self.as_mut().start_replacing(Some(buf)) {
            return self.poll_replacing(cx);
        }
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
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.closed {
            return Poll::Ready(Err(closed()));
        }
        if self.replacing.is_some() {
            return self.poll_replacing(cx);
        }
        // hyper's automatic response is a head alone: one non-empty slice.
        let mut non_empty = bufs.iter().filter(|b| !b.is_empty());
        let only = match (non_empty.next(), non_empty.next()) {
            (Some(only), None) => Some(&**only),
            _ => None,
        };
        if self.as_mut().start_replacing(only) {
            return self.poll_replacing(cx);
        }
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
