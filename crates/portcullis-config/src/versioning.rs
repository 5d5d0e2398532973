//! A route's `versioning`: where the API version is read from (a header, a media type
//! parameter of `Accept`, a query parameter, the path's first segment), the default, and per
//! version its upstream, path prefix and deprecation dates.
//!
//! Kept apart from `model.rs` like `security.rs`: the model holds the hook
//! (`RouteConfig::versioning`), validation lives here and is called once from `validate.rs`.

use std::{collections::BTreeMap, collections::HashSet, path::Path};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::{Config, ConfigError, diagnostics::closest, values};

/// Where a route reads the API version from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionSource {
    /// The `header` (default `Accept-Version: 2`).
    Header,
    /// A parameter of a media type in `Accept` (`application/vnd.example+json; version=2`).
    MediaType,
    /// The `query` parameter (`?version=2`).
    Query,
    /// The first path segment (after the route's `strip_prefix`): `v` and the version
    /// (`/v2/orders`).
    Path,
}

impl VersionSource {
    /// The name used in config.
    pub fn name(self) -> &'static str {
        match self {
            Self::Header => "header",
            Self::MediaType => "media_type",
            Self::Query => "query",
            Self::Path => "path",
        }
    }
}

/// `versioning = { ... }` (or `[routes.versioning]`) of a route.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VersioningConfig {
    /// Where the version is read from, in order; the first that names one wins.
    #[serde(default = "VersioningConfig::default_from")]
    pub from: Spanned<Vec<VersionSource>>,
    /// The header of the `header` source.
    #[serde(default = "VersioningConfig::default_header")]
    pub header: Spanned<String>,
    /// The media type parameter of the `media_type` source.
    #[serde(default = "VersioningConfig::default_parameter")]
    pub media_type_parameter: Spanned<String>,
    /// The query parameter of the `query` source.
    #[serde(default = "VersioningConfig::default_parameter")]
    pub query: Spanned<String>,
    /// The version of requests that name none (absent: they get 400).
    #[serde(default)]
    pub default: Option<Spanned<String>>,
    /// Remove the version header, query parameter or path segment before forwarding.
    #[serde(default)]
    pub strip: bool,
    /// The versions the route serves, by name.
    pub versions: Spanned<BTreeMap<String, Spanned<VersionConfig>>>,
}

impl VersioningConfig {
    fn default_from() -> Spanned<Vec<VersionSource>> {
        Spanned::new(0..0, vec![VersionSource::Header])
    }
    fn default_header() -> Spanned<String> {
        Spanned::new(0..0, "Accept-Version".to_owned())
    }
    fn default_parameter() -> Spanned<String> {
        Spanned::new(0..0, "version".to_owned())
    }
}

/// One version of a route.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct VersionConfig {
    /// The upstream serving this version (absent: the route's).
    pub upstream: Option<Spanned<String>>,
    /// Prepended to the forwarded path instead of the route's `add_prefix`.
    pub add_prefix: Option<Spanned<String>>,
    /// Date of deprecation (`"2025-06-30"` or `"2025-06-30T12:00:00Z"`; may be in the
    /// future): the `Deprecation` header (RFC 9745).
    pub deprecated: Option<Spanned<String>>,
    /// Date after which the version may stop answering: the `Sunset` header (RFC 8594).
    pub sunset: Option<Spanned<String>>,
    /// Documentation of the deprecation: `Link: <URL>; rel="deprecation"`.
    pub link: Option<Spanned<String>>,
}

/// Parses a date as `YYYY-MM-DD` (midnight UTC) or `YYYY-MM-DDTHH:MM:SSZ` into seconds since
/// the Unix epoch.
pub fn parse_date(text: &str) -> Result<u64, String> {
    let bad =
        || format!("{text:?} is not a date: use \"2025-06-30\" or \"2025-06-30T12:00:00Z\" (UTC)");
    let (date, time) = match text.split_once(['T', 't']) {
        Some((d, t)) => (d, Some(t.strip_suffix(['Z', 'z']).ok_or_else(bad)?)),
        None => (text, None),
    };
    let num = |s: &str, len: usize| -> Result<u32, String> {
        if s.len() != len || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse().map_err(|_| bad())
    };
    let mut d = date.split('-');
    let (Some(y), Some(m), Some(day), None) = (d.next(), d.next(), d.next(), d.next()) else {
        return Err(bad());
    };
    let (y, m, day) = (num(y, 4)?, num(m, 2)?, num(day, 2)?);
    let leap = (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
    let days_in_month = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return Err(bad()),
    };
    if y < 1970 || day == 0 || day > days_in_month {
        return Err(bad());
    }
    let seconds = match time {
        None => 0,
        Some(t) => {
            let mut p = t.split(':');
            let (Some(h), Some(mi), Some(s), None) = (p.next(), p.next(), p.next(), p.next())
            else {
                return Err(bad());
            };
            let (h, mi, s) = (num(h, 2)?, num(mi, 2)?, num(s, 2)?);
            if h > 23 || mi > 59 || s > 59 {
                return Err(bad());
            }
            u64::from(h * 3600 + mi * 60 + s)
        }
    };
    Ok(days_from_civil(y, m, day) * 86_400 + seconds)
}

/// Days from 1970-01-01 to a date on or after it (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: u32, m: u32, d: u32) -> u64 {
    let y = u64::from(if m <= 2 { y - 1 } else { y });
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = u64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + u64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Version names: what clients send, so short visible tokens.
fn check_version_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 32
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err(format!(
            "{name:?} is not a version name: 1-32 of A-Z, a-z, 0-9, '.', '-', '_'"
        ));
    }
    Ok(())
}

/// Checks every route's `versioning`.
pub(crate) fn check(config: &Config, text: &str, file: &Path, errors: &mut Vec<ConfigError>) {
    let mut err = |span: std::ops::Range<usize>, key: String, message: String| {
        errors.push(ConfigError::at_key(file, text, span, key, message));
    };
    let upstreams: Vec<&str> = config
        .upstreams
        .iter()
        .map(|u| u.name.get_ref().as_str())
        .collect();
    for (i, r) in config.routes.iter().enumerate() {
        let Some(v) = &r.versioning else { continue };
        let key = |k: &str| format!("routes[{i}].versioning.{k}");
        let from = v.from.get_ref();
        if from.is_empty() {
            err(
                v.from.span(),
                key("from"),
                "list at least one source".into(),
            );
        }
        let mut seen = HashSet::new();
        for s in from {
            if !seen.insert(*s) {
                err(
                    v.from.span(),
                    key("from"),
                    format!("{:?} is listed twice", s.name()),
                );
            }
        }
        if let Err(m) = values::parse_header_name(v.header.get_ref()) {
            err(v.header.span(), key("header"), m);
        }
        for (name, p) in [
            ("query", &v.query),
            ("media_type_parameter", &v.media_type_parameter),
        ] {
            let t = p.get_ref();
            if t.is_empty()
                || !t
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b"&=#;,\"".contains(&b))
            {
                err(
                    p.span(),
                    key(name),
                    "must be a parameter name (visible ASCII without & = # ; , or quotes)".into(),
                );
            }
        }
        let versions = v.versions.get_ref();
        if versions.is_empty() {
            err(
                v.versions.span(),
                key("versions"),
                "list at least one version".into(),
            );
        }
        let names = || versions.keys().map(String::as_str);
        if let Some(d) = &v.default
            && !versions.contains_key(d.get_ref())
        {
            let hint = closest(d.get_ref(), names())
                .map(|s| format!("; did you mean {s:?}?"))
                .unwrap_or_default();
            err(
                d.span(),
                key("default"),
                format!("{:?} is not one of the versions{hint}", d.get_ref()),
            );
        }
        for (name, version) in versions {
            let vkey = |k: &str| key(&format!("versions.{name}.{k}"));
            let span = version.span();
            if let Err(m) = check_version_name(name) {
                err(span.clone(), key(&format!("versions.{name}")), m);
            } else if from.contains(&VersionSource::Path) && !name.as_bytes()[0].is_ascii_digit() {
                err(
                    span.clone(),
                    key(&format!("versions.{name}")),
                    "with the path source, version names start with a digit (the segment is `v` and the name, like /v2/)".into(),
                );
            }
            let version = version.get_ref();
            if let Some(u) = &version.upstream
                && !upstreams.contains(&u.get_ref().as_str())
            {
                let hint = closest(u.get_ref(), upstreams.iter().copied())
                    .map(|s| format!("; did you mean {s:?}?"))
                    .unwrap_or_default();
                err(
                    u.span(),
                    vkey("upstream"),
                    format!("unknown upstream {:?}{hint}", u.get_ref()),
                );
            }
            if let Some(p) = &version.add_prefix
                && let Err(m) = values::check_path_syntax(p.get_ref())
            {
                err(p.span(), vkey("add_prefix"), m);
            }
            let mut date = |d: &Option<Spanned<String>>, k: &str| {
                d.as_ref().and_then(|d| match parse_date(d.get_ref()) {
                    Ok(t) => Some(t),
                    Err(m) => {
                        err(d.span(), vkey(k), m);
                        None
                    }
                })
            };
            let deprecated = date(&version.deprecated, "deprecated");
            let sunset = date(&version.sunset, "sunset");
            if let (Some(d), Some(s), Some(at)) = (deprecated, sunset, &version.sunset)
                && s < d
            {
                err(
                    at.span(),
                    vkey("sunset"),
                    "is before `deprecated` (RFC 9745 §3: a sunset is not earlier than the deprecation)"
                        .into(),
                );
            }
            if let Some(link) = &version.link {
                let l = link.get_ref();
                let uri_ok = l.parse::<http::Uri>().is_ok_and(|u| u.scheme().is_some())
                    && http::HeaderValue::from_str(&format!("<{l}>")).is_ok()
                    && !l.contains(['<', '>']);
                if !uri_ok {
                    err(
                        link.span(),
                        vkey("link"),
                        "must be an absolute URL, like \"https://docs.example.com/v1\"".into(),
                    );
                } else if version.deprecated.is_none() {
                    err(
                        link.span(),
                        vkey("link"),
                        "documents a deprecation: set `deprecated` too".into(),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse;

    use crate::test_errors as errors;

    const ROUTE: &str = "[[upstreams]]\nname = \"u\"\ntargets = [{ url = \"http://127.0.0.1:1\" }]\n[[upstreams]]\nname = \"u1\"\ntargets = [{ url = \"http://127.0.0.1:2\" }]\n\n[[routes]]\nname = \"r\"\nupstream = \"u\"\n";

    #[test]
    fn dates_parse_as_utc_epoch_seconds() {
        assert_eq!(parse_date("1970-01-01"), Ok(0));
        assert_eq!(parse_date("2025-06-30"), Ok(1_751_241_600));
        assert_eq!(parse_date("2000-02-29T12:30:05Z"), Ok(951_827_405));
        for bad in [
            "2025-02-29",
            "2025-13-01",
            "25-01-01",
            "2025-06-30T12:00:00",
            "2025-06-30 12:00:00Z",
            "1969-12-31",
            "2025-06-30T24:00:00Z",
        ] {
            assert!(parse_date(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn versioning_parses_as_a_sub_table() {
        let text = format!(
            "{ROUTE}\n[routes.versioning]\nfrom = [\"header\", \"media_type\", \"query\", \"path\"]\ndefault = \"2\"\nstrip = true\n\n\
             [routes.versioning.versions.1]\nupstream = \"u1\"\nadd_prefix = \"/legacy\"\ndeprecated = \"2025-01-01\"\n\
             sunset = \"2026-01-01T00:00:00Z\"\nlink = \"https://docs.example.com/v1\"\n\n[routes.versioning.versions.2]\n"
        );
        assert_eq!(errors(&text), "");
        let config = parse(&text, "t.toml".as_ref()).unwrap();
        let v = config.routes[0].versioning.as_ref().unwrap();
        assert_eq!(v.header.get_ref(), "Accept-Version");
        assert_eq!(v.versions.get_ref().len(), 2);
    }

    #[test]
    fn bad_versioning_is_reported_with_keys_and_lines() {
        let text = format!(
            "{ROUTE}versioning = {{ from = [\"path\", \"path\"], default = \"3\", versions = {{ \"1\" = {{ upstream = \"u2\", sunset = \"2024-01-01\", deprecated = \"2025-01-01\" }}, \"beta\" = {{ link = \"https://d.example\" }} }} }}\n"
        );
        let e = errors(&text);
        for needle in [
            "routes[0].versioning.from",
            "listed twice",
            "routes[0].versioning.default",
            "routes[0].versioning.versions.1.upstream",
            "did you mean \"u\"",
            "routes[0].versioning.versions.1.sunset",
            "routes[0].versioning.versions.beta",
            "start with a digit",
            "routes[0].versioning.versions.beta.link",
            "t.toml:11",
        ] {
            assert!(e.contains(needle), "{needle} missing in:\n{e}");
        }
        let unknown = errors(&format!(
            "{ROUTE}versioning = {{ versions = {{ \"1\" = {{ upstrem = \"u\" }} }} }}\n"
        ));
        assert!(unknown.contains("upstrem"), "{unknown}");
        let source = errors(&format!(
            "{ROUTE}versioning = {{ from = [\"cookie\"], versions = {{ \"1\" = {{}} }} }}\n"
        ));
        assert!(source.contains("cookie"), "{source}");
    }
}
