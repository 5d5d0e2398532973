//! Errors of the data plane, and the one place they become HTTP responses.

use http::{HeaderValue, Method, Response, StatusCode, header};
use portcullis_http::{Body, RequestId, error_response};

/// Why the gateway answered a request itself.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No route matches host, path and method.
    #[error("no route matches this request")]
    NoRoute,
    /// A route matches host and path but not the method.
    #[error("method not allowed on this route")]
    MethodNotAllowed(Vec<Method>),
    /// The request cannot be forwarded as it is.
    #[error("{0}")]
    BadRequest(&'static str),
    /// The upstream could not be reached (refused, reset, DNS).
    #[error("upstream {upstream:?} unreachable")]
    Connect {
        /// Upstream name.
        upstream: std::sync::Arc<str>,
    },
    /// Connecting, or waiting for the response head, took longer than allowed.
    #[error("upstream {upstream:?} timed out")]
    Timeout {
        /// Upstream name.
        upstream: std::sync::Arc<str>,
    },
    /// The gateway or the upstream is at its limit of requests in flight and its queue is full
    /// or the wait took too long.
    #[error("{0}")]
    Overloaded(&'static str),
    /// The route's deadline passed before the response head arrived (queue, retries and
    /// back-offs included).
    #[error("upstream {upstream:?} did not answer within the route's deadline")]
    Deadline {
        /// Upstream name.
        upstream: std::sync::Arc<str>,
    },
    /// The upstream's (or the route's) circuit breaker is open: failing fast.
    #[error("{} {name:?} is failing; circuit breaker open", scope.as_str())]
    BreakerOpen {
        /// Whose breaker.
        scope: crate::BreakerScope,
        /// The upstream's or route's name.
        name: std::sync::Arc<str>,
        /// When a probe may go through.
        retry_after: std::time::Duration,
    },
    /// Every target of the upstream is unhealthy and it fails closed.
    #[error("upstream {upstream:?} has no healthy target")]
    NoHealthyTarget {
        /// Upstream name.
        upstream: std::sync::Arc<str>,
    },
    /// The route's rate limit refused the request.
    #[error("rate limit exceeded")]
    RateLimited,
    /// The route's security refused the request (401, 403).
    #[error("{0}")]
    Denied(portcullis_auth::Rejection),
    /// The upstream broke the exchange (bad response, reset mid-request).
    #[error("upstream {upstream:?} failed")]
    Upstream {
        /// Upstream name.
        upstream: std::sync::Arc<str>,
    },
}

/// Marks a response the gateway made because the upstream could not answer; the reason is one
/// of `unreachable`, `timeout`, `deadline`, `overloaded`, `breaker_open`, `no_healthy_target`,
/// `upstream_failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamFailure(pub &'static str);

impl ProxyError {
    /// The status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Connect { .. } | Self::Upstream { .. } => StatusCode::BAD_GATEWAY,
            Self::Timeout { .. } | Self::Deadline { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::NoHealthyTarget { .. } | Self::Overloaded(_) | Self::BreakerOpen { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Denied(rejection) => rejection.status(),
        }
    }

    /// Why the upstream could not answer, when that is what this error says: what a route's
    /// `fallback` answers instead, and what its `X-Fallback` header names.
    pub fn upstream_failure(&self) -> Option<UpstreamFailure> {
        Some(UpstreamFailure(match self {
            Self::Connect { .. } => "unreachable",
            Self::Timeout { .. } => "timeout",
            Self::Deadline { .. } => "deadline",
            Self::Overloaded(_) => "overloaded",
            Self::BreakerOpen { .. } => "breaker_open",
            Self::NoHealthyTarget { .. } => "no_healthy_target",
            Self::Upstream { .. } => "upstream_failed",
            _ => return None,
        }))
    }

    /// The JSON error response of the contract. An upstream failure carries
    /// [`UpstreamFailure`] as an extension.
    pub fn into_response(self, request_id: &RequestId) -> Response<Body> {
        if let Self::Denied(rejection) = self {
            // It renders itself: the JSON error with its challenge, or a preflight's 204.
            return rejection.into_response(Some(request_id));
        }
        let mut response = error_response(self.status(), &self.to_string(), Some(request_id));
        if let Some(failure) = self.upstream_failure() {
            response.extensions_mut().insert(failure);
        }
        let retry_after = match &self {
            Self::Overloaded(_) => Some(1),
            Self::BreakerOpen { retry_after, .. } => Some(retry_after.as_secs_f64().ceil() as u64),
            _ => None,
        };
        if let Some(secs) = retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        if let Self::MethodNotAllowed(allow) = &self {
            let list: Vec<&str> = allow.iter().map(Method::as_str).collect();
            if let Ok(v) = HeaderValue::from_str(&list.join(", ")) {
                response.headers_mut().insert(header::ALLOW, v);
            }
        }
        response
    }
}
