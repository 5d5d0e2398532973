//! Semantic checks that serde cannot do: references between tables, value syntax, conflicts.
//! Every problem is collected, so one `portcullis check` run shows them all.

use std::{collections::HashSet, path::Path};

use toml::Spanned;

use crate::{Balance, Config, ConfigError, ConfigErrors, diagnostics::closest, values};

/// hyper refuses a read buffer below this size.
const MIN_HEADER_BYTES: u64 = 8192;

struct Checker<'a> {
    text: &'a str,
    file: &'a Path,
    errors: Vec<ConfigError>,
}

impl Checker<'_> {
    fn error<T>(&mut self, at: &Spanned<T>, key: String, message: String) {
        self.errors.push(ConfigError::at_key(
            self.file,
            self.text,
            at.span(),
            key,
            message,
        ));
    }

    fn check<T, V>(&mut self, at: &Spanned<T>, key: String, result: Result<V, String>) {
        if let Err(message) = result {
            self.error(at, key, message);
        }
    }
}

/// Validates `config` in place (relative paths are anchored at the config file's directory).
pub(crate) fn validate(config: &mut Config, text: &str, file: &Path) -> Result<(), ConfigErrors> {
    let mut c = Checker {
        text,
        file,
        errors: Vec::new(),
    };
    check_server(&mut c, config);
    let upstream_names = check_upstreams(&mut c, config);
    check_routes(&mut c, config, &upstream_names);
    check_cache(&mut c, config);
    check_admin(&mut c, config);
    check_slos(&mut c, config);
    check_rate_limits(&mut c, config);
    check_redis_files(&mut c, config, file);
    crate::security::check(config, text, file, &mut c.errors);
    crate::versioning::check(config, text, file, &mut c.errors);
    if let Some(otlp) = &config.otlp {
        c.check(otlp, "otlp".into(), check_otlp(otlp.get_ref()));
    }
    if let Some(level) = &config.log.level {
        c.check(level, "log.level".into(), check_log_filter(level.get_ref()));
    }
    if c.errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors(c.errors))
    }
}

fn check_redis_url(c: &mut Checker<'_>, url: &Spanned<crate::Secret>, key: String) {
    let text = url.get_ref().expose();
    if !(text.starts_with("redis://") || text.starts_with("rediss://")) {
        // The URL may hold a password: the message never repeats it.
        c.error(
            url,
            key,
            "expected a URL like \"redis://127.0.0.1:6379\" (or rediss:// for TLS)".into(),
        );
    }
}

/// Anchors `redis.tls_ca_file` at the config file's directory and checks it exists.
fn check_redis_files(c: &mut Checker<'_>, config: &mut Config, file: &Path) {
    let Some(path) = config.redis.as_mut().and_then(|r| r.tls_ca_file.as_mut()) else {
        return;
    };
    let resolved = file.parent().unwrap_or(Path::new(".")).join(path.get_ref());
    if !resolved.is_file() {
        c.error(
            path,
            "redis.tls_ca_file".into(),
            format!("file not found: {}", resolved.display()),
        );
    }
    *path.get_mut() = resolved;
}

fn check_rate_limits(c: &mut Checker<'_>, config: &Config) {
    if let Some(redis) = &config.redis {
        if let Some(url) = &redis.url {
            check_redis_url(c, url, "redis.url".into());
        }
        for (i, url) in redis.cluster.iter().enumerate() {
            check_redis_url(c, url, format!("redis.cluster[{i}]"));
        }
        if redis.url.is_some() && !redis.cluster.is_empty() {
            c.error(
                &redis.cluster[0],
                "redis.cluster".into(),
                "give either `url` or `cluster`, not both".into(),
            );
        }
        for (i, url) in redis.sentinel.iter().enumerate() {
            check_redis_url(c, url, format!("redis.sentinel[{i}]"));
        }
        if let Some(first) = redis.sentinel.first() {
            if !redis.cluster.is_empty() {
                c.error(
                    first,
                    "redis.sentinel".into(),
                    "give either `cluster` or `sentinel`, not both".into(),
                );
            }
            if redis.sentinel_master.is_none() {
                c.error(
                    first,
                    "redis.sentinel".into(),
                    "needs `sentinel_master`, the master's name at the Sentinels".into(),
                );
            }
        } else if let Some(name) = &redis.sentinel_master {
            c.error(
                name,
                "redis.sentinel_master".into(),
                "needs `sentinel`, the Sentinels' URLs".into(),
            );
        }
    }
    let d = &config.rate_limit;
    c.check(
        &d.api_key_header,
        "rate_limit.api_key_header".into(),
        values::parse_header_name(d.api_key_header.get_ref()),
    );
    for (i, cidr) in d.exempt_cidrs.iter().enumerate() {
        c.check(
            cidr,
            format!("rate_limit.exempt_cidrs[{i}]"),
            values::parse_cidr(cidr.get_ref()),
        );
    }
    for (tier, limits) in &d.tiers {
        check_tier(c, limits, &format!("rate_limit.tiers.{tier}"));
    }
    for (i, route) in config.routes.iter().enumerate() {
        let Some(rl) = &route.rate_limit else {
            continue;
        };
        let key = format!("routes[{i}].rate_limit");
        let r = rl.get_ref();
        if d.backend == crate::LimitBackend::Redis && config.redis.is_none() {
            c.error(
                rl,
                key.clone(),
                "[rate_limit] backend = \"redis\" needs a [redis] table".into(),
            );
        }
        if r.rate.is_none() && r.limits.is_empty() && r.tiers.is_empty() && d.tiers.is_empty() {
            c.error(
                rl,
                key.clone(),
                "needs a limit: `rate`, `limits` or `tiers` (or [rate_limit.tiers])".into(),
            );
        }
        if let Some(by) = &r.by {
            check_by(c, by, &format!("{key}.by"));
        }
        let mut capacities = Vec::new();
        if let Some(rate) = &r.rate {
            capacities.extend(check_rate(
                c,
                rate,
                r.burst.as_ref(),
                &format!("{key}.rate"),
            ));
        } else if let Some(burst) = &r.burst {
            c.error(
                burst,
                format!("{key}.burst"),
                "`burst` goes with `rate`".into(),
            );
        }
        for (j, limit) in r.limits.iter().enumerate() {
            capacities.extend(check_limit(c, limit, &format!("{key}.limits[{j}]")));
        }
        for (tier, limits) in &r.tiers {
            capacities.extend(check_tier(c, limits, &format!("{key}.tiers.{tier}")));
        }
        for (method, cost) in &r.cost {
            let valid = method == "default"
                || (!method.is_empty()
                    && http::Method::from_bytes(method.to_ascii_uppercase().as_bytes()).is_ok());
            if !valid {
                c.error(
                    cost,
                    format!("{key}.cost.{method}"),
                    "expected `default` or an HTTP method".into(),
                );
            } else if *cost.get_ref() == 0 {
                c.error(
                    cost,
                    format!("{key}.cost.{method}"),
                    "must be at least 1".into(),
                );
            } else if let Some(cap) = capacities
                .iter()
                .min()
                .filter(|cap| **cap < *cost.get_ref())
            {
                c.error(
                    cost,
                    format!("{key}.cost.{method}"),
                    format!("a cost of {} exceeds a limit's capacity of {cap}: such requests could never pass", cost.get_ref()),
                );
            }
        }
        for (j, cidr) in r.exempt_cidrs.iter().enumerate() {
            c.check(
                cidr,
                format!("{key}.exempt_cidrs[{j}]"),
                values::parse_cidr(cidr.get_ref()),
            );
        }
    }
}

fn check_by(c: &mut Checker<'_>, by: &Spanned<crate::KeyBy>, key: &str) {
    for part in by.get_ref().parts() {
        c.check(by, key.to_owned(), values::parse_limit_key(part));
    }
}

/// Checks a rate and its burst; returns the capacity (most one request may cost).
fn check_rate(
    c: &mut Checker<'_>,
    rate: &Spanned<String>,
    burst: Option<&Spanned<u64>>,
    key: &str,
) -> Option<u64> {
    let parsed = values::parse_rate(rate.get_ref());
    let n = match parsed {
        Ok((n, _)) => n,
        Err(e) => {
            c.error(rate, key.to_owned(), e);
            return None;
        }
    };
    match burst {
        Some(b) if *b.get_ref() == 0 => {
            c.error(
                b,
                key.replace(".rate", ".burst"),
                "must be at least 1".into(),
            );
            None
        }
        Some(b) => Some(*b.get_ref()),
        None => Some(n),
    }
}

fn check_limit(c: &mut Checker<'_>, limit: &crate::LimitTable, key: &str) -> Option<u64> {
    if let Some(by) = &limit.by {
        check_by(c, by, &format!("{key}.by"));
    }
    check_rate(c, &limit.rate, limit.burst.as_ref(), &format!("{key}.rate"))
}

fn check_tier(c: &mut Checker<'_>, limits: &Spanned<crate::TierLimits>, key: &str) -> Vec<u64> {
    match limits.get_ref() {
        crate::TierLimits::Rate(rate) => match values::parse_rate(rate) {
            Ok((n, _)) => vec![n],
            Err(e) => {
                c.error(limits, key.to_owned(), e);
                Vec::new()
            }
        },
        crate::TierLimits::Limits(list) => list
            .iter()
            .enumerate()
            .filter_map(|(j, l)| check_limit(c, l, &format!("{key}[{j}]")))
            .collect(),
    }
}

/// The longest SLO window: the rolling statistics keep 15 minutes.
const MAX_SLO_WINDOW_SECS: u64 = 15 * 60;

fn check_slos(c: &mut Checker<'_>, config: &Config) {
    for (i, r) in config.routes.iter().enumerate() {
        let Some(slo) = &r.slo else { continue };
        let key = format!("routes[{i}].slo");
        let s = slo.get_ref();
        if s.p95.is_none() && s.p99.is_none() && s.error_rate.is_none() {
            c.error(
                slo,
                key.clone(),
                "needs at least one objective: p95, p99 or error_rate".into(),
            );
        }
        if let Some(rate) = s.error_rate
            && !(rate > 0.0 && rate <= 1.0)
        {
            c.error(
                slo,
                format!("{key}.error_rate"),
                "must be above 0 and at most 1 (0.01 = 1%)".into(),
            );
        }
        if s.window.0.as_secs() > MAX_SLO_WINDOW_SECS || s.window.0.is_zero() {
            c.error(
                slo,
                format!("{key}.window"),
                "must be between 1s and 15m".into(),
            );
        }
    }
    for (i, u) in config.upstreams.iter().enumerate() {
        let Some(h) = &u.health else { continue };
        if !h.path.get_ref().starts_with('/') {
            c.error(
                &h.path,
                format!("upstreams[{i}].health.path"),
                "must start with /".into(),
            );
        }
        if h.healthy == 0 || h.unhealthy == 0 || h.interval.0.is_zero() || h.timeout.0.is_zero() {
            c.errors.push(ConfigError::at_key(
                c.file,
                c.text,
                u.name.span(),
                format!("upstreams[{i}].health"),
                "interval, timeout, healthy and unhealthy must be above zero".into(),
            ));
        }
    }
    if let Some(url) = &config.alerts.webhook
        && !url.get_ref().starts_with("http://")
    {
        c.error(
            url,
            "alerts.webhook".into(),
            "must be an http:// URL".into(),
        );
    }
}

/// A log filter of comma-separated directives, each a level or `target=level`.
fn check_log_filter(text: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    for directive in text.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let (target, level) = directive.rsplit_once('=').unwrap_or(("", directive));
        let target_ok = target
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':' || b == b'-');
        if !target_ok || !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "{directive:?} is not a log directive: use a level ({}) or target=level",
                LEVELS.join(", ")
            ));
        }
    }
    Ok(())
}

/// Shortest admin token accepted: guessing must be hopeless.
const MIN_ADMIN_TOKEN_LEN: usize = 16;

fn check_admin(c: &mut Checker<'_>, config: &Config) {
    let Some(admin) = &config.admin else {
        return;
    };
    let addr = *admin.listen.get_ref();
    if addr == config.server.listen && addr.port() != 0 {
        c.error(
            &admin.listen,
            "admin.listen".into(),
            "must differ from server.listen: the admin API never shares the public listener".into(),
        );
    }
    if let Some(token) = &admin.token
        && token.get_ref().expose().len() < MIN_ADMIN_TOKEN_LEN
    {
        c.error(
            token,
            "admin.token".into(),
            format!("must be at least {MIN_ADMIN_TOKEN_LEN} characters"),
        );
    }
    if !addr.ip().is_loopback() && admin.effective_token().is_none() {
        c.error(
            &admin.listen,
            "admin.listen".into(),
            format!(
                "a non-loopback admin listener needs a token (admin.token or {})",
                crate::ADMIN_TOKEN_ENV
            ),
        );
    }
}

fn check_server(c: &mut Checker<'_>, config: &mut Config) {
    let server = &mut config.server;
    for (i, p) in server.trusted_proxies.iter().enumerate() {
        c.check(
            p,
            format!("server.trusted_proxies[{i}]"),
            values::parse_cidr(p.get_ref()),
        );
    }
    if server.max_header_bytes.get_ref().0 < MIN_HEADER_BYTES {
        c.error(
            &server.max_header_bytes,
            "server.max_header_bytes".into(),
            format!("must be at least {MIN_HEADER_BYTES} bytes"),
        );
    }
    c.check(
        &server.request_id_header,
        "server.request_id_header".into(),
        values::parse_header_name(server.request_id_header.get_ref()).map(drop),
    );
    if server.via.is_empty() || !server.via.bytes().all(|b| b.is_ascii_graphic()) {
        c.errors.push(ConfigError::at_key(
            c.file,
            c.text,
            0..0,
            "server.via".into(),
            "must be a non-empty token without spaces".into(),
        ));
    }
    if let Some(tls) = &mut server.tls {
        let base = c.file.parent().unwrap_or(Path::new("."));
        for (name, path) in [("cert", &mut tls.cert), ("key", &mut tls.key)] {
            let resolved = base.join(path.get_ref());
            if !resolved.is_file() {
                let shown = resolved.display().to_string();
                c.error(
                    path,
                    format!("server.tls.{name}"),
                    format!("file not found: {shown}"),
                );
            }
            *path.get_mut() = resolved;
        }
    }
}

fn check_upstreams(c: &mut Checker<'_>, config: &Config) -> Vec<String> {
    let mut names = Vec::new();
    let mut seen = HashSet::new();
    for (i, up) in config.upstreams.iter().enumerate() {
        let key = |k: &str| format!("upstreams[{i}].{k}");
        if !seen.insert(up.name.get_ref().clone()) {
            c.error(
                &up.name,
                key("name"),
                format!("duplicate upstream name {:?}", up.name.get_ref()),
            );
        }
        names.push(up.name.get_ref().clone());
        if up.targets.get_ref().is_empty() {
            c.error(
                &up.targets,
                key("targets"),
                "an upstream needs at least one target".into(),
            );
        }
        for (j, t) in up.targets.get_ref().iter().enumerate() {
            c.check(
                &t.url,
                key(&format!("targets[{j}].url")),
                values::parse_target_url(t.url.get_ref()),
            );
            if *t.weight.get_ref() == 0 {
                c.error(
                    &t.weight,
                    key(&format!("targets[{j}].weight")),
                    "weight must be at least 1".into(),
                );
            }
        }
        if let Some(a) = &up.pool.adaptive {
            let problem = if up.pool.max_in_flight == 0 {
                Some("needs pool.max_in_flight > 0 (the starting limit)")
            } else if a.min_limit == 0 || a.min_limit > a.max_limit {
                Some("needs 1 <= min_limit <= max_limit")
            } else if a.tolerance.is_nan() || a.tolerance <= 1.0 {
                Some("tolerance must be above 1")
            } else if !(a.backoff > 0.0 && a.backoff < 1.0) {
                Some("backoff must be between 0 and 1")
            } else {
                None
            };
            if let Some(problem) = problem {
                c.error(&up.name, key("pool.adaptive"), problem.into());
            }
        }
        match (&up.hash_on, up.balance) {
            (None, Balance::ConsistentHash) => c.error(
                &up.name,
                key("hash_on"),
                "balance = \"consistent_hash\" needs hash_on = \"header:NAME\", \"cookie:NAME\" or \"client_ip\"".into(),
            ),
            (Some(h), Balance::ConsistentHash) => {
                c.check(h, key("hash_on"), values::parse_hash_on(h.get_ref()));
            }
            (Some(h), _) => c.error(h, key("hash_on"), "hash_on only applies to balance = \"consistent_hash\"".into()),
            (None, _) => {}
        }
    }
    names
}

fn check_routes(c: &mut Checker<'_>, config: &Config, upstreams: &[String]) {
    let mut seen = HashSet::new();
    for (i, route) in config.routes.iter().enumerate() {
        let key = |k: &str| format!("routes[{i}].{k}");
        if !seen.insert(route.name.get_ref().clone()) {
            c.error(
                &route.name,
                key("name"),
                format!("duplicate route name {:?}", route.name.get_ref()),
            );
        }
        let target = route.upstream.get_ref();
        if !upstreams.iter().any(|u| u == target) {
            let hint = closest(target, upstreams.iter().map(String::as_str))
                .map(|s| format!("; did you mean {s:?}?"))
                .unwrap_or_else(|| {
                    if upstreams.is_empty() {
                        "; no [[upstreams]] are defined".into()
                    } else {
                        format!("; defined upstreams: {}", upstreams.join(", "))
                    }
                });
            c.error(
                &route.upstream,
                key("upstream"),
                format!("unknown upstream {target:?}{hint}"),
            );
        }
        let m = &route.matcher;
        if let Some(h) = &m.host {
            c.check(h, key("match.host"), values::parse_host(h.get_ref()));
        }
        match (&m.path, &m.path_prefix) {
            (Some(p), Some(_)) => c.error(
                p,
                key("match.path"),
                "give either `path` or `path_prefix`, not both".into(),
            ),
            (Some(p), None) => c.check(p, key("match.path"), values::parse_path(p.get_ref())),
            (None, Some(p)) => c.check(
                p,
                key("match.path_prefix"),
                values::parse_path_prefix(p.get_ref()),
            ),
            (None, None) => {}
        }
        for (j, method) in m.methods.iter().enumerate() {
            let valid = http::Method::from_bytes(method.get_ref().to_ascii_uppercase().as_bytes())
                .is_ok()
                && !method.get_ref().is_empty();
            if !valid {
                c.error(
                    method,
                    key(&format!("match.methods[{j}]")),
                    format!("invalid method {:?}", method.get_ref()),
                );
            }
        }
        for (name, prefix) in [
            ("strip_prefix", &route.strip_prefix),
            ("add_prefix", &route.add_prefix),
        ] {
            if let Some(p) = prefix {
                c.check(p, key(name), values::check_path_syntax(p.get_ref()));
            }
        }
        if let Some(d) = &route.deadline
            && d.get_ref().0.is_zero()
        {
            c.error(d, key("deadline"), "must be longer than 0s".into());
        }
        if let Some(f) = &route.fallback {
            c.check(f, key("fallback"), check_fallback(f.get_ref()));
        }
    }
}

/// The collector must be an `http` or `https` URL; the sample ratio a share.
fn check_otlp(o: &crate::OtlpConfig) -> Result<(), String> {
    let uri: http::Uri = o
        .endpoint
        .parse()
        .map_err(|_| format!("endpoint {:?} is not a URL", o.endpoint))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(format!(
            "endpoint {:?} must be an http:// or https:// URL",
            o.endpoint
        ));
    }
    if !(0.0..=1.0).contains(&o.sample_ratio) {
        return Err(format!(
            "sample_ratio {} is not between 0 and 1",
            o.sample_ratio
        ));
    }
    for name in o.headers.keys() {
        values::parse_header_name(name)?;
    }
    if o.max_queue == 0 {
        return Err("max_queue must be at least 1".into());
    }
    Ok(())
}

/// A fallback response must be one the gateway can send.
fn check_fallback(f: &crate::FallbackConfig) -> Result<(), String> {
    if !(200..=599).contains(&f.status) {
        return Err(format!("status {} is not 200 to 599", f.status));
    }
    http::HeaderValue::from_str(&f.content_type).map_err(|_| {
        format!(
            "content_type {:?} is not a valid header value",
            f.content_type
        )
    })?;
    for (name, value) in &f.headers {
        values::parse_header_name(name)?;
        http::HeaderValue::from_str(value)
            .map_err(|_| format!("headers.{name}: {value:?} is not a valid header value"))?;
    }
    Ok(())
}

fn check_cache(c: &mut Checker<'_>, config: &Config) {
    let cache = &config.cache;
    c.check(
        &cache.tag_header,
        "cache.tag_header".into(),
        values::parse_header_name(cache.tag_header.get_ref()).map(|_| ()),
    );
    let memory = cache.memory_max.get_ref().0;
    let shared = *cache.redis.get_ref() && config.redis.is_some();
    if memory == 0 && !shared && config.routes.iter().any(|r| r.cache.is_some()) {
        c.error(
            &cache.memory_max,
            "cache.memory_max".into(),
            "is 0 (memory tier off) but there is no Redis tier ([redis] with cache.redis = true); \
             nothing could be stored"
                .into(),
        );
    }
    if memory > 0 && cache.max_object_size.get_ref().0 > memory {
        c.error(
            &cache.max_object_size,
            "cache.max_object_size".into(),
            format!(
                "is larger than cache.memory_max ({}); such objects could never be stored",
                cache.memory_max.get_ref()
            ),
        );
    }
    let fraction = |f: f64| {
        if (0.0..1.0).contains(&f) {
            Ok(())
        } else {
            Err(format!(
                "must be at least 0 and below 1 (a fraction of the lifetime), not {f}"
            ))
        }
    };
    c.check(
        &cache.refresh_ahead,
        "cache.refresh_ahead".into(),
        fraction(*cache.refresh_ahead.get_ref()),
    );
    if let Some(warm) = &cache.warm {
        if *warm.concurrency.get_ref() == 0 {
            c.error(
                &warm.concurrency,
                "cache.warm.concurrency".into(),
                "must be at least 1".into(),
            );
        }
        for (i, u) in warm.urls.iter().enumerate() {
            let absolute = u.get_ref().parse::<http::Uri>().ok().is_some_and(|uri| {
                matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some()
            });
            if !absolute {
                c.error(
                    u,
                    format!("cache.warm.urls[{i}]"),
                    format!("{:?} is not an absolute http(s) URL", u.get_ref()),
                );
            }
        }
    }
    for (i, r) in config.routes.iter().enumerate() {
        let Some(rc) = &r.cache else { continue };
        if let Some(f) = &rc.refresh_ahead {
            c.check(
                f,
                format!("routes[{i}].cache.refresh_ahead"),
                fraction(*f.get_ref()),
            );
        }
        for (j, h) in rc.key_headers.iter().enumerate() {
            c.check(
                h,
                format!("routes[{i}].cache.key_headers[{j}]"),
                values::parse_header_name(h.get_ref()).map(|_| ()),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::parse;

    use crate::test_errors as errors;

    #[test]
    fn a_missing_redis_ca_file_is_reported_with_its_key() {
        let e = errors("[redis]\nurl = \"rediss://r:6380\"\ntls_ca_file = \"no-such-ca.pem\"\n");
        assert!(
            e.contains("redis.tls_ca_file") && e.contains("file not found"),
            "{e}"
        );
        assert!(e.contains("t.toml:3"), "{e}");
    }

    #[test]
    fn admin_listener_rules() {
        assert_eq!(errors("[admin]\nlisten = \"127.0.0.1:9901\"\n"), "");
        let open = errors("[admin]\nlisten = \"0.0.0.0:9901\"\n");
        assert!(open.contains("admin.listen"), "{open}");
        assert!(open.contains("needs a token"), "{open}");
        assert!(open.contains("t.toml:2"), "{open}");
        let with_token =
            errors("[admin]\nlisten = \"0.0.0.0:9901\"\ntoken = \"0123456789abcdef\"\n");
        assert_eq!(with_token, "");
        let short = errors("[admin]\nlisten = \"127.0.0.1:9901\"\ntoken = \"short\"\n");
        assert!(short.contains("admin.token"), "{short}");
        assert!(
            !short.contains("short\""),
            "the token is never echoed: {short}"
        );
        let same =
            errors("[server]\nlisten = \"127.0.0.1:8080\"\n[admin]\nlisten = \"127.0.0.1:8080\"\n");
        assert!(same.contains("must differ from server.listen"), "{same}");
    }

    #[test]
    fn log_levels_and_request_id_headers_are_checked() {
        assert_eq!(
            errors("[log]\nlevel = \"warn,portcullis_proxy=debug\"\n"),
            ""
        );
        let bad = errors("[log]\nlevel = \"loud\"\n");
        assert!(
            bad.contains("log.level") && bad.contains("t.toml:2"),
            "{bad}"
        );
        let bad = errors("[server]\nrequest_id_header = \"bad header\"\n");
        assert!(bad.contains("server.request_id_header"), "{bad}");
    }

    #[test]
    fn slo_objectives_are_checked() {
        let base = "[[upstreams]]\nname = \"u\"\ntargets = [{ url = \"http://127.0.0.1:1\" }]\n\n[[routes]]\nname = \"r\"\nupstream = \"u\"\n";
        assert_eq!(
            errors(&format!(
                "{base}slo = {{ p95 = \"200ms\", error_rate = 0.01 }}\n"
            )),
            ""
        );
        let none = errors(&format!("{base}slo = {{ window = \"1m\" }}\n"));
        assert!(
            none.contains("routes[0].slo") && none.contains("at least one objective"),
            "{none}"
        );
        let rate = errors(&format!("{base}slo = {{ error_rate = 5.0 }}\n"));
        assert!(rate.contains("routes[0].slo.error_rate"), "{rate}");
        let window = errors(&format!(
            "{base}slo = {{ p99 = \"1s\", window = \"1h\" }}\n"
        ));
        assert!(window.contains("routes[0].slo.window"), "{window}");
        let hook = errors("[alerts]\nwebhook = \"ftp://x\"\n");
        assert!(hook.contains("alerts.webhook"), "{hook}");
    }

    #[test]
    fn deadlines_and_fallbacks_are_checked() {
        let base = "[[upstreams]]\nname = \"u\"\ntargets = [{ url = \"http://127.0.0.1:1\" }]\n\n[[routes]]\nname = \"r\"\nupstream = \"u\"\n";
        assert_eq!(
            errors(&format!(
                "{base}deadline = \"2s\"\nbreaker = {{ consecutive_failures = 3 }}\nfallback = {{ status = 503, body = \"later\", content_type = \"text/plain\", headers = {{ retry-after = \"5\" }} }}\n"
            )),
            ""
        );
        let adaptive = errors(
            "[[upstreams]]\nname = \"u\"\ntargets = [{ url = \"http://127.0.0.1:1\" }]\npool = { adaptive = { min_limit = 4 } }\n",
        );
        assert!(
            adaptive.contains("upstreams[0].pool.adaptive") && adaptive.contains("max_in_flight"),
            "{adaptive}"
        );
        assert_eq!(
            errors(
                "[[upstreams]]\nname = \"u\"\ntargets = [{ url = \"http://127.0.0.1:1\" }]\npool = { max_in_flight = 20, adaptive = { min_limit = 4, max_limit = 64 } }\n"
            ),
            ""
        );
        let zero = errors(&format!("{base}deadline = \"0s\"\n"));
        assert!(zero.contains("routes[0].deadline"), "{zero}");
        let status = errors(&format!("{base}fallback = {{ status = 99 }}\n"));
        assert!(
            status.contains("routes[0].fallback") && status.contains("status 99"),
            "{status}"
        );
        let header = errors(&format!(
            "{base}fallback = {{ headers = {{ \"bad name\" = \"x\" }} }}\n"
        ));
        assert!(header.contains("not a valid header name"), "{header}");
        let unknown = errors(&format!("{base}fallback = {{ stauts = 200 }}\n"));
        assert!(unknown.contains("stauts"), "{unknown}");
    }

    #[test]
    fn otlp_is_checked_and_its_headers_are_secret() {
        assert_eq!(
            errors(
                "[otlp]\nendpoint = \"http://127.0.0.1:4318/v1/traces\"\nheaders = { x-api-key = \"k-secret-42\" }\n"
            ),
            ""
        );
        let bad = errors("[otlp]\nendpoint = \"collector:4318\"\n");
        assert!(
            bad.contains("otlp") && bad.contains("http:// or https://"),
            "{bad}"
        );
        let ratio = errors("[otlp]\nendpoint = \"http://c/v1/traces\"\nsample_ratio = 2.0\n");
        assert!(ratio.contains("sample_ratio"), "{ratio}");
        let config = parse(
            "[otlp]\nendpoint = \"http://c/v1/traces\"\nheaders = { x-api-key = \"k-secret-42\" }\n",
            "t.toml".as_ref(),
        )
        .unwrap();
        assert!(!format!("{config:?}").contains("k-secret-42"));
        assert!(!toml::to_string(&config).unwrap().contains("k-secret-42"));
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let config = parse(
            "[admin]\nlisten = \"127.0.0.1:9901\"\ntoken = \"0123456789abcdef-secret\"\n",
            "t.toml".as_ref(),
        )
        .unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("0123456789abcdef-secret"), "{debug}");
        assert!(debug.contains("redacted"), "{debug}");
    }

    #[test]
    fn rate_limits_are_checked() {
        let base = "[[upstreams]]\nname = \"a\"\ntargets = [{ url = \"http://127.0.0.1:1\" }]\n";
        let ok = format!(
            "{base}[[routes]]\nname = \"r\"\nupstream = \"a\"\nrate_limit = {{ rate = \"10/s\", burst = 20, by = [\"ip\", \"header:x-tenant\"], cost = {{ POST = 5 }}, tiers = {{ free = \"100/h\", premium = [{{ rate = \"50/s\", algorithm = \"sliding_window\" }}] }} }}\n"
        );
        crate::parse(&ok, "t.toml".as_ref()).expect("valid");
        let bad = format!(
            "[redis]\nurl = \"http://u:hunter2@x\"\n\n{base}[[routes]]\nname = \"r\"\nupstream = \"a\"\nrate_limit = {{ rate = \"10/fortnight\", by = \"cookie\", cost = {{ POST = 50, default = 1 }}, limits = [{{ rate = \"5/s\" }}] }}\n"
        );
        let e = errors(&bad);
        assert!(e.contains("routes[0].rate_limit.rate"), "{e}");
        assert!(e.contains("10/fortnight"), "{e}");
        assert!(e.contains("unknown limit key \"cookie\""), "{e}");
        assert!(e.contains("routes[0].rate_limit.cost.POST"), "{e}");
        assert!(e.contains("redis.url"), "{e}");
        assert!(!e.contains("hunter2"), "the password never appears: {e}");
    }
}
