//! What the cache stores: responses, and the variants of one key (`Vary`).

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};

use portcullis_http::headers::{X_CACHE, X_CACHE_TIER};

use crate::decision::StoredMeta;

/// Memory per stored object beyond its headers and body (the response struct, the slot, the
/// key, moka's entry and the tag index), in bytes, so the weigher counts what the process
/// actually holds. Measured: see BENCHMARKS.md, "Cache memory".
const ENTRY_OVERHEAD: usize = 1400;

/// Memory per header slot of a `HeaderMap` (its index and bucket), beyond name and value bytes.
const HEADER_SLOT: usize = 112;

/// Most variants kept per key; the oldest goes when a new one arrives.
pub const MAX_VARIANTS: usize = 16;

/// One stored response.
#[derive(Debug, Clone)]
pub struct StoredResponse {
    /// Status code.
    pub status: StatusCode,
    /// Headers as sent to clients on a hit: the origin's, less hop-by-hop fields and tag
    /// headers, plus `X-Cache: HIT`, `X-Cache-Tier: memory` and an `Age` placeholder that each
    /// hit replaces (see [`StoredResponse::seal`]).
    pub headers: HeaderMap,
    /// The whole body, shared by every hit without copying.
    pub body: Bytes,
    /// Freshness facts.
    pub meta: StoredMeta,
    /// The request header values this variant was chosen for (names from `Vary`, normalized
    /// values; `None` when the request lacked the header).
    pub vary: Vec<(HeaderName, Option<String>)>,
    /// Tags for purging (route tags and those the origin sent).
    pub tags: Vec<Arc<str>>,
    /// When it may be dropped: past freshness plus every stale allowance.
    pub retain: Duration,
    /// An identity response the gateway may compress (see [`crate::compress`]); stored with
    /// `Vary: Accept-Encoding` and the variant value `identity`.
    pub compressible: bool,
    /// A variant the gateway derived by compressing a `compressible` one (its `ETag` is the
    /// weak form of the origin's).
    pub derived: bool,
}

impl StoredResponse {
    /// Makes the stored form: header values copied into compact allocations of their own
    /// (parsed values are slices of the connection's read buffer, which they would otherwise
    /// keep alive) and the hit-time headers added, so a hit clones one map and replaces one
    /// value. Call once the headers are final.
    pub fn seal(mut self) -> Self {
        // +4: the three hit-time headers and the `X-Request-Id` the gateway adds.
        let mut h = HeaderMap::with_capacity(self.headers.len() + 4);
        for (name, value) in &self.headers {
            if *name == header::AGE || *name == X_CACHE || *name == X_CACHE_TIER {
                continue;
            }
            let mut copy =
                HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
            copy.set_sensitive(value.is_sensitive());
            h.append(name.clone(), copy);
        }
        h.insert(header::AGE, HeaderValue::from_static("0"));
        h.insert(X_CACHE, HeaderValue::from_static("HIT"));
        h.insert(X_CACHE_TIER, HeaderValue::from_static("memory"));
        self.headers = h;
        self
    }

    /// Memory this response accounts for.
    pub fn weight(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len())
            .sum();
        ENTRY_OVERHEAD + HEADER_SLOT * self.headers.capacity() + headers + self.body.len()
    }

    /// This response as a soft purge at `at` leaves it: stale from `at` on (its lifetime cut
    /// to its age then), so its next use revalidates with the origin, while its
    /// `stale-while-revalidate` and `stale-if-error` allowances count from the purge.
    #[must_use]
    pub fn softened(mut self, at: SystemTime) -> Self {
        self.meta.lifetime = self.meta.lifetime.min(self.meta.age(at));
        self
    }

    /// Whether this variant answers a request with `req` headers.
    pub fn matches(&self, req: &HeaderMap) -> bool {
        self.vary
            .iter()
            .all(|(name, stored)| vary_value(req, name).as_deref() == stored.as_deref())
    }

    /// Whether this variant answers a request with `req` headers, ignoring header `except`.
    pub fn matches_except(&self, req: &HeaderMap, except: &HeaderName) -> bool {
        self.vary
            .iter()
            .filter(|(name, _)| name != except)
            .all(|(name, stored)| vary_value(req, name).as_deref() == stored.as_deref())
    }

    /// The `ETag`, if any.
    pub fn etag(&self) -> Option<&HeaderValue> {
        self.headers.get(header::ETAG)
    }

    /// `Last-Modified`, parsed.
    pub fn last_modified(&self) -> Option<SystemTime> {
        http_date(&self.headers, header::LAST_MODIFIED)
    }
}

/// Everything stored under one key: its readable form and the variants.
#[derive(Debug, Clone)]
pub struct Slot {
    /// The readable key, compared on every lookup.
    pub key: Arc<str>,
    /// Length of the URL part of `key`.
    pub url_len: usize,
    /// Variants, newest first.
    pub variants: Vec<Arc<StoredResponse>>,
}

impl Slot {
    /// The variant for a request with `req` headers.
    pub fn select(&self, req: &HeaderMap) -> Option<&Arc<StoredResponse>> {
        self.variants.iter().find(|v| v.matches(req))
    }

    /// This slot with `response` added, replacing the variant it supersedes (same `Vary`
    /// values, or every variant if the `Vary` names changed).
    pub fn with(&self, response: &Arc<StoredResponse>) -> Self {
        let names = |r: &StoredResponse| r.vary.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
        let new_names = names(response);
        let mut variants = Vec::with_capacity(self.variants.len() + 1);
        variants.push(Arc::clone(response));
        variants.extend(
            self.variants
                .iter()
                .filter(|v| names(v) == new_names && v.vary != response.vary)
                // A new identity copy replaces what the gateway compressed from the old one.
                .filter(|v| !(response.compressible && v.derived))
                .take(MAX_VARIANTS - 1)
                .cloned(),
        );
        Self {
            key: Arc::clone(&self.key),
            url_len: self.url_len,
            variants,
        }
    }

    /// The URL part of the key (`scheme://host/path?query`): what purges address.
    pub fn url(&self) -> &str {
        self.key[..self.url_len]
            .split_once(' ')
            .map_or("", |(_, url)| url)
    }

    /// Total weight of all variants plus the key.
    pub fn weight(&self) -> u32 {
        let w: usize = self.key.len() + self.variants.iter().map(|v| v.weight()).sum::<usize>();
        u32::try_from(w).unwrap_or(u32::MAX)
    }

    /// How long the slot is worth keeping: the longest retention of its variants.
    pub fn retain(&self) -> Duration {
        self.variants
            .iter()
            .map(|v| v.retain)
            .max()
            .unwrap_or_default()
    }
}

/// The `Vary`-relevant value of request header `name`: every line's comma-separated members,
/// trimmed, joined with `, ` (RFC 9111 §4.1 allows matching after removing whitespace where the
/// syntax allows it); `Accept-Language` lowercased (language tags are case-insensitive);
/// `Accept-Encoding` reduced to the one coding the client prefers among those caches usually
/// hold (so `gzip, deflate, br` and `br, gzip` share a variant).
pub fn vary_value(req: &HeaderMap, name: &HeaderName) -> Option<String> {
    if name == header::ACCEPT_ENCODING {
        return Some(preferred_encoding(req).to_owned());
    }
    let lowercase = name == header::ACCEPT_LANGUAGE;
    let mut out: Option<String> = None;
    for v in req.get_all(name) {
        let text = String::from_utf8_lossy(v.as_bytes());
        let o = out.get_or_insert_with(String::new);
        for member in text.split(',').map(str::trim).filter(|m| !m.is_empty()) {
            if !o.is_empty() {
                o.push_str(", ");
            }
            if lowercase {
                o.push_str(&member.to_ascii_lowercase());
            } else {
                o.push_str(member);
            }
        }
    }
    out
}

/// The names a response varies on, lowercase, in order, without duplicates.
pub fn vary_names(headers: &HeaderMap) -> Vec<HeaderName> {
    let mut names: Vec<HeaderName> = Vec::new();
    for v in headers.get_all(header::VARY) {
        let Ok(text) = v.to_str() else { continue };
        for n in text.split(',') {
            if let Ok(name) = HeaderName::from_bytes(n.trim().as_bytes())
                && !names.contains(&name)
            {
                names.push(name);
            }
        }
    }
    names
}

/// The content coding a client prefers among `br`, `zstd`, `gzip` (in that order of
/// preference when q-values tie), or `identity`.
pub fn preferred_encoding(req: &HeaderMap) -> &'static str {
    let mut best: (&'static str, u16) = ("identity", 0);
    for v in req.get_all(header::ACCEPT_ENCODING) {
        let Ok(text) = v.to_str() else { continue };
        for item in text.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .find_map(|p| p.trim().strip_prefix("q="))
                .map_or(1000, parse_q);
            let (name, rank) = match coding.as_str() {
                "br" => ("br", 3),
                "zstd" => ("zstd", 2),
                "gzip" | "x-gzip" => ("gzip", 1),
                _ => continue,
            };
            let score = q * 4 + rank;
            if q > 0 && score > best.1 {
                best = (name, score);
            }
        }
    }
    best.0
}

/// A q-value in thousandths (`0.5` → 500); malformed means 0 (not acceptable).
fn parse_q(text: &str) -> u16 {
    let text = text.trim();
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    let int: u16 = match int {
        "0" => 0,
        "1" => 1,
        _ => return 0,
    };
    let mut thousandths = 0u16;
    for (i, b) in frac.bytes().take(3).enumerate() {
        if !b.is_ascii_digit() {
            return 0;
        }
        thousandths += u16::from(b - b'0') * [100, 10, 1][i];
    }
    (int * 1000 + thousandths).min(1000)
}

/// An HTTP-date header, parsed.
pub fn http_date(headers: &HeaderMap, name: HeaderName) -> Option<SystemTime> {
    headers
        .get(name)?
        .to_str()
        .ok()
        .and_then(crate::freshness::parse_date)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ae(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn accept_encoding_normalizes_to_the_preferred_coding() {
        assert_eq!(preferred_encoding(&ae("gzip, deflate, br")), "br");
        assert_eq!(preferred_encoding(&ae("br;q=0.5, gzip")), "gzip");
        assert_eq!(preferred_encoding(&ae("gzip;q=0, deflate")), "identity");
        assert_eq!(preferred_encoding(&ae("zstd, gzip")), "zstd");
        assert_eq!(preferred_encoding(&HeaderMap::new()), "identity");
        assert_eq!(preferred_encoding(&ae("*")), "identity");
    }

    #[test]
    fn vary_values_ignore_list_whitespace_and_language_case() {
        let mut a = HeaderMap::new();
        a.append("foo", HeaderValue::from_static("1,2"));
        let mut b = HeaderMap::new();
        b.append("foo", HeaderValue::from_static(" 1 ,  2 "));
        let foo = HeaderName::from_static("foo");
        assert_eq!(vary_value(&a, &foo), vary_value(&b, &foo));
        let mut two_lines = HeaderMap::new();
        two_lines.append("foo", HeaderValue::from_static("1"));
        two_lines.append("foo", HeaderValue::from_static("2"));
        assert_eq!(vary_value(&two_lines, &foo).as_deref(), Some("1, 2"));
        let lang = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT_LANGUAGE, HeaderValue::from_static(v));
            vary_value(&h, &header::ACCEPT_LANGUAGE)
        };
        assert_eq!(lang("en, de"), lang("eN ,De"));
        assert_ne!(lang("en, de"), lang("de, en"));
        assert_eq!(vary_value(&HeaderMap::new(), &foo), None);
    }

    #[test]
    fn vary_names_are_deduplicated_and_lowercased() {
        let mut h = HeaderMap::new();
        h.append(
            header::VARY,
            HeaderValue::from_static("Accept-Encoding, accept-language"),
        );
        h.append(header::VARY, HeaderValue::from_static("ACCEPT-ENCODING"));
        assert_eq!(
            vary_names(&h),
            vec![header::ACCEPT_ENCODING, header::ACCEPT_LANGUAGE]
        );
    }
}
