//! Request ids: accepted from the client when well-formed, otherwise generated.

use http::HeaderValue;

/// The id of one request, stored as a request extension and echoed as `X-Request-Id`.
///
/// Held as a `HeaderValue` (reference-counted bytes), so echoing it on the upstream request and
/// the response costs no copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(HeaderValue);

/// Longest client-supplied id we accept; longer ones are replaced by a generated id.
const MAX_LEN: usize = 128;

impl RequestId {
    /// A fresh random id: 32 lowercase hex digits (128 random bits).
    pub fn generate() -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut n = fastrand::u128(..);
        let mut buf = [0u8; 32];
        for b in buf.iter_mut().rev() {
            *b = HEX[(n & 0xf) as usize];
            n >>= 4;
        }
        // Hex digits are always a valid header value.
        Self(HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("0")))
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
        ok.then(|| Self(value.clone()))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        // Both constructors only admit visible ASCII, so this never falls back (and UTF-8
        // validation takes ASCII a word at a time, where `HeaderValue::to_str` goes byte by byte).
        std::str::from_utf8(self.0.as_bytes()).unwrap_or("")
    }

    /// The id as a header value (a reference-counted clone).
    pub fn to_header_value(&self) -> HeaderValue {
        self.0.clone()
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
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
