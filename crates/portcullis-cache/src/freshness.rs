//! Freshness lifetime and age (RFC 9111 §4.2), for a shared cache.
//!
//! Times are `SystemTime`s passed in by the caller, so tests (and the cache's own clock) control
//! them. HTTP dates have one-second resolution; ages are computed in whole seconds like the
//! `Age` header they feed.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, StatusCode, header};

use crate::CacheControl;

/// Status codes a cache may give heuristic freshness to (RFC 9110 §15.1), less 206: ranges
/// are not handled, so partial content is never stored.
pub const HEURISTICALLY_CACHEABLE: [u16; 11] =
    [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501];

/// How freshness is estimated for responses without explicit freshness (RFC 9111 §4.2.2).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeuristicPolicy {
    /// Fraction of the time since `Last-Modified` (10% is the customary value).
    pub fraction: f64,
    /// Upper bound on a heuristic lifetime.
    pub max: Duration,
}

impl Default for HeuristicPolicy {
    fn default() -> Self {
        Self {
            fraction: 0.1,
            max: Duration::from_secs(24 * 3600),
        }
    }
}

/// A response's freshness lifetime and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// How long the response is fresh, counted from its generation (not its arrival).
    pub lifetime: Duration,
    /// Whether the lifetime was guessed from `Last-Modified` rather than stated.
    pub heuristic: bool,
}

impl Freshness {
    /// The freshness lifetime in a shared cache: `s-maxage`, else `max-age`, else `Expires`
    /// minus `Date` (an invalid `Expires` means already expired), else a heuristic from
    /// `Last-Modified` when the status allows one or the response is `public`; else zero.
    /// `received` stands in for a missing or invalid `Date`.
    pub fn of(
        status: StatusCode,
        headers: &HeaderMap,
        cc: &CacheControl,
        received: SystemTime,
        heuristic: &HeuristicPolicy,
    ) -> Self {
        let stated = |secs: u64| Self {
            lifetime: Duration::from_secs(secs),
            heuristic: false,
        };
        if let Some(s) = cc.s_maxage {
            return stated(s);
        }
        if let Some(s) = cc.max_age {
            return stated(s);
        }
        let date = date_header(headers, header::DATE).unwrap_or(received);
        if let Some(expires) = headers.get(header::EXPIRES) {
            let expires = expires.to_str().ok().and_then(parse_date);
            let lifetime = expires.map_or(Duration::ZERO, |e| {
                e.duration_since(date).unwrap_or_default()
            });
            return Self {
                lifetime,
                heuristic: false,
            };
        }
        let allowed = cc.public || HEURISTICALLY_CACHEABLE.contains(&status.as_u16());
        if let (true, Some(modified)) = (allowed, date_header(headers, header::LAST_MODIFIED)) {
            let since = date.duration_since(modified).unwrap_or_default();
            let guess = since
                .mul_f64(heuristic.fraction.clamp(0.0, 1.0))
                .min(heuristic.max);
            return Self {
                lifetime: Duration::from_secs(guess.as_secs()),
                heuristic: true,
            };
        }
        Self {
            lifetime: Duration::ZERO,
            heuristic: false,
        }
    }

    /// Whether the response states its own freshness (so it may be stored without a
    /// heuristically cacheable status).
    pub fn is_explicit(headers: &HeaderMap, cc: &CacheControl) -> bool {
        cc.s_maxage.is_some() || cc.max_age.is_some() || headers.contains_key(header::EXPIRES)
    }
}

/// The response's age when it arrived: RFC 9111 §4.2.3 `corrected_initial_age`, from `Age`,
/// `Date` and the request's round trip.
pub fn initial_age(
    headers: &HeaderMap,
    request_time: SystemTime,
    response_time: SystemTime,
) -> Duration {
    let age_value = headers
        .get(header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(age_seconds)
        .map_or(Duration::ZERO, Duration::from_secs);
    let apparent_age = date_header(headers, header::DATE)
        .and_then(|date| response_time.duration_since(date).ok())
        .unwrap_or_default();
    let response_delay = response_time
        .duration_since(request_time)
        .unwrap_or_default();
    apparent_age.max(age_value + response_delay)
}

/// An HTTP-date in any of its three formats, with day, month and zone names matched
/// case-insensitively (RFC 9111 §4.2 SHOULD); `httpdate` alone is case-sensitive.
pub fn parse_date(text: &str) -> Option<SystemTime> {
    if let Ok(t) = httpdate::parse_http_date(text) {
        return Some(t);
    }
    let mut canonical = String::with_capacity(text.len());
    let mut word_start = true;
    for c in text.chars() {
        if c.is_ascii_alphabetic() {
            canonical.push(if word_start {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            });
            word_start = false;
        } else {
            canonical.push(c);
            word_start = true;
        }
    }
    let canonical = canonical.replace("Gmt", "GMT");
    httpdate::parse_http_date(&canonical).ok()
}

/// An `Age` value: the first member of a list (RFC 9111 §5.1), digits only (anything else
/// means the field is ignored), capped at 2^31.
fn age_seconds(value: &str) -> Option<u64> {
    let first = value.split(',').next()?.trim();
    if first.is_empty() || !first.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(first.parse::<u64>().map_or(1 << 31, |n| n.min(1 << 31)))
}

/// The age of a stored response at `now` (RFC 9111 §4.2.3 `current_age`), in whole seconds.
pub fn current_age(initial_age: Duration, response_time: SystemTime, now: SystemTime) -> Duration {
    let resident = now.duration_since(response_time).unwrap_or_default();
    Duration::from_secs((initial_age + resident).as_secs())
}

fn date_header(headers: &HeaderMap, name: header::HeaderName) -> Option<SystemTime> {
    headers.get(name)?.to_str().ok().and_then(parse_date)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn headers(pairs: &[(header::HeaderName, String)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn date(secs: u64) -> String {
        httpdate::fmt_http_date(t(secs))
    }

    fn lifetime(status: u16, h: &HeaderMap) -> Freshness {
        let cc = CacheControl::from_headers(h);
        Freshness::of(
            StatusCode::from_u16(status).unwrap(),
            h,
            &cc,
            t(0),
            &HeuristicPolicy::default(),
        )
    }

    #[test]
    fn s_maxage_beats_max_age_beats_expires() {
        let h = headers(&[
            (header::CACHE_CONTROL, "max-age=60, s-maxage=120".into()),
            (header::EXPIRES, date(999)),
        ]);
        assert_eq!(lifetime(200, &h).lifetime, Duration::from_secs(120));
        let h = headers(&[
            (header::CACHE_CONTROL, "max-age=60".into()),
            (header::EXPIRES, date(999)),
        ]);
        assert_eq!(lifetime(200, &h).lifetime, Duration::from_secs(60));
    }

    #[test]
    fn expires_counts_from_date_and_invalid_expires_is_stale() {
        let h = headers(&[(header::DATE, date(100)), (header::EXPIRES, date(400))]);
        assert_eq!(lifetime(200, &h).lifetime, Duration::from_secs(300));
        let h = headers(&[(header::DATE, date(100)), (header::EXPIRES, "0".into())]);
        assert_eq!(lifetime(200, &h).lifetime, Duration::ZERO);
        let h = headers(&[(header::DATE, date(500)), (header::EXPIRES, date(100))]);
        assert_eq!(lifetime(200, &h).lifetime, Duration::ZERO);
    }

    #[test]
    fn heuristic_is_ten_percent_of_last_modified_age_and_only_when_allowed() {
        let h = headers(&[
            (header::DATE, date(10_000)),
            (header::LAST_MODIFIED, date(0)),
        ]);
        let f = lifetime(200, &h);
        assert_eq!(
            f,
            Freshness {
                lifetime: Duration::from_secs(1000),
                heuristic: true
            }
        );
        // 500 is not heuristically cacheable; `public` makes it so.
        assert_eq!(lifetime(500, &h).lifetime, Duration::ZERO);
        let mut public = h;
        public.insert(header::CACHE_CONTROL, HeaderValue::from_static("public"));
        assert_eq!(lifetime(500, &public).lifetime, Duration::from_secs(1000));
        // Capped at a day.
        let old = headers(&[
            (header::DATE, date(10_000_000)),
            (header::LAST_MODIFIED, date(0)),
        ]);
        assert_eq!(lifetime(200, &old).lifetime, Duration::from_secs(86_400));
    }

    #[test]
    fn no_freshness_information_means_zero() {
        assert_eq!(lifetime(200, &HeaderMap::new()).lifetime, Duration::ZERO);
    }

    #[test]
    fn initial_age_takes_the_larger_of_apparent_and_corrected_age() {
        // Age header 30, round trip 2 s: corrected age 32; Date 10 s before receipt: apparent 10.
        let h = headers(&[(header::AGE, "30".into()), (header::DATE, date(90))]);
        assert_eq!(initial_age(&h, t(98), t(100)), Duration::from_secs(32));
        // Date far in the past dominates.
        let h = headers(&[(header::AGE, "5".into()), (header::DATE, date(0))]);
        assert_eq!(initial_age(&h, t(100), t(100)), Duration::from_secs(100));
        // A Date in the future and no Age: zero, never negative.
        let h = headers(&[(header::DATE, date(500))]);
        assert_eq!(initial_age(&h, t(100), t(100)), Duration::ZERO);
    }

    #[test]
    fn dates_match_names_case_insensitively() {
        let expected = parse_date("Thu, 01 Aug 2024 02:01:18 GMT").unwrap();
        assert_eq!(parse_date("THU, 01 AUG 2024 02:01:18 gMT"), Some(expected));
        assert_eq!(parse_date("thu, 01 aug 2024 02:01:18 gmt"), Some(expected));
        assert_eq!(
            parse_date("Thursday, 01-Aug-24 02:01:18 GMT"),
            Some(expected)
        );
        assert_eq!(parse_date("not a date"), None);
    }

    #[test]
    fn age_takes_the_first_list_member_and_ignores_invalid_values() {
        assert_eq!(age_seconds("7200,0"), Some(7200));
        assert_eq!(age_seconds(" 30 "), Some(30));
        assert_eq!(age_seconds("-5"), None);
        assert_eq!(age_seconds("1.5"), None);
        assert_eq!(age_seconds("7200;foo=bar"), None);
        assert_eq!(age_seconds("99999999999999999999"), Some(1 << 31));
    }

    #[test]
    fn current_age_adds_residence_time_in_whole_seconds() {
        let age = current_age(
            Duration::from_secs(10),
            t(100),
            t(100) + Duration::from_millis(2500),
        );
        assert_eq!(age, Duration::from_secs(12));
    }
}
