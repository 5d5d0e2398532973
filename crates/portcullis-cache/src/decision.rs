//! What to do with a stored response for a new request (RFC 9111 §4, RFC 5861).
//!
//! [`decide`] is a pure function of the stored response's metadata, the request's
//! `Cache-Control` and the time, so the whole table is unit-tested with an explicit clock.

use std::time::{Duration, SystemTime};

use crate::{CacheControl, MaxStale, freshness::current_age};

/// What the cache knows about a stored response, for freshness decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredMeta {
    /// When the response arrived (its age is counted from here).
    pub response_time: SystemTime,
    /// Its age on arrival (RFC 9111 §4.2.3 `corrected_initial_age`).
    pub initial_age: Duration,
    /// How long it is fresh.
    pub lifetime: Duration,
    /// `no-cache`: every use must be validated with the origin first.
    pub no_cache: bool,
    /// `must-revalidate`, `proxy-revalidate` or `s-maxage`: never served stale (§4.2.4,
    /// §5.2.2.8), not even on origin errors.
    pub must_revalidate: bool,
    /// How long after becoming stale it may be served while a refresh runs in the background.
    pub stale_while_revalidate: Duration,
    /// How long after becoming stale it may be served when the origin fails.
    pub stale_if_error: Duration,
}

impl StoredMeta {
    /// The response's current age.
    pub fn age(&self, now: SystemTime) -> Duration {
        current_age(self.initial_age, self.response_time, now)
    }

    /// Whether, at `now`, the response is stale by no more than its `stale-if-error` allowance
    /// (or the request's, when the request gives one).
    pub fn usable_on_error(&self, req: &CacheControl, now: SystemTime) -> bool {
        if self.must_revalidate {
            return false;
        }
        let allowance = req
            .stale_if_error
            .map_or(self.stale_if_error, Duration::from_secs);
        !allowance.is_zero() && self.staleness(now) <= allowance
    }

    /// How far past its freshness lifetime the response is (zero while fresh).
    pub fn staleness(&self, now: SystemTime) -> Duration {
        self.age(now).saturating_sub(self.lifetime)
    }
}

/// The outcome of a lookup that found a stored response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Fresh enough for this request: serve it.
    Fresh,
    /// Stale, within `stale-while-revalidate`: serve it now and refresh in the background.
    StaleWhileRevalidate,
    /// Stale, but the request accepts it (`max-stale`): serve it.
    StaleByClient,
    /// Must be validated with the origin before use (a conditional request when it has
    /// validators). If the origin fails, [`StoredMeta::usable_on_error`] says whether the
    /// stored copy may be served instead.
    Revalidate,
}

/// Decides how to use a stored response with `meta` for a request with `req` directives at
/// `now`. `pragma_no_cache` is `Pragma: no-cache` on a request without `Cache-Control`.
pub fn decide(
    meta: &StoredMeta,
    req: &CacheControl,
    pragma_no_cache: bool,
    now: SystemTime,
) -> Decision {
    if req.no_cache || pragma_no_cache || meta.no_cache {
        return Decision::Revalidate;
    }
    let age = meta.age(now);
    let fresh_for = meta.lifetime.saturating_sub(age);
    // Compared with the unrounded age: `max-age=0` refuses anything stored even a moment ago.
    let exact_age = meta.initial_age + now.duration_since(meta.response_time).unwrap_or_default();
    let within_max_age = req
        .max_age
        .is_none_or(|max| exact_age <= Duration::from_secs(max));
    let min_fresh_ok = req
        .min_fresh
        .is_none_or(|min| fresh_for.as_secs() >= min && !fresh_for.is_zero());
    if !fresh_for.is_zero() && within_max_age && min_fresh_ok {
        return Decision::Fresh;
    }
    if meta.must_revalidate {
        return Decision::Revalidate;
    }
    let staleness = age.saturating_sub(meta.lifetime);
    // A request's max-age or min-fresh makes even a "fresh" response unacceptable; only an
    // actually stale response can be excused by max-stale.
    if fresh_for.is_zero() && within_max_age {
        match req.max_stale {
            Some(MaxStale::Any) => return Decision::StaleByClient,
            Some(MaxStale::Seconds(s)) if staleness.as_secs() <= s => {
                return Decision::StaleByClient;
            }
            _ => {}
        }
    }
    // The client's own limits exclude background revalidation: it asked for a fresher copy.
    if req.max_age.is_none()
        && req.min_fresh.is_none()
        && !meta.stale_while_revalidate.is_zero()
        && staleness <= meta.stale_while_revalidate
        && fresh_for.is_zero()
    {
        return Decision::StaleWhileRevalidate;
    }
    Decision::Revalidate
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    /// Stored at t(0) with age 0, fresh for 100 s, 30 s of stale-while-revalidate and 300 s of
    /// stale-if-error.
    fn meta() -> StoredMeta {
        StoredMeta {
            response_time: t(0),
            initial_age: Duration::ZERO,
            lifetime: Duration::from_secs(100),
            no_cache: false,
            must_revalidate: false,
            stale_while_revalidate: Duration::from_secs(30),
            stale_if_error: Duration::from_secs(300),
        }
    }

    fn at(m: &StoredMeta, req: &str, secs: u64) -> Decision {
        decide(m, &CacheControl::parse(req), false, t(secs))
    }

    #[test]
    fn fresh_then_stale_while_revalidate_then_revalidate() {
        let m = meta();
        assert_eq!(at(&m, "", 0), Decision::Fresh);
        assert_eq!(at(&m, "", 99), Decision::Fresh);
        assert_eq!(at(&m, "", 100), Decision::StaleWhileRevalidate);
        assert_eq!(at(&m, "", 130), Decision::StaleWhileRevalidate);
        assert_eq!(at(&m, "", 131), Decision::Revalidate);
    }

    #[test]
    fn no_stale_allowance_means_none_even_at_the_boundary() {
        let m = StoredMeta {
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            ..meta()
        };
        assert_eq!(at(&m, "", 100), Decision::Revalidate);
        assert!(!m.usable_on_error(&CacheControl::default(), t(100)));
    }

    #[test]
    fn initial_age_counts_against_freshness() {
        let m = StoredMeta {
            initial_age: Duration::from_secs(90),
            ..meta()
        };
        assert_eq!(at(&m, "", 9), Decision::Fresh);
        assert_eq!(at(&m, "", 10), Decision::StaleWhileRevalidate);
    }

    #[test]
    fn no_cache_anywhere_forces_revalidation() {
        let m = meta();
        assert_eq!(at(&m, "no-cache", 0), Decision::Revalidate);
        assert_eq!(
            decide(&m, &CacheControl::default(), true, t(0)),
            Decision::Revalidate
        );
        let m = StoredMeta {
            no_cache: true,
            ..meta()
        };
        assert_eq!(at(&m, "", 0), Decision::Revalidate);
    }

    #[test]
    fn request_max_age_and_min_fresh_tighten_freshness() {
        let m = meta();
        assert_eq!(at(&m, "max-age=10", 10), Decision::Fresh);
        assert_eq!(at(&m, "max-age=10", 11), Decision::Revalidate);
        assert_eq!(at(&m, "max-age=0", 0), Decision::Fresh);
        let just_after = t(0) + Duration::from_millis(1);
        assert_eq!(
            decide(&m, &CacheControl::parse("max-age=0"), false, just_after),
            Decision::Revalidate
        );
        assert_eq!(at(&m, "min-fresh=50", 50), Decision::Fresh);
        assert_eq!(at(&m, "min-fresh=50", 51), Decision::Revalidate);
    }

    #[test]
    fn max_stale_accepts_stale_responses_unless_must_revalidate() {
        let m = meta();
        assert_eq!(at(&m, "max-stale", 10_000), Decision::StaleByClient);
        assert_eq!(at(&m, "max-stale=50", 150), Decision::StaleByClient);
        assert_eq!(at(&m, "max-stale=50", 151), Decision::Revalidate);
        let strict = StoredMeta {
            must_revalidate: true,
            ..meta()
        };
        assert_eq!(at(&strict, "max-stale", 101), Decision::Revalidate);
        assert_eq!(at(&strict, "", 101), Decision::Revalidate);
        assert_eq!(at(&strict, "", 99), Decision::Fresh);
    }

    #[test]
    fn stale_if_error_window_and_must_revalidate() {
        let m = meta();
        let none = CacheControl::default();
        assert!(m.usable_on_error(&none, t(400)));
        assert!(!m.usable_on_error(&none, t(401)));
        // The request may narrow or widen the window.
        assert!(!m.usable_on_error(&CacheControl::parse("stale-if-error=10"), t(111)));
        assert!(m.usable_on_error(&CacheControl::parse("stale-if-error=1000"), t(1100)));
        let strict = StoredMeta {
            must_revalidate: true,
            ..meta()
        };
        assert!(!strict.usable_on_error(&none, t(101)));
    }
}
