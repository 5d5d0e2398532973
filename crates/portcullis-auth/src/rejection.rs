//! Why a request was refused, as the contract's JSON error.

use std::fmt;

use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use portcullis_http::{Body, RequestId, error_response};

/// A request the gateway answers itself: 400 (an unknown API version), 401 (no or bad
/// credentials), 403 (not allowed: ACL, IP or bot rules, a refused CORS preflight), 413 (body
/// too large), or an allowed CORS preflight's 204.
///
/// Messages are fixed strings: they never say whether a presented key exists, and never echo
/// a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    status: StatusCode,
    message: &'static str,
    /// `WWW-Authenticate` challenge on 401.
    challenge: Option<&'static str>,
    /// The headers of a CORS preflight answer (204, no body).
    preflight: Option<Box<HeaderMap>>,
}

impl Rejection {
    /// 401: the route needs an API key and the request has none.
    pub(crate) const MISSING: Self = Self {
        status: StatusCode::UNAUTHORIZED,
        message: "authentication required",
        challenge: Some("ApiKey"),
        preflight: None,
    };
    /// 401: the route needs a bearer token and the request has none.
    pub(crate) const MISSING_TOKEN: Self = Self {
        status: StatusCode::UNAUTHORIZED,
        message: "authentication required",
        challenge: Some("Bearer"),
        preflight: None,
    };
    /// 401: the token is malformed, badly signed, or fails a claim check.
    pub(crate) const INVALID_TOKEN: Self = Self {
        status: StatusCode::UNAUTHORIZED,
        message: "invalid token",
        challenge: Some("Bearer error=\"invalid_token\""),
        preflight: None,
    };
    /// 401: the token has expired.
    pub(crate) const EXPIRED_TOKEN: Self = Self {
        status: StatusCode::UNAUTHORIZED,
        message: "token expired",
        challenge: Some("Bearer error=\"invalid_token\""),
        preflight: None,
    };
    /// 401: the credentials presented are not valid (unknown, wrong, expired...).
    pub(crate) const INVALID: Self = Self {
        status: StatusCode::UNAUTHORIZED,
        message: "invalid credentials",
        challenge: Some("ApiKey"),
        preflight: None,
    };
    /// 403: the consumer is not allowed on this route.
    pub(crate) const FORBIDDEN: Self = Self::forbidden("consumer not allowed on this route");
    /// 403: the client address is not allowed.
    pub(crate) const IP_DENIED: Self = Self::forbidden("client address not allowed");
    /// 403: the `User-Agent` is refused by the bot rules.
    pub(crate) const BOT_DENIED: Self = Self::forbidden("user agent not allowed");
    /// 403: a CORS preflight for an origin, method or header the route does not allow.
    pub(crate) const PREFLIGHT_DENIED: Self = Self::forbidden("CORS preflight not allowed");

    /// 413: the request body is larger than the route allows.
    pub(crate) const TOO_LARGE: Self = Self {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        message: "request body too large",
        challenge: None,
        preflight: None,
    };

    /// 414: the request target is longer than allowed.
    pub(crate) const URI_TOO_LONG: Self = Self {
        status: StatusCode::URI_TOO_LONG,
        message: "request URI too long",
        challenge: None,
        preflight: None,
    };
    /// 431: the request has more headers than allowed.
    pub(crate) const TOO_MANY_HEADERS: Self = Self {
        status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        message: "too many request headers",
        challenge: None,
        preflight: None,
    };

    /// 400: the request names an API version the route does not serve.
    pub(crate) const UNKNOWN_VERSION: Self = Self {
        status: StatusCode::BAD_REQUEST,
        message: "unknown API version",
        challenge: None,
        preflight: None,
    };
    /// 400: the request names no API version and the route has no default.
    pub(crate) const VERSION_REQUIRED: Self = Self {
        status: StatusCode::BAD_REQUEST,
        message: "API version required",
        challenge: None,
        preflight: None,
    };

    const fn forbidden(message: &'static str) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            message,
            challenge: None,
            preflight: None,
        }
    }

    /// 204: the answer to an allowed CORS preflight.
    pub(crate) fn preflight(headers: HeaderMap) -> Self {
        Self {
            status: StatusCode::NO_CONTENT,
            message: "",
            challenge: None,
            preflight: Some(Box::new(headers)),
        }
    }

    /// Whether this is an allowed CORS preflight's answer rather than a refusal.
    pub fn is_preflight(&self) -> bool {
        self.preflight.is_some()
    }

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

    /// The response: the contract's JSON error, or a preflight's 204.
    pub fn into_response(self, request_id: Option<&RequestId>) -> Response<Body> {
        if let Some(headers) = self.preflight {
            let mut response = Response::new(portcullis_http::body::empty());
            *response.status_mut() = StatusCode::NO_CONTENT;
            *response.headers_mut() = *headers;
            return response;
        }
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
