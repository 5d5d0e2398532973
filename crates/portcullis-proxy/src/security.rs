//! Lowering `[[consumers]]`, `[auth]` and the routes' `auth`/`acl` into `portcullis-auth`.

use std::sync::Arc;

use std::str::FromStr as _;

use portcullis_auth::{
    Acl, Algorithm, ApiKeyOptions, AuthMode, AuthOptions, Authenticator, ConsumerSpec,
    JwtOptions, RouteAuth, RouteSecurity,
};
use portcullis_config::{Config, JwtConfig, RouteConfig, parse_header_name, parse_key_hash};

use crate::stack::BuildError;

/// The consumers and credential settings shared by every route.
pub(crate) fn authenticator(config: &Config) -> Result<Arc<Authenticator>, BuildError> {
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
    Authenticator::new(consumers, options)
        .map(Arc::new)
        .map_err(|e| BuildError::Config(e.0))
}

/// A route's security from its `auth` and `acl`.
pub(crate) fn route_security(auth: &Arc<Authenticator>, r: &RouteConfig) -> RouteSecurity {
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
        secret: j.secret.as_ref().map(|s| s.get_ref().expose().as_bytes().to_vec()),
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
            .map(|(claim, h)| Ok((claim.clone(), parse_header_name(h.get_ref()).map_err(config_error)?)))
            .collect::<Result<_, BuildError>>()?,
    })
}
