//! `Cache-Control` directives (RFC 9111 §5.2), request and response alike.
//!
//! Parsing is lenient, as caches must be: directive names are case-insensitive, unknown
//! directives are ignored, several header lines are combined, and for a repeated directive the
//! first occurrence wins (§4.2.1). A malformed delta-seconds value (`max-age=abc`) makes the
//! directive count as `0`, so the response is treated as stale rather than fresh for ever;
//! values beyond 2^31 are capped at 2^31 (§1.2.2).

use http::{HeaderMap, header};

/// Largest delta-seconds value a cache must handle; larger values are capped to it.
const DELTA_MAX: u64 = 1 << 31;

/// `max-stale` on a request: any staleness, or up to N seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxStale {
    /// `max-stale` without a value: any stale response is acceptable.
    Any,
    /// `max-stale=N`.
    Seconds(u64),
}

/// The directives of all `Cache-Control` lines of one message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheControl {
    /// `max-age=N` (request or response).
    pub max_age: Option<u64>,
    /// `s-maxage=N` (response; shared caches only).
    pub s_maxage: Option<u64>,
    /// `no-store`.
    pub no_store: bool,
    /// `no-cache` without field names: revalidate before every use.
    pub no_cache: bool,
    /// `private` without field names: not for a shared cache.
    pub private: bool,
    /// Field names of `no-cache="a, b"` and `private="a, b"`: the response may be stored and
    /// used, but without these header fields (RFC 9111 §5.2.2.4, §5.2.2.7).
    pub withheld_fields: Vec<String>,
    /// `public`.
    pub public: bool,
    /// `must-revalidate`.
    pub must_revalidate: bool,
    /// `proxy-revalidate` (shared caches treat it as `must-revalidate`).
    pub proxy_revalidate: bool,
    /// `immutable` (RFC 8246): a fresh response is not revalidated on reload.
    pub immutable: bool,
    /// `no-transform`.
    pub no_transform: bool,
    /// `stale-while-revalidate=N` (RFC 5861).
    pub stale_while_revalidate: Option<u64>,
    /// `stale-if-error=N` (RFC 5861), request or response.
    pub stale_if_error: Option<u64>,
    /// `min-fresh=N` (request).
    pub min_fresh: Option<u64>,
    /// `max-stale[=N]` (request).
    pub max_stale: Option<MaxStale>,
    /// `only-if-cached` (request).
    pub only_if_cached: bool,
    /// `must-understand` (response): store only if the status code is understood; then
    /// `no-store` is overridden (RFC 9111 §5.2.2.3).
    pub must_understand: bool,
}

impl CacheControl {
    /// Parses every `Cache-Control` line in `headers`.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let mut cc = Self::default();
        for value in headers.get_all(header::CACHE_CONTROL) {
            // Non-UTF-8 bytes cannot form a known directive; skip the line.
            if let Ok(text) = value.to_str() {
                cc.parse_line(text);
            }
        }
        cc
    }

    /// Parses one header value such as `public, max-age=60, private="set-cookie"`.
    pub fn parse(text: &str) -> Self {
        let mut cc = Self::default();
        cc.parse_line(text);
        cc
    }

    fn parse_line(&mut self, text: &str) {
        for item in split_directives(text) {
            let (name, value) = match item.split_once('=') {
                Some((n, v)) => (n.trim(), Some(unquote(v.trim()))),
                None => (item.trim(), None),
            };
            let delta = || value.map_or(0, parse_delta);
            // Lowercased into a stack buffer: directive names are short, longer ones are
            // unknown anyway.
            let mut lower = [0u8; 24];
            let Some(buf) = lower.get_mut(..name.len()) else {
                continue;
            };
            for (d, s) in buf.iter_mut().zip(name.bytes()) {
                *d = s.to_ascii_lowercase();
            }
            match &*buf {
                b"max-age" => set_first(&mut self.max_age, delta()),
                b"s-maxage" => set_first(&mut self.s_maxage, delta()),
                b"no-store" => self.no_store = true,
                b"no-cache" | b"private" => {
                    let fields: Vec<String> = value
                        .unwrap_or("")
                        .split(',')
                        .map(|f| f.trim().to_ascii_lowercase())
                        .filter(|f| !f.is_empty())
                        .collect();
                    if fields.is_empty() {
                        if &*buf == b"no-cache" {
                            self.no_cache = true;
                        } else {
                            self.private = true;
                        }
                    } else {
                        self.withheld_fields.extend(fields);
                    }
                }
                b"public" => self.public = true,
                b"must-revalidate" => self.must_revalidate = true,
                b"proxy-revalidate" => self.proxy_revalidate = true,
                b"immutable" => self.immutable = true,
                b"no-transform" => self.no_transform = true,
                b"only-if-cached" => self.only_if_cached = true,
                b"must-understand" => self.must_understand = true,
                b"stale-while-revalidate" => set_first(&mut self.stale_while_revalidate, delta()),
                b"stale-if-error" => set_first(&mut self.stale_if_error, delta()),
                b"min-fresh" => set_first(&mut self.min_fresh, delta()),
                b"max-stale" => {
                    let v = match value {
                        None => MaxStale::Any,
                        Some(v) => MaxStale::Seconds(parse_delta(v)),
                    };
                    set_first(&mut self.max_stale, v);
                }
                _ => {}
            }
        }
    }
}

/// The device token this cache answers to in `Surrogate-Control` targets and advertises in
/// `Surrogate-Capability`.
pub const SURROGATE_TOKEN: &str = "portcullis";

/// `Surrogate-Control` (W3C Edge Architecture 1.0): what the origin tells surrogates (this
/// gateway) apart from browsers. Directives targeted at another device (`;other`) are ignored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SurrogateControl {
    /// `no-store`.
    pub no_store: bool,
    /// `max-age=N[+M]`: N seconds fresh.
    pub max_age: Option<u64>,
    /// The `+M` of `max-age=N+M`: M seconds more to serve it stale if the origin fails.
    pub stale: Option<u64>,
}

impl SurrogateControl {
    /// Parses every `Surrogate-Control` line; `None` when there is none for this cache.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let mut sc = Self::default();
        let mut any = false;
        for value in headers.get_all("surrogate-control") {
            let Ok(text) = value.to_str() else { continue };
            for item in split_directives(text) {
                let mut parts = item.split(';');
                let directive = parts.next().unwrap_or("").trim();
                let targets: Vec<&str> = parts.map(str::trim).filter(|t| !t.is_empty()).collect();
                if !targets.is_empty()
                    && !targets
                        .iter()
                        .any(|t| t.eq_ignore_ascii_case(SURROGATE_TOKEN))
                {
                    continue;
                }
                let (name, value) = match directive.split_once('=') {
                    // `max-age = 5` is malformed: a space before or after `=` voids it.
                    Some((n, v)) if n.ends_with(' ') || v.starts_with(' ') => continue,
                    Some((n, v)) => (n, Some(v)),
                    None => (directive, None),
                };
                if name.eq_ignore_ascii_case("no-store") {
                    sc.no_store = true;
                    any = true;
                } else if name.eq_ignore_ascii_case("max-age")
                    && let Some(v) = value
                    && sc.max_age.is_none()
                {
                    let (fresh, stale) = v.split_once('+').map_or((v, None), |(f, s)| (f, Some(s)));
                    sc.max_age = Some(parse_delta(fresh));
                    sc.stale = stale.map(parse_delta);
                    any = true;
                }
            }
        }
        any.then_some(sc)
    }

    /// The response directives as this cache applies them: `Surrogate-Control` replaces
    /// `Cache-Control` for storage and freshness (its `max-age` wins over `s-maxage`,
    /// `max-age`, `Expires` and the `no-store`/`no-cache`/`private` meant for browsers).
    pub fn apply(&self, cc: &CacheControl) -> CacheControl {
        let mut out = cc.clone();
        if self.no_store {
            out.no_store = true;
        } else if let Some(max_age) = self.max_age {
            out.max_age = Some(max_age);
            out.s_maxage = None;
            out.no_store = false;
            out.no_cache = false;
            out.private = false;
            if let Some(stale) = self.stale {
                out.stale_if_error = Some(stale);
            }
        }
        out
    }
}

fn set_first<T>(slot: &mut Option<T>, value: T) {
    if slot.is_none() {
        *slot = Some(value);
    }
}

/// Delta-seconds: digits only; anything else counts as 0 (stale); overflow caps at 2^31.
fn parse_delta(v: &str) -> u64 {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return 0;
    }
    v.parse::<u64>().map_or(DELTA_MAX, |n| n.min(DELTA_MAX))
}

fn unquote(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(v)
}

/// Splits on commas outside quoted strings (`private="a, b"` is one directive).
fn split_directives(text: &str) -> impl Iterator<Item = &str> {
    let bytes = text.as_bytes();
    let mut start = 0;
    std::iter::from_fn(move || {
        while start <= bytes.len() {
            let (mut quoted, mut escaped) = (false, false);
            let mut end = start;
            while end < bytes.len() {
                match bytes[end] {
                    _ if escaped => escaped = false,
                    b'\\' if quoted => escaped = true,
                    b'"' => quoted = !quoted,
                    b',' if !quoted => break,
                    _ => {}
                }
                end += 1;
            }
            // Commas are ASCII, so these are char boundaries.
            let item = &text[start..end];
            start = end + 1;
            if !item.trim().is_empty() {
                return Some(item);
            }
        }
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn common_response_directives() {
        let cc = CacheControl::parse(
            "public, max-age=300, s-maxage=600, stale-while-revalidate=30, stale-if-error=600",
        );
        assert!(cc.public);
        assert_eq!(cc.max_age, Some(300));
        assert_eq!(cc.s_maxage, Some(600));
        assert_eq!(cc.stale_while_revalidate, Some(30));
        assert_eq!(cc.stale_if_error, Some(600));
        assert!(!cc.private && !cc.no_store && !cc.no_cache);
    }

    #[test]
    fn names_are_case_insensitive_and_values_may_be_quoted() {
        let cc = CacheControl::parse(
            "Max-Age=\"60\", NO-CACHE, Private=\"set-cookie, x-user\", immutable",
        );
        assert_eq!(cc.max_age, Some(60));
        assert!(cc.no_cache && cc.immutable);
        // A qualified `private` withholds the named fields instead.
        assert!(!cc.private);
        assert_eq!(cc.withheld_fields, ["set-cookie", "x-user"]);
    }

    #[test]
    fn first_occurrence_wins_across_lines() {
        let mut h = HeaderMap::new();
        h.append(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=10"),
        );
        h.append(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=99, no-store"),
        );
        let cc = CacheControl::from_headers(&h);
        assert_eq!(cc.max_age, Some(10));
        assert!(cc.no_store);
    }

    #[test]
    fn malformed_deltas_are_zero_and_huge_ones_are_capped() {
        assert_eq!(CacheControl::parse("max-age=abc").max_age, Some(0));
        assert_eq!(CacheControl::parse("max-age=-5").max_age, Some(0));
        assert_eq!(CacheControl::parse("max-age=1.5").max_age, Some(0));
        assert_eq!(CacheControl::parse("max-age").max_age, Some(0));
        assert_eq!(
            CacheControl::parse("max-age=99999999999999999999").max_age,
            Some(1 << 31)
        );
    }

    #[test]
    fn surrogate_control_targets_and_overrides() {
        let h = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert("surrogate-control", HeaderValue::from_static(v));
            h
        };
        let sc = SurrogateControl::from_headers(&h("max-age=60+30")).unwrap();
        assert_eq!(
            (sc.max_age, sc.stale, sc.no_store),
            (Some(60), Some(30), false)
        );
        let cc = sc.apply(&CacheControl::parse("no-store, private, max-age=1"));
        assert_eq!(
            (cc.max_age, cc.no_store, cc.private, cc.stale_if_error),
            (Some(60), false, false, Some(30))
        );
        assert_eq!(
            SurrogateControl::from_headers(&h("max-age=60;other-cdn")),
            None
        );
        assert_eq!(
            SurrogateControl::from_headers(&h("MaX-aGe=5;portcullis"))
                .unwrap()
                .max_age,
            Some(5)
        );
        assert_eq!(SurrogateControl::from_headers(&h("max-age =5")), None);
        assert!(
            SurrogateControl::from_headers(&h("no-store"))
                .unwrap()
                .apply(&CacheControl::parse("max-age=60"))
                .no_store
        );
        assert_eq!(SurrogateControl::from_headers(&HeaderMap::new()), None);
    }

    #[test]
    fn qualified_no_cache_and_private_withhold_fields_only() {
        let cc =
            CacheControl::parse("max-age=60, no-cache=\"Set-Cookie, X-User\", private=\"x-token\"");
        assert!(!cc.no_cache && !cc.private);
        assert_eq!(cc.withheld_fields, ["set-cookie", "x-user", "x-token"]);
        let bare = CacheControl::parse("no-cache, private");
        assert!(bare.no_cache && bare.private && bare.withheld_fields.is_empty());
    }

    #[test]
    fn request_directives() {
        let cc = CacheControl::parse("max-stale, min-fresh=5, only-if-cached");
        assert_eq!(cc.max_stale, Some(MaxStale::Any));
        assert_eq!(cc.min_fresh, Some(5));
        assert!(cc.only_if_cached);
        assert_eq!(
            CacheControl::parse("max-stale=30").max_stale,
            Some(MaxStale::Seconds(30))
        );
    }

    #[test]
    fn unknown_directives_and_empty_items_are_ignored() {
        let cc = CacheControl::parse(",, foo=bar, , max-age=5,");
        assert_eq!(cc.max_age, Some(5));
        assert_eq!(CacheControl::parse(""), CacheControl::default());
    }
}
