//! CORS: preflights answered at the gateway (204), and the response headers of actual
//! cross-origin requests.

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, header};

/// How a route answers cross-origin requests (plain data).
#[derive(Debug, Clone, Default)]
pub struct CorsOptions {
    /// Allowed origins: `*`, exact (`https://app.example.com`), a wildcard subdomain
    /// (`https://*.example.com`) or a regular expression (`regex:^https://.*\.test$`).
    pub origins: Vec<String>,
    /// Allowed methods (empty: GET, HEAD, POST).
    pub methods: Vec<Method>,
    /// Allowed request headers; `*` allows whatever the preflight asks for.
    pub headers: Vec<String>,
    /// Response headers exposed to the page.
    pub expose_headers: Vec<String>,
    /// Allow credentials (cookies, `Authorization`); the origin is then echoed, never `*`.
    pub credentials: bool,
    /// How long browsers may cache a preflight.
    pub max_age: Option<Duration>,
}

enum OriginRule {
    Any,
    Exact(String),
    /// `scheme://` and the domain suffix with its leading dot (`.example.com[:port]`).
    Subdomain(String, String),
    Regex(regex::Regex),
}

impl std::fmt::Debug for OriginRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Any => f.write_str("*"),
            Self::Exact(o) => f.write_str(o),
            Self::Subdomain(s, d) => write!(f, "{s}*{d}"),
            Self::Regex(r) => write!(f, "regex:{r}"),
        }
    }
}

impl OriginRule {
    fn parse(text: &str) -> Result<Self, String> {
        if text == "*" {
            return Ok(Self::Any);
        }
        if let Some(re) = text.strip_prefix("regex:") {
            return regex::Regex::new(re)
                .map(Self::Regex)
                .map_err(|e| format!("invalid origin regex {re:?}: {e}"));
        }
        let lower = text.to_ascii_lowercase().trim_end_matches('/').to_owned();
        let Some((scheme, rest)) = lower.split_once("://") else {
            return Err(format!(
                "origin {text:?} must look like \"https://app.example.com\", \"https://*.example.com\", \"*\" or \"regex:...\""
            ));
        };
        if let Some(domain) = rest.strip_prefix("*.") {
            if domain.is_empty() || domain.contains(['*', '/']) {
                return Err(format!(
                    "origin {text:?}: a wildcard is only allowed as \"scheme://*.domain\""
                ));
            }
            return Ok(Self::Subdomain(
                format!("{scheme}://"),
                format!(".{domain}"),
            ));
        }
        if rest.is_empty() || rest.contains(['*', '/']) {
            return Err(format!(
                "origin {text:?} is not an origin (scheme://host[:port])"
            ));
        }
        Ok(Self::Exact(lower))
    }

    fn matches(&self, origin: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(o) => origin.eq_ignore_ascii_case(o),
            Self::Subdomain(scheme, suffix) => {
                let origin = origin.to_ascii_lowercase();
                origin.strip_prefix(scheme.as_str()).is_some_and(|host| {
                    host.len() > suffix.len()
                        && host.ends_with(suffix.as_str())
                        && !host[..host.len() - suffix.len()].contains(['/', ':'])
                })
            }
            Self::Regex(r) => r.is_match(origin),
        }
    }
}

/// A route's CORS policy, with its header values built once.
#[derive(Debug)]
pub(crate) struct Cors {
    origins: Vec<OriginRule>,
    any_origin: bool,
    methods: Vec<Method>,
    allow_methods: HeaderValue,
    /// `None`: any requested header (echoed).
    allow_headers: Option<(Vec<HeaderName>, HeaderValue)>,
    expose: Option<HeaderValue>,
    credentials: bool,
    max_age: Option<HeaderValue>,
}

/// `Vary` for responses that depend on the request's origin.
const VARY_ORIGIN: HeaderValue = HeaderValue::from_static("Origin");
const VARY_PREFLIGHT: HeaderValue = HeaderValue::from_static(
    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
);

impl Cors {
    pub(crate) fn new(o: &CorsOptions) -> Result<Self, String> {
        let origins = o
            .origins
            .iter()
            .map(|t| OriginRule::parse(t))
            .collect::<Result<Vec<_>, _>>()?;
        let any_origin = origins.iter().any(|r| matches!(r, OriginRule::Any));
        let methods = if o.methods.is_empty() {
            vec![Method::GET, Method::HEAD, Method::POST]
        } else {
            o.methods.clone()
        };
        let join = |items: &mut dyn Iterator<Item = &str>| {
            HeaderValue::from_str(&items.collect::<Vec<_>>().join(", "))
                .map_err(|_| "invalid header value".to_owned())
        };
        let allow_methods = join(&mut methods.iter().map(Method::as_str))?;
        let allow_headers = if o.headers.iter().any(|h| h == "*") {
            None
        } else {
            let names = o
                .headers
                .iter()
                .map(|h| {
                    HeaderName::from_bytes(h.as_bytes())
                        .map_err(|_| format!("invalid header name {h:?}"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let value = join(&mut names.iter().map(HeaderName::as_str))?;
            Some((names, value))
        };
        let expose = if o.expose_headers.is_empty() {
            None
        } else {
            Some(join(&mut o.expose_headers.iter().map(String::as_str))?)
        };
        Ok(Self {
            origins,
            any_origin,
            methods,
            allow_methods,
            allow_headers,
            expose,
            credentials: o.credentials,
            max_age: o.max_age.map(|d| HeaderValue::from(d.as_secs())),
        })
    }

    fn allowed_origin<'a>(&self, headers: &'a HeaderMap) -> Option<&'a HeaderValue> {
        let origin = headers.get(header::ORIGIN)?;
        let text = origin.to_str().ok()?;
        self.origins
            .iter()
            .any(|r| r.matches(text))
            .then_some(origin)
    }

    /// The `Access-Control-Allow-Origin` value for an allowed `origin`.
    fn allow_origin(&self, origin: &HeaderValue) -> HeaderValue {
        if self.any_origin && !self.credentials {
            HeaderValue::from_static("*")
        } else {
            origin.clone()
        }
    }

    /// The answer to a preflight: `Ok(headers)` for a 204, `Err(())` when it is refused.
    pub(crate) fn preflight<B>(&self, req: &Request<B>) -> Result<HeaderMap, ()> {
        let headers = req.headers();
        let origin = self.allowed_origin(headers).ok_or(())?;
        let method = headers
            .get(header::ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
            .ok_or(())?;
        if !self.methods.contains(&method) {
            return Err(());
        }
        let requested = headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS);
        let allow_headers = match (&self.allow_headers, requested) {
            (_, None) => None,
            (None, Some(r)) => Some(r.clone()),
            (Some((names, value)), Some(r)) => {
                let text = r.to_str().map_err(|_| ())?;
                let all_allowed = text
                    .split(',')
                    .map(str::trim)
                    .filter(|h| !h.is_empty())
                    .all(|h| names.iter().any(|n| n.as_str().eq_ignore_ascii_case(h)));
                if !all_allowed {
                    return Err(());
                }
                Some(value.clone())
            }
        };
        let mut out = HeaderMap::new();
        out.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            self.allow_origin(origin),
        );
        out.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            self.allow_methods.clone(),
        );
        if let Some(h) = allow_headers {
            out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, h);
        }
        if self.credentials {
            out.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(age) = &self.max_age {
            out.insert(header::ACCESS_CONTROL_MAX_AGE, age.clone());
        }
        out.insert(header::VARY, VARY_PREFLIGHT);
        Ok(out)
    }

    /// The `Access-Control-Allow-Origin` of an actual request, when its origin is allowed.
    pub(crate) fn response_origin(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        self.allowed_origin(headers).map(|o| self.allow_origin(o))
    }

    /// Adds the CORS headers of an actual response (`origin` from [`Self::response_origin`]).
    pub(crate) fn decorate(&self, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
        headers.append(header::VARY, VARY_ORIGIN);
        let Some(origin) = origin else { return };
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        if self.credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(expose) = &self.expose {
            headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
        }
    }
}

/// Whether `req` is a CORS preflight (`OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`).
pub fn is_preflight<B>(req: &Request<B>) -> bool {
    req.method() == Method::OPTIONS
        && req.headers().contains_key(header::ORIGIN)
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// A preflight's requested method, to route it by (so routes restricted to `GET`/`POST`
/// still answer their preflights); `None` for other requests.
pub fn routing_method<B>(req: &Request<B>) -> Option<Method> {
    if !is_preflight(req) {
        return None;
    }
    req.headers()
        .get(header::ACCESS_CONTROL_REQUEST_METHOD)
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(origins: &[&str], credentials: bool) -> Cors {
        Cors::new(&CorsOptions {
            origins: origins.iter().map(|s| (*s).to_owned()).collect(),
            methods: vec![Method::GET, Method::PUT],
            headers: vec!["Content-Type".into(), "X-Api-Key".into()],
            expose_headers: vec!["X-Request-Id".into()],
            credentials,
            max_age: Some(Duration::from_secs(600)),
        })
        .unwrap()
    }

    fn preflight(origin: &str, method: &str, headers: Option<&str>) -> Request<()> {
        let mut b = Request::builder()
            .method("OPTIONS")
            .header("origin", origin)
            .header("access-control-request-method", method);
        if let Some(h) = headers {
            b = b.header("access-control-request-headers", h);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn origins_match_exactly_by_subdomain_or_regex() {
        let c = cors(
            &[
                "https://app.example.com",
                "https://*.example.org",
                r"regex:^https://[a-z]+\.test$",
            ],
            true,
        );
        let ok = |o: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ORIGIN, HeaderValue::from_str(o).unwrap());
            c.response_origin(&h).is_some()
        };
        assert!(ok("https://app.example.com"));
        assert!(ok("https://APP.example.com"));
        assert!(!ok("http://app.example.com"), "scheme matters");
        assert!(!ok("https://app.example.com.evil.net"));
        assert!(ok("https://a.b.example.org"));
        assert!(
            !ok("https://example.org"),
            "the bare domain is not a subdomain"
        );
        assert!(!ok("https://evilexample.org"));
        assert!(ok("https://abc.test"));
        assert!(!ok("https://abc.test.evil"));
    }

    #[test]
    fn preflights_check_method_and_headers() {
        let c = cors(&["https://app.example.com"], true);
        let h = c
            .preflight(&preflight(
                "https://app.example.com",
                "PUT",
                Some("content-type, x-api-key"),
            ))
            .unwrap();
        assert_eq!(
            h[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example.com"
        );
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_METHODS], "GET, PUT");
        assert_eq!(
            h[header::ACCESS_CONTROL_ALLOW_HEADERS],
            "content-type, x-api-key"
        );
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(h[header::ACCESS_CONTROL_MAX_AGE], "600");
        assert!(
            c.preflight(&preflight("https://app.example.com", "DELETE", None))
                .is_err()
        );
        assert!(
            c.preflight(&preflight(
                "https://app.example.com",
                "GET",
                Some("x-other")
            ))
            .is_err()
        );
        assert!(
            c.preflight(&preflight("https://evil.example", "GET", None))
                .is_err()
        );
    }

    #[test]
    fn any_origin_answers_star_unless_credentials() {
        let open = cors(&["*"], false);
        let mut h = HeaderMap::new();
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://x.example"),
        );
        assert_eq!(open.response_origin(&h).unwrap(), "*");
        let creds = cors(&["*"], true);
        assert_eq!(creds.response_origin(&h).unwrap(), "https://x.example");
    }

    #[test]
    fn bad_origin_patterns_are_refused() {
        assert!(OriginRule::parse("app.example.com").is_err());
        assert!(OriginRule::parse("https://a.*.example.com").is_err());
        assert!(OriginRule::parse("regex:(").is_err());
    }
}
