//! Why a request was refused, as the contract's JSON error.

use std::fmt;

use http::{HeaderValue, Response, StatusCode, header};
use portcullis_http::{Body, RequestId, error_response};

/// A refused request: 401 (no or bad credentials) or 403 (authenticated but not allowed).
///
/// Messages are fixed strings: they never say whether a presented key exists, and never echo
/// a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    status: StatusCode,
    message: &'static str,
    /// `WWW-Authenticate` challenge on 401.
    challenge: Option<&'static str>,
}

impl Rejection {
    /// 401: the route needs an API key and the request has none.
    pub(crate) const MISSING: Self = Self {
        status: StatusCode::UNAUTHORIZED,
        message: "authentication required",
        challenge: Some("ApiKey"),
    };
    /// 401: the route needs a bearer token and the request has none.
    pub(crate) const MISSING_TOKEN: Self = Self {
        status: StatusCode::UNAUTHORIZED,
        message: "authentication required",
        challenge: Some("Bearer"),
    };
    /// 401: the token is malformed, badly signed, or fails a claim check.
    pub(crate) const INVALID_TOKEN: Self = Self {
        status: StatusCode::UNAUTHORIZED,
        message: "invalid token",
        challenge: Some("Bearer error=\"invalid_token\""),
    };
    /// 401: the token has expired.
    pub(crate) const EXPIRED_TOKEN: Self = Self {
        status: StatusCode::UNAUTHORIZED,
        message: "token expired",
        challenge: Some("Bearer error=\"invalid_token\""),
    };
    /// 401: the credentials presented are not valid (unknown, wrong, expired...).
    pub(crate) const INVALID: Self = Self {
        status: StatusCode::UNAUTHORIZED,
        message: "invalid credentials",
        challenge: Some("ApiKey"),
    };
    /// 403: the consumer is not allowed on this route.
    pub(crate) const FORBIDDEN: Self = Self {
        status: StatusCode::FORBIDDEN,
        message: "consumer not allowed on this route",
        challenge: None,
    };

    /// The status to answer with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The message of the error body.
    pub fn message(&self) -> &'static str {
        self.message
    }

    /// Adds what the error body does not carry (the `WWW-Authenticate` challenge) to a
    /// response built by the caller.
    pub fn decorate<B>(&self, response: &mut Response<B>) {
        if let Some(c) = self.challenge {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(c));
        }
    }

    /// The contract's JSON error response.
    pub fn into_response(self, request_id: Option<&RequestId>) -> Response<Body> {
        let mut response = error_response(self.status, self.message, request_id);
        self.decorate(&mut response);
        response
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message)
    }
}

impl std::error::Error for Rejection {}
