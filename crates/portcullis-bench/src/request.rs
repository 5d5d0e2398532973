//! What is sent: the target origin, request kinds (method, path template, headers, body,
//! checks) and the weighted mix that picks a kind for each request.
//!
//! A kind without placeholders is built once; each request then clones its parts (`Bytes` and
//! `Uri` clones are reference counts), so quick mode does no formatting per request.

use std::sync::Arc;

use bytes::Bytes;
use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version,
    uri::{Authority, PathAndQuery, Scheme},
};
use http_body_util::Full;

use crate::{
    check::Check,
    http1_wire,
    template::{Template, Variables},
};

/// HTTP version spoken to the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpVersion {
    /// HTTP/1.1, one request in flight per connection.
    Http1,
    /// HTTP/2: prior knowledge (h2c) over `http://`, ALPN `h2` over `https://`.
    Http2,
}

impl HttpVersion {
    /// `1.1` or `2`, as in reports.
    pub fn label(self) -> &'static str {
        match self {
            HttpVersion::Http1 => "1.1",
            HttpVersion::Http2 => "2",
        }
    }
}

/// The origin all requests go to.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http` or `https`.
    pub scheme: Scheme,
    /// `host:port` as written.
    pub authority: Authority,
    /// Host name (for DNS and TLS server name).
    pub host: String,
    /// Port (explicit or the scheme's default).
    pub port: u16,
    /// HTTP version.
    pub version: HttpVersion,
}

impl Target {
    /// The origin of an absolute `http://` or `https://` URL, and the URL's path and query.
    pub fn from_url(url: &str, version: HttpVersion) -> Result<(Self, String), String> {
        if !url.contains("://") {
            return Err(format!(
                "invalid URL {url:?}: expected http:// or https:// followed by a host"
            ));
        }
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("invalid URL {url:?}: {e}"))?;
        let scheme = uri
            .scheme()
            .cloned()
            .ok_or_else(|| format!("invalid URL {url:?}: expected http:// or https://"))?;
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            other => {
                return Err(format!(
                    "invalid URL {url:?}: scheme {other:?} is not supported (http or https)"
                ));
            }
        };
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("invalid URL {url:?}: no host"))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if host.is_empty() {
            return Err(format!("invalid URL {url:?}: no host"));
        }
        let port = authority.port_u16().unwrap_or(default_port);
        let path = uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
        Ok((
            Self {
                scheme,
                authority,
                host,
                port,
                version,
            },
            path,
        ))
    }

    /// Whether connections use TLS.
    pub fn is_tls(&self) -> bool {
        self.scheme == Scheme::HTTPS
    }

    /// `scheme://authority`.
    pub fn origin(&self) -> String {
        format!("{}://{}", self.scheme, self.authority)
    }
}

/// One kind of request in the mix.
#[derive(Debug, Clone)]
pub struct RequestKind {
    /// Name in reports and thresholds (`{name}`).
    pub name: Arc<str>,
    /// Relative weight in the mix.
    pub weight: u32,
    /// Method.
    pub method: Method,
    /// Path and query template (starts with `/`).
    pub path: Template,
    /// Header templates.
    pub headers: Vec<(HeaderName, Template)>,
    /// Body template.
    pub body: Option<Template>,
    /// Checks on each response.
    pub checks: Vec<Check>,
}

impl RequestKind {
    /// Whether the body must be kept for checks.
    pub fn needs_body(&self) -> bool {
        self.checks.iter().any(Check::needs_body)
    }
}

/// A kind ready to send: fully built when it has no placeholders.
#[derive(Debug)]
pub(crate) struct PreparedKind {
    pub(crate) kind: RequestKind,
    fixed: Option<(Uri, HeaderMap, Bytes)>,
    /// The fixed request encoded for [`crate::http1_wire`].
    fixed_wire: Option<Vec<u8>>,
    host: HeaderValue,
}

/// Per-worker buffers for rendering templated requests.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    values: Vec<String>,
    text: String,
}

impl PreparedKind {
    /// Prepares `kind` for `target`; checks that the rendered request is valid once.
    pub(crate) fn new(
        kind: RequestKind,
        target: &Target,
        vars: &Variables,
    ) -> Result<Self, String> {
        let host = HeaderValue::from_str(target.authority.as_str())
            .map_err(|e| format!("invalid host: {e}"))?;
        let mut prepared = Self {
            kind,
            fixed: None,
            fixed_wire: None,
            host,
        };
        let mut scratch = Scratch::default();
        let mut rng = fastrand::Rng::with_seed(0);
        let (uri, headers, body) = prepared
            .render(target, vars, &mut scratch, &mut rng)
            .map_err(|e| format!("request {:?}: {e}", prepared.kind.name))?;
        let literal = prepared.kind.path.as_literal().is_some()
            && prepared
                .kind
                .headers
                .iter()
                .all(|(_, t)| t.as_literal().is_some())
            && prepared
                .kind
                .body
                .as_ref()
                .is_none_or(|b| b.as_literal().is_some());
        if literal {
            let mut wire = Vec::new();
            http1_wire::encode(
                &prepared.kind.method,
                &uri.to_string(),
                &headers,
                &body,
                &mut wire,
            );
            prepared.fixed_wire = Some(wire);
            prepared.fixed = Some((uri, headers, body));
        }
        Ok(prepared)
    }

    /// The request encoded for HTTP/1.1 on the wire (target HTTP/1.1): the pre-encoded bytes
    /// of a fixed kind, or a rendering into `out`.
    pub(crate) fn wire<'a>(
        &'a self,
        target: &Target,
        vars: &Variables,
        scratch: &mut Scratch,
        rng: &mut fastrand::Rng,
        out: &'a mut Vec<u8>,
    ) -> Result<&'a [u8], String> {
        if let Some(bytes) = &self.fixed_wire {
            return Ok(bytes);
        }
        let (uri, headers, body) = self.render(target, vars, scratch, rng)?;
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        http1_wire::encode(&self.kind.method, path, &headers, &body, out);
        Ok(out)
    }

    /// Builds one request.
    pub(crate) fn build(
        &self,
        target: &Target,
        vars: &Variables,
        scratch: &mut Scratch,
        rng: &mut fastrand::Rng,
    ) -> Result<Request<Full<Bytes>>, String> {
        let (uri, headers, body) = match &self.fixed {
            Some((uri, headers, body)) => (uri.clone(), headers.clone(), body.clone()),
            None => self.render(target, vars, scratch, rng)?,
        };
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = self.kind.method.clone();
        *req.uri_mut() = uri;
        *req.headers_mut() = headers;
        if target.version == HttpVersion::Http2 {
            *req.version_mut() = Version::HTTP_2;
        }
        Ok(req)
    }

    fn render(
        &self,
        target: &Target,
        vars: &Variables,
        scratch: &mut Scratch,
        rng: &mut fastrand::Rng,
    ) -> Result<(Uri, HeaderMap, Bytes), String> {
        vars.draw_all(rng, &mut scratch.values);
        let text = &mut scratch.text;
        text.clear();
        self.kind.path.render(&scratch.values, text);
        if !text.starts_with('/') {
            return Err(format!("path {text:?} must start with '/'"));
        }
        let path: PathAndQuery = text
            .parse()
            .map_err(|e| format!("invalid path {text:?}: {e}"))?;
        let uri = match target.version {
            HttpVersion::Http1 => Uri::from(path),
            HttpVersion::Http2 => Uri::builder()
                .scheme(target.scheme.clone())
                .authority(target.authority.clone())
                .path_and_query(path)
                .build()
                .map_err(|e| format!("invalid URL: {e}"))?,
        };
        let mut headers = HeaderMap::with_capacity(self.kind.headers.len() + 1);
        if target.version == HttpVersion::Http1 {
            headers.insert(http::header::HOST, self.host.clone());
        }
        for (name, template) in &self.kind.headers {
            text.clear();
            template.render(&scratch.values, text);
            let value = HeaderValue::from_str(text)
                .map_err(|_| format!("header {name}: invalid value {text:?}"))?;
            if name == http::header::HOST {
                // A Host given by the user replaces the one derived from the URL.
                headers.insert(name.clone(), value);
            } else {
                headers.append(name.clone(), value);
            }
        }
        let body = match &self.kind.body {
            Some(template) => {
                text.clear();
                template.render(&scratch.values, text);
                Bytes::copy_from_slice(text.as_bytes())
            }
            None => Bytes::new(),
        };
        Ok((uri, headers, body))
    }
}

/// The weighted mix of request kinds: one table of cumulative weights for the kinds' own
/// weights, and one more for each stage that names a mix of its own.
#[derive(Debug)]
pub(crate) struct Mix {
    pub(crate) kinds: Vec<PreparedKind>,
    /// Cumulative weights, one table per distinct mix; table 0 is the kinds' own weights.
    tables: Vec<Vec<u64>>,
    /// The table each stage uses; empty when every stage uses table 0.
    by_stage: Vec<usize>,
}

impl Mix {
    /// A mix of prepared kinds (at least one, weights above zero), with the per-stage weights
    /// of [`crate::plan::Plan::stage_weights`] (already validated against the kinds).
    pub(crate) fn new(
        kinds: Vec<PreparedKind>,
        stage_weights: &[Option<Vec<u32>>],
    ) -> Result<Self, String> {
        if kinds.is_empty() {
            return Err("no requests to send".to_owned());
        }
        if let Some(k) = kinds.iter().find(|k| k.kind.weight == 0) {
            return Err(format!("request {:?}: weight must be above 0", k.kind.name));
        }
        let cumulative = |weights: &mut dyn Iterator<Item = u32>| -> Vec<u64> {
            weights
                .scan(0u64, |total, w| {
                    *total += u64::from(w);
                    Some(*total)
                })
                .collect()
        };
        let own = cumulative(&mut kinds.iter().map(|k| k.kind.weight));
        let mut tables = vec![own];
        let mut by_stage = Vec::with_capacity(stage_weights.len());
        for weights in stage_weights {
            let index = match weights {
                None => 0,
                Some(w) if w.len() != kinds.len() => {
                    return Err(format!(
                        "a stage mix has {} weights for {} requests",
                        w.len(),
                        kinds.len()
                    ));
                }
                Some(w) => {
                    let table = cumulative(&mut w.iter().copied());
                    if table.last().is_none_or(|&t| t == 0) {
                        return Err("a stage mix gives no request a weight above 0".to_owned());
                    }
                    match tables.iter().position(|t| *t == table) {
                        Some(i) => i,
                        None => {
                            tables.push(table);
                            tables.len() - 1
                        }
                    }
                }
            };
            by_stage.push(index);
        }
        if by_stage.iter().all(|&i| i == 0) {
            by_stage.clear();
        }
        Ok(Self {
            kinds,
            tables,
            by_stage,
        })
    }

    /// Whether the mix changes from stage to stage (the caller then passes the stage).
    pub(crate) fn varies_by_stage(&self) -> bool {
        !self.by_stage.is_empty()
    }

    /// Picks a kind's index by weight, with the weights of `stage` (0-based; a stage past the
    /// last uses the last one's).
    pub(crate) fn pick(&self, rng: &mut fastrand::Rng, stage: usize) -> usize {
        if self.kinds.len() == 1 {
            return 0;
        }
        let table = match self.by_stage.last() {
            None => &self.tables[0],
            Some(&last) => &self.tables[self.by_stage.get(stage).copied().unwrap_or(last)],
        };
        let total = table.last().copied().unwrap_or(1);
        let x = rng.u64(..total);
        // The first kind whose cumulative weight passes x: a kind of weight 0 adds nothing to
        // the running total, so it is never the first to pass.
        table.partition_point(|&c| c <= x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_an_origin_and_a_path() {
        let (t, path) =
            Target::from_url("http://127.0.0.1:8080/a?b=1", HttpVersion::Http1).unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, path.as_str()),
            ("127.0.0.1", 8080, "/a?b=1")
        );
        let (t, path) = Target::from_url("https://example.com", HttpVersion::Http2).unwrap();
        assert_eq!((t.port, path.as_str(), t.is_tls()), (443, "/", true));
        let (t, _) = Target::from_url("http://[::1]:9/", HttpVersion::Http1).unwrap();
        assert_eq!(t.host, "::1");
    }

    fn kinds(names: &[&str]) -> Vec<PreparedKind> {
        let (target, _) = Target::from_url("http://127.0.0.1:1/", HttpVersion::Http1).unwrap();
        let vars = Variables::default();
        names
            .iter()
            .map(|name| {
                let kind = RequestKind {
                    name: (*name).into(),
                    weight: 1,
                    method: Method::GET,
                    path: Template::literal(&format!("/{name}")),
                    headers: Vec::new(),
                    body: None,
                    checks: Vec::new(),
                };
                PreparedKind::new(kind, &target, &vars).unwrap()
            })
            .collect()
    }

    fn counts(mix: &Mix, stage: usize, draws: usize) -> Vec<usize> {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut counts = vec![0; mix.kinds.len()];
        for _ in 0..draws {
            counts[mix.pick(&mut rng, stage)] += 1;
        }
        counts
    }

    #[test]
    fn each_stage_draws_from_its_own_weights() {
        // Stage 0: the kinds' own weights (1:1:1); stage 1: only `b`; stage 2: `a` and `c` 1:3.
        let stages = [None, Some(vec![0, 5, 0]), Some(vec![1, 0, 3])];
        let mix = Mix::new(kinds(&["a", "b", "c"]), &stages).unwrap();
        assert!(mix.varies_by_stage());
        let own = counts(&mix, 0, 3000);
        assert!(own.iter().all(|&n| (900..=1100).contains(&n)), "{own:?}");
        assert_eq!(counts(&mix, 1, 1000), [0, 1000, 0]);
        let last = counts(&mix, 2, 4000);
        assert_eq!(last[1], 0, "{last:?}");
        assert!((2850..=3150).contains(&last[2]), "{last:?}");
        assert_eq!(
            counts(&mix, 9, 1000)[1],
            0,
            "past the last stage: the last stage's mix"
        );
    }

    #[test]
    fn stages_without_a_mix_of_their_own_keep_the_single_table() {
        let mix = Mix::new(kinds(&["a", "b"]), &[None, None]).unwrap();
        assert!(!mix.varies_by_stage());
        // A stage mix equal to the kinds' own weights is no change either.
        let mix = Mix::new(kinds(&["a", "b"]), &[Some(vec![1, 1]), None]).unwrap();
        assert!(!mix.varies_by_stage());
        let stages = [Some(vec![2, 1]), None, Some(vec![2, 1])];
        let mix = Mix::new(kinds(&["a", "b"]), &stages).unwrap();
        assert!(mix.varies_by_stage());
        assert_eq!(mix.tables.len(), 2, "equal stage mixes share one table");
        assert_eq!(mix.by_stage, [1, 0, 1]);
    }

    #[test]
    fn stage_mixes_that_cannot_be_drawn_from_are_refused() {
        let err = Mix::new(kinds(&["a", "b"]), &[Some(vec![0, 0])]).unwrap_err();
        assert!(err.contains("no request a weight above 0"), "{err}");
        let err = Mix::new(kinds(&["a", "b"]), &[Some(vec![1])]).unwrap_err();
        assert!(err.contains("1 weights for 2 requests"), "{err}");
    }

    #[test]
    fn bad_urls_say_why() {
        let err = |u| Target::from_url(u, HttpVersion::Http1).unwrap_err();
        assert!(
            err("localhost:8080/x").contains("expected http:// or https://"),
            "{}",
            err("localhost:8080/x")
        );
        assert!(err("ftp://h/").contains("not supported"));
        assert!(err("http://exa mple/").contains("invalid URL"));
        assert!(err("/relative").contains("expected http"));
    }
}
