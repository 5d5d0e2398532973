//! Request ids: accepted from the client when well-formed, otherwise generated.

use std::sync::Arc;

use http::HeaderValue;

/// The id of one request, stored as a request extension and echoed as `X-Request-Id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(Arc<str>);

/// Longest client-supplied id we accept; longer ones are replaced by a generated id.
const MAX_LEN: usize = 128;

impl RequestId {
    /// A fresh random id: 32 lowercase hex digits (128 random bits).
    pub fn generate() -> Self {
        let n = fastrand::u128(..);
        Self(Arc::from(format!("{n:032x}")))
    }

    /// Accepts a client-supplied id if it is 1..=128 characters of `[A-Za-z0-9._:-]`,
    /// so it is safe to log and to echo; otherwise returns `None`.
    pub fn from_header(value: &HeaderValue) -> Option<Self> {
        let bytes = value.as_bytes();
        let ok = !bytes.is_empty()
            && bytes.len() <= MAX_LEN
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
        // The check above guarantees ASCII, so the conversion cannot fail.
        ok.then(|| std::str::from_utf8(bytes).ok().map(|s| Self(Arc::from(s))))
            .flatten()
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as a header value.
    pub fn to_header_value(&self) -> HeaderValue {
        // Both constructors only admit visible ASCII, which is always a valid header value.
        HeaderValue::from_str(&self.0).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_32_hex_digits_and_differ() {
        let a = RequestId::generate();
        let b = RequestId::generate();
        assert_eq!(a.as_str().len(), 32);
        assert!(a.as_str().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn client_ids_are_accepted_only_when_safe() {
        let ok = HeaderValue::from_static("abc-123_x.y:z");
        assert_eq!(
            RequestId::from_header(&ok).unwrap().as_str(),
            "abc-123_x.y:z"
        );
        for bad in ["", "has space", "quote\"", "semi;colon"] {
            let v = HeaderValue::from_str(bad).unwrap();
            assert!(RequestId::from_header(&v).is_none(), "{bad:?} accepted");
        }
        let long = HeaderValue::from_str(&"a".repeat(129)).unwrap();
        assert!(RequestId::from_header(&long).is_none());
    }
}
