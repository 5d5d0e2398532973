//! The JSON error body of the contract and the one function that renders it.
//!
//! Every response the gateway makes itself on failure looks like
//! `{"error": "...", "status": N, "request_id": "..."}` with `Content-Type: application/json`
//! and the `X-Request-Id` header, whichever layer produced it.

use http::{HeaderValue, Response, StatusCode, header};

use crate::{Body, RequestId, body, headers::X_REQUEST_ID};

/// The parts of a gateway error response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorBody<'a> {
    /// HTTP status.
    pub status: StatusCode,
    /// Human-readable message; never contains secrets.
    pub message: &'a str,
    /// The request's id, if one was assigned.
    pub request_id: Option<&'a RequestId>,
}

impl ErrorBody<'_> {
    /// Serialises the body as JSON.
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "error": self.message,
            "status": self.status.as_u16(),
            "request_id": self.request_id.map(RequestId::as_str),
        })
        .to_string()
    }
}

/// Builds the JSON error response of the contract.
pub fn error_response(
    status: StatusCode,
    message: &str,
    request_id: Option<&RequestId>,
) -> Response<Body> {
    let json = ErrorBody {
        status,
        message,
        request_id,
    }
    .to_json();
    let mut response = Response::new(body::full(json));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(id) = request_id {
        headers.insert(X_REQUEST_ID, id.to_header_value());
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_has_the_three_contract_fields() {
        let id = RequestId::from_header(&HeaderValue::from_static("rid-1")).unwrap();
        let json = ErrorBody {
            status: StatusCode::NOT_FOUND,
            message: "no route \"x\"",
            request_id: Some(&id),
        }
        .to_json();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["error"], "no route \"x\"");
        assert_eq!(v["status"], 404);
        assert_eq!(v["request_id"], "rid-1");
    }

    #[test]
    fn error_response_sets_status_type_and_request_id() {
        let id = RequestId::generate();
        let r = error_response(StatusCode::BAD_GATEWAY, "upstream refused", Some(&id));
        assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(r.headers()[X_REQUEST_ID], id.as_str());
    }
}
