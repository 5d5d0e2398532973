//! API keys: hashing, and reading (and removing) them from a request.

use std::borrow::Cow;

use http::{HeaderMap, HeaderName, Uri, uri::PathAndQuery};

/// The SHA-256 of an API key: what the config stores and what requests are matched by.
pub fn hash_key(key: &[u8]) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// The SHA-256 of an API key as 64 lowercase hex digits (what `portcullis hash-key` prints).
pub fn hash_key_hex(key: &[u8]) -> String {
    use std::fmt::Write as _;
    hash_key(key)
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Where API keys are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyOptions {
    /// The request header carrying the key (default `X-API-Key`).
    pub header: HeaderName,
    /// A query parameter carrying the key; the header wins when both are sent.
    pub query: Option<String>,
    /// Forward the key upstream instead of removing it.
    pub forward: bool,
}

impl Default for ApiKeyOptions {
    fn default() -> Self {
        Self {
            header: HeaderName::from_static("x-api-key"),
            query: None,
            forward: false,
        }
    }
}

/// Where a request's key was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyFrom {
    Header,
    Query,
}

impl ApiKeyOptions {
    /// The key a request presents, and where it was found.
    pub(crate) fn find<'a>(
        &self,
        headers: &'a HeaderMap,
        uri: &'a Uri,
    ) -> Option<(Cow<'a, [u8]>, KeyFrom)> {
        if let Some(v) = headers.get(&self.header) {
            return Some((Cow::Borrowed(v.as_bytes()), KeyFrom::Header));
        }
        let name = self.query.as_deref()?;
        let value = query_pairs(uri.query()?)
            .find(|(k, _)| percent_decode(k).as_ref() == name.as_bytes())?;
        Some((percent_decode(value.1), KeyFrom::Query))
    }

    /// Removes the key from where it was found (unless it is forwarded).
    pub(crate) fn remove(&self, from: KeyFrom, headers: &mut HeaderMap, uri: &mut Uri) {
        if self.forward {
            return;
        }
        match from {
            KeyFrom::Header => {
                headers.remove(&self.header);
            }
            KeyFrom::Query => {
                if let Some(name) = &self.query
                    && let Some(new) = without_query_param(uri, name)
                {
                    *uri = new;
                }
            }
        }
    }
}

/// `name=value` pairs of a query string (a pair without `=` has an empty value).
fn query_pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
}

/// Decodes `%XX` escapes and `+` (as space); malformed escapes are kept as they are.
fn percent_decode(s: &str) -> Cow<'_, [u8]> {
    if !s.contains(['%', '+']) {
        return Cow::Borrowed(s.as_bytes());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push(u8::try_from(h * 16 + l).unwrap_or(0));
                        i += 3;
                    }
                    _ => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Cow::Owned(out)
}

/// `uri` without the query parameter `name` (every occurrence); `None` when it has none.
fn without_query_param(uri: &Uri, name: &str) -> Option<Uri> {
    let query = uri.query()?;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| {
            let key = p.split_once('=').map_or(*p, |(k, _)| k);
            percent_decode(key).as_ref() != name.as_bytes()
        })
        .collect();
    let path = uri.path();
    let pq = if kept.iter().all(|p| p.is_empty()) {
        path.to_owned()
    } else {
        format!("{path}?{}", kept.join("&"))
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(pq).ok()?);
    Uri::from_parts(parts).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_sha256_hex() {
        // FIPS 180-2 example: SHA-256("abc").
        assert_eq!(
            hash_key_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn keys_are_found_in_header_then_query_and_removed() {
        let opts = ApiKeyOptions {
            query: Some("api_key".into()),
            ..ApiKeyOptions::default()
        };
        let mut headers = HeaderMap::new();
        let mut uri: Uri = "/x?a=1&api_key=k%2By+z&b=2".parse().unwrap();
        let (key, from) = opts.find(&headers, &uri).unwrap();
        assert_eq!((key.as_ref(), from), (&b"k+y z"[..], KeyFrom::Query));
        opts.remove(from, &mut headers, &mut uri);
        assert_eq!(uri, "/x?a=1&b=2");
        let mut only: Uri = "/x?api_key=k".parse().unwrap();
        opts.remove(KeyFrom::Query, &mut headers, &mut only);
        assert_eq!(only, "/x");

        headers.insert("x-api-key", "h".parse().unwrap());
        let (key, from) = opts.find(&headers, &uri).unwrap();
        assert_eq!((key.as_ref(), from), (&b"h"[..], KeyFrom::Header));
        opts.remove(from, &mut headers, &mut uri);
        assert!(headers.is_empty());
        assert!(
            opts.find(&headers, &"/x?other=1".parse().unwrap())
                .is_none()
        );
    }

    #[test]
    fn malformed_escapes_are_kept() {
        assert_eq!(percent_decode("a%zz%4").as_ref(), b"a%zz%4");
        assert_eq!(percent_decode("%41%42").as_ref(), b"AB");
    }
}
