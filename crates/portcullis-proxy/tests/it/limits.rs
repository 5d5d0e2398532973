//! Concurrency limits: an upstream never sees more than `pool.max_in_flight` requests; excess
//! ones queue (bounded, with a timeout) and then succeed or get 503; the gateway sheds load
//! beyond `server.max_in_flight`.

use http::StatusCode;
use portcullis_test_support::{Client, TestGateway, TestUpstream};

use crate::single_route;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_limit_holds_and_excess_requests_queue_then_succeed() {
    let (up, release) = TestUpstream::held("done").await;
    let gw = TestGateway::start(&single_route(
        &[&up],
        "pool = { max_in_flight = 2, max_queue = 1, queue_timeout = \"30s\" }",
        "",
    ))
    .await;
    let client = Client::http1();
    let spawn = |path: &'static str| {
        let (client, url) = (client.clone(), gw.url(path));
        tokio::spawn(async move { client.get(&url).await.status() })
    };
    let first = [spawn("/1"), spawn("/2")];
    up.wait_requests(2).await;
    // Two more: one takes the single queue place, the other is refused at once.
    let (third, fourth) = (spawn("/3"), spawn("/4"));
    let refused = tokio::select! {
        r = third => r.unwrap(),
        r = fourth => r.unwrap(),
    };
    assert_eq!(
        refused,
        StatusCode::SERVICE_UNAVAILABLE,
        "the queue holds one"
    );
    assert_eq!(
        up.request_count(),
        2,
        "the upstream never sees more than two"
    );
    release.notify_waiters();
    for r in first {
        assert_eq!(r.await.unwrap(), StatusCode::OK);
    }
    // The queued request goes upstream once a slot frees.
    up.wait_requests(3).await;
    release.notify_waiters();
}

#[tokio::test]
async fn a_queued_request_gives_up_after_the_queue_timeout() {
    let (up, release) = TestUpstream::held("done").await;
    let gw = TestGateway::start(&single_route(
        &[&up],
        "pool = { max_in_flight = 1, queue_timeout = \"100ms\" }",
        "",
    ))
    .await;
    let client = Client::http1();
    let held = {
        let (client, url) = (client.clone(), gw.url("/held"));
        tokio::spawn(async move { client.get(&url).await.status() })
    };
    up.wait_requests(1).await;
    let waited = client.get(&gw.url("/waits")).await;
    assert_eq!(waited.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(waited.headers()["retry-after"], "1");
    let body = crate::json(waited.body());
    assert!(
        body["error"].as_str().unwrap().contains("queue timeout"),
        "{body}"
    );
    assert_eq!(up.request_count(), 1);
    release.notify_waiters();
    assert_eq!(held.await.unwrap(), StatusCode::OK);
}

#[tokio::test]
async fn the_gateway_sheds_load_beyond_its_in_flight_limit() {
    let (up, release) = TestUpstream::held("done").await;
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nmax_in_flight = 1\n\n{}",
        single_route(&[&up], "", "")
    );
    let gw = TestGateway::start(&config).await;
    let client = Client::http1();
    let held = {
        let (client, url) = (client.clone(), gw.url("/held"));
        tokio::spawn(async move { client.get(&url).await.status() })
    };
    up.wait_requests(1).await;
    let shed = client.get(&gw.url("/more")).await;
    assert_eq!(shed.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        crate::json(shed.body())["error"]
            .as_str()
            .unwrap()
            .contains("gateway at its limit")
    );
    assert_eq!(up.request_count(), 1);
    release.notify_waiters();
    assert_eq!(held.await.unwrap(), StatusCode::OK);
    // Below the limit again, requests go through.
    let after = {
        let (client, url) = (client.clone(), gw.url("/after"));
        tokio::spawn(async move { client.get(&url).await.status() })
    };
    up.wait_requests(2).await;
    release.notify_waiters();
    assert_eq!(after.await.unwrap(), StatusCode::OK);
}
