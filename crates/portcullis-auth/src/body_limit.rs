//! The request body size limit: `Content-Length` is judged before anything is read
//! ([`crate::RouteSecurity::check`]); bodies without one are counted as they stream
//! ([`LimitedBody`]).

use std::{
    fmt,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{HeaderMap, header};
use http_body::{Body, Frame, SizeHint};

/// The error a [`LimitedBody`] ends with once more than its limit has streamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyTooLarge;

impl fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("request body too large")
    }
}

impl std::error::Error for BodyTooLarge {}

/// Whether the declared `Content-Length` exceeds `limit`.
pub(crate) fn declared_too_large(headers: &HeaderMap, limit: u64) -> bool {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|n| n > limit)
}

/// Tells whether a [`LimitedBody`] went over its limit (the request then answers 413, whatever
/// the upstream did with the cut-off body). Without a limit it is empty (no allocation).
#[derive(Debug, Clone, Default)]
pub struct Overflow(Option<Arc<AtomicBool>>);

impl Overflow {
    /// Whether the limit was exceeded.
    pub fn happened(&self) -> bool {
        self.0.as_ref().is_some_and(|f| f.load(Ordering::Acquire))
    }

    /// The 413 to answer with, if the limit was exceeded.
    pub fn rejection(&self) -> Option<crate::Rejection> {
        self.happened().then_some(crate::Rejection::TOO_LARGE)
    }
}

pin_project_lite::pin_project! {
    /// A request body that fails with [`BodyTooLarge`] once more than `limit` bytes stream.
    pub struct LimitedBody<B> {
        #[pin]
        inner: B,
        remaining: u64,
        overflow: Overflow,
    }
}

impl<B> fmt::Debug for LimitedBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LimitedBody")
            .field("remaining", &self.remaining)
            .finish_non_exhaustive()
    }
}

impl<B> LimitedBody<B> {
    /// Wraps `inner`; the [`Overflow`] reports whether it was cut off. `None`: no limit.
    pub fn new(inner: B, limit: Option<u64>) -> (Self, Overflow) {
        let overflow = Overflow(limit.map(|_| Arc::default()));
        let body = Self {
            inner,
            remaining: limit.unwrap_or(u64::MAX),
            overflow: overflow.clone(),
        };
        (body, overflow)
    }
}

impl<B> Body for LimitedBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > *this.remaining {
                        if let Some(flag) = &this.overflow.0 {
                            flag.store(true, Ordering::Release);
                        }
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge))));
                    }
                    *this.remaining -= len;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
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
    use http_body_util::BodyExt;

    use super::*;

    /// A body of ready chunks, like a chunked request without `Content-Length`.
    struct Chunks(std::collections::VecDeque<&'static [u8]>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(
                self.0
                    .pop_front()
                    .map(|c| Ok(Frame::data(Bytes::from_static(c)))),
            )
        }
    }

    fn chunks(parts: &[&'static [u8]]) -> Chunks {
        Chunks(parts.iter().copied().collect())
    }

    #[tokio::test]
    async fn bodies_at_the_limit_pass_and_one_byte_over_fails() {
        let (at, overflow) = LimitedBody::new(chunks(&[b"abc", b"de"]), Some(5));
        assert_eq!(at.collect().await.unwrap().to_bytes(), "abcde");
        assert!(!overflow.happened());
        let (over, overflow) = LimitedBody::new(chunks(&[b"abc", b"def"]), Some(5));
        let err = over.collect().await.unwrap_err();
        assert!(err.is::<BodyTooLarge>());
        assert!(overflow.happened());
        let (free, overflow) = LimitedBody::new(chunks(&[b"abc", b"def"]), None);
        assert_eq!(free.collect().await.unwrap().to_bytes(), "abcdef");
        assert!(!overflow.happened());
    }

    #[test]
    fn declared_lengths_are_judged_before_reading() {
        let mut h = HeaderMap::new();
        assert!(!declared_too_large(&h, 5));
        h.insert(header::CONTENT_LENGTH, "5".parse().unwrap());
        assert!(!declared_too_large(&h, 5));
        h.insert(header::CONTENT_LENGTH, "6".parse().unwrap());
        assert!(declared_too_large(&h, 5));
    }
}
