//! Typed readings of config strings: CIDRs, target URLs, hash keys, host and path patterns.
//!
//! Validation and the runtime both call these, so what `portcullis check` accepts is exactly
//! what `serve` builds.

use std::net::IpAddr;

use http::{HeaderName, uri::Authority};
use ipnet::IpNet;

/// A trusted-proxy entry: a CIDR (`10.0.0.0/8`) or a single address (`127.0.0.1`).
pub fn parse_cidr(text: &str) -> Result<IpNet, String> {
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    text.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
        format!("invalid CIDR or address {text:?}: expected like \"10.0.0.0/8\" or \"::1\"")
    })
}

/// The address of an upstream target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetUrl {
    /// `host:port` (port defaults to 80).
    pub authority: Authority,
}

/// Parses `http://host[:port]` (no path, query or userinfo).
pub fn parse_target_url(text: &str) -> Result<TargetUrl, String> {
    let uri: http::Uri = text
        .parse()
        .map_err(|e| format!("invalid target URL {text:?}: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "target {text:?}: https targets are not supported yet; terminate TLS in front of the target or use http"
            ));
        }
        _ => {
            return Err(format!(
                "target {text:?}: expected a URL like \"http://127.0.0.1:3000\""
            ));
        }
    }
    let authority = uri
        .authority()
        .ok_or_else(|| format!("target {text:?}: missing host"))?;
    if authority.as_str().contains('@') {
        return Err(format!(
            "target {text:?}: credentials in target URLs are not allowed"
        ));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!(
            "target {text:?}: a target is host and port only; rewrite paths with the route's add_prefix"
        ));
    }
    let authority = if authority.port().is_some() {
        authority.clone()
    } else {
        format!("{}:80", authority.host())
            .parse()
            .map_err(|e| format!("target {text:?}: {e}"))?
    };
    Ok(TargetUrl { authority })
}

/// What `consistent_hash` hashes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    /// A request header's value.
    Header(HeaderName),
    /// A cookie's value.
    Cookie(String),
    /// The client address (after trusted-proxy resolution).
    ClientIp,
}

/// Parses `header:NAME`, `cookie:NAME` or `client_ip`.
pub fn parse_hash_on(text: &str) -> Result<HashOn, String> {
    let err = || {
        format!(
            "invalid hash_on {text:?}: expected \"header:NAME\", \"cookie:NAME\" or \"client_ip\""
        )
    };
    if text == "client_ip" {
        return Ok(HashOn::ClientIp);
    }
    match text.split_once(':') {
        Some(("header", name)) => HeaderName::from_bytes(name.trim().as_bytes())
            .map(HashOn::Header)
            .map_err(|_| err()),
        Some(("cookie", name)) if !name.trim().is_empty() => {
            Ok(HashOn::Cookie(name.trim().to_owned()))
        }
        _ => Err(err()),
    }
}

/// A host condition of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// Exactly this host (lowercase, no port).
    Exact(String),
    /// Any host ending in this suffix, which starts with a dot (`.example.com`); the bare
    /// domain itself does not match, as with TLS wildcard certificates.
    Wildcard(String),
}

/// Parses `api.example.com` or `*.example.com`.
pub fn parse_host(text: &str) -> Result<HostPattern, String> {
    let lower = text.trim().to_ascii_lowercase();
    let valid_label = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
    };
    if let Some(suffix) = lower.strip_prefix("*.") {
        if valid_label(suffix) && !suffix.starts_with('.') {
            return Ok(HostPattern::Wildcard(format!(".{suffix}")));
        }
    } else if valid_label(&lower) && !lower.starts_with('.') {
        return Ok(HostPattern::Exact(lower));
    }
    Err(format!(
        "invalid host {text:?}: expected a host name like \"api.example.com\" or \"*.example.com\" (no port)"
    ))
}

/// One segment of a path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Must equal this text.
    Literal(String),
    /// Matches any one non-empty segment; the name is for documentation and logs.
    Param(String),
}

/// A path condition of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPattern {
    /// Exactly this path.
    Exact(String),
    /// Segments with `{param}` placeholders: `/api/projects/{id}`.
    Template(Vec<Segment>),
    /// This prefix on a segment boundary (`/api` takes `/api`, `/api/`, `/api/x`).
    Prefix(String),
}

/// Parses a route's `path` (exact or template).
pub fn parse_path(text: &str) -> Result<PathPattern, String> {
    check_path_syntax(text)?;
    if !text.contains('{') && !text.contains('}') {
        return Ok(PathPattern::Exact(text.to_owned()));
    }
    let mut segments = Vec::new();
    for seg in text[1..].split('/') {
        if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            if name.is_empty() || name.contains(['{', '}']) {
                return Err(format!(
                    "invalid path {text:?}: parameter names must be like {{id}}"
                ));
            }
            segments.push(Segment::Param(name.to_owned()));
        } else if seg.contains(['{', '}']) {
            return Err(format!(
                "invalid path {text:?}: a parameter must be a whole segment, like /projects/{{id}}"
            ));
        } else {
            segments.push(Segment::Literal(seg.to_owned()));
        }
    }
    Ok(PathPattern::Template(segments))
}

/// Parses a route's `path_prefix`.
pub fn parse_path_prefix(text: &str) -> Result<PathPattern, String> {
    check_path_syntax(text)?;
    if text.contains(['{', '}']) {
        return Err(format!(
            "invalid path_prefix {text:?}: parameters are only allowed in `path`"
        ));
    }
    Ok(PathPattern::Prefix(text.trim_end_matches('/').to_owned()))
}

/// Checks that a configured path or prefix starts with `/` and holds only URI path characters.
pub fn check_path_syntax(text: &str) -> Result<(), String> {
    if !text.starts_with('/') {
        return Err(format!("invalid path {text:?}: must start with '/'"));
    }
    if text.contains(['?', '#', ' ']) || text.split('/').any(|s| s == "." || s == "..") {
        return Err(format!(
            "invalid path {text:?}: no query, fragment, spaces or dot segments"
        ));
    }
    Ok(())
}

/// A header name as written in config (any case); returned lowercase.
pub fn parse_header_name(text: &str) -> Result<http::HeaderName, String> {
    http::HeaderName::from_bytes(text.trim().as_bytes())
        .map_err(|_| format!("{text:?} is not a valid header name"))
}

/// A rate: `N/unit` with unit `s`, `sec`, `second`, `m`, `min`, `minute`, `h`, `hour`, `d`,
/// `day`, or `N/DURATION` (`100/15m`). Returns N and the period.
pub fn parse_rate(text: &str) -> Result<(u64, std::time::Duration), String> {
    let err = || {
        format!(
            "invalid rate {text:?}: expected requests per period, like \"100/h\", \"10/s\" or \"500/15m\""
        )
    };
    let (n, per) = text.split_once('/').ok_or_else(err)?;
    let n: u64 = n.trim().parse().map_err(|_| err())?;
    if n == 0 {
        return Err(format!(
            "invalid rate {text:?}: the count must be at least 1"
        ));
    }
    let per = per.trim();
    let period = match per {
        "s" | "sec" | "second" => std::time::Duration::from_secs(1),
        "m" | "min" | "minute" => std::time::Duration::from_secs(60),
        "h" | "hour" => std::time::Duration::from_secs(3600),
        "d" | "day" => std::time::Duration::from_secs(86_400),
        other => crate::Duration::parse(other).map_err(|_| err())?.0,
    };
    if period < std::time::Duration::from_millis(1) {
        return Err(format!(
            "invalid rate {text:?}: the period must be at least 1ms"
        ));
    }
    Ok((n, period))
}

/// One part of a rate limit's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitKey {
    /// `ip`: the client IP (trusted-proxy rules applied).
    Ip,
    /// `api_key`: the API key header's value.
    ApiKey,
    /// `consumer`: the authenticated consumer (else the API key, else the IP).
    Consumer,
    /// `tier`: the consumer's tier.
    Tier,
    /// `route`: nothing; one limit for the whole route (scope).
    Route,
    /// `header:NAME`: a request header's value.
    Header(HeaderName),
}

/// Parses a rate limit key part.
pub fn parse_limit_key(text: &str) -> Result<LimitKey, String> {
    Ok(match text {
        "ip" | "client_ip" => LimitKey::Ip,
        "api_key" => LimitKey::ApiKey,
        "consumer" => LimitKey::Consumer,
        "tier" => LimitKey::Tier,
        "route" | "global" => LimitKey::Route,
        other => match other.strip_prefix("header:") {
            Some(name) => LimitKey::Header(parse_header_name(name)?),
            None => {
                return Err(format!(
                    "unknown limit key {text:?}: expected ip, api_key, consumer, tier, route or header:NAME"
                ));
            }
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_units_and_durations() {
        let secs = |n, s| Ok((n, std::time::Duration::from_secs(s)));
        assert_eq!(parse_rate("100/h"), secs(100, 3600));
        assert_eq!(parse_rate("10/s"), secs(10, 1));
        assert_eq!(parse_rate("5 / minute"), secs(5, 60));
        assert_eq!(parse_rate("500/15m"), secs(500, 900));
        for bad in ["100", "0/s", "x/s", "10/fortnight", "10/0s"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cidrs_accept_networks_and_bare_addresses() {
        assert_eq!(parse_cidr("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_cidr("::1").unwrap().to_string(), "::1/128");
        assert!(parse_cidr("10.0.0.0/33").is_err());
    }

    #[test]
    fn target_urls_default_the_port_and_refuse_paths() {
        assert_eq!(
            parse_target_url("http://localhost").unwrap().authority,
            "localhost:80"
        );
        assert_eq!(
            parse_target_url("http://127.0.0.1:3000/")
                .unwrap()
                .authority,
            "127.0.0.1:3000"
        );
        assert!(parse_target_url("http://h:1/x").is_err());
        assert!(parse_target_url("ftp://h:1").is_err());
        assert!(
            parse_target_url("https://h:1")
                .unwrap_err()
                .contains("not supported yet")
        );
    }

    #[test]
    fn hosts_and_wildcards() {
        assert_eq!(
            parse_host("API.Example.com").unwrap(),
            HostPattern::Exact("api.example.com".into())
        );
        assert_eq!(
            parse_host("*.example.com").unwrap(),
            HostPattern::Wildcard(".example.com".into())
        );
        for bad in ["", "*.", "a:80", "*a.com", "a b"] {
            assert!(parse_host(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn paths_templates_and_prefixes() {
        assert_eq!(
            parse_path("/health").unwrap(),
            PathPattern::Exact("/health".into())
        );
        assert_eq!(
            parse_path("/p/{id}/x").unwrap(),
            PathPattern::Template(vec![
                Segment::Literal("p".into()),
                Segment::Param("id".into()),
                Segment::Literal("x".into())
            ])
        );
        assert!(parse_path("/p/a{id}").is_err());
        assert!(parse_path("p").is_err());
        assert!(parse_path("/a/../b").is_err());
        assert_eq!(
            parse_path_prefix("/api/").unwrap(),
            PathPattern::Prefix("/api".into())
        );
        assert_eq!(
            parse_path_prefix("/").unwrap(),
            PathPattern::Prefix(String::new())
        );
    }

    #[test]
    fn hash_on_forms() {
        assert_eq!(parse_hash_on("client_ip").unwrap(), HashOn::ClientIp);
        assert_eq!(
            parse_hash_on("header:X-User").unwrap(),
            HashOn::Header(HeaderName::from_static("x-user"))
        );
        assert_eq!(
            parse_hash_on("cookie:sid").unwrap(),
            HashOn::Cookie("sid".into())
        );
        assert!(parse_hash_on("query:x").is_err());
    }
}
