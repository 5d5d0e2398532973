//! A route's API versions at run time: which version a request asks for (decided by
//! `portcullis-auth`'s [`ApiVersions`]) and where each version goes (its upstream, its path
//! prefix).
//!
//! The resolved version travels with the request as a [`ResolvedVersion`] extension. On cached
//! routes it is also written into the request header [`VERSION_KEY`], which the route's cache
//! key includes, so responses of different versions are never served for one another even when
//! the version came from a header or was the default. That header is the gateway's own: it is
//! replaced whatever the client sent and never forwarded.

use std::{borrow::Cow, collections::HashMap, sync::Arc, time::Duration};

use http::{HeaderMap, HeaderName, Request};
use portcullis_auth::{
    ApiVersionOptions, ApiVersionSource, ApiVersionSpec, ApiVersions, Rejection, ResolvedVersion,
};
use portcullis_config::{
    RouteConfig, VersionSource, VersioningConfig, parse_date, parse_header_name,
};

use crate::{route::Route, stack::BuildError, upstream::Upstream};

/// The request header that carries the resolved version into the cache key.
pub(crate) const VERSION_KEY: HeaderName = HeaderName::from_static("x-portcullis-api-version");

/// A route's versions and where each goes.
#[derive(Debug)]
pub(crate) struct RouteVersions {
    pub(crate) api: ApiVersions,
    /// In the order of the versions in `api`.
    pub(crate) targets: Vec<VersionTarget>,
}

/// Where one version goes.
#[derive(Debug)]
pub(crate) struct VersionTarget {
    pub(crate) upstream: Arc<Upstream>,
    /// The route's `timeout`, else this upstream's.
    pub(crate) timeout: Duration,
    /// Replaces the route's `add_prefix` (canonical: no trailing slash).
    pub(crate) add_prefix: Option<String>,
}

/// Lowers route `r`'s `versioning`; `upstreams` by name.
pub(crate) fn route_versions(
    r: &RouteConfig,
    upstreams: &HashMap<&str, Arc<Upstream>>,
    route_upstream: &Arc<Upstream>,
) -> Result<Option<Box<RouteVersions>>, BuildError> {
    let Some(v) = &r.versioning else {
        return Ok(None);
    };
    let config = |e: String| BuildError::Config(format!("versioning: {e}"));
    let options = api_options(v).map_err(config)?;
    let mut targets = Vec::new();
    for version in v.versions.get_ref().values() {
        let version = version.get_ref();
        let upstream = match &version.upstream {
            Some(name) => upstreams
                .get(name.get_ref().as_str())
                .cloned()
                .ok_or_else(|| config(format!("unknown upstream {:?}", name.get_ref())))?,
            None => Arc::clone(route_upstream),
        };
        targets.push(VersionTarget {
            timeout: r.timeout.map_or(upstream.timeout, |t| t.0),
            upstream,
            add_prefix: version
                .add_prefix
                .as_ref()
                .map(|p| crate::route::canonical_prefix(p.get_ref())),
        });
    }
    let api = ApiVersions::new(options).map_err(|e| BuildError::Config(e.0))?;
    Ok(Some(Box::new(RouteVersions { api, targets })))
}

/// The `portcullis-auth` options of a `versioning` table (validated).
fn api_options(v: &VersioningConfig) -> Result<ApiVersionOptions, String> {
    let sources = v
        .from
        .get_ref()
        .iter()
        .map(|s| {
            Ok(match s {
                VersionSource::Header => {
                    ApiVersionSource::Header(parse_header_name(v.header.get_ref())?)
                }
                VersionSource::MediaType => {
                    ApiVersionSource::MediaType(v.media_type_parameter.get_ref().clone())
                }
                VersionSource::Query => ApiVersionSource::Query(v.query.get_ref().clone()),
                VersionSource::Path => ApiVersionSource::Path,
            })
        })
        .collect::<Result<_, String>>()?;
    let date = |d: &Option<portcullis_config::Spanned<String>>| {
        d.as_ref().map(|d| parse_date(d.get_ref())).transpose()
    };
    let versions = v
        .versions
        .get_ref()
        .iter()
        .map(|(name, version)| {
            let version = version.get_ref();
            Ok(ApiVersionSpec {
                name: name.clone(),
                deprecated: date(&version.deprecated)?,
                sunset: date(&version.sunset)?,
                link: version.link.as_ref().map(|l| l.get_ref().clone()),
            })
        })
        .collect::<Result<_, String>>()?;
    Ok(ApiVersionOptions {
        sources,
        default: v.default.as_ref().map(|d| d.get_ref().clone()),
        strip: v.strip,
        versions,
    })
}

/// The version `req` asks for on `route` (`None` when the route is not versioned); `path` is
/// the normalized request path.
pub(crate) fn resolve<B>(
    route: &Route,
    req: &Request<B>,
    path: &str,
) -> Result<Option<ResolvedVersion>, Rejection> {
    let Some(versions) = &route.versions else {
        return Ok(None);
    };
    versions
        .api
        .resolve(req.headers(), req.uri(), route.after_strip(path))
        .map(Some)
}

/// Records the resolved version on a request going on: the extension, and on cached routes
/// the cache key's header.
pub(crate) fn mark<B>(route: &Route, version: Option<ResolvedVersion>, req: &mut Request<B>) {
    let (Some(v), Some(versions)) = (version, &route.versions) else {
        return;
    };
    if route.cache.is_some() {
        req.headers_mut()
            .insert(VERSION_KEY, versions.api.value(v).clone());
    }
    req.extensions_mut().insert(v);
}

/// The headers a cache lookup keys on: `headers` with the version's key header when the
/// request (still unmarked) has a version.
pub(crate) fn keyed_headers<'a>(
    route: &Route,
    version: Option<ResolvedVersion>,
    headers: &'a HeaderMap,
) -> Cow<'a, HeaderMap> {
    match (version, &route.versions) {
        (Some(v), Some(versions)) => {
            let mut keyed = headers.clone();
            keyed.insert(VERSION_KEY, versions.api.value(v).clone());
            Cow::Owned(keyed)
        }
        _ => Cow::Borrowed(headers),
    }
}

/// Adds the version's `Deprecation`, `Sunset`, `Link` and `Vary` to a response.
pub(crate) fn decorate(route: &Route, version: Option<ResolvedVersion>, headers: &mut HeaderMap) {
    if let (Some(v), Some(versions)) = (version, &route.versions) {
        versions.api.decorate(v, headers);
    }
}

/// Before forwarding: removes the cache key's header and, when the route strips versions, the
/// version's header or query parameter.
pub(crate) fn strip(route: &Route, version: ResolvedVersion, parts: &mut http::request::Parts) {
    parts.headers.remove(VERSION_KEY);
    if let Some(versions) = &route.versions {
        versions
            .api
            .strip_request(version, &mut parts.headers, &mut parts.uri);
    }
}
