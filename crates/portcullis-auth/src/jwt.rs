//! JWT bearer tokens: signature with an allow-listed algorithm and a key of the same family,
//! then `exp`/`nbf`/`iat` with leeway, `iss`, `aud` and required claims.
//!
//! Verification is synchronous once the key is known. A token whose `kid` is not in the cached
//! JWK Set asks for one (rate-limited) refresh, which the caller runs asynchronously
//! ([`crate::Grant::settle`]).

use std::{collections::HashMap, fmt, sync::Arc, time::Duration};

use http::{HeaderMap, HeaderName, HeaderValue, header};
pub use jsonwebtoken::Algorithm;
use jsonwebtoken::{DecodingKey, Validation, errors::ErrorKind};
use serde_json::{Map, Value};

use crate::{
    consumer::{BuildError, Consumer},
    jwks::{JwksCache, KeyLookup},
    rejection::Rejection,
};

/// How tokens are verified (plain data; see [`crate::AuthOptions::jwt`]).
#[derive(Clone)]
pub struct JwtOptions {
    /// Accepted algorithms; every other `alg` (including `none`) is refused.
    pub algorithms: Vec<Algorithm>,
    /// Shared secret for the HS algorithms.
    pub secret: Option<Vec<u8>>,
    /// PEM public key (RSA, EC or Ed25519) for the other algorithms.
    pub public_key_pem: Option<Vec<u8>>,
    /// A JWK Set URL (`http://` or `https://`); keys are chosen by `kid`.
    pub jwks_url: Option<http::Uri>,
    /// Cached keys older than this are fetched again in the background.
    pub jwks_max_age: Duration,
    /// An unknown `kid` fetches the set again at most this often.
    pub jwks_min_refresh: Duration,
    /// Accepted `iss` values (empty: any).
    pub issuers: Vec<String>,
    /// Accepted `aud` values (empty: not checked).
    pub audiences: Vec<String>,
    /// Clock skew allowed for `exp`, `nbf` and `iat`.
    pub leeway: Duration,
    /// Claims every token must carry.
    pub required_claims: Vec<String>,
    /// The claim naming the consumer.
    pub consumer_claim: String,
    /// The claim naming the tier of consumers not configured.
    pub tier_claim: Option<String>,
    /// Claims sent upstream as headers.
    pub claims_to_headers: Vec<(String, HeaderName)>,
}

impl Default for JwtOptions {
    fn default() -> Self {
        Self {
            algorithms: Vec::new(),
            secret: None,
            public_key_pem: None,
            jwks_url: None,
            jwks_max_age: Duration::from_secs(600),
            jwks_min_refresh: Duration::from_secs(30),
            issuers: Vec::new(),
            audiences: Vec::new(),
            leeway: Duration::from_secs(60),
            required_claims: vec!["exp".to_owned()],
            consumer_claim: "sub".to_owned(),
            tier_claim: None,
            claims_to_headers: Vec::new(),
        }
    }
}

impl fmt::Debug for JwtOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtOptions")
            .field("algorithms", &self.algorithms)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("public_key_pem", &self.public_key_pem.is_some())
            .field("jwks_url", &self.jwks_url)
            .field("issuers", &self.issuers)
            .field("audiences", &self.audiences)
            .field("leeway", &self.leeway)
            .field("required_claims", &self.required_claims)
            .field("consumer_claim", &self.consumer_claim)
            .field("tier_claim", &self.tier_claim)
            .field("claims_to_headers", &self.claims_to_headers)
            .finish_non_exhaustive()
    }
}

/// What verifying a token found.
pub(crate) enum Verified {
    /// A valid token's claims.
    Claims(Map<String, Value>),
    /// The token names a `kid` the cached keys lack and a refresh is allowed: the key set
    /// generation seen.
    NeedKeys(u64),
}

/// Verifies tokens with the configured keys.
pub(crate) struct JwtVerifier {
    pub(crate) options: JwtOptions,
    secret: Option<DecodingKey>,
    public_key: Option<DecodingKey>,
    pub(crate) jwks: Option<Arc<JwksCache>>,
    /// One validation per accepted algorithm, built once.
    validations: HashMap<Algorithm, Validation>,
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// Claims `jsonwebtoken` itself can require.
const SPEC_CLAIMS: [&str; 5] = ["exp", "nbf", "aud", "iss", "sub"];

impl JwtVerifier {
    pub(crate) fn new(options: JwtOptions) -> Result<Self, BuildError> {
        if options.algorithms.is_empty() {
            return Err(BuildError("jwt: no algorithms".into()));
        }
        let secret = options.secret.as_deref().map(DecodingKey::from_secret);
        let public_key = options
            .public_key_pem
            .as_deref()
            .map(public_key_from_pem)
            .transpose()?;
        let jwks = options
            .jwks_url
            .clone()
            .map(|url| Arc::new(JwksCache::new(url, options.jwks_min_refresh, options.jwks_max_age)));
        let leeway = options.leeway.as_secs();
        let validations = options
            .algorithms
            .iter()
            .map(|&alg| {
                let mut v = Validation::new(alg);
                v.leeway = leeway;
                v.validate_nbf = true;
                v.validate_exp = true;
                v.validate_aud = !options.audiences.is_empty();
                if !options.audiences.is_empty() {
                    v.set_audience(&options.audiences);
                }
                if !options.issuers.is_empty() {
                    v.set_issuer(&options.issuers);
                }
                let spec: Vec<&str> = options
                    .required_claims
                    .iter()
                    .map(String::as_str)
                    .filter(|c| SPEC_CLAIMS.contains(c))
                    .collect();
                v.set_required_spec_claims(&spec);
                (alg, v)
            })
            .collect();
        Ok(Self {
            options,
            secret,
            public_key,
            jwks,
            validations,
        })
    }

    /// The bearer token of a request, if any.
    pub(crate) fn token(headers: &HeaderMap) -> Option<&str> {
        let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim())
            .filter(|t| !t.is_empty())
    }

    /// Verifies `token`.
    pub(crate) fn verify(&self, token: &str) -> Result<Verified, Rejection> {
        // `alg: none` (and any name jsonwebtoken does not know) fails to parse here.
        let head = jsonwebtoken::decode_header(token).map_err(|_| Rejection::INVALID_TOKEN)?;
        let Some(validation) = self.validations.get(&head.alg) else {
            return Err(Rejection::INVALID_TOKEN);
        };
        let family = head.alg.family();
        let jwks_key;
        let key = if family == jsonwebtoken::AlgorithmFamily::Hmac {
            self.secret.as_ref()
        } else if let (Some(kid), Some(jwks)) = (&head.kid, &self.jwks) {
            match jwks.lookup(kid, head.alg) {
                KeyLookup::Found(k) => {
                    jwks_key = k;
                    Some(&*jwks_key)
                }
                KeyLookup::Refresh(generation) => return Ok(Verified::NeedKeys(generation)),
                KeyLookup::Unknown => None,
            }
        } else {
            self.public_key.as_ref()
        };
        // The key must be of the token's family: an HS token is never checked against a public
        // key used as an HMAC secret (algorithm confusion).
        let key = key
            .filter(|k| k.family() == family)
            .ok_or(Rejection::INVALID_TOKEN)?;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, key, validation)
            .map_err(|e| rejection_for(e.kind()))?;
        let claims = data.claims;
        if let Some(iat) = claims.get("iat") {
            let issued = iat.as_f64().ok_or(Rejection::INVALID_TOKEN)?;
            let now = jsonwebtoken::get_current_timestamp();
            #[allow(clippy::cast_precision_loss)]
            let limit = now.saturating_add(validation.leeway) as f64;
            if issued > limit {
                return Err(Rejection::INVALID_TOKEN);
            }
        }
        if self
            .options
            .required_claims
            .iter()
            .any(|c| !claims.contains_key(c))
        {
            return Err(Rejection::INVALID_TOKEN);
        }
        Ok(Verified::Claims(claims))
    }

    /// The consumer a valid token stands for: a configured consumer of that name (its tier and
    /// groups), else one built from the claims.
    pub(crate) fn consumer(
        &self,
        claims: &Map<String, Value>,
        configured: impl Fn(&str) -> Option<Arc<Consumer>>,
    ) -> Result<Arc<Consumer>, Rejection> {
        let id = claims
            .get(&self.options.consumer_claim)
            .and_then(claim_text)
            .ok_or(Rejection::INVALID_TOKEN)?;
        if let Some(c) = configured(&id) {
            return Ok(c);
        }
        let tier = self
            .options
            .tier_claim
            .as_ref()
            .and_then(|t| claims.get(t))
            .and_then(claim_text);
        Consumer::new(&id, tier.as_deref(), Vec::new())
            .map(Arc::new)
            .map_err(|_| Rejection::INVALID_TOKEN)
    }

    /// The headers the claims become upstream.
    pub(crate) fn claim_headers(&self, claims: &Map<String, Value>) -> Vec<(HeaderName, HeaderValue)> {
        self.options
            .claims_to_headers
            .iter()
            .filter_map(|(claim, name)| {
                let text = claim_text(claims.get(claim)?)?;
                Some((name.clone(), HeaderValue::from_str(&text).ok()?))
            })
            .collect()
    }
}

/// A claim as header text: strings as they are, numbers and booleans printed, arrays of
/// strings joined with commas.
fn claim_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Array(items) => {
            let parts: Option<Vec<&str>> = items.iter().map(Value::as_str).collect();
            parts.map(|p| p.join(","))
        }
        _ => None,
    }
}

/// 401 for every failure: the message says what class of problem it was, never the token.
fn rejection_for(kind: &ErrorKind) -> Rejection {
    match kind {
        ErrorKind::ExpiredSignature => Rejection::EXPIRED_TOKEN,
        _ => Rejection::INVALID_TOKEN,
    }
}

/// A PEM public key of any supported kind.
fn public_key_from_pem(pem: &[u8]) -> Result<DecodingKey, BuildError> {
    DecodingKey::from_rsa_pem(pem)
        .or_else(|_| DecodingKey::from_ec_pem(pem))
        .or_else(|_| DecodingKey::from_ed_pem(pem))
        .map_err(|_| BuildError("jwt: public_key is not an RSA, EC or Ed25519 public key in PEM".into()))
}
