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
