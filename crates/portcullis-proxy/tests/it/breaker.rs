//! The circuit breaker against a real failing upstream: it opens after the configured
//! failures, fails fast with no upstream traffic, half-opens after its open period and closes
//! after successful probes.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use http::StatusCode;
use portcullis_test_support::{Client, TestGateway, TestUpstream, full};

use crate::single_route;

const TOKEN: &str = "test-admin-token-0123456789";

/// Answers 500 while `failing`, else 200.
async fn flaky(failing: Arc<AtomicBool>) -> TestUpstream {
    TestUpstream::respond(move |_| {
        let mut resp = http::Response::new(full("x"));
        if failing.load(Ordering::Relaxed) {
            *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        }
        resp
    })
    .await
}

#[tokio::test]
async fn it_opens_fails_fast_half_opens_and_closes() {
    let failing = Arc::new(AtomicBool::new(true));
    let up = flaky(Arc::clone(&failing)).await;
    let gw = TestGateway::start(&single_route(
        &[&up],
        "breaker = { consecutive_failures = 3, open_for = \"300ms\", half_open_probes = 2 }",
        "",
    ))
    .await;
    let client = Client::http1();
    for _ in 0..3 {
        assert_eq!(
            client.get(&gw.url("/x")).await.status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
    for _ in 0..10 {
        let resp = client.get(&gw.url("/x")).await;
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            crate::json(resp.body())["error"]
                .as_str()
                .unwrap()
                .contains("circuit breaker open")
        );
        assert_eq!(resp.headers()["retry-after"], "1");
    }
    assert_eq!(up.request_count(), 3, "no upstream traffic while open");

    // The upstream recovers; after the open period two probes close the breaker. Waiting
    // for the breaker's own timer is the behaviour under test.
    failing.store(false, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(350)).await;
    for _ in 0..5 {
        assert_eq!(client.get(&gw.url("/x")).await.status(), StatusCode::OK);
    }
    assert_eq!(up.request_count(), 8);
}

#[tokio::test]
async fn a_failed_probe_reopens_it() {
    let failing = Arc::new(AtomicBool::new(true));
    let up = flaky(Arc::clone(&failing)).await;
    let gw = TestGateway::start(&single_route(
        &[&up],
        "breaker = { consecutive_failures = 2, open_for = \"200ms\" }",
        "",
    ))
    .await;
    let client = Client::http1();
    for _ in 0..2 {
        client.get(&gw.url("/x")).await;
    }
    tokio::time::sleep(Duration::from_millis(250)).await;
    // The probe fails: open again (now for 400 ms), nothing more goes upstream.
    assert_eq!(
        client.get(&gw.url("/x")).await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    for _ in 0..5 {
        assert_eq!(
            client.get(&gw.url("/x")).await.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    assert_eq!(up.request_count(), 3);
}

#[tokio::test]
async fn a_route_breaker_trips_its_route_alone_and_operators_drive_it() {
    // The upstream fails `/reports` only; the route for it has its own breaker.
    let up = TestUpstream::respond(|req| {
        let mut resp = http::Response::new(full("x"));
        if req.uri().path().starts_with("/reports") {
            *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        }
        resp
    })
    .await;
    let config = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n\n\
         [[upstreams]]\nname = \"up\"\ntargets = [{{ url = \"{}\" }}]\n\n\
         [[routes]]\nname = \"reports\"\nupstream = \"up\"\nmatch = {{ path_prefix = \"/reports\" }}\n\
         breaker = {{ consecutive_failures = 2, open_for = \"1m\" }}\n\n\
         [[routes]]\nname = \"rest\"\nupstream = \"up\"\n",
        up.url()
    );
    let gw = TestGateway::start(&config).await;
    let client = Client::http1();
    for _ in 0..2 {
        let resp = client.get(&gw.url("/reports/1")).await;
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
    let refused = client.get(&gw.url("/reports/1")).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let error = crate::json(refused.body())["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(error.contains("route \"reports\""), "{error}");
    assert_eq!(up.request_count(), 2);
    // The other route to the same upstream is untouched.
    assert_eq!(client.get(&gw.url("/users")).await.status(), StatusCode::OK);

    let admin = |path: &str| {
        http::Request::builder()
            .uri(gw.admin_url(path))
            .header("authorization", format!("Bearer {TOKEN}"))
    };
    let list = client
        .send(admin("/admin/breakers").body(Default::default()).unwrap())
        .await;
    let list = crate::json(list.body());
    assert_eq!(list["breakers"][0]["route"], "reports");
    assert_eq!(list["breakers"][0]["breaker"]["state"], "open");
    let closed = client
        .send(
            admin("/admin/breakers/routes/reports/close")
                .method("POST")
                .body(Default::default())
                .unwrap(),
        )
        .await;
    assert_eq!(closed.status(), StatusCode::OK);
    assert_eq!(crate::json(closed.body())["breaker"]["state"], "closed");
    assert_eq!(
        client.get(&gw.url("/reports/1")).await.status(),
        StatusCode::INTERNAL_SERVER_ERROR,
        "forced closed: requests reach the upstream again"
    );
    let unknown = client
        .send(
            admin("/admin/breakers/routes/rest/open")
                .method("POST")
                .body(Default::default())
                .unwrap(),
        )
        .await;
    assert_eq!(
        unknown.status(),
        StatusCode::NOT_FOUND,
        "rest has no breaker"
    );
}

#[tokio::test]
async fn a_reload_keeps_an_unchanged_route_breaker_open() {
    let up = TestUpstream::respond(|_| {
        let mut resp = http::Response::new(full("x"));
        *resp.status_mut() = StatusCode::BAD_GATEWAY;
        resp
    })
    .await;
    let config = single_route(
        &[&up],
        "",
        "breaker = { consecutive_failures = 1, open_for = \"1m\" }",
    );
    let gw = TestGateway::start(&config).await;
    let client = Client::http1();
    client.get(&gw.url("/x")).await;
    assert_eq!(
        client.get(&gw.url("/x")).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    // Another key of the route changes; the breaker table does not.
    gw.reload(&format!("{config}timeout = \"5s\"\n")).unwrap();
    assert_eq!(
        client.get(&gw.url("/x")).await.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "still open after the reload"
    );
    assert_eq!(up.request_count(), 1);
}

#[tokio::test]
async fn slow_calls_count_as_failures() {
    // Answers 200, but only after 100 ms: healthy by status, too slow for the breaker.
    let up = TestUpstream::start(Arc::new(|_req| {
        Box::pin(async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            http::Response::new(full("slow"))
        })
    }))
    .await;
    let gw = TestGateway::start(&single_route(
        &[&up],
        "breaker = { consecutive_failures = 3, slow_call = \"20ms\", open_for = \"1m\" }",
        "",
    ))
    .await;
    let client = Client::http1();
    for _ in 0..3 {
        assert_eq!(client.get(&gw.url("/x")).await.status(), StatusCode::OK);
    }
    assert_eq!(
        client.get(&gw.url("/x")).await.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "three slow calls opened it"
    );
    assert_eq!(up.request_count(), 3);
}
