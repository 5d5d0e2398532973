//! `SecurityLayer` in front of a service, over real sockets on port 0: refusals as JSON errors,
//! the grant applied before the service sees the request, CORS preflights answered by the
//! layer, security headers on every response, IP rules on the `ClientIp` extension (clients
//! bound to distinct loopback addresses), and a JWT whose key is fetched from a JWK Set server
//! while the request waits.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use aws_lc_rs::{
    encoding::{AsDer, Pkcs8V1Der},
    signature::{Ed25519KeyPair, KeyPair as _},
};
use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use portcullis_auth::{
    Algorithm, AuthMode, AuthOptions, Authenticator, ClientIp, ConsumerId, ConsumerSpec,
    ConsumerTier, CorsOptions, EdgeOptions, IpRules, JwtOptions, RouteAuth, RouteSecurity,
    SecurityHeaderOptions, SecurityLayer, hash_key,
};
use portcullis_http::{Body, body};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tower::{Layer, Service, ServiceBuilder, service_fn};

const ORIGIN: &str = "https://app.example";

/// The application behind the layer: echoes what reached it as JSON and counts its calls.
fn echo() -> (
    impl Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future: Send>
    + Clone
    + Send
    + 'static,
    Arc<AtomicUsize>,
) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let svc = service_fn(move |req: Request<Body>| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            let header = |name: &str| {
                req.headers()
                    .get(name)
                    .map(|v| v.to_str().unwrap().to_owned())
            };
            let seen = json!({
                "consumer": req.extensions().get::<ConsumerId>().map(|c| c.0.to_string()),
                "tier": req.extensions().get::<ConsumerTier>().map(|t| t.0.to_string()),
                "x_api_key": header("x-api-key"),
                "x_consumer_id": header("x-consumer-id"),
                "path": req.uri().to_string(),
            });
            Ok::<_, Infallible>(Response::new(body::full(seen.to_string())))
        }
    });
    (svc, calls)
}

fn authenticator(jwt: Option<JwtOptions>) -> Arc<Authenticator> {
    Arc::new(
        Authenticator::new(
            vec![ConsumerSpec {
                name: "acme".into(),
                tier: Some("premium".into()),
                groups: vec![],
                api_key_hashes: vec![hash_key(b"key-acme")],
            }],
            AuthOptions {
                jwt,
                ..AuthOptions::default()
            },
        )
        .unwrap(),
    )
}

fn edge() -> EdgeOptions {
    EdgeOptions {
        cors: Some(CorsOptions {
            origins: vec![ORIGIN.into()],
            methods: vec![Method::GET, Method::POST],
            headers: vec!["x-api-key".into()],
            max_age: Some(Duration::from_secs(600)),
            ..CorsOptions::default()
        }),
        headers: SecurityHeaderOptions {
            hsts: Some("max-age=31536000".into()),
            frame_options: Some("DENY".into()),
            content_type_options: true,
            ..SecurityHeaderOptions::default()
        },
        ..EdgeOptions::default()
    }
}

/// An API-key route with CORS and security headers.
fn api_key_route() -> RouteSecurity {
    RouteSecurity::new(
        authenticator(None),
        RouteAuth {
            mode: AuthMode::ApiKey,
            acl: None,
        },
    )
    .with_edge(&edge())
    .unwrap()
}

/// Serves `svc` on a free port; with `client_ip`, each request carries its peer's address as
/// the `ClientIp` extension, as an app would insert it where it accepts connections.
async fn serve<S>(svc: S, client_ip: bool) -> SocketAddr
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, peer) = listener.accept().await.unwrap();
            let svc = ServiceBuilder::new()
                .map_request(accepted(client_ip.then_some(peer)))
                .service(svc.clone());
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc))
                    .await;
            });
        }
    });
    addr
}

/// Boxes a request's body and inserts its client's address. A function rather than a closure
/// at the call site: a closure's inferred signature is too general for `Box<dyn Error>` bodies
/// and fails the `Send` check in `tokio::spawn`.
fn accepted(
    peer: Option<SocketAddr>,
) -> impl Fn(Request<hyper::body::Incoming>) -> Request<Body> + Clone {
    move |req| {
        let mut req = req.map(body::boxed);
        if let Some(peer) = peer {
            req.extensions_mut().insert(ClientIp::from(peer));
        }
        req
    }
}

/// A response, collected.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

/// Sends `req` from the loopback address `from`.
async fn send_from(from: IpAddr, req: Request<Full<Bytes>>) -> Answer {
    let mut connector = HttpConnector::new();
    connector.set_local_address(Some(from));
    let client = Client::builder(TokioExecutor::new()).build(connector);
    let resp = client.request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

async fn send(req: Request<Full<Bytes>>) -> Answer {
    send_from(IpAddr::from([127, 0, 0, 1]), req).await
}

fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut b = Request::get(format!("http://{addr}{path}"));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::default()).unwrap()
}

#[tokio::test]
async fn a_missing_api_key_is_refused_with_a_401_json_error_before_the_service() {
    let (app, calls) = echo();
    let addr = serve(SecurityLayer::new(api_key_route()).layer(app), true).await;
    let answer = send(get(addr, "/orders", &[])).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.header("content-type"), Some("application/json"));
    assert_eq!(answer.header("www-authenticate"), Some("ApiKey"));
    let json = answer.json();
    assert_eq!(json["status"], 401);
    assert_eq!(json["error"], "authentication required");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn an_unknown_api_key_is_refused_without_saying_whether_it_exists() {
    let (app, calls) = echo();
    let addr = serve(SecurityLayer::new(api_key_route()).layer(app), true).await;
    let answer = send(get(addr, "/orders", &[("x-api-key", "key-nobody")])).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.json()["error"], "invalid credentials");
    assert!(!String::from_utf8_lossy(&answer.body).contains("key-nobody"));
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_valid_key_reaches_the_service_as_its_consumer_without_the_key() {
    let (app, calls) = echo();
    let addr = serve(SecurityLayer::new(api_key_route()).layer(app), true).await;
    let answer = send(get(
        addr,
        "/orders?page=2",
        &[("x-api-key", "key-acme"), ("x-consumer-id", "spoofed")],
    ))
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    let seen = answer.json();
    assert_eq!(seen["consumer"], "acme");
    assert_eq!(seen["tier"], "premium");
    assert_eq!(seen["x_api_key"], Value::Null, "the key is not forwarded");
    assert_eq!(
        seen["x_consumer_id"],
        Value::Null,
        "client copies are removed"
    );
    assert_eq!(seen["path"], "/orders?page=2");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_cors_preflight_is_answered_204_by_the_layer() {
    let (app, calls) = echo();
    let addr = serve(SecurityLayer::new(api_key_route()).layer(app), true).await;
    let preflight = Request::builder()
        .method(Method::OPTIONS)
        .uri(format!("http://{addr}/orders"))
        .header("origin", ORIGIN)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "x-api-key")
        .body(Full::default())
        .unwrap();
    let answer = send(preflight).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    assert_eq!(answer.header("access-control-allow-origin"), Some(ORIGIN));
    let methods = answer.header("access-control-allow-methods").unwrap();
    assert!(methods.contains("POST"), "{methods}");
    assert_eq!(answer.header("access-control-max-age"), Some("600"));
    assert!(answer.body.is_empty());
    assert_eq!(calls.load(Ordering::SeqCst), 0, "no credentials needed");

    let evil = Request::builder()
        .method(Method::OPTIONS)
        .uri(format!("http://{addr}/orders"))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .body(Full::default())
        .unwrap();
    assert_eq!(send(evil).await.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn responses_and_refusals_carry_the_security_and_cors_headers() {
    let (app, _) = echo();
    let addr = serve(SecurityLayer::new(api_key_route()).layer(app), true).await;
    let granted = send(get(
        addr,
        "/orders",
        &[("x-api-key", "key-acme"), ("origin", ORIGIN)],
    ))
    .await;
    let refused = send(get(addr, "/orders", &[("origin", ORIGIN)])).await;
    assert_eq!(granted.status, StatusCode::OK);
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    for answer in [&granted, &refused] {
        assert_eq!(
            answer.header("strict-transport-security"),
            Some("max-age=31536000")
        );
        assert_eq!(answer.header("x-frame-options"), Some("DENY"));
        assert_eq!(answer.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(answer.header("access-control-allow-origin"), Some(ORIGIN));
        assert!(answer.header("vary").unwrap().contains("Origin"));
    }
}

#[tokio::test]
async fn ip_rules_judge_the_client_ip_extension() {
    let route = RouteSecurity::none()
        .with_edge(&EdgeOptions {
            ip: IpRules {
                allow: vec!["127.0.0.1/32".parse().unwrap()],
                deny: vec![],
            },
            ..EdgeOptions::default()
        })
        .unwrap();
    let (app, calls) = echo();
    let addr = serve(SecurityLayer::new(route).layer(app), true).await;
    let allowed = send_from(IpAddr::from([127, 0, 0, 1]), get(addr, "/", &[])).await;
    let other = send_from(IpAddr::from([127, 0, 0, 2]), get(addr, "/", &[])).await;
    assert_eq!(allowed.status, StatusCode::OK);
    assert_eq!(other.status, StatusCode::FORBIDDEN);
    assert_eq!(other.json()["error"], "client address not allowed");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_route_with_ip_rules_refuses_requests_without_a_client_ip() {
    let route = RouteSecurity::none()
        .with_edge(&EdgeOptions {
            ip: IpRules {
                allow: vec![],
                deny: vec!["192.0.2.0/24".parse().unwrap()],
            },
            ..EdgeOptions::default()
        })
        .unwrap();
    let (app, calls) = echo();
    let addr = serve(SecurityLayer::new(route).layer(app), false).await;
    let answer = send(get(addr, "/", &[])).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_body_over_the_limit_answers_413_even_without_content_length() {
    let route = RouteSecurity::none()
        .with_edge(&EdgeOptions {
            max_body: Some(8),
            ..EdgeOptions::default()
        })
        .unwrap();
    // An app that reads the body (and reports a failed read as a 400 it never gets to send).
    let app = service_fn(|req: Request<Body>| async move {
        let status = match req.into_body().collect().await {
            Ok(_) => StatusCode::OK,
            Err(_) => StatusCode::BAD_REQUEST,
        };
        let mut resp = Response::new(body::empty());
        *resp.status_mut() = status;
        Ok::<_, Infallible>(resp)
    });
    let addr = serve(SecurityLayer::new(route).layer(app), true).await;
    let post = |bytes: &'static [u8], declared: bool| {
        let mut b = Request::post(format!("http://{addr}/upload"));
        if declared {
            b = b.header("content-length", bytes.len());
        }
        b.body(Full::new(Bytes::from_static(bytes))).unwrap()
    };
    assert_eq!(send(post(b"12345678", true)).await.status, StatusCode::OK);
    assert_eq!(
        send(post(b"123456789", true)).await.status,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    // A body without a declared length (chunked) is counted as it streams.
    let client = Client::builder(TokioExecutor::new()).build_http::<Chunked>();
    let streamed = Request::post(format!("http://{addr}/upload"))
        .body(Chunked(Some(Bytes::from_static(b"123456789"))))
        .unwrap();
    let resp = client.request(streamed).await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let json: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(json["error"], "request body too large");
}

/// A body of one chunk whose size is not announced: sent with `Transfer-Encoding: chunked`.
struct Chunked(Option<Bytes>);

impl http_body::Body for Chunked {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        std::task::Poll::Ready(self.0.take().map(|b| Ok(http_body::Frame::data(b))))
    }
}

/// A JWK Set server answering `set` and counting its fetches.
async fn jwks_server(set: Value) -> (SocketAddr, Arc<AtomicUsize>) {
    let fetches = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&fetches);
    let text = Bytes::from(set.to_string());
    let app = service_fn(move |_req: Request<Body>| {
        counter.fetch_add(1, Ordering::SeqCst);
        let mut resp = Response::new(body::full(text.clone()));
        resp.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        async move { Ok::<_, Infallible>(resp) }
    });
    (serve(app, false).await, fetches)
}

#[tokio::test]
async fn a_token_naming_an_unknown_kid_waits_for_the_jwk_set_and_then_passes() {
    let pair = Ed25519KeyPair::generate().unwrap();
    let pkcs8 = AsDer::<Pkcs8V1Der<'_>>::as_der(&pair).unwrap();
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
    let (jwks, fetches) = jwks_server(json!({"keys": [
        {"kty": "OKP", "crv": "Ed25519", "kid": "k1", "use": "sig", "x": x}
    ]}))
    .await;
    let route = RouteSecurity::new(
        authenticator(Some(JwtOptions {
            algorithms: vec![Algorithm::EdDSA],
            jwks_url: Some(format!("http://{jwks}/jwks.json").parse().unwrap()),
            ..JwtOptions::default()
        })),
        RouteAuth {
            mode: AuthMode::Jwt,
            acl: None,
        },
    );
    let (app, calls) = echo();
    let addr = serve(SecurityLayer::new(route).layer(app), true).await;

    let mut header = jsonwebtoken::Header::new(Algorithm::EdDSA);
    header.kid = Some("k1".into());
    let exp = jsonwebtoken::get_current_timestamp() + 300;
    let token = jsonwebtoken::encode(
        &header,
        &json!({"sub": "user-7", "exp": exp}),
        &jsonwebtoken::EncodingKey::from_ed_der(pkcs8.as_ref()),
    )
    .unwrap();
    let bearer = format!("Bearer {token}");
    let answer = send(get(addr, "/me", &[("authorization", &bearer)])).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_eq!(answer.json()["consumer"], "user-7");
    assert_eq!(fetches.load(Ordering::SeqCst), 1);

    // A forged token (another key, same kid) is refused after the set is known.
    let other = Ed25519KeyPair::generate().unwrap();
    let other_pkcs8 = AsDer::<Pkcs8V1Der<'_>>::as_der(&other).unwrap();
    let forged = jsonwebtoken::encode(
        &header,
        &json!({"sub": "user-7", "exp": exp}),
        &jsonwebtoken::EncodingKey::from_ed_der(other_pkcs8.as_ref()),
    )
    .unwrap();
    let bearer = format!("Bearer {forged}");
    let answer = send(get(addr, "/me", &[("authorization", &bearer)])).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}
