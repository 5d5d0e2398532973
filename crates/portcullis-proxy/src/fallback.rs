//! A route's fallback: a configured static response in place of the gateway's own 502, 503 or
//! 504 when the upstream cannot answer (breaker open, no healthy target, queue full,
//! unreachable, timeout, deadline).
//!
//! It is applied outside the cache: a stale copy the cache may serve on error
//! (`stale-if-error`) wins, and the fallback itself is never stored.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, header};
use portcullis_config::FallbackConfig;
use portcullis_http::{Body, body};

use crate::error::UpstreamFailure;

/// Names why the fallback answered: the [`UpstreamFailure`] reason.
pub(crate) const X_FALLBACK: HeaderName = HeaderName::from_static("x-fallback");

/// A route's fallback response, ready to send.
#[derive(Debug)]
pub(crate) struct Fallback {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Fallback {
    /// Builds it from validated config.
    pub(crate) fn from_config(cfg: &FallbackConfig) -> Result<Self, String> {
        let status = StatusCode::from_u16(cfg.status).map_err(|e| e.to_string())?;
        let mut headers = HeaderMap::new();
        let value = |v: &str| HeaderValue::from_str(v).map_err(|e| format!("{v:?}: {e}"));
        headers.insert(header::CONTENT_TYPE, value(&cfg.content_type)?);
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        for (name, v) in &cfg.headers {
            let name = portcullis_config::parse_header_name(name)?;
            headers.insert(name, value(v)?);
        }
        Ok(Self {
            status,
            headers,
            body: Bytes::from(cfg.body.clone()),
        })
    }

    /// The fallback in place of `response` when that is the gateway's answer to an upstream
    /// failure; `response` itself otherwise. `keep` is copied over (the request id header).
    pub(crate) fn replace(&self, response: Response<Body>, keep: &HeaderName) -> Response<Body> {
        let Some(UpstreamFailure(reason)) = response.extensions().get::<UpstreamFailure>().copied()
        else {
            return response;
        };
        let mut fallback = Response::new(body::full(self.body.clone()));
        *fallback.status_mut() = self.status;
        let headers = fallback.headers_mut();
        headers.clone_from(&self.headers);
        headers.insert(X_FALLBACK, HeaderValue::from_static(reason));
        if let Some(id) = response.headers().get(keep) {
            headers.insert(keep.clone(), id.clone());
        }
        fallback
    }
}
