//! JWT bearer tokens through the running gateway: claim checks, algorithm confusion, and a
//! JWK Set served by a real HTTP server on loopback (refreshed on an unknown `kid`,
//! rate-limited).

use std::sync::Arc;

use aws_lc_rs::{
    rand::SystemRandom,
    signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _},
};
use base64::Engine as _;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use parking_lot::Mutex;
use portcullis_test_support::{Client, TestGateway, TestUpstream, echo, full};
use serde_json::{Value, json};

use crate::{json, single_route};

const SECRET: &str = "an-hs256-secret-of-at-least-32-bytes!";

fn now() -> i64 {
    i64::try_from(jsonwebtoken::get_current_timestamp()).unwrap()
}

fn hs256(claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

async fn get(client: &Client, url: &str, token: Option<&str>) -> Response<Bytes> {
    let mut req = Request::get(url);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    client.send(req.body(Full::default()).unwrap()).await
}

fn assert_401(resp: &Response<Bytes>, case: &str) {
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{case}");
    let body = json(resp.body());
    assert_eq!(body["status"], 401, "{case}");
    assert!(
        resp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer"),
        "{case}"
    );
}

#[tokio::test]
async fn valid_tokens_pass_with_their_consumer_and_claim_headers() {
    let up = TestUpstream::start(echo()).await;
    let config = format!(
        "{}\n[auth]\nforward_consumer_headers = true\n\
         [auth.jwt]\nalgorithms = [\"HS256\"]\nsecret = \"{SECRET}\"\nissuer = [\"https://idp.test\"]\n\
         audience = [\"portcullis\"]\ntier_claim = \"plan\"\nclaims_to_headers = {{ sub = \"X-User-Id\" }}\n\n\
         [[consumers]]\nname = \"svc-billing\"\ntier = \"premium\"\n",
        single_route(&[&up], "", "auth = \"jwt\"")
    );
    let gw = TestGateway::start(&config).await;
    let client = Client::http1();
    let base = json!({"iss": "https://idp.test", "aud": "portcullis", "exp": now() + 300});
    let mut user = base.clone();
    user["sub"] = json!("user-7");
    user["plan"] = json!("free");
    let mut configured = base;
    configured["sub"] = json!("svc-billing");

    let req = Request::get(gw.url("/a"))
        .header("authorization", format!("Bearer {}", hs256(&user)))
        .header("x-user-id", "admin")
        .header("x-consumer-id", "admin");
    let resp = client.send(req.body(Full::default()).unwrap()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = get(&client, &gw.url("/b"), Some(&hs256(&configured))).await;
    assert_eq!(resp.status(), StatusCode::OK);

    let seen = up.requests();
    let h = &seen[0].headers;
    assert_eq!(h["x-user-id"], "user-7", "the client's copy was replaced");
    assert_eq!(h.get_all("x-user-id").iter().count(), 1);
    assert_eq!(h["x-consumer-id"], "user-7");
    assert_eq!(h["x-consumer-tier"], "free", "tier from the claim");
    assert!(h["authorization"].to_str().unwrap().starts_with("Bearer "));
    assert_eq!(seen[1].headers["x-consumer-id"], "svc-billing");
    assert_eq!(
        seen[1].headers["x-consumer-tier"], "premium",
        "a configured consumer lends its tier"
    );
}

#[tokio::test]
async fn expired_early_wrong_audience_wrong_issuer_bad_signature_and_alg_none_get_401() {
    let up = TestUpstream::start(echo()).await;
    let config = format!(
        "{}\n[auth.jwt]\nalgorithms = [\"HS256\"]\nsecret = \"{SECRET}\"\nissuer = [\"https://idp.test\"]\n\
         audience = [\"portcullis\"]\nleeway = \"5s\"\n",
        single_route(&[&up], "", "auth = \"jwt\"")
    );
    let gw = TestGateway::start(&config).await;
    let client = Client::http1();
    let t = now();
    let good = json!({"sub": "u", "iss": "https://idp.test", "aud": "portcullis", "exp": t + 300});
    let with = |k: &str, v: Value| {
        let mut c = good.clone();
        c[k] = v;
        hs256(&c)
    };
    let valid = hs256(&good);
    assert_eq!(
        get(&client, &gw.url("/"), Some(&valid)).await.status(),
        StatusCode::OK
    );
    let (head, rest) = valid.split_once('.').unwrap();
    let (payload, _) = rest.split_once('.').unwrap();
    let none_head =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let cases = [
        ("expired", with("exp", json!(t - 60))),
        ("not yet valid", with("nbf", json!(t + 600))),
        ("wrong audience", with("aud", json!("someone-else"))),
        ("wrong issuer", with("iss", json!("https://evil.test"))),
        (
            "bad signature",
            encode(
                &Header::new(Algorithm::HS256),
                &good,
                &EncodingKey::from_secret(b"another-secret-that-is-long-enough!!"),
            )
            .unwrap(),
        ),
        ("alg none", format!("{none_head}.{payload}.")),
        (
            "alg none with the valid signature",
            format!(
                "{none_head}.{payload}.{}",
                valid.rsplit('.').next().unwrap()
            ),
        ),
        (
            "header swapped, payload kept",
            format!("{head}.{payload}.x"),
        ),
        ("not a JWT", "abc".to_owned()),
    ];
    for (case, token) in &cases {
        assert_401(&get(&client, &gw.url("/"), Some(token)).await, case);
    }
    let missing = get(&client, &gw.url("/"), None).await;
    assert_401(&missing, "missing");
    assert_eq!(json(missing.body())["error"], "authentication required");
    assert_eq!(up.request_count(), 1, "only the valid token went upstream");
}

#[tokio::test]
async fn an_hs256_token_signed_with_the_rsa_public_key_is_refused() {
    let rsa = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let spki = aws_lc_rs::encoding::AsDer::<aws_lc_rs::encoding::PublicKeyX509Der<'_>>::as_der(
        rsa.public_key(),
    )
    .unwrap();
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(spki.as_ref())
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rsa.pem");
    std::fs::write(&path, &pem).unwrap();
    let up = TestUpstream::start(echo()).await;
    let config = format!(
        "{}\n[auth.jwt]\nalgorithms = [\"RS256\"]\npublic_key = \"{}\"\n",
        single_route(&[&up], "", "auth = \"jwt\""),
        path.display()
    );
    let gw = TestGateway::start(&config).await;
    let forged = encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "mallory", "exp": now() + 300}),
        &EncodingKey::from_secret(pem.as_bytes()),
    )
    .unwrap();
    assert_401(
        &get(&Client::http1(), &gw.url("/"), Some(&forged)).await,
        "HS256 with the public key as secret",
    );
    assert_eq!(up.request_count(), 0);
}

#[tokio::test]
async fn with_a_secret_and_an_rsa_key_configured_an_hmac_token_keyed_with_the_public_key_is_refused()
 {
    let rsa = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let b64 = |der: &[u8]| base64::engine::general_purpose::STANDARD.encode(der);
    // PKCS#1 (`RSA PUBLIC KEY`) this time.
    let pem = format!(
        "-----BEGIN RSA PUBLIC KEY-----\n{}\n-----END RSA PUBLIC KEY-----\n",
        b64(rsa.public_key().as_ref())
    );
    let pkcs8 =
        aws_lc_rs::encoding::AsDer::<aws_lc_rs::encoding::Pkcs8V1Der<'_>>::as_der(&rsa).unwrap();
    let signer = EncodingKey::from_rsa_pem(
        format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            b64(pkcs8.as_ref())
        )
        .as_bytes(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rsa.pem");
    std::fs::write(&path, &pem).unwrap();
    let up = TestUpstream::start(echo()).await;
    let config = format!(
        "{}\n[auth.jwt]\nalgorithms = [\"HS256\", \"RS256\"]\nsecret = \"{SECRET}\"\npublic_key = \"{}\"\n",
        single_route(&[&up], "", "auth = \"jwt\""),
        path.display()
    );
    let gw = TestGateway::start(&config).await;
    let client = Client::http1();
    let claims = json!({"sub": "u", "exp": now() + 300});
    // Both legitimate kinds pass.
    let rs256 = encode(&Header::new(Algorithm::RS256), &claims, &signer).unwrap();
    for token in [hs256(&claims), rs256] {
        let resp = get(&client, &gw.url("/"), Some(&token)).await;
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let forged = encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(pem.as_bytes()),
    )
    .unwrap();
    assert_401(
        &get(&client, &gw.url("/"), Some(&forged)).await,
        "HS256 keyed with the RSA public key",
    );
    assert_eq!(up.request_count(), 2);
}

#[tokio::test]
async fn an_acl_on_groups_admits_a_token_whose_subject_is_a_configured_consumer_in_the_group() {
    let up = TestUpstream::start(echo()).await;
    let config = format!(
        "{}\n[auth.jwt]\nalgorithms = [\"HS256\"]\nsecret = \"{SECRET}\"\ntier_claim = \"plan\"\n\n\
         [[consumers]]\nname = \"svc-billing\"\ngroups = [\"internal\"]\n\n\
         [[consumers]]\nname = \"svc-other\"\ngroups = [\"partners\"]\n",
        single_route(
            &[&up],
            "",
            "auth = \"jwt\"\nacl = { groups = [\"internal\"] }"
        )
    );
    let gw = TestGateway::start(&config).await;
    let client = Client::http1();
    let token = |sub: &str| hs256(&json!({"sub": sub, "exp": now() + 300, "plan": "internal"}));
    let billing = get(&client, &gw.url("/"), Some(&token("svc-billing"))).await;
    assert_eq!(billing.status(), StatusCode::OK);
    for sub in ["svc-other", "stranger"] {
        let resp = get(&client, &gw.url("/"), Some(&token(sub))).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{sub}");
        assert_eq!(
            json(resp.body())["error"],
            "consumer not allowed on this route"
        );
    }
    assert_eq!(up.request_count(), 1);
}

/// An ES256 key pair: the token signer and its public JWK with `kid`.
struct EcKey {
    encoding: EncodingKey,
    jwk: Value,
}

impl EcKey {
    fn generate(kid: &str) -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let point = pair.public_key().as_ref();
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        Self {
            encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwk: json!({"kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..65]),
                        "kid": kid, "alg": "ES256", "use": "sig"}),
        }
    }

    fn sign(&self, kid: &str) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.to_owned());
        encode(
            &header,
            &json!({"sub": "u", "exp": now() + 300}),
            &self.encoding,
        )
        .unwrap()
    }
}

/// A JWK Set server whose keys can be rotated.
async fn jwks_server(keys: Arc<Mutex<Vec<Value>>>) -> TestUpstream {
    TestUpstream::respond(move |_| {
        let body = json!({ "keys": *keys.lock() }).to_string();
        let mut resp = Response::new(full(body));
        resp.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        resp
    })
    .await
}

fn jwks_config(up: &TestUpstream, jwks: &TestUpstream, min_refresh: &str) -> String {
    format!(
        "{}\n[auth.jwt]\nalgorithms = [\"ES256\"]\njwks_url = \"{}/.well-known/jwks.json\"\njwks_min_refresh = \"{min_refresh}\"\n",
        single_route(&[up], "", "auth = \"jwt\""),
        jwks.url()
    )
}

#[tokio::test]
async fn an_unknown_kid_refreshes_the_jwk_set_from_a_real_server() {
    let (a, b) = (EcKey::generate("key-a"), EcKey::generate("key-b"));
    let keys = Arc::new(Mutex::new(vec![a.jwk.clone()]));
    let jwks = jwks_server(Arc::clone(&keys)).await;
    let up = TestUpstream::start(echo()).await;
    let gw = TestGateway::start(&jwks_config(&up, &jwks, "0s")).await;
    let client = Client::http1();

    // The first token fetches the set.
    let resp = get(&client, &gw.url("/"), Some(&a.sign("key-a"))).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(jwks.request_count(), 1);
    assert_eq!(jwks.requests()[0].uri, "/.well-known/jwks.json");
    // Cached: no fetch for a known kid.
    let resp = get(&client, &gw.url("/"), Some(&a.sign("key-a"))).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(jwks.request_count(), 1);

    // The issuer rotates in key-b: the first token naming it makes the gateway fetch again.
    keys.lock().push(b.jwk.clone());
    let resp = get(&client, &gw.url("/"), Some(&b.sign("key-b"))).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(jwks.request_count(), 2);

    // A kid the issuer does not have: one more fetch, then 401.
    let resp = get(&client, &gw.url("/"), Some(&b.sign("key-z"))).await;
    assert_401(&resp, "unknown kid");
    assert_eq!(jwks.request_count(), 3);
    // A token signed by key-a but naming key-b fails the signature.
    assert_401(
        &get(&client, &gw.url("/"), Some(&a.sign("key-b"))).await,
        "kid of another key",
    );
}

#[tokio::test]
async fn refreshes_on_unknown_kids_are_rate_limited() {
    let (a, b) = (EcKey::generate("key-a"), EcKey::generate("key-b"));
    let keys = Arc::new(Mutex::new(vec![a.jwk.clone()]));
    let jwks = jwks_server(Arc::clone(&keys)).await;
    let up = TestUpstream::start(echo()).await;
    let gw = TestGateway::start(&jwks_config(&up, &jwks, "1h")).await;
    let client = Client::http1();
    assert_eq!(
        get(&client, &gw.url("/"), Some(&a.sign("key-a")))
            .await
            .status(),
        StatusCode::OK
    );
    keys.lock().push(b.jwk.clone());
    // Within jwks_min_refresh of the last fetch, unknown kids do not reach the JWKS server.
    for _ in 0..5 {
        assert_401(
            &get(&client, &gw.url("/"), Some(&b.sign("key-b"))).await,
            "rate-limited refresh",
        );
    }
    assert_eq!(jwks.request_count(), 1);
}

#[tokio::test]
async fn the_jwk_set_cache_survives_reloads_while_its_url_is_unchanged() {
    let a = EcKey::generate("key-a");
    let keys = Arc::new(Mutex::new(vec![a.jwk.clone()]));
    let jwks = jwks_server(Arc::clone(&keys)).await;
    let up = TestUpstream::start(echo()).await;
    let config = jwks_config(&up, &jwks, "1h");
    let gw = TestGateway::start(&config).await;
    let client = Client::http1();
    let token = a.sign("key-a");
    assert_eq!(
        get(&client, &gw.url("/"), Some(&token)).await.status(),
        StatusCode::OK
    );
    assert_eq!(jwks.request_count(), 1);

    // Reloads that keep the URL (one changes the refresh timing) fetch nothing.
    gw.reload(&format!("{config}leeway = \"5s\"\n")).unwrap();
    gw.reload(&config.replace("\"1h\"", "\"2h\"")).unwrap();
    assert_eq!(
        get(&client, &gw.url("/"), Some(&token)).await.status(),
        StatusCode::OK
    );
    assert_eq!(jwks.request_count(), 1, "no fetch after the reloads");

    // Another URL is another key set: fetched on the next token.
    gw.reload(&config.replace("/.well-known/jwks.json", "/keys"))
        .unwrap();
    assert_eq!(
        get(&client, &gw.url("/"), Some(&token)).await.status(),
        StatusCode::OK
    );
    assert_eq!(jwks.request_count(), 2);
    assert_eq!(jwks.requests()[1].uri, "/keys");
}

/// A CA and a certificate it signed for 127.0.0.1, as PEM.
struct TestCa {
    ca_pem: String,
    server: Arc<rustls::ServerConfig>,
}

impl TestCa {
    fn generate() -> Self {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "portcullis test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf_params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                rustls_pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
            )
            .unwrap();
        Self {
            ca_pem: ca_cert.pem(),
            server: Arc::new(server),
        }
    }
}

/// An HTTPS server on loopback answering every request with `body`; counts the requests it
/// answered (after a completed TLS handshake).
async fn https_server(
    tls: Arc<rustls::ServerConfig>,
    body: String,
) -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = Arc::clone(&served);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, body, count) = (acceptor.clone(), body.clone(), Arc::clone(&count));
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |_req| {
                    count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let body = body.clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(
                            body,
                        ))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, served)
}

#[tokio::test]
async fn an_https_jwk_set_is_trusted_through_the_configured_ca_only() {
    let key = EcKey::generate("key-a");
    let ca = TestCa::generate();
    let body = json!({ "keys": [key.jwk.clone()] }).to_string();
    let (addr, served) = https_server(Arc::clone(&ca.server), body).await;
    let dir = tempfile::tempdir().unwrap();
    let (good_ca, other_ca) = (dir.path().join("ca.pem"), dir.path().join("other.pem"));
    std::fs::write(&good_ca, &ca.ca_pem).unwrap();
    std::fs::write(&other_ca, TestCa::generate().ca_pem).unwrap();
    let up = TestUpstream::start(echo()).await;
    let config = |ca_file: &std::path::Path| {
        format!(
            "{}\n[auth.jwt]\nalgorithms = [\"ES256\"]\njwks_url = \"https://{addr}/jwks.json\"\njwks_ca_file = \"{}\"\njwks_min_refresh = \"0s\"\n",
            single_route(&[&up], "", "auth = \"jwt\""),
            ca_file.display()
        )
    };
    let client = Client::http1();
    let token = key.sign("key-a");

    // A CA that did not sign the server's certificate: the handshake fails, nothing is fetched.
    let untrusting = TestGateway::start(&config(&other_ca)).await;
    assert_401(
        &get(&client, &untrusting.url("/"), Some(&token)).await,
        "JWK Set server not trusted",
    );
    assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 0);

    let gw = TestGateway::start(&config(&good_ca)).await;
    let resp = get(&client, &gw.url("/"), Some(&token)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(up.request_count(), 1);
}
