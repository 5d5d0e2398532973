//! Why a resilience layer answered a request itself, and the one function that turns that
//! into the gateway's JSON error response with its status and `Retry-After`.

use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, header::RETRY_AFTER};
use portcullis_http::{Body, RequestId, error_response};

use crate::Overloaded;

/// A request the layers of this crate refused to pass on (each variant's message is the
/// `error` of the JSON body).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The circuit breaker is open (or half-open with its probes taken): `503`.
    #[error("circuit breaker open")]
    BreakerOpen {
        /// Until the breaker lets a probe through.
        retry_after: Duration,
    },
    /// No concurrency slot, and no room or time to wait for one: `503`.
    #[error("{0}")]
    Overloaded(#[from] Overloaded),
    /// No response head within the deadline: `504`.
    #[error("upstream deadline exceeded")]
    DeadlineExceeded,
    /// Over the load-shedding cap: `503`.
    #[error("overloaded, request shed")]
    Shed,
}

impl Refusal {
    /// The status it answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Self::BreakerOpen { .. } | Self::Overloaded(_) | Self::Shed => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// When a retry may succeed: the breaker's wait rounded up to whole seconds (at least 1),
    /// 1 s for overload, none for a deadline.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::BreakerOpen { retry_after } => {
                let whole = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                Some(Duration::from_secs(whole.max(1)))
            }
            Self::Overloaded(_) | Self::Shed => Some(Duration::from_secs(1)),
            Self::DeadlineExceeded => None,
        }
    }

    /// The contract's JSON error response, with `Retry-After` (whole seconds) when a retry may
    /// succeed, naming `request_id` when given.
    pub fn into_response(self, request_id: Option<&RequestId>) -> Response<Body> {
        let mut response = error_response(self.status(), &self.to_string(), request_id);
        if let Some(after) = self.retry_after() {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(after.as_secs()));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds_and_is_at_least_one() {
        let breaker = |ms| Refusal::BreakerOpen {
            retry_after: Duration::from_millis(ms),
        };
        let secs = |r: Refusal| r.retry_after().map(|d| d.as_secs());
        assert_eq!(secs(breaker(0)), Some(1));
        assert_eq!(secs(breaker(200)), Some(1));
        assert_eq!(secs(breaker(2_000)), Some(2));
        assert_eq!(secs(breaker(2_001)), Some(3));
        assert_eq!(secs(Refusal::Shed), Some(1));
        assert_eq!(secs(Refusal::DeadlineExceeded), None);
    }

    #[test]
    fn each_refusal_has_its_status_message_and_header() {
        let id = RequestId::generate();
        let r = Refusal::from(Overloaded::QueueFull).into_response(Some(&id));
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[RETRY_AFTER], "1");
        assert_eq!(r.headers()["x-request-id"], id.as_str());
        let r = Refusal::DeadlineExceeded.into_response(None);
        assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT);
        assert!(r.headers().get(RETRY_AFTER).is_none());
        assert_eq!(
            Refusal::from(Overloaded::QueueTimeout).to_string(),
            Overloaded::QueueTimeout.to_string()
        );
    }
}
