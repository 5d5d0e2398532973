//! A response body that streams to the client and keeps a copy for the store.
//!
//! Chunks are `Bytes` (reference-counted), so keeping them costs no copy until the end, when
//! they are joined once. Past `limit` bytes the copy is dropped and the body keeps streaming:
//! an oversize response is never buffered whole. If the client goes away before the end, the
//! job is dropped unfinished, which releases the coalescing lock so waiters go upstream.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{Bytes, BytesMut};
use http_body::{Body as HttpBody, Frame, SizeHint};
use portcullis_http::{Body, BoxError};

/// What to do with the copy when the body ends.
pub(crate) trait Sink: Send + Unpin + 'static {
    /// The body arrived whole.
    fn complete(self, body: Bytes);
    /// The body outgrew the limit or failed; nothing is stored.
    fn abandon(self, too_large: bool);
}

/// The tee. `S` is told the outcome exactly once (or dropped if the body is).
pub(crate) struct TeeBody<S: Sink> {
    inner: Body,
    chunks: Vec<Bytes>,
    size: u64,
    limit: u64,
    sink: Option<S>,
}

impl<S: Sink> TeeBody<S> {
    pub(crate) fn new(inner: Body, limit: u64, sink: S) -> Self {
        let mut tee = Self {
            inner,
            chunks: Vec::new(),
            size: 0,
            limit,
            sink: Some(sink),
        };
        // hyper never polls a body that is already at its end (HEAD, 204, empty).
        if tee.inner.is_end_stream() {
            tee.finish();
        }
        tee
    }

    fn finish(&mut self) {
        if let Some(sink) = self.sink.take() {
            // Always a fresh, exact-size copy: chunks are slices of the connection's read
            // buffer, and keeping one would pin that whole buffer for the entry's lifetime.
            let body = match self.chunks.len() {
                0 => Bytes::new(),
                1 => Bytes::copy_from_slice(&self.chunks.pop().unwrap_or_default()),
                _ => {
                    let mut joined =
                        BytesMut::with_capacity(usize::try_from(self.size).unwrap_or(0));
                    for c in self.chunks.drain(..) {
                        joined.extend_from_slice(&c);
                    }
                    joined.freeze()
                }
            };
            sink.complete(body);
        }
    }

    fn abandon(&mut self, too_large: bool) {
        self.chunks = Vec::new();
        if let Some(sink) = self.sink.take() {
            sink.abandon(too_large);
        }
    }
}

impl<S: Sink> HttpBody for TeeBody<S> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // `TeeBody` is `Unpin`: every field is.
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref()
                    && this.sink.is_some()
                {
                    this.size += data.len() as u64;
                    if this.size > this.limit {
                        this.abandon(true);
                    } else {
                        this.chunks.push(data.clone());
                    }
                }
                if this.inner.is_end_stream() {
                    this.finish();
                }
            }
            Poll::Ready(Some(Err(_))) => this.abandon(false),
            Poll::Ready(None) => this.finish(),
            Poll::Pending => {}
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
