//! A route at run time: where it forwards and how it rewrites the request on the way.

use std::{borrow::Cow, sync::Arc, time::Duration};

use portcullis_auth::ResolvedVersion;
use portcullis_cache::RoutePolicy;
use portcullis_observe::RouteMetrics;

use crate::{breaker::NamedBreaker, upstream::Upstream};

/// A route built from config.
#[derive(Debug)]
pub struct Route {
    /// Name from config.
    pub name: Arc<str>,
    /// Where requests go.
    pub upstream: Arc<Upstream>,
    /// Forward the client's `Host` instead of the target's authority.
    pub preserve_host: bool,
    /// Prefix removed from the path (no trailing slash).
    pub strip_prefix: Option<String>,
    /// Prefix added after stripping (no trailing slash).
    pub add_prefix: Option<String>,
    /// Limit on waiting for the response head.
    pub timeout: Duration,
    /// The whole request's deadline (arrival to response head), when configured.
    pub deadline: Option<Duration>,
    /// The route's own circuit breaker, besides the upstream's.
    pub breaker: Option<Arc<NamedBreaker>>,
    /// What answers instead of the gateway's own 502/503/504.
    pub(crate) fallback: Option<crate::fallback::Fallback>,
    /// How the route caches, if it does.
    pub cache: Option<Arc<RoutePolicy>>,
    /// The route's request metrics.
    pub metrics: Arc<RouteMetrics>,
    /// The route's rate limits, if any.
    pub(crate) limit: Option<Arc<crate::limit::RouteLimit>>,
    /// Credentials and ACL checked before the cache or the upstream sees the request.
    pub security: portcullis_auth::RouteSecurity,
    /// API versions, when the route has `versioning`.
    pub(crate) versions: Option<Box<crate::version::RouteVersions>>,
}

impl Route {
    /// The path to send upstream. Stripping happens on segment boundaries only.
    pub fn rewrite_path<'a>(&self, path: &'a str) -> Cow<'a, str> {
        self.rewrite_path_for(path, None)
    }

    /// `path` after `strip_prefix` (on a segment boundary; the whole path when it does not
    /// start with the prefix): where a path version segment is looked for.
    pub(crate) fn after_strip<'a>(&self, path: &'a str) -> &'a str {
        if let Some(strip) = &self.strip_prefix
            && let Some(after) = path.strip_prefix(strip.as_str())
            && (after.is_empty() || after.starts_with('/'))
        {
            return after;
        }
        path
    }

    /// The upstream and timeout of `version` (the route's own without one).
    pub(crate) fn target_for(
        &self,
        version: Option<ResolvedVersion>,
    ) -> (&Arc<Upstream>, Duration) {
        match (version, &self.versions) {
            (Some(v), Some(versions)) => {
                let t = &versions.targets[v.index()];
                (&t.upstream, t.timeout)
            }
            _ => (&self.upstream, self.timeout),
        }
    }

    /// The path to send upstream for a request of `version`: stripped of `strip_prefix` (and,
    /// with `versioning.strip`, of a version path segment), then prefixed with the version's
    /// `add_prefix`, else the route's.
    pub(crate) fn rewrite_path_for<'a>(
        &self,
        path: &'a str,
        version: Option<ResolvedVersion>,
    ) -> Cow<'a, str> {
        let mut rest = self.after_strip(path);
        let mut add_prefix = self.add_prefix.as_ref();
        if let (Some(v), Some(versions)) = (version, &self.versions) {
            rest = versions.api.strip_path(v, rest);
            if let Some(p) = &versions.targets[v.index()].add_prefix {
                add_prefix = Some(p);
            }
        }
        match (add_prefix, rest.is_empty()) {
            (None, false) if rest.len() == path.len() => Cow::Borrowed(path),
            (None, false) => Cow::Borrowed(rest),
            (None, true) => Cow::Borrowed("/"),
            (Some(add), true) => Cow::Owned(if add.is_empty() {
                "/".to_owned()
            } else {
                add.clone()
            }),
            (Some(add), false) => Cow::Owned(format!("{add}{rest}")),
        }
    }
}

/// Trims a configured prefix to its canonical form: no trailing slash (`/` becomes empty).
pub(crate) fn canonical_prefix(p: &str) -> String {
    p.trim_end_matches('/').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_config::UpstreamConfig;

    fn route(strip: Option<&str>, add: Option<&str>) -> Route {
        let up: UpstreamConfig =
            toml::from_str("name = \"u\"\ntargets = [{ url = \"http://127.0.0.1:1\" }]").unwrap();
        let metrics = Arc::new(portcullis_observe::Metrics::builder().build());
        Route {
            name: Arc::from("r"),
            upstream: Arc::new(Upstream::from_config(&up, &metrics).unwrap()),
            metrics: metrics.route("r"),
            limit: None,
            preserve_host: false,
            strip_prefix: strip.map(canonical_prefix),
            add_prefix: add.map(canonical_prefix),
            timeout: Duration::from_secs(1),
            deadline: None,
            breaker: None,
            fallback: None,
            cache: None,
            security: portcullis_auth::RouteSecurity::none(),
            versions: None,
        }
    }

    #[tokio::test]
    async fn strip_and_add_prefixes_on_segment_boundaries() {
        let r = route(Some("/api/"), Some("/v2"));
        assert_eq!(r.rewrite_path("/api/users"), "/v2/users");
        assert_eq!(r.rewrite_path("/api"), "/v2");
        assert_eq!(r.rewrite_path("/apix"), "/v2/apix");
        let r = route(Some("/api"), None);
        assert_eq!(r.rewrite_path("/api/users/1"), "/users/1");
        assert_eq!(r.rewrite_path("/api"), "/");
        assert_eq!(r.rewrite_path("/other"), "/other");
        let r = route(None, Some("/"));
        assert_eq!(r.rewrite_path("/x"), "/x");
    }
}
