//! Every JWT algorithm the gateway lists, accepted through the public API with keys given the
//! way an operator gives them: a shared secret, or a `public_key` PEM (RSA as SPKI or PKCS#1,
//! EC P-256/P-384, Ed25519). Keys are generated here with aws-lc-rs; the RFC 7515 A.2 RS256
//! example is checked with its published key. Also: HS/RS confusion with both a secret and an
//! RSA key configured.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{net::IpAddr, sync::Arc, time::Duration};

use aws_lc_rs::{
    encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der},
    rand::SystemRandom,
    rsa::{KeyPair as RsaKeyPair, KeySize},
    signature::{
        ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair,
        EcdsaSigningAlgorithm, Ed25519KeyPair, KeyPair as _,
    },
};
use base64::Engine as _;
use http::{Request, StatusCode};
use jsonwebtoken::{EncodingKey, Header, encode};
use portcullis_auth::{
    Algorithm, AuthMode, AuthOptions, Authenticator, JwtOptions, RouteAuth, RouteSecurity,
};
use serde_json::{Value, json};

const SECRET: &[u8] = b"a-shared-secret-of-at-least-64-bytes-for-hs512-0123456789abcdef";

/// RFC 7515 A.2: RS256 over `{"iss":"joe","exp":1300819380,...}`.
const RFC7515_A2: &str = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw";
/// RFC 7515 A.2's RSA public key (`n`, `e`, base64url).
const RFC7515_A2_N: &str = "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ";
const RFC7515_A2_E: &str = "AQAB";
/// Enough leeway to accept the RFC example's `exp` of March 2011.
const SINCE_2011: Duration = Duration::from_secs(40 * 365 * 86_400);

fn now() -> i64 {
    i64::try_from(jsonwebtoken::get_current_timestamp()).unwrap()
}

fn claims() -> Value {
    json!({"sub": "user-1", "exp": now() + 300})
}

fn sign(alg: Algorithm, key: &EncodingKey) -> String {
    encode(&Header::new(alg), &claims(), key).unwrap()
}

/// PEM text of `der` under `label`, in 64-column lines.
fn pem(label: &str, der: &[u8]) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out.into_bytes()
}

/// A route that needs a JWT, verified as `options` say.
fn jwt_route(options: JwtOptions) -> RouteSecurity {
    let auth = Authenticator::new(
        Vec::new(),
        AuthOptions {
            jwt: Some(options),
            ..AuthOptions::default()
        },
    )
    .unwrap();
    RouteSecurity::new(
        Arc::new(auth),
        RouteAuth {
            mode: AuthMode::Jwt,
            acl: None,
        },
    )
}

fn public_key_route(algorithms: &[Algorithm], public_key_pem: Vec<u8>) -> RouteSecurity {
    jwt_route(JwtOptions {
        algorithms: algorithms.to_vec(),
        public_key_pem: Some(public_key_pem),
        ..JwtOptions::default()
    })
}

/// The consumer the route lets `token` through as, or the refusal's status.
fn check(route: &RouteSecurity, token: &str) -> Result<String, StatusCode> {
    let req = Request::get("/")
        .header("authorization", format!("Bearer {token}"))
        .body(())
        .unwrap();
    route
        .check(&req, || IpAddr::from([127, 0, 0, 1]))
        .map(|grant| grant.consumer().unwrap().id.0.to_string())
        .map_err(|r| r.status())
}

/// `token` with the first character of its signature changed (the first, not the last: the
/// last one's low bits may be padding).
fn tampered(token: &str) -> String {
    let at = token.rfind('.').unwrap() + 1;
    let replacement = if &token[at..=at] == "A" { "B" } else { "A" };
    format!("{}{replacement}{}", &token[..at], &token[at + 1..])
}

fn assert_accepts(route: &RouteSecurity, token: &str, case: &str) {
    assert_eq!(check(route, token).as_deref(), Ok("user-1"), "{case}");
    assert_eq!(
        check(route, &tampered(token)),
        Err(StatusCode::UNAUTHORIZED),
        "{case}: a changed signature is refused"
    );
}

struct Rsa {
    signing: EncodingKey,
    /// The public key as SPKI (`PUBLIC KEY`) PEM.
    spki_pem: Vec<u8>,
    /// The public key as PKCS#1 (`RSA PUBLIC KEY`) PEM.
    pkcs1_pem: Vec<u8>,
}

impl Rsa {
    fn generate() -> Self {
        let pair = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
        let pkcs8 = AsDer::<Pkcs8V1Der<'_>>::as_der(&pair).unwrap();
        let spki = AsDer::<PublicKeyX509Der<'_>>::as_der(pair.public_key()).unwrap();
        Self {
            signing: EncodingKey::from_rsa_pem(&pem("PRIVATE KEY", pkcs8.as_ref())).unwrap(),
            spki_pem: pem("PUBLIC KEY", spki.as_ref()),
            // `PublicKey::as_ref` is the RFC 8017 `RSAPublicKey` structure.
            pkcs1_pem: pem("RSA PUBLIC KEY", pair.public_key().as_ref()),
        }
    }
}

/// An ECDSA key: its signer and its SPKI PEM.
fn ec_key(alg: &'static EcdsaSigningAlgorithm) -> (EncodingKey, Vec<u8>) {
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &SystemRandom::new()).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref()).unwrap();
    let spki = AsDer::<PublicKeyX509Der<'_>>::as_der(pair.public_key()).unwrap();
    (
        EncodingKey::from_ec_der(pkcs8.as_ref()),
        pem("PUBLIC KEY", spki.as_ref()),
    )
}

#[test]
fn hs384_and_hs512_tokens_verify_with_the_shared_secret() {
    let route = jwt_route(JwtOptions {
        algorithms: vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512],
        secret: Some(SECRET.to_vec()),
        ..JwtOptions::default()
    });
    let key = EncodingKey::from_secret(SECRET);
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        assert_accepts(&route, &sign(alg, &key), &format!("{alg:?}"));
    }
    let other = EncodingKey::from_secret(b"another-secret-of-at-least-32-bytes-long!!");
    assert_eq!(
        check(&route, &sign(Algorithm::HS512, &other)),
        Err(StatusCode::UNAUTHORIZED),
        "signed with another secret"
    );
}

#[test]
fn rs256_rs384_rs512_and_ps256_tokens_verify_with_an_spki_public_key_pem() {
    let rsa = Rsa::generate();
    let all = [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
    ];
    let route = public_key_route(&all, rsa.spki_pem.clone());
    for alg in all {
        assert_accepts(&route, &sign(alg, &rsa.signing), &format!("{alg:?}"));
    }
    // An algorithm the route does not list is refused even with the right key.
    let rs256_only = public_key_route(&[Algorithm::RS256], rsa.spki_pem);
    assert_eq!(
        check(&rs256_only, &sign(Algorithm::RS512, &rsa.signing)),
        Err(StatusCode::UNAUTHORIZED)
    );
    assert_eq!(
        check(&rs256_only, &sign(Algorithm::PS256, &rsa.signing)),
        Err(StatusCode::UNAUTHORIZED)
    );
}

#[test]
fn rsa_tokens_verify_with_a_pkcs1_public_key_pem() {
    let rsa = Rsa::generate();
    let route = public_key_route(&[Algorithm::RS256, Algorithm::PS256], rsa.pkcs1_pem);
    assert_accepts(&route, &sign(Algorithm::RS256, &rsa.signing), "RS256");
    assert_accepts(&route, &sign(Algorithm::PS256, &rsa.signing), "PS256");
    // A token of another RSA key is refused.
    let other = Rsa::generate();
    assert_eq!(
        check(&route, &sign(Algorithm::RS256, &other.signing)),
        Err(StatusCode::UNAUTHORIZED)
    );
}

/// DER of a PKCS#1 `RSAPublicKey` (SEQUENCE of the two INTEGERs) from big-endian `n` and `e`.
fn rsa_public_key_der(n: &[u8], e: &[u8]) -> Vec<u8> {
    fn len(n: usize) -> Vec<u8> {
        if n < 0x80 {
            return vec![u8::try_from(n).unwrap()];
        }
        let bytes: Vec<u8> = n
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        let mut out = vec![0x80 | u8::try_from(bytes.len()).unwrap()];
        out.extend(bytes);
        out
    }
    fn integer(v: &[u8]) -> Vec<u8> {
        // Unsigned: a leading zero keeps a high first bit from reading as negative.
        let mut body = if v[0] & 0x80 == 0 {
            Vec::new()
        } else {
            vec![0]
        };
        body.extend_from_slice(v);
        let mut out = vec![0x02];
        out.extend(len(body.len()));
        out.extend(body);
        out
    }
    let mut body = integer(n);
    body.extend(integer(e));
    let mut out = vec![0x30];
    out.extend(len(body.len()));
    out.extend(body);
    out
}

#[test]
fn rfc7515_a2_rs256_example_verifies_with_its_published_key_as_pkcs1_pem() {
    let b64 = |s: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .unwrap()
    };
    let der = rsa_public_key_der(&b64(RFC7515_A2_N), &b64(RFC7515_A2_E));
    let options = JwtOptions {
        algorithms: vec![Algorithm::RS256],
        public_key_pem: Some(pem("RSA PUBLIC KEY", &der)),
        consumer_claim: "iss".into(),
        ..JwtOptions::default()
    };
    let lenient = jwt_route(JwtOptions {
        leeway: SINCE_2011,
        ..options.clone()
    });
    assert_eq!(check(&lenient, RFC7515_A2).as_deref(), Ok("joe"));
    assert_eq!(
        check(&lenient, &tampered(RFC7515_A2)),
        Err(StatusCode::UNAUTHORIZED)
    );
    // Without the leeway the example is long expired.
    assert_eq!(
        check(&jwt_route(options), RFC7515_A2),
        Err(StatusCode::UNAUTHORIZED)
    );
}

#[test]
fn es256_and_es384_tokens_verify_with_an_ec_public_key_pem_of_their_curve() {
    let (p384, p384_pem) = ec_key(&ECDSA_P384_SHA384_FIXED_SIGNING);
    let route = public_key_route(&[Algorithm::ES256, Algorithm::ES384], p384_pem);
    assert_accepts(&route, &sign(Algorithm::ES384, &p384), "ES384");
    let (p256, p256_pem) = ec_key(&ECDSA_P256_SHA256_FIXED_SIGNING);
    let route256 = public_key_route(&[Algorithm::ES256], p256_pem);
    assert_accepts(&route256, &sign(Algorithm::ES256, &p256), "ES256");
    // A P-256 token against the P-384 key is refused.
    assert_eq!(
        check(&route, &sign(Algorithm::ES256, &p256)),
        Err(StatusCode::UNAUTHORIZED)
    );
}

#[test]
fn eddsa_tokens_verify_with_an_ed25519_public_key_pem() {
    let pair = Ed25519KeyPair::generate().unwrap();
    let pkcs8 = AsDer::<Pkcs8V1Der<'_>>::as_der(&pair).unwrap();
    let spki = AsDer::<PublicKeyX509Der<'_>>::as_der(pair.public_key()).unwrap();
    let signing = EncodingKey::from_ed_der(pkcs8.as_ref());
    let route = public_key_route(&[Algorithm::EdDSA], pem("PUBLIC KEY", spki.as_ref()));
    assert_accepts(&route, &sign(Algorithm::EdDSA, &signing), "EdDSA");
    let other = Ed25519KeyPair::generate().unwrap();
    let other_pkcs8 = AsDer::<Pkcs8V1Der<'_>>::as_der(&other).unwrap();
    assert_eq!(
        check(
            &route,
            &sign(
                Algorithm::EdDSA,
                &EncodingKey::from_ed_der(other_pkcs8.as_ref())
            )
        ),
        Err(StatusCode::UNAUTHORIZED)
    );
}

#[test]
fn an_hmac_token_keyed_with_the_rsa_public_key_is_refused_while_a_secret_is_configured_too() {
    let rsa = Rsa::generate();
    let route = jwt_route(JwtOptions {
        algorithms: vec![Algorithm::HS256, Algorithm::RS256],
        secret: Some(SECRET.to_vec()),
        public_key_pem: Some(rsa.spki_pem.clone()),
        ..JwtOptions::default()
    });
    // Both legitimate kinds pass, so a refusal below is the confusion being caught.
    assert_accepts(
        &route,
        &sign(Algorithm::HS256, &EncodingKey::from_secret(SECRET)),
        "HS256 with the secret",
    );
    assert_accepts(&route, &sign(Algorithm::RS256, &rsa.signing), "RS256");
    // The attack: HMAC "signed" with the public key's bytes, as PEM text and as DER.
    let spki_der = base64::engine::general_purpose::STANDARD
        .decode(
            std::str::from_utf8(&rsa.spki_pem)
                .unwrap()
                .lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<String>(),
        )
        .unwrap();
    for (what, key) in [
        ("SPKI PEM", rsa.spki_pem.clone()),
        ("PKCS#1 PEM", rsa.pkcs1_pem),
        ("SPKI DER", spki_der),
    ] {
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let forged = sign(alg, &EncodingKey::from_secret(&key));
            assert_eq!(
                check(&route, &forged),
                Err(StatusCode::UNAUTHORIZED),
                "{alg:?} keyed with the {what}"
            );
        }
    }
}
