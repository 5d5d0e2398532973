//! Whether a response may be stored by a *shared* cache (RFC 9111 §3), plus the gateway's
//! never-leak rules.
//!
//! The rules, in order: the request method is GET; neither message says `no-store`; the status
//! is final and not 206 (ranges are not handled) or 304; the response does not `Vary: *`;
//! it carries no `Set-Cookie` (never stored, even per consumer: a cookie is one user's);
//! `private` only when the route caches per consumer; a request with `Authorization` only when
//! the response allows it explicitly (`public`, `s-maxage`, `must-revalidate`, §3.5) or the
//! route caches per consumer; and finally the response must say something that makes it
//! cacheable: explicit freshness, `public`, a heuristically cacheable status, or a route TTL.

use http::{HeaderMap, Method, StatusCode, header};

use crate::{CacheControl, freshness::HEURISTICALLY_CACHEABLE};

/// Status codes whose caching semantics this cache implements (RFC 9110's final codes, less 206:
/// ranges are not handled), for `must-understand`.
const UNDERSTOOD: [u16; 40] = [
    200, 201, 202, 203, 204, 205, 300, 301, 302, 303, 304, 305, 307, 308, 400, 401, 402, 403, 404,
    405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416, 417, 421, 422, 426, 500, 501, 502,
    503, 504,
];

/// Why a response was not stored. Shown in debug logs and counted in stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStorable {
    /// The method is not GET.
    Method,
    /// `no-store` in the request or the response.
    NoStore,
    /// 1xx, 206, 304, or a status without explicit freshness that is not heuristically
    /// cacheable.
    Status,
    /// `private` on a route that does not cache per consumer.
    Private,
    /// The request carried `Authorization` and the response did not allow sharing it.
    Authorization,
    /// The response sets a cookie.
    SetCookie,
    /// `Vary: *`.
    VaryStar,
}

impl NotStorable {
    /// A short lowercase reason for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Method => "method",
            Self::NoStore => "no-store",
            Self::Status => "status",
            Self::Private => "private",
            Self::Authorization => "authorization",
            Self::SetCookie => "set-cookie",
            Self::VaryStar => "vary-star",
        }
    }
}

/// What the route allows beyond the RFC defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Storable {
    /// The key includes the consumer id, so `private` and authorized responses stay with the
    /// consumer they belong to.
    pub per_consumer: bool,
    /// The route gives a TTL to responses that state none (so any final status the route
    /// forwards may be stored with it).
    pub route_ttl: bool,
}

/// Decides whether the response to `method` with `req_cc`/`req_headers` may be stored.
pub fn storable(
    method: &Method,
    req_headers: &HeaderMap,
    req_cc: &CacheControl,
    status: StatusCode,
    headers: &HeaderMap,
    cc: &CacheControl,
    allow: Storable,
) -> Result<(), NotStorable> {
    if method != Method::GET {
        return Err(NotStorable::Method);
    }
    // must-understand: only understood status codes, and for those it overrides no-store.
    let understood = UNDERSTOOD.contains(&status.as_u16());
    if cc.must_understand && !understood {
        return Err(NotStorable::Status);
    }
    if (cc.no_store && !(cc.must_understand && understood)) || req_cc.no_store {
        return Err(NotStorable::NoStore);
    }
    if status.is_informational()
        || status == StatusCode::PARTIAL_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Err(NotStorable::Status);
    }
    if vary_star(headers) {
        return Err(NotStorable::VaryStar);
    }
    if headers.contains_key(header::SET_COOKIE) {
        return Err(NotStorable::SetCookie);
    }
    if cc.private && !allow.per_consumer {
        return Err(NotStorable::Private);
    }
    if req_headers.contains_key(header::AUTHORIZATION)
        && !allow.per_consumer
        && !(cc.public || cc.s_maxage.is_some() || cc.must_revalidate)
    {
        return Err(NotStorable::Authorization);
    }
    let explicit =
        cc.max_age.is_some() || cc.s_maxage.is_some() || headers.contains_key(header::EXPIRES);
    if explicit
        || cc.public
        || allow.route_ttl
        || HEURISTICALLY_CACHEABLE.contains(&status.as_u16())
    {
        Ok(())
    } else {
        Err(NotStorable::Status)
    }
}

/// Whether any `Vary` line lists `*`.
pub fn vary_star(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|name| name.trim() == "*")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn check(
        req: &[(&str, &str)],
        status: u16,
        resp: &[(&str, &str)],
        allow: Storable,
    ) -> Result<(), NotStorable> {
        check_method(&Method::GET, req, status, resp, allow)
    }

    fn check_method(
        method: &Method,
        req: &[(&str, &str)],
        status: u16,
        resp: &[(&str, &str)],
        allow: Storable,
    ) -> Result<(), NotStorable> {
        let map = |pairs: &[(&str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(
                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            h
        };
        let (rq, rs) = (map(req), map(resp));
        storable(
            method,
            &rq,
            &CacheControl::from_headers(&rq),
            StatusCode::from_u16(status).unwrap(),
            &rs,
            &CacheControl::from_headers(&rs),
            allow,
        )
    }

    const SHARED: Storable = Storable {
        per_consumer: false,
        route_ttl: false,
    };
    const PER_CONSUMER: Storable = Storable {
        per_consumer: true,
        route_ttl: false,
    };

    #[test]
    fn plain_get_200_is_storable_and_other_methods_are_not() {
        assert_eq!(check(&[], 200, &[], SHARED), Ok(()));
        assert_eq!(check(&[], 404, &[], SHARED), Ok(()));
        let max_age = [("cache-control", "max-age=60")];
        assert_eq!(
            check_method(&Method::POST, &[], 200, &max_age, SHARED),
            Err(NotStorable::Method)
        );
        assert_eq!(
            check_method(&Method::HEAD, &[], 200, &max_age, SHARED),
            Err(NotStorable::Method)
        );
    }

    #[test]
    fn no_store_in_either_message_wins() {
        assert_eq!(
            check(
                &[],
                200,
                &[("cache-control", "public, max-age=60, no-store")],
                SHARED
            ),
            Err(NotStorable::NoStore)
        );
        assert_eq!(
            check(
                &[("cache-control", "no-store")],
                200,
                &[("cache-control", "max-age=60")],
                SHARED
            ),
            Err(NotStorable::NoStore)
        );
        // Even a route that caches per consumer does not store no-store.
        assert_eq!(
            check(&[], 200, &[("cache-control", "no-store")], PER_CONSUMER),
            Err(NotStorable::NoStore)
        );
    }

    #[test]
    fn partial_not_modified_and_uncacheable_statuses_are_refused() {
        assert_eq!(
            check(&[], 206, &[("cache-control", "max-age=60")], SHARED),
            Err(NotStorable::Status)
        );
        assert_eq!(
            check(&[], 304, &[("cache-control", "max-age=60")], SHARED),
            Err(NotStorable::Status)
        );
        assert_eq!(check(&[], 500, &[], SHARED), Err(NotStorable::Status));
        // Explicit freshness or `public` makes any final status storable.
        assert_eq!(
            check(&[], 500, &[("cache-control", "max-age=5")], SHARED),
            Ok(())
        );
        assert_eq!(
            check(&[], 302, &[("cache-control", "public")], SHARED),
            Ok(())
        );
        assert_eq!(
            check(
                &[],
                302,
                &[("expires", "Thu, 01 Jan 2099 00:00:00 GMT")],
                SHARED
            ),
            Ok(())
        );
        // So does a route TTL.
        let ttl = Storable {
            route_ttl: true,
            ..SHARED
        };
        assert_eq!(check(&[], 302, &[], ttl), Ok(()));
    }

    #[test]
    fn private_and_set_cookie_are_never_shared() {
        assert_eq!(
            check(
                &[],
                200,
                &[("cache-control", "private, max-age=60")],
                SHARED
            ),
            Err(NotStorable::Private)
        );
        assert_eq!(
            check(
                &[],
                200,
                &[("cache-control", "private, max-age=60")],
                PER_CONSUMER
            ),
            Ok(())
        );
        assert_eq!(
            check(
                &[],
                200,
                &[
                    ("cache-control", "public, max-age=60"),
                    ("set-cookie", "a=1")
                ],
                SHARED
            ),
            Err(NotStorable::SetCookie)
        );
        assert_eq!(
            check(
                &[],
                200,
                &[("cache-control", "max-age=60"), ("set-cookie", "a=1")],
                PER_CONSUMER
            ),
            Err(NotStorable::SetCookie)
        );
    }

    #[test]
    fn authorized_requests_need_explicit_permission() {
        let auth = [("authorization", "Bearer x")];
        assert_eq!(
            check(&auth, 200, &[("cache-control", "max-age=60")], SHARED),
            Err(NotStorable::Authorization)
        );
        assert_eq!(
            check(
                &auth,
                200,
                &[("cache-control", "public, max-age=60")],
                SHARED
            ),
            Ok(())
        );
        assert_eq!(
            check(&auth, 200, &[("cache-control", "s-maxage=60")], SHARED),
            Ok(())
        );
        assert_eq!(
            check(
                &auth,
                200,
                &[("cache-control", "max-age=60, must-revalidate")],
                SHARED
            ),
            Ok(())
        );
        assert_eq!(
            check(&auth, 200, &[("cache-control", "max-age=60")], PER_CONSUMER),
            Ok(())
        );
    }

    #[test]
    fn must_understand_refuses_unknown_statuses_and_overrides_no_store_for_known_ones() {
        let mu = [("cache-control", "max-age=3600, must-understand")];
        assert_eq!(check(&[], 599, &mu, SHARED), Err(NotStorable::Status));
        assert_eq!(check(&[], 200, &mu, SHARED), Ok(()));
        let mu_no_store = [("cache-control", "no-store, must-understand, max-age=60")];
        assert_eq!(check(&[], 200, &mu_no_store, SHARED), Ok(()));
        assert_eq!(
            check(&[], 599, &mu_no_store, SHARED),
            Err(NotStorable::Status)
        );
    }

    #[test]
    fn vary_star_is_not_stored() {
        assert_eq!(
            check(
                &[],
                200,
                &[("cache-control", "max-age=60"), ("vary", "accept, *")],
                SHARED
            ),
            Err(NotStorable::VaryStar)
        );
        assert_eq!(
            check(
                &[],
                200,
                &[("cache-control", "max-age=60"), ("vary", "accept")],
                SHARED
            ),
            Ok(())
        );
    }
}
