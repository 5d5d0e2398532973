//! Lowering `[[consumers]]`, `[auth]` and the routes' `auth`/`acl` into `portcullis-auth`.

use std::sync::Arc;

use std::str::FromStr as _;

use portcullis_auth::{
    Acl, Algorithm, ApiKeyOptions, AuthMode, AuthOptions, Authenticator, BotRules, ConsumerSpec,
    CorsOptions, DEFAULT_BAD_BOTS, EdgeOptions, HeaderTransformOptions, IpRules, JwtOptions,
    RouteAuth, RouteSecurity, SecurityHeaderOptions,
};
use portcullis_config::{
    Config, CorsConfig, HeaderTransformConfig, JwtConfig, RouteConfig, SecurityHeadersConfig,
    Spanned, parse_cidr, parse_header_name, parse_key_hash,
};

use crate::stack::BuildError;

/// The consumers and credential settings shared by every route. On reload, `previous` lends its
/// cached JWK Set when the JWK Set URL and CA are unchanged.
pub(crate) fn authenticator(
    config: &Config,
    previous: Option<&Authenticator>,
) -> Result<Arc<Authenticator>, BuildError> {
    let consumers = config
        .consumers
        .iter()
        .map(|c| {
            Ok(ConsumerSpec {
                name: c.name.get_ref().clone(),
                tier: c.tier.as_ref().map(|t| t.get_ref().clone()),
                groups: c.groups.clone(),
                api_key_hashes: c
                    .api_keys
                    .iter()
                    .map(|k| parse_key_hash(k.get_ref().expose()))
                    .collect::<Result<_, _>>()?,
            })
        })
        .collect::<Result<Vec<_>, String>>()
        .map_err(BuildError::Config)?;
    let a = &config.auth;
    let options = AuthOptions {
        api_key: ApiKeyOptions {
            header: parse_header_name(a.api_key.header.get_ref()).map_err(BuildError::Config)?,
            query: a.api_key.query.as_ref().map(|q| q.get_ref().clone()),
            forward: a.api_key.forward,
        },
        forward_consumer_headers: a.forward_consumer_headers,
        jwt: a.jwt.as_ref().map(jwt_options).transpose()?,
    };
    let mut auth = Authenticator::new(consumers, options).map_err(|e| BuildError::Config(e.0))?;
    if let Some(previous) = previous {
        auth.keep_jwks_of(previous);
    }
    Ok(Arc::new(auth))
}

/// A route's security from its `auth`, `acl`, `ip_rules`, `cors`, `security_headers` and the
/// global tables.
pub(crate) fn route_security(
    config: &Config,
    auth: &Arc<Authenticator>,
    r: &RouteConfig,
) -> Result<RouteSecurity, BuildError> {
    route_auth(auth, r)
        .with_edge(&edge_options(config, r)?)
        .map_err(|e| BuildError::Config(e.0))
}

fn route_auth(auth: &Arc<Authenticator>, r: &RouteConfig) -> RouteSecurity {
    let mode = match r.auth.as_ref().map(|m| *m.get_ref()) {
        None | Some(portcullis_config::AuthMode::None) => return RouteSecurity::none(),
        Some(portcullis_config::AuthMode::ApiKey) => AuthMode::ApiKey,
        Some(portcullis_config::AuthMode::Jwt) => AuthMode::Jwt,
        Some(portcullis_config::AuthMode::Any) => AuthMode::Any,
    };
    let names = |v: &[String]| v.iter().map(|s| Arc::from(s.as_str())).collect();
    let acl = r.acl.as_ref().map(|acl| {
        let acl = acl.get_ref();
        Acl {
            consumers: acl
                .consumers
                .iter()
                .map(|c| Arc::from(c.get_ref().as_str()))
                .collect(),
            tiers: names(&acl.tiers),
            groups: names(&acl.groups),
        }
    });
    RouteSecurity::new(Arc::clone(auth), RouteAuth { mode, acl })
}

/// `[auth.jwt]` as the verifier's options; reads the public key file.
fn jwt_options(j: &JwtConfig) -> Result<JwtOptions, BuildError> {
    let config_error = |e: String| BuildError::Config(format!("auth.jwt: {e}"));
    Ok(JwtOptions {
        algorithms: j
            .algorithms
            .get_ref()
            .iter()
            .map(|a| Algorithm::from_str(a).map_err(|_| config_error(format!("algorithm {a:?}"))))
            .collect::<Result<_, _>>()?,
        secret: j
            .secret
            .as_ref()
            .map(|s| s.get_ref().expose().as_bytes().to_vec()),
        public_key_pem: j
            .public_key
            .as_ref()
            .map(|p| {
                std::fs::read(p.get_ref())
                    .map_err(|e| config_error(format!("{}: {e}", p.get_ref().display())))
            })
            .transpose()?,
        jwks_url: j
            .jwks_url
            .as_ref()
            .map(|u| {
                u.get_ref()
                    .parse()
                    .map_err(|e| config_error(format!("jwks_url: {e}")))
            })
            .transpose()?,
        jwks_ca_pem: j
            .jwks_ca_file
            .as_ref()
            .map(|p| {
                std::fs::read(p.get_ref())
                    .map_err(|e| config_error(format!("{}: {e}", p.get_ref().display())))
            })
            .transpose()?,
        jwks_max_age: j.jwks_max_age.0,
        jwks_min_refresh: j.jwks_min_refresh.0,
        issuers: j.issuer.clone(),
        audiences: j.audience.clone(),
        leeway: j.leeway.0,
        required_claims: j.required_claims.clone(),
        consumer_claim: j.consumer_claim.clone(),
        tier_claim: j.tier_claim.clone(),
        claims_to_headers: j
            .claims_to_headers
            .iter()
            .map(|(claim, h)| {
                Ok((
                    claim.clone(),
                    parse_header_name(h.get_ref()).map_err(config_error)?,
                ))
            })
            .collect::<Result<_, BuildError>>()?,
    })
}

/// The edge rules of route `r`: global and route IP rules merged (route allow replaces, deny
/// adds), the route's bot rules or the global ones, the route's CORS or the global one (either
/// turned off by `false` on the route), and security headers (defaults, then
/// `[security_headers]`, then the route's keys).
fn edge_options(config: &Config, r: &RouteConfig) -> Result<EdgeOptions, BuildError> {
    let nets = |list: &[Spanned<String>]| {
        list.iter()
            .map(|n| parse_cidr(n.get_ref()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(BuildError::Config)
    };
    let route_ip = r.ip_rules.as_ref();
    let mut deny = nets(&config.ip_rules.deny)?;
    deny.extend(nets(route_ip.map_or(&[][..], |i| &i.deny))?);
    let allow = match route_ip.filter(|i| !i.allow.is_empty()) {
        Some(i) => nets(&i.allow)?,
        None => nets(&config.ip_rules.allow)?,
    };
    let bots = match &r.bot_rules {
        Some(route_rules) => route_rules.on(),
        None => config.bot_rules.as_ref(),
    }
    .map_or_else(BotRules::default, |b| BotRules {
        deny: if b.default_list {
            &DEFAULT_BAD_BOTS[..]
        } else {
            &[]
        }
        .iter()
        .map(|s| (*s).to_owned())
        .chain(b.deny.iter().cloned())
        .collect(),
        allow: b.allow.clone(),
        deny_empty: b.deny_empty,
    });
    let cors = match &r.cors {
        Some(route_cors) => route_cors.on(),
        None => config.cors.as_ref(),
    }
    .map(cors_options)
    .transpose()?;
    Ok(EdgeOptions {
        ip: IpRules { allow, deny },
        bots,
        cors,
        headers: security_headers(
            config.security_headers.as_ref(),
            r.security_headers.as_ref(),
        ),
        max_body: r
            .max_body_size
            .as_ref()
            .or(config.request_limits.max_body_size.as_ref())
            .map(|b| b.get_ref().0),
        max_url_length: config.request_limits.max_url_length,
        max_header_count: config.request_limits.max_header_count,
        request_headers: transform(r.request_headers.as_ref()),
        response_headers: transform(r.response_headers.as_ref()),
    })
}

fn transform(t: Option<&HeaderTransformConfig>) -> HeaderTransformOptions {
    let Some(t) = t else {
        return HeaderTransformOptions::default();
    };
    HeaderTransformOptions {
        add: t
            .add
            .iter()
            .map(|(n, v)| (n.clone(), v.get_ref().clone()))
            .collect(),
        remove: t.remove.iter().map(|n| n.get_ref().clone()).collect(),
        rename: t
            .rename
            .iter()
            .map(|(from, to)| (from.clone(), to.get_ref().clone()))
            .collect(),
    }
}

fn cors_options(c: &CorsConfig) -> Result<CorsOptions, BuildError> {
    let strings = |list: &[Spanned<String>]| list.iter().map(|s| s.get_ref().clone()).collect();
    Ok(CorsOptions {
        origins: strings(&c.origins),
        methods: c
            .methods
            .iter()
            .map(|m| {
                http::Method::from_bytes(m.get_ref().to_ascii_uppercase().as_bytes())
                    .map_err(|e| BuildError::Config(e.to_string()))
            })
            .collect::<Result<_, _>>()?,
        headers: strings(&c.headers),
        expose_headers: strings(&c.expose_headers),
        credentials: c.credentials,
        max_age: c.max_age.map(|d| d.0),
    })
}

/// Defaults when any security header table is present, overridden key by key.
fn security_headers(
    global: Option<&SecurityHeadersConfig>,
    route: Option<&SecurityHeadersConfig>,
) -> SecurityHeaderOptions {
    if global.is_none() && route.is_none() {
        return SecurityHeaderOptions::default();
    }
    let mut o = SecurityHeaderOptions {
        hsts: Some("max-age=31536000; includeSubDomains".to_owned()),
        frame_options: Some("DENY".to_owned()),
        content_type_options: true,
        referrer_policy: Some("strict-origin-when-cross-origin".to_owned()),
        content_security_policy: None,
        permissions_policy: None,
        remove_server_headers: false,
    };
    for layer in [global, route].into_iter().flatten() {
        let text = |v: &Option<Spanned<String>>, slot: &mut Option<String>| {
            if let Some(v) = v {
                *slot = Some(v.get_ref().clone()).filter(|s| !s.is_empty());
            }
        };
        text(&layer.hsts, &mut o.hsts);
        text(&layer.frame_options, &mut o.frame_options);
        text(&layer.referrer_policy, &mut o.referrer_policy);
        text(
            &layer.content_security_policy,
            &mut o.content_security_policy,
        );
        text(&layer.permissions_policy, &mut o.permissions_policy);
        if let Some(b) = layer.content_type_options {
            o.content_type_options = b;
        }
        if let Some(b) = layer.remove_server_headers {
            o.remove_server_headers = b;
        }
    }
    o
}
