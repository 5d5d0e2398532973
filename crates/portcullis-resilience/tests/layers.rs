//! The resilience layers in front of an axum app, over real sockets on port 0 with a real HTTP
//! client: the breaker that stops calling a failing app, the concurrency limit's queue, its
//! refusals and its slot held while a body streams, the deadline's 504 and load shedding's 503.
//!
//! Handlers that must stay busy wait on a gate (a semaphore the test adds permits to) and say
//! they have started on a channel, so the tests wait for signals, never for time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Router, extract::State, http::StatusCode, routing};
use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Empty, channel::Channel};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use portcullis_http::{Body, RequestId};
use portcullis_resilience::{
    AdaptiveConfig, Breaker, BreakerConfig, BreakerLayer, BreakerState, ConcurrencyConfig,
    ConcurrencyLimit, ConcurrencyLimitLayer, DeadlineLayer, LoadShedLayer,
};
use serde_json::Value;
use tokio::{
    net::TcpListener,
    sync::{Semaphore, mpsc},
};
use tower::{Layer, Service, ServiceBuilder};

/// What the app has seen, and the gate its `/held` handler waits on.
#[derive(Clone)]
struct Probe {
    calls: Arc<AtomicUsize>,
    active: Arc<AtomicUsize>,
    max_active: Arc<AtomicUsize>,
    gate: Arc<Semaphore>,
    entered: mpsc::UnboundedSender<()>,
    bodies: mpsc::UnboundedSender<http_body_util::channel::Sender<Bytes, Infallible>>,
}

/// The app's side of the test: what it saw, and the signals it sends.
struct Seen {
    probe: Probe,
    entered: mpsc::UnboundedReceiver<()>,
    bodies: mpsc::UnboundedReceiver<http_body_util::channel::Sender<Bytes, Infallible>>,
}

impl Seen {
    fn calls(&self) -> usize {
        self.probe.calls.load(Ordering::SeqCst)
    }

    fn max_active(&self) -> usize {
        self.probe.max_active.load(Ordering::SeqCst)
    }

    /// Lets `n` held handlers answer.
    fn release(&self, n: usize) {
        self.probe.gate.add_permits(n);
    }

    /// Waits until `n` more handlers have started.
    async fn wait_entered(&mut self, n: usize) {
        for _ in 0..n {
            self.entered.recv().await.unwrap();
        }
    }
}

/// `/ok` answers 200, `/fail` 500, `/held` 200 once the gate lets it, `/never` never, and
/// `/stream` 200 with a body the test writes. Every handler counts its call.
fn app() -> (Router, Seen) {
    let (entered_tx, entered) = mpsc::unbounded_channel();
    let (bodies_tx, bodies) = mpsc::unbounded_channel();
    let probe = Probe {
        calls: Arc::default(),
        active: Arc::default(),
        max_active: Arc::default(),
        gate: Arc::new(Semaphore::new(0)),
        entered: entered_tx,
        bodies: bodies_tx,
    };
    let router = Router::new()
        .route("/ok", routing::get(|| async { "ok" }))
        .route(
            "/fail",
            routing::get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "broken") }),
        )
        .route("/held", routing::get(held))
        .route("/never", routing::get(std::future::pending::<&'static str>))
        .route("/stream", routing::get(stream))
        .layer(axum::middleware::from_fn_with_state(
            probe.clone(),
            count_calls,
        ))
        .with_state(probe.clone());
    (
        router,
        Seen {
            probe,
            entered,
            bodies,
        },
    )
}

async fn count_calls(
    State(probe): State<Probe>,
    req: Request<axum::body::Body>,
    next: axum::middleware::Next,
) -> axum::response::Response {
    probe.calls.fetch_add(1, Ordering::SeqCst);
    next.run(req).await
}

async fn held(State(probe): State<Probe>) -> &'static str {
    let now = probe.active.fetch_add(1, Ordering::SeqCst) + 1;
    probe.max_active.fetch_max(now, Ordering::SeqCst);
    probe.entered.send(()).unwrap();
    probe.gate.acquire().await.unwrap().forget();
    probe.active.fetch_sub(1, Ordering::SeqCst);
    "done"
}

async fn stream(State(probe): State<Probe>) -> axum::body::Body {
    let (tx, body) = Channel::<Bytes, Infallible>::new(1);
    probe.bodies.send(tx).unwrap();
    axum::body::Body::new(body)
}

/// Inserts the [`RequestId`] the client sent as `x-request-id`, as the gateway would. A
/// function rather than a closure: a closure's inferred signature is too general for
/// `Box<dyn Error>` bodies and fails the `Send` check in `tokio::spawn`.
fn with_request_id(mut req: Request<Incoming>) -> Request<Incoming> {
    if let Some(id) = req
        .headers()
        .get("x-request-id")
        .and_then(RequestId::from_header)
    {
        req.extensions_mut().insert(id);
    }
    req
}

/// Serves `svc` on a free loopback port.
async fn serve<S>(svc: S) -> SocketAddr
where
    S: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let svc = ServiceBuilder::new()
                .map_request(with_request_id)
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

/// A response: status, headers and the whole body.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        assert_eq!(self.headers["content-type"], "application/json");
        serde_json::from_slice(&self.body).unwrap()
    }

    fn retry_after(&self) -> Option<&str> {
        self.headers.get("retry-after").map(|v| v.to_str().unwrap())
    }
}

fn client() -> Client<HttpConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// `GET path` with `x-request-id: request_id`.
async fn get_as(addr: SocketAddr, path: &str, request_id: &str) -> Answer {
    let req = Request::get(format!("http://{addr}{path}"))
        .header("x-request-id", request_id)
        .body(Empty::new())
        .unwrap();
    let (parts, body) = client().request(req).await.unwrap().into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

async fn get(addr: SocketAddr, path: &str) -> Answer {
    get_as(addr, path, "test").await
}

/// Waits until `condition` holds (for counts that have no signal of their own), failing the
/// test after 10 s.
async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    let waited = tokio::time::timeout(Duration::from_secs(10), async {
        while !condition() {
            tokio::task::yield_now().await;
        }
    });
    waited
        .await
        .unwrap_or_else(|_| panic!("never happened: {what}"));
}

fn limit(max_in_flight: usize, max_queue: usize, queue_timeout: Duration) -> Arc<ConcurrencyLimit> {
    Arc::new(ConcurrencyLimit::new(ConcurrencyConfig {
        max_in_flight,
        max_queue,
        queue_timeout,
        adaptive: None,
    }))
}

const LONG: Duration = Duration::from_secs(30);

mod breaker {
    use super::*;

    #[tokio::test]
    async fn the_breaker_opens_after_failing_responses_and_stops_calling_the_app() {
        let (app, seen) = app();
        let breaker = Arc::new(Breaker::new(BreakerConfig {
            consecutive_failures: 3,
            open_for: Duration::from_secs(30),
            ..BreakerConfig::default()
        }));
        let addr = serve(BreakerLayer::new(Arc::clone(&breaker)).layer(app)).await;
        for _ in 0..3 {
            let answer = get(addr, "/fail").await;
            assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
            assert_eq!(answer.body, "broken", "the app's own answer passes through");
        }
        assert_eq!(breaker.state(), BreakerState::Open);

        let refused = get_as(addr, "/ok", "rid-42").await;
        assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
        let retry_after: u64 = refused.retry_after().unwrap().parse().unwrap();
        assert!((1..=30).contains(&retry_after), "{retry_after}");
        let json = refused.json();
        assert_eq!(json["error"], "circuit breaker open");
        assert_eq!(json["status"], 503);
        assert_eq!(json["request_id"], "rid-42");
        assert_eq!(seen.calls(), 3, "the open breaker never called the app");
    }

    #[tokio::test]
    async fn successful_answers_keep_the_breaker_closed() {
        let (app, seen) = app();
        let breaker = Arc::new(Breaker::new(BreakerConfig {
            consecutive_failures: 2,
            ..BreakerConfig::default()
        }));
        let addr = serve(BreakerLayer::new(Arc::clone(&breaker)).layer(app)).await;
        for path in ["/fail", "/ok", "/fail", "/ok", "/fail"] {
            get(addr, path).await;
        }
        assert_eq!(
            breaker.state(),
            BreakerState::Closed,
            "never 2 failures in a row"
        );
        assert_eq!(seen.calls(), 5);
    }
}

mod concurrency {
    use super::*;

    #[tokio::test]
    async fn a_third_request_waits_in_line_and_is_served_when_a_slot_frees() {
        let (app, mut seen) = app();
        let limit = limit(2, 1, LONG);
        let addr = serve(ConcurrencyLimitLayer::new(Arc::clone(&limit)).layer(app)).await;
        let first = [
            tokio::spawn(get(addr, "/held")),
            tokio::spawn(get(addr, "/held")),
        ];
        seen.wait_entered(2).await;
        let third = tokio::spawn(get(addr, "/held"));
        until("the third request waits", || limit.waiting() == 1).await;
        assert_eq!(seen.calls(), 2, "the app has not seen it");

        seen.release(1);
        seen.wait_entered(1).await;
        assert_eq!(limit.waiting(), 0);
        seen.release(2);
        for answer in first {
            assert_eq!(answer.await.unwrap().status, StatusCode::OK);
        }
        let third = third.await.unwrap();
        assert_eq!(third.status, StatusCode::OK);
        assert_eq!(third.body, "done");
        assert_eq!(seen.max_active(), 2);
    }

    #[tokio::test]
    async fn without_a_queue_a_request_over_the_limit_gets_503_at_once() {
        let (app, mut seen) = app();
        let limit = limit(2, 0, LONG);
        let addr = serve(ConcurrencyLimitLayer::new(Arc::clone(&limit)).layer(app)).await;
        let held = [
            tokio::spawn(get(addr, "/held")),
            tokio::spawn(get(addr, "/held")),
        ];
        seen.wait_entered(2).await;

        let refused = get_as(addr, "/ok", "rid-7").await;
        assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.retry_after(), Some("1"));
        let json = refused.json();
        assert_eq!(json["status"], 503);
        assert_eq!(json["request_id"], "rid-7");
        assert!(
            json["error"].as_str().unwrap().contains("queue is full"),
            "{json}"
        );
        assert_eq!(seen.calls(), 2, "the refused request never reached the app");

        seen.release(2);
        for answer in held {
            assert_eq!(answer.await.unwrap().status, StatusCode::OK);
        }
    }

    #[tokio::test]
    async fn a_request_that_waits_past_the_queue_timeout_gets_503() {
        let (app, mut seen) = app();
        let limit = limit(1, 1, Duration::from_millis(50));
        let addr = serve(ConcurrencyLimitLayer::new(Arc::clone(&limit)).layer(app)).await;
        let held = tokio::spawn(get(addr, "/held"));
        seen.wait_entered(1).await;

        let refused = get(addr, "/ok").await;
        assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.retry_after(), Some("1"));
        assert!(
            refused.json()["error"]
                .as_str()
                .unwrap()
                .contains("queue timeout")
        );
        assert_eq!(limit.waiting(), 0);
        seen.release(1);
        assert_eq!(held.await.unwrap().status, StatusCode::OK);
    }

    #[tokio::test]
    async fn the_app_never_sees_more_requests_at_once_than_the_limit() {
        let (app, mut seen) = app();
        let limit = limit(3, 50, LONG);
        let addr = serve(ConcurrencyLimitLayer::new(Arc::clone(&limit)).layer(app)).await;
        let requests: Vec<_> = (0..20).map(|_| tokio::spawn(get(addr, "/held"))).collect();
        seen.wait_entered(3).await;
        until("17 requests wait", || limit.waiting() == 17).await;
        seen.release(20);
        for answer in requests {
            assert_eq!(answer.await.unwrap().status, StatusCode::OK);
        }
        assert_eq!(seen.calls(), 20);
        assert_eq!(seen.max_active(), 3);
        until("every slot is free", || limit.in_flight() == 0).await;
    }

    #[tokio::test]
    async fn a_slot_is_held_until_the_response_body_ends() {
        let (app, mut seen) = app();
        let limit = limit(1, 0, LONG);
        let addr = serve(ConcurrencyLimitLayer::new(Arc::clone(&limit)).layer(app)).await;
        let req = Request::get(format!("http://{addr}/stream"))
            .body(Empty::new())
            .unwrap();
        let response = client().request(req).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let mut writer = seen.bodies.recv().await.unwrap();

        assert_eq!(limit.in_flight(), 1, "the head is in, the body is not");
        let refused = get(addr, "/ok").await;
        assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);

        writer
            .send_data(Bytes::from_static(b"chunk"))
            .await
            .unwrap();
        drop(writer);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "chunk");
        until("the slot frees", || limit.in_flight() == 0).await;
        assert_eq!(get(addr, "/ok").await.status, StatusCode::OK);
    }

    #[tokio::test]
    async fn an_adaptive_limit_shrinks_when_the_app_fails() {
        let (app, _seen) = app();
        let limit = Arc::new(ConcurrencyLimit::new(ConcurrencyConfig {
            max_in_flight: 8,
            max_queue: 0,
            queue_timeout: LONG,
            adaptive: Some(AdaptiveConfig {
                min_limit: 2,
                max_limit: 8,
                ..AdaptiveConfig::default()
            }),
        }));
        let addr = serve(ConcurrencyLimitLayer::new(Arc::clone(&limit)).layer(app)).await;
        for _ in 0..20 {
            assert_eq!(
                get(addr, "/fail").await.status,
                StatusCode::INTERNAL_SERVER_ERROR
            );
        }
        assert_eq!(limit.limit(), 2, "every 5xx shrank it, down to the minimum");
    }
}

mod deadline {
    use super::*;

    #[tokio::test]
    async fn a_handler_that_never_answers_gets_504() {
        let (app, seen) = app();
        let addr = serve(DeadlineLayer::new(Duration::from_millis(100)).layer(app)).await;
        let answer = get_as(addr, "/never", "rid-9").await;
        assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
        let json = answer.json();
        assert_eq!(json["error"], "upstream deadline exceeded");
        assert_eq!(json["status"], 504);
        assert_eq!(json["request_id"], "rid-9");
        assert_eq!(seen.calls(), 1);
        assert_eq!(
            get(addr, "/ok").await.status,
            StatusCode::OK,
            "answers in time pass"
        );
    }
}

mod load_shed {
    use super::*;

    #[tokio::test]
    async fn requests_beyond_the_cap_get_503_at_once() {
        let (app, mut seen) = app();
        let shed = LoadShedLayer::new(1);
        let addr = serve(shed.layer(app)).await;
        let held = tokio::spawn(get(addr, "/held"));
        seen.wait_entered(1).await;

        let refused = get_as(addr, "/ok", "rid-3").await;
        assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.retry_after(), Some("1"));
        assert_eq!(refused.json()["request_id"], "rid-3");
        assert_eq!(seen.calls(), 1, "the shed request never reached the app");

        seen.release(1);
        assert_eq!(held.await.unwrap().status, StatusCode::OK);
        until("the count drops", || shed.in_flight() == 0).await;
        assert_eq!(get(addr, "/ok").await.status, StatusCode::OK);
    }
}
