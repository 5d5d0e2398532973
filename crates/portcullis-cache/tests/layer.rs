//! The cache as a tower layer in front of an in-process service (as in an axum app), with a
//! manual clock: freshness arithmetic over time, `Age`, stale-while-revalidate windows.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use portcullis_cache::{Cache, CacheConfig, CacheLayer, ManualClock, RoutePolicy};
use portcullis_http::{Body, body};
use tower::{Layer, Service, ServiceExt, service_fn};

/// A service answering `n:<count>` with `cache_control`, and a counter of its calls.
fn origin(
    cache_control: &'static str,
) -> (
    impl Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future: Send>
    + Clone
    + Send
    + Sync
    + 'static,
    Arc<AtomicUsize>,
) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let svc = service_fn(move |_req: Request<Body>| {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            let mut resp = Response::new(body::full(format!("n:{n}")));
            resp.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static(cache_control),
            );
            Ok::<_, Infallible>(resp)
        }
    });
    (svc, calls)
}

fn cache_with(clock: &ManualClock) -> Cache {
    Cache::new(CacheConfig {
        clock: Arc::new(clock.clone()),
        ..CacheConfig::default()
    })
}

async fn get<S>(svc: &S, path: &str) -> (String, String, String)
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone,
{
    let req = Request::get(format!("http://app.test{path}"))
        .body(body::empty())
        .unwrap();
    let resp = svc.clone().oneshot(req).await.unwrap();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .map_or("-".to_owned(), |v| v.to_str().unwrap().to_owned())
    };
    let (x_cache, age) = (header("x-cache"), header("age"));
    let bytes: Bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (x_cache, age, String::from_utf8(bytes.to_vec()).unwrap())
}

/// Lets the background refresh run: it is spawned on this runtime.
async fn settle(calls: &AtomicUsize, n: usize) {
    for _ in 0..1000 {
        if calls.load(Ordering::SeqCst) >= n {
            // One more turn so the refreshed body is stored after the call returns.
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("background refresh never reached the origin");
}

#[tokio::test]
async fn freshness_runs_on_the_cache_clock() {
    let clock = ManualClock::starting_now();
    let cache = cache_with(&clock);
    let (origin, calls) = origin("max-age=60");
    let svc = CacheLayer::new(cache.clone(), cache.register(RoutePolicy::new("app"))).layer(origin);

    assert_eq!(
        get(&svc, "/").await,
        ("MISS".into(), "-".into(), "n:1".into())
    );
    clock.advance(Duration::from_secs(59));
    assert_eq!(
        get(&svc, "/").await,
        ("HIT".into(), "59".into(), "n:1".into())
    );
    clock.advance(Duration::from_secs(1));
    // Age 60 = max-age: stale. No validators and no stale allowance: refetched.
    assert_eq!(
        get(&svc, "/").await,
        ("MISS".into(), "-".into(), "n:2".into())
    );
    assert_eq!(
        get(&svc, "/").await,
        ("HIT".into(), "0".into(), "n:2".into())
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let stats = cache.stats();
    assert_eq!((stats.total.hits, stats.total.misses), (2, 2));
    assert_eq!(stats.routes[0].0, "app");
}

#[tokio::test]
async fn stale_while_revalidate_window_then_revalidation() {
    let clock = ManualClock::starting_now();
    let cache = cache_with(&clock);
    let (origin, calls) = origin("max-age=10, stale-while-revalidate=20");
    let svc = CacheLayer::new(cache.clone(), cache.register(RoutePolicy::new("app"))).layer(origin);

    get(&svc, "/").await;
    clock.advance(Duration::from_secs(15));
    // Within the window: stale now, refreshed behind the scenes.
    assert_eq!(
        get(&svc, "/").await,
        ("STALE".into(), "15".into(), "n:1".into())
    );
    settle(&calls, 2).await;
    assert_eq!(
        get(&svc, "/").await,
        ("HIT".into(), "0".into(), "n:2".into())
    );
    // Past max-age + stale-while-revalidate: the client waits for the origin.
    clock.advance(Duration::from_secs(31));
    assert_eq!(get(&svc, "/").await.2, "n:3");
}

#[tokio::test]
async fn route_defaults_apply_when_the_response_is_silent() {
    let clock = ManualClock::starting_now();
    let cache = cache_with(&clock);
    let (origin, calls) = origin("max-age=10");
    let mut policy = RoutePolicy::new("app");
    policy.stale_while_revalidate = Duration::from_secs(100);
    let svc = CacheLayer::new(cache.clone(), cache.register(policy)).layer(origin);
    get(&svc, "/").await;
    clock.advance(Duration::from_secs(50));
    assert_eq!(get(&svc, "/").await.0, "STALE");
    settle(&calls, 2).await;
}

#[tokio::test]
async fn service_errors_become_502_and_are_not_stored() {
    let cache = Cache::new(CacheConfig::default());
    let failing = service_fn(|_req: Request<Body>| async {
        Err::<Response<Body>, std::io::Error>(std::io::Error::other("boom"))
    });
    let svc =
        CacheLayer::new(cache.clone(), cache.register(RoutePolicy::new("app"))).layer(failing);
    let resp = svc
        .oneshot(Request::get("/").body(body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(cache.stats().total.stores, 0);
}
