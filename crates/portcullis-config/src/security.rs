//! Edge security config: consumers and their API keys (`[[consumers]]`), how credentials are
//! read (`[auth]`), and a route's `auth` mode and `acl`.
//!
//! Kept apart from `model.rs` so the model only holds the hooks (`Config::consumers`,
//! `Config::auth`, `RouteConfig::auth`, `RouteConfig::acl`); validation lives here too and is
//! called once from `validate.rs`.

use std::{collections::BTreeMap, collections::HashSet, path::Path};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::{Config, ConfigError, Secret, diagnostics::closest, values};

/// `[[consumers]]`: a named client of the gateway, with its tier, groups and API keys.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerConfig {
    /// The consumer's id: the `ConsumerId` extension, `X-Consumer-Id` upstream, ACL entries.
    pub name: Spanned<String>,
    /// Its tier (plan), e.g. `free` or `premium`: the `ConsumerTier` extension and
    /// `X-Consumer-Tier`.
    #[serde(default)]
    pub tier: Option<Spanned<String>>,
    /// Groups the consumer belongs to, for route ACLs.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Free-form labels (documentation for operators; not sent anywhere).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// SHA-256 hashes (64 hex digits) of the consumer's API keys, as printed by
    /// `portcullis hash-key`. Never the keys themselves.
    #[serde(default)]
    pub api_keys: Vec<Spanned<Secret>>,
}

/// `[auth]`: how credentials are read, for every route whose `auth` asks for them.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// API keys: where they are read from.
    pub api_key: ApiKeyConfig,
    /// Send `X-Consumer-Id` and `X-Consumer-Tier` upstream for authenticated requests. Copies
    /// sent by clients are removed on every route either way.
    pub forward_consumer_headers: bool,
    /// JWT bearer tokens: keys and claim checks (absent: routes cannot use `auth = "jwt"`).
    pub jwt: Option<JwtConfig>,
    /// A second file of `[[consumers]]` (same schema), relative to the config file; reloaded
    /// with the config when either changes.
    pub consumers_file: Option<Spanned<std::path::PathBuf>>,
}

/// The file named by `[auth] consumers_file`: `[[consumers]]` entries and nothing else.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsumersFile {
    #[serde(default)]
    consumers: Vec<ConsumerConfig>,
}

/// A table that a route may also turn off with `false` (`cors = false`,
/// `bot_rules = false`) when a global one exists.
#[derive(Debug, Clone, PartialEq)]
pub enum Toggle<T> {
    /// `false`: none on this route.
    Off,
    /// The route's own table.
    On(T),
}

impl<T> Toggle<T> {
    /// The table, when on.
    pub fn on(&self) -> Option<&T> {
        match self {
            Self::Off => None,
            Self::On(t) => Some(t),
        }
    }
}

// A visitor rather than `#[serde(untagged)]`: untagged enums buffer their input, which loses
// the spans inside the table that error messages point at.
impl<'de, T: Deserialize<'de>> Deserialize<'de> for Toggle<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
            type Value = Toggle<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a table, or false to turn it off on this route")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Toggle<T>, E> {
                if v {
                    Err(E::custom(
                        "`true` is not a setting: give a table, or `false` to turn it off on this route",
                    ))
                } else {
                    Ok(Toggle::Off)
                }
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Toggle<T>, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Toggle::On)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

impl<T: Serialize> Serialize for Toggle<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Off => serializer.serialize_bool(false),
            Self::On(t) => t.serialize(serializer),
        }
    }
}

/// `[auth.jwt]`: how `Authorization: Bearer` tokens are verified.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// Accepted algorithms: `HS256`, `HS384`, `HS512`, `RS256`, `RS384`, `RS512`, `PS256`,
    /// `ES256`, `ES384`, `EdDSA`. Tokens with any other `alg` (including `none`) are refused.
    pub algorithms: Spanned<Vec<String>>,
    /// Shared secret for the HS algorithms.
    #[serde(default)]
    pub secret: Option<Spanned<Secret>>,
    /// PEM file with the public key (RSA, EC or Ed25519) for the other algorithms; relative to
    /// the config file.
    #[serde(default)]
    pub public_key: Option<Spanned<std::path::PathBuf>>,
    /// `http://` or `https://` URL of a JWK Set; keys are chosen by the token's `kid`.
    #[serde(default)]
    pub jwks_url: Option<Spanned<String>>,
    /// PEM file of the CA certificates trusted for an `https://` `jwks_url` (instead of the
    /// system's roots); relative to the config file.
    #[serde(default)]
    pub jwks_ca_file: Option<Spanned<std::path::PathBuf>>,
    /// Keys older than this are fetched again (in the background; the old ones serve meanwhile).
    #[serde(default = "JwtConfig::default_jwks_max_age")]
    pub jwks_max_age: crate::Duration,
    /// A token with an unknown `kid` fetches the set again at most this often.
    #[serde(default = "JwtConfig::default_jwks_min_refresh")]
    pub jwks_min_refresh: crate::Duration,
    /// Accepted `iss` values (empty: any).
    #[serde(default)]
    pub issuer: Vec<String>,
    /// Accepted `aud` values; the token must name one (empty: `aud` is not checked).
    #[serde(default)]
    pub audience: Vec<String>,
    /// Clock skew allowed for `exp`, `nbf` and `iat`.
    #[serde(default = "JwtConfig::default_leeway")]
    pub leeway: crate::Duration,
    /// Claims every token must carry.
    #[serde(default = "JwtConfig::default_required_claims")]
    pub required_claims: Vec<String>,
    /// The claim naming the consumer; a configured consumer of that name lends its tier and
    /// groups.
    #[serde(default = "JwtConfig::default_consumer_claim")]
    pub consumer_claim: String,
    /// The claim naming the tier of consumers that are not configured.
    #[serde(default)]
    pub tier_claim: Option<String>,
    /// Claims sent upstream as headers: `{ sub = "X-User-Id" }`. Client-sent copies of these
    /// headers are removed on routes with `auth`.
    #[serde(default)]
    pub claims_to_headers: BTreeMap<String, Spanned<String>>,
}

impl JwtConfig {
    fn default_jwks_max_age() -> crate::Duration {
        crate::Duration::from_secs(600)
    }
    fn default_jwks_min_refresh() -> crate::Duration {
        crate::Duration::from_secs(30)
    }
    fn default_leeway() -> crate::Duration {
        crate::Duration::from_secs(60)
    }
    fn default_required_claims() -> Vec<String> {
        vec!["exp".to_owned()]
    }
    fn default_consumer_claim() -> String {
        "sub".to_owned()
    }
}

/// The JWT algorithms the gateway verifies.
pub const JWT_ALGORITHMS: [&str; 10] = [
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA",
];

/// `[auth.api_key]`: where a request's API key is read from.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiKeyConfig {
    /// Request header carrying the key.
    pub header: Spanned<String>,
    /// Query parameter carrying the key (absent: the header only). The header wins when both
    /// are sent.
    pub query: Option<Spanned<String>>,
    /// Forward the key upstream (default: it is removed from headers and query first).
    pub forward: bool,
}

impl Default for ApiKeyConfig {
    fn default() -> Self {
        Self {
            header: Spanned::new(0..0, "X-API-Key".to_owned()),
            query: None,
            forward: false,
        }
    }
}

/// A route's `auth`: which credentials it requires.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// No authentication (the default).
    #[default]
    None,
    /// A known consumer's API key.
    ApiKey,
    /// A valid JWT bearer token (`[auth.jwt]`).
    Jwt,
    /// Any of the configured credential kinds.
    Any,
}

/// A route's `acl`: who may use it once authenticated. A consumer is allowed when it is listed
/// by name, or its tier or one of its groups is listed.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AclConfig {
    /// Consumer names allowed.
    pub consumers: Vec<Spanned<String>>,
    /// Tiers allowed.
    pub tiers: Vec<String>,
    /// Groups allowed.
    pub groups: Vec<String>,
}

/// `[ip_rules]` and a route's `ip_rules`: CIDRs or addresses, IPv4 or IPv6, matched against
/// the client address resolved with `server.trusted_proxies`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IpRulesConfig {
    /// Only these may pass (empty: every address not denied). A route's list replaces the
    /// global one.
    pub allow: Vec<Spanned<String>>,
    /// These are refused (403); a route's list adds to the global one. Deny wins over allow.
    pub deny: Vec<Spanned<String>>,
}

/// `[bot_rules]`: `User-Agent` patterns (case-insensitive substrings) refused with 403, on
/// every route.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BotRulesConfig {
    /// Include the built-in list of scanners and attack tools (sqlmap, nikto, nmap, ...).
    pub default_list: bool,
    /// More patterns to refuse.
    pub deny: Vec<String>,
    /// Patterns that pass even when a deny pattern matches.
    pub allow: Vec<String>,
    /// Refuse requests without a `User-Agent`.
    pub deny_empty: bool,
}

impl Default for BotRulesConfig {
    fn default() -> Self {
        Self {
            default_list: true,
            deny: Vec::new(),
            allow: Vec::new(),
            deny_empty: false,
        }
    }
}

/// `[cors]` (every route) or a route's `cors` (replaces it).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    /// Allowed origins: `"*"`, exact (`"https://app.example.com"`), wildcard subdomain
    /// (`"https://*.example.com"`) or `"regex:^https://..."`.
    pub origins: Vec<Spanned<String>>,
    /// Allowed methods (empty: GET, HEAD, POST).
    pub methods: Vec<Spanned<String>>,
    /// Allowed request headers; `"*"` allows what a preflight asks for.
    pub headers: Vec<Spanned<String>>,
    /// Response headers exposed to scripts.
    pub expose_headers: Vec<Spanned<String>>,
    /// Allow credentials (the origin is echoed, never `*`).
    pub credentials: bool,
    /// How long browsers may cache a preflight.
    pub max_age: Option<crate::Duration>,
}

/// `[security_headers]` (every route) or a route's `security_headers` (overrides keys). An
/// empty string leaves a header out.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityHeadersConfig {
    /// `Strict-Transport-Security` (default `max-age=31536000; includeSubDomains`).
    pub hsts: Option<Spanned<String>>,
    /// `X-Frame-Options` (default `DENY`).
    pub frame_options: Option<Spanned<String>>,
    /// `X-Content-Type-Options: nosniff` (default true).
    pub content_type_options: Option<bool>,
    /// `Referrer-Policy` (default `strict-origin-when-cross-origin`).
    pub referrer_policy: Option<Spanned<String>>,
    /// `Content-Security-Policy` (default none).
    pub content_security_policy: Option<Spanned<String>>,
    /// `Permissions-Policy` (default none).
    pub permissions_policy: Option<Spanned<String>>,
    /// Remove `Server` and `X-Powered-By` from upstream responses (default false).
    pub remove_server_headers: Option<bool>,
}

/// `[request_limits]`: limits on requests, for every route (a route's key overrides).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RequestLimitsConfig {
    /// The largest request body accepted (413 beyond): `Content-Length` is judged before
    /// reading, other bodies are counted as they stream.
    pub max_body_size: Option<Spanned<crate::ByteSize>>,
    /// The longest request target (path and query) accepted, in bytes (414 beyond).
    pub max_url_length: Option<usize>,
    /// The most request headers accepted (431 beyond); `server.max_header_bytes` bounds
    /// their total size.
    pub max_header_count: Option<usize>,
}

/// A route's `request_headers` or `response_headers`: applied in the order remove, rename,
/// add. Values of `add` may use `$request_id`, `$consumer_id`, `$upstream` and `$route`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeaderTransformConfig {
    /// Headers set (replacing any value): `{ "X-Service" = "orders" }`.
    pub add: BTreeMap<String, Spanned<String>>,
    /// Headers removed.
    pub remove: Vec<Spanned<String>>,
    /// Headers renamed: `{ "X-Old" = "X-New" }`.
    pub rename: BTreeMap<String, Spanned<String>>,
}

/// The variables header templates may use.
pub const TEMPLATE_VARIABLES: [&str; 4] = ["$request_id", "$consumer_id", "$upstream", "$route"];

/// A header template: a valid header value once its variables are replaced, with known
/// variables only.
pub fn check_header_template(text: &str) -> Result<(), String> {
    let mut rest = text.to_owned();
    for v in TEMPLATE_VARIABLES {
        rest = rest.replace(v, "");
    }
    if rest.contains('$') {
        return Err(format!(
            "{text:?}: unknown variable; use {}",
            TEMPLATE_VARIABLES.join(", ")
        ));
    }
    http::HeaderValue::from_str(&rest)
        .map(drop)
        .map_err(|_| format!("{text:?} is not a valid header value"))
}

/// Parses an API key hash: 64 hex digits (either case), as 32 bytes.
pub fn parse_key_hash(text: &str) -> Result<[u8; 32], String> {
    const MSG: &str = "must be a SHA-256 hash: 64 hex digits, as printed by `portcullis hash-key` (never the key itself)";
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return Err(MSG.into());
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let hi = hex_digit(pair[0]).ok_or(MSG)?;
        let lo = hex_digit(pair[1]).ok_or(MSG)?;
        out[i] = (hi << 4) | lo;
    }
    Ok(out)
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// A consumer name or tier: sent as a header value, so visible ASCII without spaces.
fn check_token(text: &str) -> Result<(), String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{text:?} must be non-empty visible ASCII without spaces"
        ));
    }
    Ok(())
}

/// Checks `[[consumers]]` (of the config and of `consumers_file`, whose entries are appended
/// to `config.consumers`), `[auth]` and the routes' `auth` and `acl`; errors go to `errors`.
/// Anchors `auth.jwt.public_key`, `auth.jwt.jwks_ca_file` and `auth.consumers_file` at the
/// config file's directory.
pub(crate) fn check(config: &mut Config, text: &str, file: &Path, errors: &mut Vec<ConfigError>) {
    let mut names = HashSet::new();
    let mut hashes = HashSet::new();
    let mut keyed = check_consumers(
        &config.consumers,
        file,
        text,
        &mut names,
        &mut hashes,
        errors,
    );
    if let Some(extra) = load_consumers_file(config, text, file, errors) {
        let (path, extra_text, consumers) = extra;
        keyed |= check_consumers(
            &consumers,
            &path,
            &extra_text,
            &mut names,
            &mut hashes,
            errors,
        );
        config.consumers.extend(consumers);
    }
    let mut err = |span: std::ops::Range<usize>, key: String, message: String| {
        errors.push(ConfigError::at_key(file, text, span, key, message));
    };
    if let Some(jwt) = &mut config.auth.jwt {
        check_jwt(jwt, file, &mut err);
    }
    let config = &*config;
    check_edge(config, &mut err);
    let has_jwt = config.auth.jwt.is_some();
    let a = &config.auth.api_key;
    if let Err(m) = values::parse_header_name(a.header.get_ref()) {
        err(a.header.span(), "auth.api_key.header".into(), m);
    }
    if let Some(q) = &a.query
        && (q.get_ref().is_empty() || q.get_ref().contains(['&', '=', '#', ' ']))
    {
        err(
            q.span(),
            "auth.api_key.query".into(),
            "must be a query parameter name (no &, =, # or spaces)".into(),
        );
    }
    for (i, r) in config.routes.iter().enumerate() {
        let mode = r.auth.as_ref().map_or(AuthMode::None, |m| *m.get_ref());
        if let Some(m) = &r.auth {
            match mode {
                AuthMode::Jwt if !has_jwt => err(
                    m.span(),
                    format!("routes[{i}].auth"),
                    "auth = \"jwt\" needs an [auth.jwt] table".into(),
                ),
                AuthMode::ApiKey if !keyed => err(
                    m.span(),
                    format!("routes[{i}].auth"),
                    "no [[consumers]] entry has api_keys, so no request could pass".into(),
                ),
                AuthMode::Any if !keyed && !has_jwt => err(
                    m.span(),
                    format!("routes[{i}].auth"),
                    "no credentials are configured: give [[consumers]] api_keys or [auth.jwt]"
                        .into(),
                ),
                _ => {}
            }
        }
        let Some(acl) = &r.acl else { continue };
        if mode == AuthMode::None {
            err(
                acl.span(),
                format!("routes[{i}].acl"),
                "an acl needs an authenticated consumer: set auth = \"api_key\" or \"any\"".into(),
            );
        }
        let acl = acl.get_ref();
        if acl.consumers.is_empty() && acl.tiers.is_empty() && acl.groups.is_empty() {
            err(
                r.acl.as_ref().map_or(0..0, Spanned::span),
                format!("routes[{i}].acl"),
                "lists nobody: give consumers, tiers or groups".into(),
            );
        }
        for (j, c) in acl.consumers.iter().enumerate() {
            let wanted = c.get_ref();
            if !names.contains(wanted.as_str()) {
                let hint = closest(wanted, names.iter().map(String::as_str))
                    .map(|s| format!("; did you mean {s:?}?"))
                    .unwrap_or_default();
                err(
                    c.span(),
                    format!("routes[{i}].acl.consumers[{j}]"),
                    format!("unknown consumer {wanted:?}{hint}"),
                );
            }
        }
    }
}

/// Reads, parses and returns the `[auth] consumers_file` (its path made absolute in
/// `config`); `None` when there is none or it cannot be used (the error is in `errors`).
fn load_consumers_file(
    config: &mut Config,
    text: &str,
    file: &Path,
    errors: &mut Vec<ConfigError>,
) -> Option<(std::path::PathBuf, String, Vec<ConsumerConfig>)> {
    let path = config.auth.consumers_file.as_mut()?;
    let resolved = file.parent().unwrap_or(Path::new(".")).join(path.get_ref());
    *path.get_mut() = resolved.clone();
    let extra_text = match std::fs::read_to_string(&resolved) {
        Ok(t) => t,
        Err(e) => {
            errors.push(ConfigError::at_key(
                file,
                text,
                path.span(),
                "auth.consumers_file".into(),
                format!("cannot read {}: {e}", resolved.display()),
            ));
            return None;
        }
    };
    match toml::from_str::<ConsumersFile>(&extra_text) {
        Ok(parsed) => Some((resolved, extra_text, parsed.consumers)),
        Err(e) => {
            errors.push(crate::diagnostics::from_toml_error(
                &e,
                &extra_text,
                &resolved,
            ));
            None
        }
    }
}

/// Checks consumers of one file (`text` is that file's): names and tiers well-formed, names
/// and key hashes unique across files (`names`, `hashes`). Whether any has an API key.
fn check_consumers(
    consumers: &[ConsumerConfig],
    file: &Path,
    text: &str,
    names: &mut HashSet<String>,
    hashes: &mut HashSet<[u8; 32]>,
    errors: &mut Vec<ConfigError>,
) -> bool {
    let mut err = |span: std::ops::Range<usize>, key: String, message: String| {
        errors.push(ConfigError::at_key(file, text, span, key, message));
    };
    let mut keyed = false;
    for (i, c) in consumers.iter().enumerate() {
        let name = c.name.get_ref();
        if let Err(m) = check_token(name) {
            err(c.name.span(), format!("consumers[{i}].name"), m);
        } else if !names.insert(name.clone()) {
            err(
                c.name.span(),
                format!("consumers[{i}].name"),
                format!("duplicate consumer name {name:?}"),
            );
        }
        if let Some(tier) = &c.tier
            && let Err(m) = check_token(tier.get_ref())
        {
            err(tier.span(), format!("consumers[{i}].tier"), m);
        }
        for (j, k) in c.api_keys.iter().enumerate() {
            keyed = true;
            match parse_key_hash(k.get_ref().expose()) {
                // The hash is not echoed: it names a key.
                Ok(h) if !hashes.insert(h) => err(
                    k.span(),
                    format!("consumers[{i}].api_keys[{j}]"),
                    "this key hash is given twice; each key belongs to one consumer".into(),
                ),
                Ok(_) => {}
                Err(m) => err(k.span(), format!("consumers[{i}].api_keys[{j}]"), m),
            }
        }
    }
    keyed
}

/// Checks IP rules, CORS and security headers, global and per route.
fn check_edge(config: &Config, err: &mut impl FnMut(std::ops::Range<usize>, String, String)) {
    let mut ip = |rules: &IpRulesConfig, key: &str| {
        for (name, list) in [("allow", &rules.allow), ("deny", &rules.deny)] {
            for (j, n) in list.iter().enumerate() {
                if let Err(m) = values::parse_cidr(n.get_ref()) {
                    err(n.span(), format!("{key}.{name}[{j}]"), m);
                }
            }
        }
    };
    ip(&config.ip_rules, "ip_rules");
    for (i, r) in config.routes.iter().enumerate() {
        if let Some(rules) = &r.ip_rules {
            ip(rules, &format!("routes[{i}].ip_rules"));
        }
    }
    let mut cors = |c: &CorsConfig, key: &str| {
        if c.origins.is_empty() {
            err(
                0..0,
                format!("{key}.origins"),
                "list at least one origin".into(),
            );
        }
        for (j, o) in c.origins.iter().enumerate() {
            if let Err(m) = check_origin(o.get_ref()) {
                err(o.span(), format!("{key}.origins[{j}]"), m);
            }
        }
        for (j, m) in c.methods.iter().enumerate() {
            if http::Method::from_bytes(m.get_ref().as_bytes()).is_err() || m.get_ref().is_empty() {
                err(
                    m.span(),
                    format!("{key}.methods[{j}]"),
                    format!("invalid method {:?}", m.get_ref()),
                );
            }
        }
        for (name, list) in [
            ("headers", &c.headers),
            ("expose_headers", &c.expose_headers),
        ] {
            for (j, h) in list.iter().enumerate() {
                if h.get_ref() != "*"
                    && let Err(m) = values::parse_header_name(h.get_ref())
                {
                    err(h.span(), format!("{key}.{name}[{j}]"), m);
                }
            }
        }
    };
    if let Some(c) = &config.cors {
        cors(c, "cors");
    }
    for (i, r) in config.routes.iter().enumerate() {
        if let Some(c) = r.cors.as_ref().and_then(Toggle::on) {
            cors(c, &format!("routes[{i}].cors"));
        }
    }
    let mut headers = |h: &SecurityHeadersConfig, key: &str| {
        for (name, value) in [
            ("hsts", &h.hsts),
            ("frame_options", &h.frame_options),
            ("referrer_policy", &h.referrer_policy),
            ("content_security_policy", &h.content_security_policy),
            ("permissions_policy", &h.permissions_policy),
        ] {
            if let Some(v) = value
                && http::HeaderValue::from_str(v.get_ref()).is_err()
            {
                err(
                    v.span(),
                    format!("{key}.{name}"),
                    "is not a valid header value".into(),
                );
            }
        }
    };
    if let Some(h) = &config.security_headers {
        headers(h, "security_headers");
    }
    for (i, r) in config.routes.iter().enumerate() {
        if let Some(h) = &r.security_headers {
            headers(h, &format!("routes[{i}].security_headers"));
        }
    }
    for (i, r) in config.routes.iter().enumerate() {
        for (dir, t) in [
            ("request_headers", &r.request_headers),
            ("response_headers", &r.response_headers),
        ] {
            let Some(t) = t else { continue };
            let key = format!("routes[{i}].{dir}");
            for (name, value) in &t.add {
                if let Err(m) = values::parse_header_name(name) {
                    err(value.span(), format!("{key}.add"), m);
                }
                if let Err(m) = check_header_template(value.get_ref()) {
                    err(value.span(), format!("{key}.add.{name}"), m);
                }
            }
            for (j, name) in t.remove.iter().enumerate() {
                if let Err(m) = values::parse_header_name(name.get_ref()) {
                    err(name.span(), format!("{key}.remove[{j}]"), m);
                }
            }
            for (from, to) in &t.rename {
                for n in [from.as_str(), to.get_ref().as_str()] {
                    if let Err(m) = values::parse_header_name(n) {
                        err(to.span(), format!("{key}.rename.{from}"), m);
                    }
                }
            }
        }
    }
    let limits = std::iter::once((
        config.request_limits.max_body_size.as_ref(),
        "request_limits.max_body_size".to_owned(),
    ))
    .chain(config.routes.iter().enumerate().map(|(i, r)| {
        (
            r.max_body_size.as_ref(),
            format!("routes[{i}].max_body_size"),
        )
    }));
    for (size, key) in limits {
        if let Some(size) = size
            && size.get_ref().0 == 0
        {
            err(size.span(), key, "must be above zero".into());
        }
    }
}

/// A CORS origin pattern: `*`, `scheme://host[:port]`, `scheme://*.domain[:port]` or
/// `regex:...`.
pub fn check_origin(text: &str) -> Result<(), String> {
    if text == "*" {
        return Ok(());
    }
    if let Some(re) = text.strip_prefix("regex:") {
        return regex::Regex::new(re)
            .map(drop)
            .map_err(|e| format!("invalid regex: {e}"));
    }
    let bad = || {
        format!(
            "{text:?} is not an origin: use \"https://app.example.com\", \"https://*.example.com\", \"*\" or \"regex:...\""
        )
    };
    let (_, rest) = text.split_once("://").ok_or_else(bad)?;
    let host = rest.strip_prefix("*.").unwrap_or(rest);
    if host.is_empty() || host.contains(['*', '/', ' ']) {
        return Err(bad());
    }
    Ok(())
}

/// Checks `[auth.jwt]`.
fn check_jwt(
    jwt: &mut JwtConfig,
    file: &Path,
    err: &mut impl FnMut(std::ops::Range<usize>, String, String),
) {
    let algs = jwt.algorithms.get_ref();
    let span = jwt.algorithms.span();
    if algs.is_empty() {
        err(
            span.clone(),
            "auth.jwt.algorithms".into(),
            "list at least one algorithm".into(),
        );
    }
    for a in algs {
        if !JWT_ALGORITHMS.contains(&a.as_str()) {
            let hint = closest(a, JWT_ALGORITHMS.iter().copied())
                .map(|s| format!("; did you mean {s:?}?"))
                .unwrap_or_default();
            err(
                span.clone(),
                "auth.jwt.algorithms".into(),
                format!(
                    "unsupported algorithm {a:?}{hint} (supported: {})",
                    JWT_ALGORITHMS.join(", ")
                ),
            );
        }
    }
    let hmac = algs.iter().any(|a| a.starts_with("HS"));
    let public = algs.iter().any(|a| !a.starts_with("HS"));
    if hmac && jwt.secret.is_none() {
        err(
            span.clone(),
            "auth.jwt.secret".into(),
            "HS algorithms need a secret".into(),
        );
    }
    if let Some(s) = &jwt.secret {
        if !hmac {
            err(
                s.span(),
                "auth.jwt.secret".into(),
                "a secret is only used by HS algorithms; list one in algorithms or remove it"
                    .into(),
            );
        } else if s.get_ref().expose().len() < 32 {
            err(
                s.span(),
                "auth.jwt.secret".into(),
                "must be at least 32 bytes (RFC 7518 §3.2: at least the hash size)".into(),
            );
        }
    }
    if public && jwt.public_key.is_none() && jwt.jwks_url.is_none() {
        err(
            span,
            "auth.jwt.public_key".into(),
            "RS, PS, ES and EdDSA algorithms need public_key or jwks_url".into(),
        );
    }
    if let Some(path) = &mut jwt.public_key {
        let resolved = file.parent().unwrap_or(Path::new(".")).join(path.get_ref());
        if !resolved.is_file() {
            err(
                path.span(),
                "auth.jwt.public_key".into(),
                format!("file not found: {}", resolved.display()),
            );
        }
        *path.get_mut() = resolved;
    }
    if let Some(path) = &mut jwt.jwks_ca_file {
        let resolved = file.parent().unwrap_or(Path::new(".")).join(path.get_ref());
        if !resolved.is_file() {
            err(
                path.span(),
                "auth.jwt.jwks_ca_file".into(),
                format!("file not found: {}", resolved.display()),
            );
        } else if !jwt
            .jwks_url
            .as_ref()
            .is_some_and(|u| u.get_ref().starts_with("https://"))
        {
            err(
                path.span(),
                "auth.jwt.jwks_ca_file".into(),
                "is only used for an https:// jwks_url".into(),
            );
        }
        *path.get_mut() = resolved;
    }
    if let Some(url) = &jwt.jwks_url {
        let ok = url
            .get_ref()
            .parse::<http::Uri>()
            .ok()
            .filter(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some());
        if ok.is_none() {
            err(
                url.span(),
                "auth.jwt.jwks_url".into(),
                "must be an http:// or https:// URL".into(),
            );
        }
    }
    if jwt.consumer_claim.is_empty() {
        err(
            0..0,
            "auth.jwt.consumer_claim".into(),
            "must name a claim".into(),
        );
    }
    for (claim, header) in &jwt.claims_to_headers {
        if let Err(m) = values::parse_header_name(header.get_ref()) {
            err(
                header.span(),
                format!("auth.jwt.claims_to_headers.{claim}"),
                m,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::parse;

    use crate::test_errors as errors;

    const HASH: &str = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";
    const ROUTE: &str = "[[upstreams]]\nname = \"u\"\ntargets = [{ url = \"http://127.0.0.1:1\" }]\n\n[[routes]]\nname = \"r\"\nupstream = \"u\"\n";

    #[test]
    fn consumers_and_api_key_routes_parse() {
        let text = format!(
            "{ROUTE}auth = \"api_key\"\nacl = {{ consumers = [\"acme\"], tiers = [\"gold\"] }}\n\n[[consumers]]\nname = \"acme\"\ntier = \"free\"\ngroups = [\"partners\"]\napi_keys = [\"{HASH}\"]\n"
        );
        assert_eq!(errors(&text), "");
        let config = parse(&text, "t.toml".as_ref()).unwrap();
        assert!(
            !format!("{config:?}").contains(HASH),
            "hashes are redacted in Debug"
        );
    }

    #[test]
    fn bad_hashes_names_and_acls_are_reported_with_their_keys() {
        let bad = errors(&format!(
            "{ROUTE}\n[[consumers]]\nname = \"acme\"\napi_keys = [\"secret-key\"]\n"
        ));
        assert!(
            bad.contains("consumers[0].api_keys[0]") && bad.contains("t.toml:11"),
            "{bad}"
        );
        assert!(
            !bad.contains("secret-key"),
            "the value is not echoed: {bad}"
        );
        let dup = errors(&format!(
            "{ROUTE}\n[[consumers]]\nname = \"a\"\napi_keys = [\"{HASH}\"]\n[[consumers]]\nname = \"a\"\napi_keys = [\"{}\"]\n",
            HASH.to_uppercase()
        ));
        assert!(dup.contains("consumers[1].name"), "{dup}");
        assert!(dup.contains("consumers[1].api_keys[0]"), "{dup}");
        let acl = errors(&format!(
            "{ROUTE}auth = \"api_key\"\nacl = {{ consumers = [\"acmee\"] }}\n[[consumers]]\nname = \"acme\"\napi_keys = [\"{HASH}\"]\n"
        ));
        assert!(
            acl.contains("routes[0].acl.consumers[0]") && acl.contains("did you mean \"acme\""),
            "{acl}"
        );
        let no_auth = errors(&format!("{ROUTE}acl = {{ tiers = [\"gold\"] }}\n"));
        assert!(no_auth.contains("routes[0].acl"), "{no_auth}");
        let nobody = errors(&format!("{ROUTE}auth = \"api_key\"\n"));
        assert!(
            nobody.contains("routes[0].auth") && nobody.contains("t.toml:8"),
            "{nobody}"
        );
        let header = errors("[auth.api_key]\nheader = \"bad header\"\n");
        assert!(header.contains("auth.api_key.header"), "{header}");
    }

    #[test]
    fn edge_rules_are_checked_with_their_keys() {
        let ok = format!(
            "[ip_rules]\ndeny = [\"192.0.2.0/24\", \"2001:db8::/32\"]\n[bot_rules]\ndeny = [\"badbot\"]\n\
             [cors]\norigins = [\"https://app.example.com\", \"https://*.example.org\", \"regex:^https://.*\\\\.test$\"]\n\
             [security_headers]\nhsts = \"max-age=60\"\n{ROUTE}ip_rules = {{ allow = [\"10.0.0.0/8\"] }}\n\
             cors = {{ origins = [\"*\"], methods = [\"GET\"] }}\nsecurity_headers = {{ frame_options = \"\" }}\n"
        );
        assert_eq!(errors(&ok), "");
        let bad_ip = errors(&format!(
            "{ROUTE}ip_rules = {{ deny = [\"10.0.0.0/33\"] }}\n"
        ));
        assert!(
            bad_ip.contains("routes[0].ip_rules.deny[0]") && bad_ip.contains("t.toml:8"),
            "{bad_ip}"
        );
        let bad_origin = errors("[cors]\norigins = [\"app.example.com\"]\n");
        assert!(bad_origin.contains("cors.origins[0]"), "{bad_origin}");
        let bad_regex = errors("[cors]\norigins = [\"regex:(\"]\n");
        assert!(bad_regex.contains("cors.origins[0]"), "{bad_regex}");
        let transform = errors(&format!(
            "{ROUTE}response_headers = {{ add = {{ \"X-Served-By\" = \"$host\" }} }}\n"
        ));
        assert!(
            transform.contains("routes[0].response_headers.add.X-Served-By"),
            "{transform}"
        );
        let bad_header = errors("[security_headers]\nhsts = \"a\\nb\"\n");
        assert!(bad_header.contains("security_headers.hsts"), "{bad_header}");
    }

    #[test]
    fn a_consumers_file_adds_consumers_and_its_errors_name_that_file() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("gw.toml");
        let extra = dir.path().join("consumers.toml");
        let text = format!(
            "{ROUTE}auth = \"api_key\"\nacl = {{ consumers = [\"file-only\"] }}\n\n[auth]\nconsumers_file = \"consumers.toml\"\n\n[[consumers]]\nname = \"inline\"\n"
        );
        std::fs::write(
            &extra,
            format!(
                "[[consumers]]\nname = \"file-only\"\ntier = \"gold\"\napi_keys = [\"{HASH}\"]\n"
            ),
        )
        .unwrap();
        let config = parse(&text, &main).unwrap();
        let names: Vec<&str> = config
            .consumers
            .iter()
            .map(|c| c.name.get_ref().as_str())
            .collect();
        assert_eq!(names, ["inline", "file-only"]);
        assert_eq!(
            config.auth.consumers_file.as_ref().unwrap().get_ref(),
            &extra,
            "anchored at the config's directory"
        );

        // Errors in the consumers file name it, with line and key.
        std::fs::write(
            &extra,
            "[[consumers]]\nname = \"file-only\"\n\n[[consumers]]\nname = \"inline\"\napi_keys = [\"not-a-hash\"]\n",
        )
        .unwrap();
        let e = parse(&text, &main).unwrap_err().to_string();
        assert!(
            e.contains("consumers.toml:5") && e.contains("consumers[1].name"),
            "{e}"
        );
        assert!(e.contains("duplicate consumer name"), "{e}");
        assert!(
            e.contains("consumers.toml:6") && e.contains("consumers[1].api_keys[0]"),
            "{e}"
        );
        std::fs::write(&extra, "[[consumers]]\nname = \"x\"\nteir = \"gold\"\n").unwrap();
        let e = parse(&text, &main).unwrap_err().to_string();
        assert!(e.contains("consumers.toml:3") && e.contains("teir"), "{e}");
        std::fs::remove_file(&extra).unwrap();
        let e = parse(&text, &main).unwrap_err().to_string();
        assert!(
            e.contains("gw.toml") && e.contains("auth.consumers_file"),
            "{e}"
        );
    }

    #[test]
    fn routes_turn_cors_and_bot_rules_off_with_false_only() {
        let ok = format!(
            "[cors]\norigins = [\"*\"]\n[bot_rules]\n{ROUTE}cors = false\nbot_rules = false\n"
        );
        let config = parse(&ok, "t.toml".as_ref()).unwrap();
        assert_eq!(config.routes[0].cors, Some(crate::Toggle::Off));
        let own = format!("{ROUTE}bot_rules = {{ deny = [\"curl\"], default_list = false }}\n");
        assert_eq!(errors(&own), "");
        let on = errors(&format!("{ROUTE}cors = true\n"));
        assert!(
            on.contains("`true` is not a setting") && on.contains("t.toml:8"),
            "{on}"
        );
        let typo = errors(&format!("{ROUTE}bot_rules = {{ deny_emtpy = true }}\n"));
        assert!(
            typo.contains("deny_emtpy") && typo.contains("t.toml:8"),
            "{typo}"
        );
        let bad_origin = errors(&format!("{ROUTE}cors = {{ origins = [\"nope\"] }}\n"));
        assert!(
            bad_origin.contains("routes[0].cors.origins[0]"),
            "{bad_origin}"
        );
    }

    #[test]
    fn jwt_algorithms_secrets_and_keys_are_checked_with_file_line_and_key() {
        const SECRET: &str = "a-secret-of-at-least-32-bytes-long!!";
        let ok = format!("[auth.jwt]\nalgorithms = [\"HS256\"]\nsecret = \"{SECRET}\"\n");
        assert_eq!(errors(&ok), "");

        let misspelled = errors(&ok.replace("HS256", "HS265"));
        assert!(
            misspelled.contains("t.toml:2")
                && misspelled.contains("auth.jwt.algorithms")
                && misspelled.contains("unsupported algorithm \"HS265\"")
                && misspelled.contains("did you mean \"HS256\""),
            "{misspelled}"
        );
        let none =
            errors("[auth.jwt]\nalgorithms = [\"none\"]\njwks_url = \"https://idp.test/jwks\"\n");
        assert!(
            none.contains("t.toml:2") && none.contains("unsupported algorithm \"none\""),
            "{none}"
        );
        let empty = errors("[auth.jwt]\nalgorithms = []\n");
        assert!(empty.contains("list at least one algorithm"), "{empty}");

        let no_secret = errors("[auth.jwt]\nalgorithms = [\"HS384\"]\n");
        assert!(
            no_secret.contains("t.toml:2")
                && no_secret.contains("auth.jwt.secret")
                && no_secret.contains("HS algorithms need a secret"),
            "{no_secret}"
        );
        let short = errors(
            "[auth.jwt]\nalgorithms = [\"HS256\"]\nsecret = \"short-secret-31-bytes-long-0123\"\n",
        );
        assert!(
            short.contains("t.toml:3")
                && short.contains("auth.jwt.secret")
                && short.contains("at least 32 bytes"),
            "{short}"
        );
        assert!(
            !short.contains("short-secret-31"),
            "the secret is not echoed: {short}"
        );
        let unused = errors(&format!(
            "[auth.jwt]\nalgorithms = [\"ES256\"]\njwks_url = \"https://idp.test/jwks\"\nsecret = \"{SECRET}\"\n"
        ));
        assert!(
            unused.contains("t.toml:4") && unused.contains("only used by HS algorithms"),
            "{unused}"
        );

        for alg in ["RS256", "PS256", "ES384", "EdDSA"] {
            let no_key = errors(&format!("[auth.jwt]\nalgorithms = [\"{alg}\"]\n"));
            assert!(
                no_key.contains("t.toml:2")
                    && no_key.contains("auth.jwt.public_key")
                    && no_key.contains("need public_key or jwks_url"),
                "{alg}: {no_key}"
            );
        }
        let missing_key =
            errors("[auth.jwt]\nalgorithms = [\"RS256\"]\npublic_key = \"no-such-key.pem\"\n");
        assert!(
            missing_key.contains("t.toml:3")
                && missing_key.contains("auth.jwt.public_key")
                && missing_key.contains("not found"),
            "{missing_key}"
        );
        for url in [
            "ftp://idp.test/jwks",
            "idp.test/jwks",
            "https://",
            "not a url",
        ] {
            let bad = errors(&format!(
                "[auth.jwt]\nalgorithms = [\"ES256\"]\njwks_url = \"{url}\"\n"
            ));
            assert!(
                bad.contains("t.toml:3")
                    && bad.contains("auth.jwt.jwks_url")
                    && bad.contains("http:// or https:// URL"),
                "{url}: {bad}"
            );
        }
    }

    #[test]
    fn a_jwks_ca_file_must_exist_and_go_with_an_https_url() {
        let missing = errors(
            "[auth.jwt]\nalgorithms = [\"ES256\"]\njwks_url = \"https://idp.test/jwks\"\njwks_ca_file = \"nowhere.pem\"\n",
        );
        assert!(
            missing.contains("auth.jwt.jwks_ca_file") && missing.contains("not found"),
            "{missing}"
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), "x").unwrap();
        let plain = format!(
            "[auth.jwt]\nalgorithms = [\"ES256\"]\njwks_url = \"http://idp.test/jwks\"\njwks_ca_file = \"{}\"\n",
            dir.path().join("ca.pem").display()
        );
        let e = errors(&plain);
        assert!(e.contains("only used for an https://"), "{e}");
        assert_eq!(errors(&plain.replace("http://", "https://")), "");
    }
}
