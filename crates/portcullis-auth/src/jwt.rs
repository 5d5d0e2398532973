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
    /// PEM CA certificates trusted for an `https://` JWK Set URL instead of the system's roots.
    pub jwks_ca_pem: Option<Vec<u8>>,
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
            jwks_ca_pem: None,
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
            .field("jwks_ca_pem", &self.jwks_ca_pem.is_some())
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
            .map(|url| {
                JwksCache::new(
                    url,
                    options.jwks_ca_pem.clone(),
                    options.jwks_min_refresh,
                    options.jwks_max_age,
                )
                .map(Arc::new)
            })
            .transpose()?;
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
                // A configured issuer or audience also makes the claim required: a token
                // without `iss` must not pass an issuer check by saying nothing.
                let mut spec: Vec<&str> = options
                    .required_claims
                    .iter()
                    .map(String::as_str)
                    .filter(|c| SPEC_CLAIMS.contains(c))
                    .collect();
                if !options.issuers.is_empty() {
                    spec.push("iss");
                }
                if !options.audiences.is_empty() {
                    spec.push("aud");
                }
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
    pub(crate) fn claim_headers(
        &self,
        claims: &Map<String, Value>,
    ) -> Vec<(HeaderName, HeaderValue)> {
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
        .map_err(|_| {
            BuildError("jwt: public_key is not an RSA, EC or Ed25519 public key in PEM".into())
        })
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    use super::*;

    const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    /// RFC 7515 A.1 (also RFC 7519 §3.1): HS256, `{"iss":"joe","exp":1300819380,...}`.
    const RFC7515_A1: &str = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const RFC7515_A1_KEY: &str =
        "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";
    /// RFC 7515 A.3: ES256 over the same payload, and its P-256 public key.
    const RFC7515_A3: &str = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";
    const RFC7515_A3_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
    const RFC7515_A3_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
    /// RFC 7515 A.5: an unsecured JWS (`alg: none`, empty signature).
    const RFC7515_A5: &str = "eyJhbGciOiJub25lIn0.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.";
    /// Enough leeway to accept the RFC examples' `exp` of March 2011.
    const SINCE_2011: Duration = Duration::from_secs(40 * 365 * 86_400);
    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn verifier(options: JwtOptions) -> JwtVerifier {
        JwtVerifier::new(options).unwrap()
    }

    fn hs256(extra: JwtOptions) -> JwtVerifier {
        verifier(JwtOptions {
            algorithms: vec![Algorithm::HS256],
            secret: Some(SECRET.to_vec()),
            ..extra
        })
    }

    fn sign(claims: &Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap()
    }

    fn now() -> i64 {
        i64::try_from(jsonwebtoken::get_current_timestamp()).unwrap()
    }

    fn claims_of(v: &JwtVerifier, token: &str) -> Result<Map<String, Value>, Rejection> {
        match v.verify(token)? {
            Verified::Claims(c) => Ok(c),
            Verified::NeedKeys(_) => panic!("no JWKS here"),
        }
    }

    #[test]
    fn rfc7515_a1_hs256_example_verifies_and_is_expired_without_leeway() {
        let secret = B64URL.decode(RFC7515_A1_KEY).unwrap();
        let options = JwtOptions {
            algorithms: vec![Algorithm::HS256],
            secret: Some(secret),
            consumer_claim: "iss".into(),
            ..JwtOptions::default()
        };
        let lenient = verifier(JwtOptions {
            leeway: SINCE_2011,
            ..options.clone()
        });
        let claims = claims_of(&lenient, RFC7515_A1).unwrap();
        assert_eq!(claims["iss"], "joe");
        assert_eq!(claims["http://example.com/is_root"], true);
        assert_eq!(
            claims_of(&verifier(options), RFC7515_A1).unwrap_err(),
            Rejection::EXPIRED_TOKEN
        );
        // One changed signature character: refused.
        let tampered = format!("{}A", &RFC7515_A1[..RFC7515_A1.len() - 1]);
        assert_eq!(
            claims_of(&lenient, &tampered).unwrap_err(),
            Rejection::INVALID_TOKEN
        );
    }

    #[test]
    fn rfc7515_a3_es256_example_verifies_with_its_public_key() {
        let mut v = verifier(JwtOptions {
            algorithms: vec![Algorithm::ES256],
            leeway: SINCE_2011,
            ..JwtOptions::default()
        });
        v.public_key = Some(DecodingKey::from_ec_components(RFC7515_A3_X, RFC7515_A3_Y).unwrap());
        assert_eq!(claims_of(&v, RFC7515_A3).unwrap()["iss"], "joe");
        // The same token is refused where ES256 is not allowed.
        let mut rs_only = verifier(JwtOptions {
            algorithms: vec![Algorithm::RS256],
            leeway: SINCE_2011,
            ..JwtOptions::default()
        });
        rs_only.public_key = v.public_key;
        assert!(claims_of(&rs_only, RFC7515_A3).is_err());
    }

    #[test]
    fn rfc7515_a5_unsecured_token_alg_none_is_refused() {
        let v = hs256(JwtOptions {
            leeway: SINCE_2011,
            ..JwtOptions::default()
        });
        assert_eq!(
            claims_of(&v, RFC7515_A5).unwrap_err(),
            Rejection::INVALID_TOKEN
        );
        // Also with a signature part that happens to be valid for HS256 over the same input.
        let forged = format!("{}{}", RFC7515_A5, RFC7515_A1.rsplit('.').next().unwrap());
        assert!(claims_of(&v, &forged).is_err());
    }

    #[test]
    fn an_hmac_token_signed_with_the_rsa_public_key_is_refused() {
        use aws_lc_rs::signature::KeyPair as _;
        let rsa = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let spki = aws_lc_rs::encoding::AsDer::<aws_lc_rs::encoding::PublicKeyX509Der<'_>>::as_der(
            rsa.public_key(),
        )
        .unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(spki.as_ref());
        let pem = format!("-----BEGIN PUBLIC KEY-----\n{b64}\n-----END PUBLIC KEY-----\n");
        // The classic attack: HS256 with the public key's PEM text as the HMAC secret. Even a
        // verifier that allows both algorithms (but has no secret) must refuse it.
        let v = verifier(JwtOptions {
            algorithms: vec![Algorithm::RS256, Algorithm::HS256],
            public_key_pem: Some(pem.clone().into_bytes()),
            ..JwtOptions::default()
        });
        let token = encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub": "mallory", "exp": now() + 60}),
            &EncodingKey::from_secret(pem.as_bytes()),
        )
        .unwrap();
        assert_eq!(claims_of(&v, &token).unwrap_err(), Rejection::INVALID_TOKEN);
    }

    #[test]
    fn time_claims_are_checked_with_leeway() {
        let v = hs256(JwtOptions {
            leeway: Duration::from_secs(30),
            ..JwtOptions::default()
        });
        let t = now();
        assert!(claims_of(&v, &sign(&json!({"sub": "a", "exp": t + 60}))).is_ok());
        assert!(
            claims_of(&v, &sign(&json!({"sub": "a", "exp": t - 10}))).is_ok(),
            "within leeway"
        );
        assert_eq!(
            claims_of(&v, &sign(&json!({"sub": "a", "exp": t - 120}))).unwrap_err(),
            Rejection::EXPIRED_TOKEN
        );
        assert!(
            claims_of(
                &v,
                &sign(&json!({"sub": "a", "exp": t + 600, "nbf": t + 300}))
            )
            .is_err(),
            "not yet valid"
        );
        assert!(
            claims_of(
                &v,
                &sign(&json!({"sub": "a", "exp": t + 600, "nbf": t + 10}))
            )
            .is_ok()
        );
        assert!(
            claims_of(
                &v,
                &sign(&json!({"sub": "a", "exp": t + 600, "iat": t + 300}))
            )
            .is_err(),
            "issued in the future"
        );
        assert!(
            claims_of(&v, &sign(&json!({"sub": "a"}))).is_err(),
            "exp is required by default"
        );
    }

    #[test]
    fn issuer_audience_and_required_claims_are_checked() {
        let v = hs256(JwtOptions {
            issuers: vec!["https://idp.example".into()],
            audiences: vec!["api".into()],
            required_claims: vec!["exp".into(), "scope".into()],
            ..JwtOptions::default()
        });
        let exp = now() + 60;
        let good = json!({"sub": "a", "exp": exp, "iss": "https://idp.example", "aud": ["x", "api"], "scope": "read"});
        assert!(claims_of(&v, &sign(&good)).is_ok());
        let mut wrong_iss = good.clone();
        wrong_iss["iss"] = json!("https://evil.example");
        assert!(claims_of(&v, &sign(&wrong_iss)).is_err());
        let mut wrong_aud = good.clone();
        wrong_aud["aud"] = json!("other");
        assert!(claims_of(&v, &sign(&wrong_aud)).is_err());
        let mut no_scope = good.clone();
        no_scope.as_object_mut().unwrap().remove("scope");
        assert!(claims_of(&v, &sign(&no_scope)).is_err());
        let mut no_aud = good.clone();
        no_aud.as_object_mut().unwrap().remove("aud");
        assert!(claims_of(&v, &sign(&no_aud)).is_err());
        let mut no_iss = good;
        no_iss.as_object_mut().unwrap().remove("iss");
        assert!(claims_of(&v, &sign(&no_iss)).is_err());
    }

    #[test]
    fn claims_map_to_consumers_and_headers() {
        let v = hs256(JwtOptions {
            tier_claim: Some("plan".into()),
            claims_to_headers: vec![
                ("sub".into(), HeaderName::from_static("x-user-id")),
                ("roles".into(), HeaderName::from_static("x-roles")),
                ("absent".into(), HeaderName::from_static("x-absent")),
            ],
            ..JwtOptions::default()
        });
        let claims = claims_of(
            &v,
            &sign(&json!({"sub": "u-1", "exp": now() + 60, "plan": "gold", "roles": ["a", "b"]})),
        )
        .unwrap();
        let consumer = v.consumer(&claims, |_| None).unwrap();
        assert_eq!(&*consumer.id.0, "u-1");
        assert_eq!(consumer.tier.as_ref().map(|t| &*t.0), Some("gold"));
        let configured = Arc::new(Consumer::new("u-1", Some("premium"), Vec::new()).unwrap());
        let mapped = v
            .consumer(&claims, |n| (n == "u-1").then(|| Arc::clone(&configured)))
            .unwrap();
        assert!(
            Arc::ptr_eq(&mapped, &configured),
            "a configured consumer wins"
        );
        let headers = v.claim_headers(&claims);
        assert_eq!(headers.len(), 2);
        assert_eq!(headers[0].1, "u-1");
        assert_eq!(headers[1].1, "a,b");
    }

    #[test]
    fn bearer_tokens_are_read_from_authorization() {
        let mut h = HeaderMap::new();
        assert_eq!(JwtVerifier::token(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc.def.ghi"),
        );
        assert_eq!(JwtVerifier::token(&h), Some("abc.def.ghi"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic dXNlcg=="),
        );
        assert_eq!(JwtVerifier::token(&h), None);
    }

    #[test]
    fn debug_output_redacts_the_secret() {
        let v = hs256(JwtOptions::default());
        let text = format!("{v:?}");
        assert!(!text.contains("0123456789abcdef"), "{text}");
    }
}
