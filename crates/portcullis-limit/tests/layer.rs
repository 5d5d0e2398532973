//! `RateLimitLayer` in front of a service, over real sockets on port 0: the `RateLimit-*`
//! headers counting down, the 429 with `Retry-After` that never reaches the service, one count
//! per client address (clients bound to distinct loopback addresses) and per API key, consumer
//! extensions from a layer in front, and a Redis-backed limiter shared by two servers.

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

use bytes::Bytes;
use http::{HeaderMap, HeaderName, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use portcullis_http::{Body, ClientIp, ConsumerId, body};
use portcullis_limit::{KeyPart, Limit, Policy, Quota, Rate, RateLimitLayer, RateLimiter};
use portcullis_redis::{Redis, RedisConfig};
use portcullis_test_support::RedisServer;
use serde_json::Value;
use tokio::net::TcpListener;
use tower::{Layer, Service, ServiceBuilder, service_fn};

const API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// The application behind the layer: answers `ok` and counts its calls.
fn app() -> (
    impl Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future: Send>
    + Clone
    + Send
    + 'static,
    Arc<AtomicUsize>,
) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let svc = service_fn(move |_req: Request<Body>| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, Infallible>(Response::new(body::full("ok"))) }
    });
    (svc, calls)
}

/// `n` requests a minute (no burst beyond `n`), keyed by `key`.
fn policy(scope: &str, n: u64, key: Vec<KeyPart>) -> Policy {
    Policy {
        scope: scope.into(),
        limits: vec![Limit {
            name: "per-minute".into(),
            quota: Quota::gcra(Rate::new(n, Duration::from_secs(60))),
            key,
        }],
        ..Policy::default()
    }
}

/// Boxes a request's body, inserts its client's address and, when the client sends
/// `x-consumer`, the consumer extension an auth layer would insert. A function rather than a
/// closure at the call site: a closure's inferred signature is too general for
/// `Box<dyn Error>` bodies and fails the `Send` check in `tokio::spawn`.
fn accepted(peer: SocketAddr) -> impl Fn(Request<hyper::body::Incoming>) -> Request<Body> + Clone {
    move |req| {
        let mut req = req.map(body::boxed);
        req.extensions_mut().insert(ClientIp::from(peer));
        if let Some(c) = req.headers().get("x-consumer").cloned() {
            let id = ConsumerId(Arc::from(c.to_str().unwrap()));
            req.extensions_mut().insert(id);
        }
        req
    }
}

/// Serves `svc` on a free port.
async fn serve<S>(svc: S) -> SocketAddr
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
                .map_request(accepted(peer))
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

/// A response's status and headers, and its body as JSON when it is JSON.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn header(&self, name: &str) -> Option<u64> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().parse().unwrap())
    }
}

/// `GET /` to `addr` from the loopback address `from`, with `headers`.
async fn get_from(addr: SocketAddr, from: [u8; 4], headers: &[(&str, &str)]) -> Answer {
    let mut connector = HttpConnector::new();
    connector.set_local_address(Some(IpAddr::from(from)));
    let client = Client::builder(TokioExecutor::new()).build::<_, Full<Bytes>>(connector);
    let mut req = Request::get(format!("http://{addr}/"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .request(req.body(Full::default()).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

const HOME: [u8; 4] = [127, 0, 0, 1];

#[tokio::test]
async fn allowed_responses_count_down_then_a_429_with_retry_after() {
    let (app, calls) = app();
    let limiter = RateLimiter::local(policy("countdown", 3, vec![KeyPart::ClientIp]));
    let addr = serve(RateLimitLayer::new(limiter).layer(app)).await;
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let answer = get_from(addr, HOME, &[]).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.header("ratelimit-limit"), Some(3));
        assert!(answer.header("ratelimit-reset").is_some());
        assert!(answer.headers.get("retry-after").is_none());
        remaining.push(answer.header("ratelimit-remaining").unwrap());
    }
    assert_eq!(remaining, [2, 1, 0]);

    let refused = get_from(addr, HOME, &[]).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        refused.headers["content-type"], "application/json",
        "the contract's error body"
    );
    let json: Value = serde_json::from_slice(&refused.body).unwrap();
    assert_eq!(json["status"], 429);
    assert_eq!(json["error"], "rate limit exceeded");
    let retry_after = refused.header("retry-after").unwrap();
    // One request a minute comes back: about 20 s, never 0.
    assert!((1..=20).contains(&retry_after), "{retry_after}");
    assert_eq!(refused.header("ratelimit-remaining"), Some(0));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "refusals never reach the app"
    );
}

#[tokio::test]
async fn each_client_address_has_its_own_count() {
    let (app, calls) = app();
    let limiter = RateLimiter::local(policy("per-ip", 1, vec![KeyPart::ClientIp]));
    let addr = serve(RateLimitLayer::new(limiter).layer(app)).await;
    assert_eq!(get_from(addr, HOME, &[]).await.status, StatusCode::OK);
    assert_eq!(
        get_from(addr, HOME, &[]).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    let neighbour = get_from(addr, [127, 0, 0, 2], &[]).await;
    assert_eq!(neighbour.status, StatusCode::OK);
    assert_eq!(neighbour.header("ratelimit-remaining"), Some(0));
    assert_eq!(
        get_from(addr, [127, 0, 0, 2], &[]).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn api_keys_are_counted_apart_from_one_address_and_alike_across_addresses() {
    let (app, _) = app();
    let limiter = RateLimiter::local(policy("per-key", 1, vec![KeyPart::ApiKey(API_KEY)]));
    let addr = serve(RateLimitLayer::new(limiter).layer(app)).await;
    let key = |k| [("x-api-key", k)];
    assert_eq!(get_from(addr, HOME, &key("a")).await.status, StatusCode::OK);
    assert_eq!(get_from(addr, HOME, &key("b")).await.status, StatusCode::OK);
    let moved = get_from(addr, [127, 0, 0, 3], &key("a")).await;
    assert_eq!(moved.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn consumers_from_an_auth_layer_are_counted_across_keys_and_addresses() {
    let (app, _) = app();
    let limiter = RateLimiter::local(policy("per-consumer", 2, vec![KeyPart::Consumer(API_KEY)]));
    let addr = serve(RateLimitLayer::new(limiter).layer(app)).await;
    let acme = [("x-consumer", "acme")];
    assert_eq!(get_from(addr, HOME, &acme).await.status, StatusCode::OK);
    assert_eq!(
        get_from(addr, [127, 0, 0, 4], &acme).await.status,
        StatusCode::OK
    );
    assert_eq!(
        get_from(addr, [127, 0, 0, 5], &acme).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        get_from(addr, HOME, &[("x-consumer", "bob")]).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn headers_can_be_left_off_allowed_responses_and_structured_ones_added() {
    let (app, _) = app();
    let quiet = serve(
        RateLimitLayer::new(RateLimiter::local(policy("quiet", 1, vec![])))
            .with_headers(false)
            .layer(app.clone()),
    )
    .await;
    let allowed = get_from(quiet, HOME, &[]).await;
    assert_eq!(allowed.status, StatusCode::OK);
    assert!(allowed.headers.get("ratelimit-limit").is_none());
    let refused = get_from(quiet, HOME, &[]).await;
    assert_eq!(
        refused.header("ratelimit-limit"),
        Some(1),
        "a 429 always says"
    );

    let structured = serve(
        RateLimitLayer::new(RateLimiter::local(policy("structured", 5, vec![])))
            .with_policy_headers(true)
            .layer(app),
    )
    .await;
    let answer = get_from(structured, HOME, &[]).await;
    assert_eq!(
        answer.headers["ratelimit-policy"],
        "\"per-minute\";q=5;w=60"
    );
    assert!(
        answer.headers["ratelimit"]
            .to_str()
            .unwrap()
            .starts_with("\"per-minute\";r=4;t=")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_sharing_redis_admit_the_limit_once() {
    let server = RedisServer::start();
    let redis = || {
        Redis::connect(&RedisConfig {
            url: Some(server.url()),
            timeout: Duration::from_millis(500),
            ..RedisConfig::default()
        })
        .unwrap()
    };
    let (app, calls) = app();
    let p = policy("shared", 4, vec![KeyPart::ClientIp]);
    let limiters = [
        Arc::new(RateLimiter::shared(p.clone(), redis())),
        Arc::new(RateLimiter::shared(p, redis())),
    ];
    let one = serve(RateLimitLayer::new(Arc::clone(&limiters[0])).layer(app.clone())).await;
    let two = serve(RateLimitLayer::new(Arc::clone(&limiters[1])).layer(app)).await;
    let mut statuses = Vec::new();
    for i in 0..6 {
        let addr = if i % 2 == 0 { one } else { two };
        statuses.push(get_from(addr, HOME, &[]).await.status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 200, 429, 429]);
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    // Decided on Redis, not by each server's fallback share.
    for limiter in &limiters {
        let [_, (_, allowed, limited), (_, fallback_allowed, _)] = limiter.stats().snapshot();
        assert_eq!((allowed, limited, fallback_allowed), (2, 1, 0));
    }
}
