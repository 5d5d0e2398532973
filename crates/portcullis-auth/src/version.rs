//! API versions of a route: which version a request asks for (a header, a media type
//! parameter of `Accept`, a query parameter or the first path segment), the default when it
//! names none, 400 for a version the route does not serve, and the `Deprecation` (RFC 9745),
//! `Sunset` (RFC 8594) and `Link` headers of deprecated versions.
//!
//! Where a version goes (its upstream, its path prefix) is the gateway's business; this module
//! only answers "which version" and shapes headers, query and path around it.
//!
//! ```
//! use portcullis_auth::{ApiVersionOptions, ApiVersionSource, ApiVersionSpec, ApiVersions};
//!
//! let versions = ApiVersions::new(ApiVersionOptions {
//!     sources: vec![ApiVersionSource::Header(http::HeaderName::from_static("accept-version"))],
//!     default: Some("2".into()),
//!     strip: false,
//!     versions: vec![
//!         ApiVersionSpec { name: "1".into(), deprecated: Some(1_751_241_600), ..Default::default() },
//!         ApiVersionSpec { name: "2".into(), ..Default::default() },
//!     ],
//! }).unwrap();
//! let mut headers = http::HeaderMap::new();
//! let uri: http::Uri = "/orders".parse().unwrap();
//! assert_eq!(versions.name(versions.resolve(&headers, &uri, "/orders").unwrap()), "2");
//! headers.insert("accept-version", "1".parse().unwrap());
//! let v1 = versions.resolve(&headers, &uri, "/orders").unwrap();
//! let mut response = http::HeaderMap::new();
//! versions.decorate(v1, &mut response);
//! assert_eq!(response["deprecation"], "@1751241600");
//! headers.insert("accept-version", "3".parse().unwrap());
//! assert_eq!(versions.resolve(&headers, &uri, "/orders").unwrap_err().status(), 400);
//! ```

use std::time::{Duration, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue, Uri, header};

use crate::{consumer::BuildError, rejection::Rejection};

/// Where a version is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiVersionSource {
    /// A request header's whole value (`Accept-Version: 2`).
    Header(HeaderName),
    /// A parameter, by name, of a media type in `Accept`
    /// (`application/vnd.example+json; version=2`).
    MediaType(String),
    /// A query parameter, by name (`?version=2`).
    Query(String),
    /// The first path segment: `v` and the version (`/v2/orders`).
    Path,
}

/// One version a route serves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiVersionSpec {
    /// What clients send.
    pub name: String,
    /// Deprecated since (or from) this instant, in seconds since the Unix epoch.
    pub deprecated: Option<u64>,
    /// May stop answering after this instant, in seconds since the Unix epoch.
    pub sunset: Option<u64>,
    /// Documentation of the deprecation.
    pub link: Option<String>,
}

/// A route's versions (plain data).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiVersionOptions {
    /// Sources in order: the first that names a version wins.
    pub sources: Vec<ApiVersionSource>,
    /// The version of requests that name none (`None`: they get 400).
    pub default: Option<String>,
    /// Remove the version's header, query parameter or path segment before forwarding.
    pub strip: bool,
    /// The versions served.
    pub versions: Vec<ApiVersionSpec>,
}

/// Which version a request asked for, and where it was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolvedVersion {
    index: usize,
    /// The source's index in `sources`; `None` for the default.
    found_in: Option<usize>,
}

impl ResolvedVersion {
    /// The version's position in [`ApiVersionOptions::versions`].
    pub fn index(self) -> usize {
        self.index
    }
}

#[derive(Debug)]
struct Version {
    name: Box<str>,
    /// The name as a header value (for cache keys and such).
    value: HeaderValue,
    deprecation: Option<HeaderValue>,
    sunset: Option<HeaderValue>,
    link: Option<HeaderValue>,
}

/// A route's versions, built once.
#[derive(Debug)]
pub struct ApiVersions {
    sources: Vec<ApiVersionSource>,
    default: Option<usize>,
    strip: bool,
    versions: Vec<Version>,
    /// `Vary` for the header sources (the version header, `Accept`).
    vary: Option<HeaderValue>,
}

impl ApiVersions {
    /// Builds the versions; names must be unique and the default one of them.
    pub fn new(options: ApiVersionOptions) -> Result<Self, BuildError> {
        let bad = |what: String| BuildError(format!("versioning: {what}"));
        let mut versions: Vec<Version> = Vec::with_capacity(options.versions.len());
        for v in options.versions {
            if versions.iter().any(|o| *o.name == *v.name) {
                return Err(bad(format!("version {:?} is given twice", v.name)));
            }
            let value = HeaderValue::from_str(&v.name)
                .map_err(|_| bad(format!("version {:?} is not a valid name", v.name)))?;
            let date = |secs: u64| {
                HeaderValue::from_str(&httpdate::fmt_http_date(
                    UNIX_EPOCH + Duration::from_secs(secs),
                ))
                .map_err(|_| bad("date out of range".into()))
            };
            versions.push(Version {
                deprecation: v
                    .deprecated
                    .map(|t| HeaderValue::from_str(&format!("@{t}")))
                    .transpose()
                    .map_err(|_| bad("bad deprecation date".into()))?,
                sunset: v.sunset.map(date).transpose()?,
                link: v
                    .link
                    .map(|l| HeaderValue::from_str(&format!("<{l}>; rel=\"deprecation\"")))
                    .transpose()
                    .map_err(|_| bad(format!("the link of version {:?}", v.name)))?,
                name: v.name.into_boxed_str(),
                value,
            });
        }
        let default = match options.default {
            None => None,
            Some(d) => Some(
                versions
                    .iter()
                    .position(|v| *v.name == *d)
                    .ok_or_else(|| bad(format!("the default {d:?} is not a version")))?,
            ),
        };
        let vary: Vec<&str> = options
            .sources
            .iter()
            .filter_map(|s| match s {
                ApiVersionSource::Header(h) => Some(h.as_str()),
                ApiVersionSource::MediaType(_) => Some("accept"),
                _ => None,
            })
            .collect();
        let vary = (!vary.is_empty())
            .then(|| HeaderValue::from_str(&vary.join(", ")))
            .transpose()
            .map_err(|_| bad("vary".into()))?;
        Ok(Self {
            sources: options.sources,
            default,
            strip: options.strip,
            versions,
            vary,
        })
    }

    /// The version `headers`, `uri` and `path` (the request path after the route's
    /// `strip_prefix`) ask for: 400 when it is not one of the route's, or when none is named
    /// and there is no default.
    pub fn resolve(
        &self,
        headers: &HeaderMap,
        uri: &Uri,
        path: &str,
    ) -> Result<ResolvedVersion, Rejection> {
        for (i, source) in self.sources.iter().enumerate() {
            let asked = match source {
                ApiVersionSource::Header(name) => headers
                    .get(name)
                    .map(|v| v.as_bytes().trim_ascii())
                    .filter(|v| !v.is_empty()),
                ApiVersionSource::MediaType(param) => media_type_parameter(headers, param),
                ApiVersionSource::Query(param) => uri
                    .query()
                    .and_then(|q| query_parameter(q, param))
                    .map(str::as_bytes),
                ApiVersionSource::Path => path_version(path).map(str::as_bytes),
            };
            if let Some(asked) = asked {
                return self
                    .versions
                    .iter()
                    .position(|v| v.name.as_bytes() == asked)
                    .map(|index| ResolvedVersion {
                        index,
                        found_in: Some(i),
                    })
                    .ok_or(Rejection::UNKNOWN_VERSION);
            }
        }
        self.default
            .map(|index| ResolvedVersion {
                index,
                found_in: None,
            })
            .ok_or(Rejection::VERSION_REQUIRED)
    }

    /// The version's name.
    pub fn name(&self, v: ResolvedVersion) -> &str {
        &self.versions[v.index].name
    }

    /// The version's name as a header value (built once).
    pub fn value(&self, v: ResolvedVersion) -> &HeaderValue {
        &self.versions[v.index].value
    }

    /// Adds `Deprecation`, `Sunset` and `Link` of a deprecated version, and `Vary` for the
    /// header sources, to a response's headers.
    pub fn decorate(&self, v: ResolvedVersion, headers: &mut HeaderMap) {
        let version = &self.versions[v.index];
        if let Some(d) = &version.deprecation {
            headers.insert(DEPRECATION, d.clone());
        }
        if let Some(s) = &version.sunset {
            headers.insert(SUNSET, s.clone());
        }
        if let Some(l) = &version.link {
            headers.append(header::LINK, l.clone());
        }
        if let Some(vary) = &self.vary {
            headers.append(header::VARY, vary.clone());
        }
    }

    /// With `strip`: removes the version's header or query parameter from a request going
    /// upstream (a media type parameter stays in `Accept`; the path segment is removed by
    /// [`strip_path`](Self::strip_path)).
    pub fn strip_request(&self, v: ResolvedVersion, headers: &mut HeaderMap, uri: &mut Uri) {
        if !self.strip {
            return;
        }
        match v.found_in.map(|i| &self.sources[i]) {
            Some(ApiVersionSource::Header(name)) => {
                headers.remove(name);
            }
            Some(ApiVersionSource::Query(param)) => {
                if let Some(stripped) = without_query_parameter(uri, param) {
                    *uri = stripped;
                }
            }
            _ => {}
        }
    }

    /// With `strip` and a version found in the path: `path` without its version segment
    /// (`/v2/orders` → `/orders`, `/v2` → ``); otherwise `path`.
    pub fn strip_path<'a>(&self, v: ResolvedVersion, path: &'a str) -> &'a str {
        let from_path = v
            .found_in
            .is_some_and(|i| self.sources[i] == ApiVersionSource::Path);
        if !(self.strip && from_path) {
            return path;
        }
        let segment = path_version(path).map_or(0, |name| name.len() + 2);
        &path[segment..]
    }
}

/// `Deprecation` (RFC 9745).
pub const DEPRECATION: HeaderName = HeaderName::from_static("deprecation");
/// `Sunset` (RFC 8594).
pub const SUNSET: HeaderName = HeaderName::from_static("sunset");

/// The version named by the first path segment: `v` followed by a digit and more
/// (`/v2/x` → `2`); `/videos` names none.
fn path_version(path: &str) -> Option<&str> {
    let segment = path.strip_prefix('/')?.split('/').next()?;
    let name = segment.strip_prefix(['v', 'V'])?;
    name.as_bytes()
        .first()
        .is_some_and(u8::is_ascii_digit)
        .then_some(name)
}

/// The first `param` of a media type in `Accept` (case-insensitive name, quotes removed).
fn media_type_parameter<'a>(headers: &'a HeaderMap, param: &str) -> Option<&'a [u8]> {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .flat_map(|range| range.split(';').skip(1))
        .find_map(|p| {
            let (name, value) = p.split_once('=')?;
            name.trim().eq_ignore_ascii_case(param).then(|| {
                value
                    .trim()
                    .trim_start_matches('"')
                    .trim_end_matches('"')
                    .as_bytes()
            })
        })
        .filter(|v| !v.is_empty())
}

/// The first non-empty value of `param` in `query`.
fn query_parameter<'a>(query: &'a str, param: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        (name == param && !value.is_empty()).then_some(value)
    })
}

/// `uri` without any `param=...` in its query; `None` when there is none.
fn without_query_parameter(uri: &Uri, param: &str) -> Option<Uri> {
    let query = uri.query()?;
    let is_param = |pair: &&str| pair.split_once('=').map_or(*pair, |(n, _)| n) == param;
    if !query.split('&').any(|p| is_param(&p)) {
        return None;
    }
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && !is_param(p))
        .collect();
    let path_and_query = if kept.is_empty() {
        uri.path().to_owned()
    } else {
        format!("{}?{}", uri.path(), kept.join("&"))
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = path_and_query.parse().ok();
    Uri::from_parts(parts).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versions(sources: Vec<ApiVersionSource>, default: Option<&str>, strip: bool) -> ApiVersions {
        ApiVersions::new(ApiVersionOptions {
            sources,
            default: default.map(Into::into),
            strip,
            versions: vec![
                ApiVersionSpec {
                    name: "1".into(),
                    deprecated: Some(1_751_241_600),
                    sunset: Some(1_767_225_600),
                    link: Some("https://docs.example.com/v1".into()),
                },
                ApiVersionSpec {
                    name: "2".into(),
                    ..ApiVersionSpec::default()
                },
            ],
        })
        .unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, v.parse().unwrap());
        }
        h
    }

    fn resolve(v: &ApiVersions, h: &HeaderMap, uri: &str) -> Result<String, u16> {
        let uri: Uri = uri.parse().unwrap();
        v.resolve(h, &uri, uri.path())
            .map(|r| v.name(r).to_owned())
            .map_err(|e| e.status().as_u16())
    }

    #[test]
    fn sources_are_tried_in_order_and_the_default_fills_in() {
        let v = versions(
            vec![
                ApiVersionSource::Header(HeaderName::from_static("accept-version")),
                ApiVersionSource::MediaType("version".into()),
                ApiVersionSource::Query("v".into()),
                ApiVersionSource::Path,
            ],
            Some("2"),
            false,
        );
        let none = HeaderMap::new();
        assert_eq!(resolve(&v, &none, "/x").unwrap(), "2");
        assert_eq!(
            resolve(&v, &headers(&[("accept-version", " 1 ")]), "/v2/x?v=2").unwrap(),
            "1"
        );
        let accept = headers(&[(
            "accept",
            "text/html, application/vnd.example+json; charset=utf-8; Version=\"1\"",
        )]);
        assert_eq!(resolve(&v, &accept, "/x").unwrap(), "1");
        assert_eq!(resolve(&v, &none, "/x?a=1&v=1").unwrap(), "1");
        assert_eq!(resolve(&v, &none, "/v1/x").unwrap(), "1");
        assert_eq!(resolve(&v, &none, "/videos").unwrap(), "2", "not a version");
        assert_eq!(resolve(&v, &none, "/v3/x"), Err(400));
        assert_eq!(
            resolve(&v, &headers(&[("accept-version", "1.0")]), "/"),
            Err(400)
        );
        let strict = versions(vec![ApiVersionSource::Query("v".into())], None, false);
        let e = strict
            .resolve(&none, &"/x".parse().unwrap(), "/x")
            .unwrap_err();
        assert_eq!(e.message(), "API version required");
    }

    #[test]
    fn deprecated_versions_get_deprecation_sunset_and_link() {
        let v = versions(
            vec![ApiVersionSource::Header(HeaderName::from_static(
                "accept-version",
            ))],
            Some("2"),
            false,
        );
        let uri: Uri = "/".parse().unwrap();
        let v1 = v
            .resolve(&headers(&[("accept-version", "1")]), &uri, "/")
            .unwrap();
        let mut h = headers(&[("link", "</next>; rel=\"next\""), ("vary", "origin")]);
        v.decorate(v1, &mut h);
        assert_eq!(h["deprecation"], "@1751241600");
        assert_eq!(h["sunset"], "Thu, 01 Jan 2026 00:00:00 GMT");
        let links: Vec<_> = h.get_all("link").iter().collect();
        assert_eq!(links.len(), 2);
        assert_eq!(
            links[1],
            "<https://docs.example.com/v1>; rel=\"deprecation\""
        );
        assert_eq!(h.get_all("vary").iter().nth(1).unwrap(), "accept-version");
        let v2 = v.resolve(&HeaderMap::new(), &uri, "/").unwrap();
        let mut h = HeaderMap::new();
        v.decorate(v2, &mut h);
        assert!(h.get("deprecation").is_none() && h.get("sunset").is_none());
    }

    #[test]
    fn strip_removes_the_header_the_query_parameter_or_the_segment() {
        let v = versions(
            vec![
                ApiVersionSource::Header(HeaderName::from_static("accept-version")),
                ApiVersionSource::Query("v".into()),
                ApiVersionSource::Path,
            ],
            Some("2"),
            true,
        );
        let mut h = headers(&[("accept-version", "1")]);
        let mut uri: Uri = "/x?v=2".parse().unwrap();
        let r = v.resolve(&h, &uri, uri.path()).unwrap();
        v.strip_request(r, &mut h, &mut uri);
        assert!(h.get("accept-version").is_none());
        assert_eq!(uri, "/x?v=2", "only the source that named it");

        let mut h = HeaderMap::new();
        let mut uri: Uri = "/x?a=1&v=1&b=2".parse().unwrap();
        let r = v.resolve(&h, &uri, uri.path()).unwrap();
        v.strip_request(r, &mut h, &mut uri);
        assert_eq!(uri, "/x?a=1&b=2");
        let mut uri: Uri = "/x?v=1".parse().unwrap();
        v.strip_request(r, &mut h, &mut uri);
        assert_eq!(uri, "/x");

        let r = v.resolve(&h, &"/v1/x".parse().unwrap(), "/v1/x").unwrap();
        assert_eq!(v.strip_path(r, "/v1/x"), "/x");
        assert_eq!(v.strip_path(r, "/v1"), "");
        let default = v.resolve(&h, &"/x".parse().unwrap(), "/x").unwrap();
        assert_eq!(v.strip_path(default, "/x"), "/x");
    }
}
