//! Per-request checks (k6's `check`): the status is one of a set, a header is present, the body
//! contains a string. A failed check does not make a request an error; checks are counted on
//! their own and gated with the `checks` threshold metric.

use http::{HeaderMap, HeaderName, StatusCode};

/// One check on a response.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    /// The status is one of these.
    Status(Vec<u16>),
    /// The header is present.
    HeaderPresent(HeaderName),
    /// The body contains this text.
    BodyContains(String),
}

impl Check {
    /// How the check reads in reports: `status in [200]`, `header x-cache`, `body contains "ok"`.
    pub fn describe(&self) -> String {
        match self {
            Check::Status(codes) if codes.len() == 1 => format!("status == {}", codes[0]),
            Check::Status(codes) => format!("status in {codes:?}"),
            Check::HeaderPresent(name) => format!("header {name} present"),
            Check::BodyContains(text) => format!("body contains {text:?}"),
        }
    }

    /// Whether the check needs the response body.
    pub fn needs_body(&self) -> bool {
        matches!(self, Check::BodyContains(_))
    }

    /// Evaluates the check.
    pub fn passes(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> bool {
        match self {
            Check::Status(codes) => codes.contains(&status.as_u16()),
            Check::HeaderPresent(name) => headers.contains_key(name),
            Check::BodyContains(text) => {
                let needle = text.as_bytes();
                needle.is_empty() || body.windows(needle.len()).any(|w| w == needle)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_check_passes_and_fails() {
        let mut headers = HeaderMap::new();
        headers.insert("x-cache", "HIT".parse().unwrap());
        let ok = StatusCode::OK;
        assert!(Check::Status(vec![200, 204]).passes(ok, &headers, b""));
        assert!(!Check::Status(vec![201]).passes(ok, &headers, b""));
        let present = Check::HeaderPresent(HeaderName::from_static("x-cache"));
        assert!(present.passes(ok, &headers, b""));
        assert!(!present.passes(ok, &HeaderMap::new(), b""));
        let body = Check::BodyContains("needle".to_owned());
        assert!(body.passes(ok, &headers, b"hay needle hay"));
        assert!(!body.passes(ok, &headers, b"hay"));
        assert_eq!(Check::Status(vec![200]).describe(), "status == 200");
    }
}
