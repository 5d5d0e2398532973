//! Routing: host, path and method conditions, most specific route first.
//!
//! Routes are sorted once, at build time, by specificity: host first (exact, then wildcard with
//! the longest suffix, then any), then path (exact, then templates with more literal segments,
//! then the longest prefix, then any), then whether methods are restricted; ties keep config
//! order. A lookup takes the first route that matches. When some route matches host and path but
//! not the method, the answer is 405 with `Allow` rather than 404.

use http::Method;
use portcullis_config::{HostPattern, PathPattern, Segment};

/// Conditions of one route.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    /// Host condition; `None` takes any host.
    pub host: Option<HostPattern>,
    /// Path condition; `None` takes any path.
    pub path: Option<PathPattern>,
    /// Allowed methods; empty takes all. `GET` also allows `HEAD`.
    pub methods: Vec<Method>,
}

impl Matcher {
    fn host_matches(&self, host: Option<&str>) -> bool {
        match (&self.host, host) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(HostPattern::Exact(h)), Some(host)) => h.eq_ignore_ascii_case(host),
            (Some(HostPattern::Wildcard(suffix)), Some(host)) => {
                host.len() > suffix.len()
                    && host.as_bytes()[host.len() - suffix.len()..]
                        .eq_ignore_ascii_case(suffix.as_bytes())
            }
        }
    }

    fn path_matches(&self, path: &str) -> bool {
        match &self.path {
            None => true,
            Some(PathPattern::Exact(p)) => p == path,
            Some(PathPattern::Prefix(p)) => {
                path.starts_with(p.as_str())
                    && matches!(path.as_bytes().get(p.len()), None | Some(b'/'))
            }
            Some(PathPattern::Template(segments)) => {
                let mut parts = path.strip_prefix('/').unwrap_or(path).split('/');
                let all = segments.iter().all(|seg| match (seg, parts.next()) {
                    (Segment::Literal(l), Some(p)) => l == p,
                    (Segment::Param(_), Some(p)) => !p.is_empty(),
                    (_, None) => false,
                });
                all && parts.next().is_none()
            }
        }
    }

    fn method_matches(&self, method: &Method) -> bool {
        self.methods.is_empty()
            || self.methods.contains(method)
            || (method == Method::HEAD && self.methods.contains(&Method::GET))
    }

    /// Sort key: larger is more specific.
    fn specificity(&self) -> (u8, usize, u8, usize, u8) {
        let (host_rank, host_len) = match &self.host {
            Some(HostPattern::Exact(h)) => (2, h.len()),
            Some(HostPattern::Wildcard(s)) => (1, s.len()),
            None => (0, 0),
        };
        let (path_rank, path_score) = match &self.path {
            Some(PathPattern::Exact(p)) => (3, p.len()),
            Some(PathPattern::Template(segs)) => {
                let literals = segs
                    .iter()
                    .filter(|s| matches!(s, Segment::Literal(_)))
                    .count();
                (2, literals * 1000 + segs.len())
            }
            Some(PathPattern::Prefix(p)) => (1, p.len()),
            None => (0, 0),
        };
        (
            host_rank,
            host_len,
            path_rank,
            path_score,
            u8::from(!self.methods.is_empty()),
        )
    }
}

/// The outcome of a lookup.
#[derive(Debug)]
pub enum Lookup<'a, T> {
    /// This route takes the request.
    Found(&'a T),
    /// Routes match host and path, but only for these methods.
    MethodNotAllowed(Vec<Method>),
    /// No route matches.
    NotFound,
}

/// Routes sorted by specificity.
#[derive(Debug)]
pub struct Router<T> {
    routes: Vec<(Matcher, T)>,
}

impl<T> Router<T> {
    /// Sorts `routes` (given in config order) by specificity.
    pub fn new(routes: Vec<(Matcher, T)>) -> Self {
        let mut indexed: Vec<(usize, (Matcher, T))> = routes.into_iter().enumerate().collect();
        indexed.sort_by(|(ia, (a, _)), (ib, (b, _))| {
            b.specificity().cmp(&a.specificity()).then(ia.cmp(ib))
        });
        Self {
            routes: indexed.into_iter().map(|(_, r)| r).collect(),
        }
    }

    /// Finds the route for a request. `host` is lowercase-insensitive and without port; `path`
    /// is already normalized.
    pub fn lookup(&self, host: Option<&str>, path: &str, method: &Method) -> Lookup<'_, T> {
        let mut allowed: Vec<Method> = Vec::new();
        let mut any_path_match = false;
        for (m, route) in &self.routes {
            if !m.host_matches(host) || !m.path_matches(path) {
                continue;
            }
            if m.method_matches(method) {
                return Lookup::Found(route);
            }
            any_path_match = true;
            for method in &m.methods {
                if !allowed.contains(method) {
                    allowed.push(method.clone());
                }
                if method == Method::GET && !allowed.contains(&Method::HEAD) {
                    allowed.push(Method::HEAD);
                }
            }
        }
        if any_path_match {
            Lookup::MethodNotAllowed(allowed)
        } else {
            Lookup::NotFound
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_config::{parse_host, parse_path, parse_path_prefix};

    fn m(
        host: Option<&str>,
        path: Option<&str>,
        prefix: Option<&str>,
        methods: &[&str],
    ) -> Matcher {
        Matcher {
            host: host.map(|h| parse_host(h).unwrap()),
            path: path
                .map(|p| parse_path(p).unwrap())
                .or_else(|| prefix.map(|p| parse_path_prefix(p).unwrap())),
            methods: methods.iter().map(|s| s.parse().unwrap()).collect(),
        }
    }

    fn found<'a>(
        r: &'a Router<&'static str>,
        host: Option<&str>,
        path: &str,
        method: &str,
    ) -> &'a str {
        match r.lookup(host, path, &method.parse().unwrap()) {
            Lookup::Found(name) => name,
            other => panic!("{method} {host:?} {path}: {other:?}"),
        }
    }

    #[test]
    fn most_specific_path_wins_regardless_of_order() {
        let r = Router::new(vec![
            (m(None, None, Some("/"), &[]), "root"),
            (m(None, None, Some("/api"), &[]), "api"),
            (m(None, Some("/api/projects/{id}"), None, &[]), "project"),
            (
                m(None, Some("/api/projects/archived"), None, &[]),
                "archived",
            ),
            (m(None, None, Some("/api/projects"), &[]), "projects"),
        ]);
        assert_eq!(found(&r, None, "/", "GET"), "root");
        assert_eq!(found(&r, None, "/apix", "GET"), "root");
        assert_eq!(found(&r, None, "/api", "GET"), "api");
        assert_eq!(found(&r, None, "/api/users", "GET"), "api");
        assert_eq!(found(&r, None, "/api/projects", "GET"), "projects");
        assert_eq!(found(&r, None, "/api/projects/7", "GET"), "project");
        assert_eq!(found(&r, None, "/api/projects/archived", "GET"), "archived");
        assert_eq!(found(&r, None, "/api/projects/7/tasks", "GET"), "projects");
    }

    #[test]
    fn exact_host_beats_wildcard_beats_any() {
        let r = Router::new(vec![
            (m(None, None, None, &[]), "any"),
            (m(Some("*.example.com"), None, None, &[]), "wild"),
            (m(Some("*.eu.example.com"), None, None, &[]), "eu"),
            (m(Some("api.example.com"), None, None, &[]), "api"),
        ]);
        assert_eq!(found(&r, Some("api.example.com"), "/", "GET"), "api");
        assert_eq!(found(&r, Some("API.Example.COM"), "/", "GET"), "api");
        assert_eq!(found(&r, Some("www.example.com"), "/", "GET"), "wild");
        assert_eq!(found(&r, Some("x.eu.example.com"), "/", "GET"), "eu");
        assert_eq!(found(&r, Some("example.com"), "/", "GET"), "any");
        assert_eq!(found(&r, None, "/", "GET"), "any");
    }

    #[test]
    fn methods_narrow_and_get_allows_head() {
        let r = Router::new(vec![
            (m(None, None, Some("/items"), &["GET"]), "read"),
            (m(None, None, Some("/items"), &["POST", "PUT"]), "write"),
        ]);
        assert_eq!(found(&r, None, "/items", "GET"), "read");
        assert_eq!(found(&r, None, "/items", "HEAD"), "read");
        assert_eq!(found(&r, None, "/items/1", "PUT"), "write");
        match r.lookup(None, "/items", &Method::DELETE) {
            Lookup::MethodNotAllowed(allow) => {
                assert_eq!(
                    allow,
                    [Method::GET, Method::HEAD, Method::POST, Method::PUT]
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            r.lookup(None, "/other", &Method::GET),
            Lookup::NotFound
        ));
    }

    #[test]
    fn equal_specificity_keeps_config_order() {
        let r = Router::new(vec![
            (m(None, None, Some("/a"), &[]), "first"),
            (m(None, None, Some("/a"), &[]), "second"),
        ]);
        assert_eq!(found(&r, None, "/a/b", "GET"), "first");
    }

    #[test]
    fn templates_need_the_same_number_of_nonempty_segments() {
        let r = Router::new(vec![(m(None, Some("/p/{id}"), None, &[]), "p")]);
        assert_eq!(found(&r, None, "/p/1", "GET"), "p");
        for miss in ["/p", "/p/", "/p/1/2", "/q/1"] {
            assert!(
                matches!(r.lookup(None, miss, &Method::GET), Lookup::NotFound),
                "{miss}"
            );
        }
    }
}
