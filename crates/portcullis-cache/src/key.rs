//! Cache keys: a readable form for debugging and purges, and a 128-bit digest for lookups.
//!
//! The readable key is `GET http://host/path?sorted&query` followed by the configured extra
//! parts (`|h:accept-language=en`, `|c:currency=eur`, `|consumer=…`). The digest is XXH3-128 of
//! it: fast, stable across processes and versions (so the Redis tier can share it), and not
//! trusted alone: every stored entry keeps its readable key and a lookup compares it, so a
//! digest collision can only cause a miss, never a wrong response.
//!
//! `Vary` is not part of the key: one key holds up to a few variants, chosen by the request
//! headers the response named (see [`crate::entry`]).

use std::sync::Arc;

use http::{HeaderMap, HeaderName, header};

/// Which query parameters are left out of the key: exact names, or prefixes written `utm_*`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryIgnore {
    exact: Vec<String>,
    prefixes: Vec<String>,
}

impl QueryIgnore {
    /// Builds the matcher from patterns such as `["utm_*", "fbclid"]`.
    pub fn new<I, S>(patterns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut me = Self::default();
        for p in patterns {
            let p = p.as_ref();
            match p.strip_suffix('*') {
                Some(prefix) => me.prefixes.push(prefix.to_owned()),
                None => me.exact.push(p.to_owned()),
            }
        }
        me
    }

    fn ignores(&self, name: &str) -> bool {
        self.exact.iter().any(|e| e == name)
            || self.prefixes.iter().any(|p| name.starts_with(p.as_str()))
    }

    fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefixes.is_empty()
    }
}

/// Extra request properties that become part of the key, from route config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyParts {
    /// Query parameters left out.
    pub ignore_query: QueryIgnore,
    /// Request headers whose values are part of the key (lowercase names).
    pub headers: Vec<HeaderName>,
    /// Cookies whose values are part of the key.
    pub cookies: Vec<String>,
}

/// A computed key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey {
    /// XXH3-128 of `readable`.
    pub digest: u128,
    /// The key as text; stored in the entry and compared on every hit.
    pub readable: Arc<str>,
    /// Length of the URL part of `readable` (`GET scheme://host/path?query`), which identifies
    /// the resource for invalidation regardless of the extra parts.
    pub url_len: usize,
    /// Whether the key includes a consumer identity (so per-consumer storage is allowed).
    pub per_consumer: bool,
}

impl CacheKey {
    /// The `scheme://host/path?query` part: what invalidation and purges address.
    pub fn url(&self) -> &str {
        self.readable[..self.url_len]
            .split_once(' ')
            .map_or("", |(_, url)| url)
    }
}

/// What identifies a request for keying, beyond its headers.
#[derive(Debug, Clone, Copy)]
pub struct KeyInput<'a> {
    /// `http` or `https`.
    pub scheme: &'a str,
    /// Host without port, any case.
    pub host: &'a str,
    /// The normalized path.
    pub path: &'a str,
    /// The raw query, without `?`.
    pub query: Option<&'a str>,
    /// Consumer identity for per-consumer routes (already free of secrets).
    pub consumer: Option<&'a str>,
    /// For a GraphQL query sent by POST: the digest of the operation (see [`crate::graphql`]).
    pub operation: Option<u128>,
}

/// Builds the key for a GET of `input` with the route's `parts`. HEAD uses GET's key, so a
/// HEAD is answered from a stored GET.
pub fn build(input: &KeyInput<'_>, headers: &HeaderMap, parts: &KeyParts) -> CacheKey {
    let mut s = String::with_capacity(
        16 + input.host.len() + input.path.len() + input.query.map_or(0, str::len),
    );
    let url_len = write(&mut s, input, headers, parts);
    CacheKey {
        digest: digest(&s),
        readable: Arc::from(s),
        url_len,
        per_consumer: input.consumer.is_some(),
    }
}

/// Appends the readable key to `s` (for lookups into a reused buffer); returns the length of
/// its URL part.
pub fn write(s: &mut String, input: &KeyInput<'_>, headers: &HeaderMap, parts: &KeyParts) -> usize {
    s.push_str("GET ");
    push_url(s, input, &parts.ignore_query);
    let url_len = s.len();
    for name in &parts.headers {
        s.push_str("|h:");
        s.push_str(name.as_str());
        s.push('=');
        let mut first = true;
        for v in headers.get_all(name) {
            if !first {
                s.push(',');
            }
            first = false;
            s.push_str(&String::from_utf8_lossy(v.as_bytes()));
        }
    }
    for name in &parts.cookies {
        s.push_str("|c:");
        s.push_str(name);
        s.push('=');
        if let Some(v) = cookie(headers, name) {
            s.push_str(v);
        }
    }
    if let Some(op) = input.operation {
        use std::fmt::Write as _;
        let _ = write!(s, "|gql={op:032x}");
    }
    if let Some(consumer) = input.consumer {
        s.push_str("|consumer=");
        s.push_str(consumer);
    }
    url_len
}

/// `scheme://host/path?query` with the query normalized as in keys: the resource that writes
/// invalidate and purges address.
pub fn resource_url(input: &KeyInput<'_>, ignore: &QueryIgnore) -> String {
    let mut s = String::new();
    push_url(&mut s, input, ignore);
    s
}

fn push_url(s: &mut String, input: &KeyInput<'_>, ignore: &QueryIgnore) {
    s.push_str(input.scheme);
    s.push_str("://");
    push_lowercase(s, input.host);
    s.push_str(input.path);
    if let Some(q) = input.query {
        push_normalized_query(s, q, ignore);
    }
}

/// The digest of a readable key or URL.
pub fn digest(text: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(text.as_bytes())
}

fn push_lowercase(s: &mut String, host: &str) {
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        s.push_str(&host.to_ascii_lowercase());
    } else {
        s.push_str(host);
    }
}

/// Appends `?` and the query's parameters sorted (stable, so repeated names keep their order),
/// without empty pieces and ignored names. Nothing is appended when nothing is left.
fn push_normalized_query(s: &mut String, query: &str, ignore: &QueryIgnore) {
    let mut params: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter(|p| ignore.is_empty() || !ignore.ignores(p.split_once('=').map_or(*p, |(n, _)| n)))
        .collect();
    if params.is_empty() {
        return;
    }
    params.sort_by(|a, b| {
        let name = |p: &str| p.split_once('=').map_or(p, |(n, _)| n).to_owned();
        name(a).cmp(&name(b))
    });
    s.push('?');
    for (i, p) in params.iter().enumerate() {
        if i > 0 {
            s.push('&');
        }
        s.push_str(p);
    }
}

/// A URL as purges address it (`scheme://host/path?query`, host lowercased without its port,
/// query sorted as in keys), from what an operator or a backend sends; `None` when it is not
/// an absolute `http`/`https` URL.
pub fn normalize_url(url: &str) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    let scheme = uri
        .scheme_str()
        .filter(|s| matches!(*s, "http" | "https"))?;
    let host = uri.host()?;
    let path = match uri.path() {
        "" => "/",
        p => p,
    };
    Some(resource_url(
        &KeyInput {
            scheme,
            host,
            path,
            query: uri.query(),
            consumer: None,
            operation: None,
        },
        &QueryIgnore::default(),
    ))
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (n, v) = pair.trim().split_once('=')?;
            (n == name).then_some(v)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn key(path: &str, query: Option<&str>, headers: &HeaderMap, parts: &KeyParts) -> CacheKey {
        build(
            &KeyInput {
                scheme: "http",
                host: "API.example.com",
                path,
                query,
                consumer: None,
                operation: None,
            },
            headers,
            parts,
        )
    }

    #[test]
    fn query_parameters_are_sorted_and_ignored_ones_dropped() {
        let parts = KeyParts {
            ignore_query: QueryIgnore::new(["utm_*", "fbclid"]),
            ..KeyParts::default()
        };
        let h = HeaderMap::new();
        let a = key("/p", Some("b=2&a=1&utm_source=x&&fbclid=9"), &h, &parts);
        let b = key("/p", Some("a=1&b=2"), &h, &parts);
        assert_eq!(a, b);
        assert_eq!(&*a.readable, "GET http://api.example.com/p?a=1&b=2");
        assert_eq!(a.url(), "http://api.example.com/p?a=1&b=2");
        // Only ignored parameters: same as no query.
        assert_eq!(
            key("/p", Some("utm_x=1"), &h, &parts),
            key("/p", None, &h, &parts)
        );
        // Repeated names keep their relative order: a=2&a=1 differs from a=1&a=2.
        assert_ne!(
            key("/p", Some("a=2&a=1"), &h, &parts),
            key("/p", Some("a=1&a=2"), &h, &parts)
        );
        assert_ne!(
            key("/p", Some("a=1"), &h, &parts),
            key("/q", Some("a=1"), &h, &parts)
        );
    }

    #[test]
    fn purge_urls_are_normalized_like_keys() {
        assert_eq!(
            normalize_url("https://API.example.com:8443/p?b=2&a=1").as_deref(),
            Some("https://api.example.com/p?a=1&b=2")
        );
        assert_eq!(normalize_url("http://h").as_deref(), Some("http://h/"));
        assert_eq!(normalize_url("/relative"), None);
        assert_eq!(normalize_url("ftp://h/x"), None);
    }

    #[test]
    fn configured_headers_cookies_and_consumer_are_part_of_the_key() {
        let parts = KeyParts {
            headers: vec![HeaderName::from_static("accept-language")],
            cookies: vec!["currency".into()],
            ..KeyParts::default()
        };
        let mut en = HeaderMap::new();
        en.insert("accept-language", HeaderValue::from_static("en"));
        en.insert(
            header::COOKIE,
            HeaderValue::from_static("session=s3cr3t; currency=eur"),
        );
        let mut de = en.clone();
        de.insert("accept-language", HeaderValue::from_static("de"));
        let k_en = key("/p", None, &en, &parts);
        assert_ne!(k_en.digest, key("/p", None, &de, &parts).digest);
        assert_eq!(
            &*k_en.readable,
            "GET http://api.example.com/p|h:accept-language=en|c:currency=eur"
        );
        // Cookies that are not named stay out of the key.
        assert!(!k_en.readable.contains("s3cr3t"));
        let input = |consumer| KeyInput {
            scheme: "https",
            host: "h",
            path: "/",
            query: None,
            consumer,
            operation: None,
        };
        let empty = KeyParts::default();
        assert_ne!(
            build(&input(Some("alice")), &en, &empty),
            build(&input(Some("bob")), &en, &empty)
        );
        assert_eq!(
            build(&input(Some("alice")), &en, &empty).url(),
            "https://h/"
        );
    }
}
