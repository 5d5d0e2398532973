//! The one body type that flows through every layer.
//!
//! Streaming bodies (hyper's `Incoming`) and gateway-made bodies (`Full<Bytes>`) are boxed into
//! [`Body`] so layers compose without generic explosion. `UnsyncBoxBody` is used because hyper's
//! client and server only need `Send`, and it spares a `Sync` bound on every wrapped body.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, combinators::UnsyncBoxBody};

/// The error type carried by boxed bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A boxed, streaming HTTP body.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// A body holding `bytes` in full.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// Boxes any body whose error converts into [`BoxError`].
pub fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}
