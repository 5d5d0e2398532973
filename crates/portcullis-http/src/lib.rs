//! The HTTP contract of Portcullis, kept tiny so every layer crate can depend on it.
//!
//! It holds what users and tests rely on and what must be spelled the same everywhere:
//! header names ([`headers`]), the boxed body type every layer speaks ([`body`]), request ids
//! ([`request_id`]), the request extensions layers share ([`consumer`], [`client_ip`]) and the
//! JSON error body with the one function that renders it ([`error`]).

pub mod body;
pub mod client_ip;
pub mod consumer;
pub mod error;
pub mod headers;
pub mod request_id;

pub use body::{Body, BoxError};
pub use client_ip::ClientIp;
pub use consumer::{ConsumerId, ConsumerTier};
pub use error::{ErrorBody, error_response};
pub use request_id::RequestId;
