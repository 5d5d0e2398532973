//! Bearer-token check for the admin API, in constant time.

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::Response,
};
use http::{StatusCode, header};
use portcullis_config::Secret;
use subtle::ConstantTimeEq;

use crate::inspect::json_error;

/// The configured token, if any.
#[derive(Clone)]
pub(crate) struct Token(Option<Arc<Secret>>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Token(<redacted>)"
        } else {
            "Token(none)"
        })
    }
}

impl Token {
    pub(crate) fn new(secret: Option<Secret>) -> Self {
        Self(secret.map(Arc::new))
    }

    /// Whether `presented` is the token. Constant time in the presented value's content (the
    /// comparison does not stop at the first differing byte); lengths are not secret.
    fn matches(&self, presented: Option<&[u8]>) -> bool {
        match (&self.0, presented) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(secret), Some(p)) => secret.expose().as_bytes().ct_eq(p).into(),
        }
    }
}

/// The token from `Authorization: Bearer T`.
fn bearer(request: &Request) -> Option<&[u8]> {
    let value = request.headers().get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = value.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| rest.trim_ascii())
}

/// Lets the request through with the right token (or when none is configured); else 401.
pub(crate) async fn require(State(token): State<Token>, request: Request, next: Next) -> Response {
    if token.matches(bearer(&request)) {
        return next.run(request).await;
    }
    let mut response = json_error(StatusCode::UNAUTHORIZED, "missing or wrong admin token");
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        http::HeaderValue::from_static("Bearer realm=\"portcullis-admin\""),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_matches() {
        let t = Token::new(Some(Secret::new("0123456789abcdef")));
        assert!(t.matches(Some(b"0123456789abcdef")));
        assert!(!t.matches(Some(b"0123456789abcdeF")));
        assert!(!t.matches(Some(b"0123456789abcde")));
        assert!(!t.matches(Some(b"")));
        assert!(!t.matches(None));
        assert!(Token::new(None).matches(None));
        assert!(!format!("{t:?}").contains("0123"));
    }
}
