//! Concurrency limits: an upstream never sees more than `pool.max_in_flight` requests; excess
//! ones queue (bounded, with a timeout) and then succeed or get 503; the gateway sheds load
//! beyond `server.max_in_flight`.

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use portcullis_test_support::{Client, TestGateway, TestUpstream, echo};

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

/// The value of the sample `name{labels}` in an OpenMetrics text.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test]
async fn an_adaptive_limit_shrinks_on_failures_and_its_figures_are_exported() {
    let failing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flag = std::sync::Arc::clone(&failing);
    let up = TestUpstream::respond(move |_| {
        let mut resp = http::Response::new(portcullis_test_support::full("x"));
        if flag.load(std::sync::atomic::Ordering::Relaxed) {
            *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        }
        resp
    })
    .await;
    let config = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n{}",
        single_route(
            &[&up],
            "pool = { max_in_flight = 8, adaptive = { min_limit = 2, max_limit = 16 } }",
            "",
        )
    );
    let gw = TestGateway::start(&config).await;
    let client = Client::http1();
    let metrics = || async {
        let body = client.get(&gw.admin_url("/metrics")).await.into_body();
        String::from_utf8(body.to_vec()).unwrap()
    };
    let limit = "portcullis_upstream_concurrency_limit{upstream=\"up\"}";
    assert_eq!(sample(&metrics().await, limit), Some(8.0));
    // Each failure, one after another, multiplies the limit by 0.9: 8 → 2 (the floor).
    for _ in 0..20 {
        assert_eq!(
            client.get(&gw.url("/x")).await.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    let text = metrics().await;
    assert_eq!(sample(&text, limit), Some(2.0), "{text}");
    assert_eq!(
        sample(&text, "portcullis_upstream_queue_length{upstream=\"up\"}"),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "portcullis_upstream_in_flight{upstream=\"up\"}"),
        Some(0.0)
    );
    let idle = format!(
        "portcullis_upstream_idle_connections{{upstream=\"up\",target=\"{}\"}}",
        up.addr
    );
    assert_eq!(sample(&text, &idle), Some(1.0), "{text}");
    // Requests still flow at the floor; successes under load raise it again only while the
    // limit is in use, so sequential ones leave it where it is.
    failing.store(false, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(client.get(&gw.url("/x")).await.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_share_a_few_upstream_connections() {
    // Each answer takes a little while, so the 200 requests overlap.
    let up = TestUpstream::start(std::sync::Arc::new(|_req| {
        Box::pin(async {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            http::Response::new(portcullis_test_support::full("ok"))
        })
    }))
    .await;
    let gw = TestGateway::start(&single_route(
        &[&up],
        "pool = { max_in_flight = 5, queue_timeout = \"30s\" }",
        "",
    ))
    .await;
    let client = Client::http1();
    let requests: Vec<_> = (0..200)
        .map(|i| {
            let (client, url) = (client.clone(), gw.url(&format!("/{i}")));
            tokio::spawn(async move { client.get(&url).await.status() })
        })
        .collect();
    for r in requests {
        assert_eq!(r.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(up.request_count(), 200);
    assert!(
        up.connections() <= 5,
        "200 clients used {} upstream connections",
        up.connections()
    );
}

#[tokio::test]
async fn one_slot_means_one_connection_whatever_the_mix_of_requests() {
    // Bodyless GETs and POSTs with a body travel on different kinds of connection (the inline
    // client and hyper's); with `max_in_flight = 1` the upstream still sees one at a time.
    let up = TestUpstream::start(echo()).await;
    let gw = TestGateway::start(&single_route(&[&up], "pool = { max_in_flight = 1 }", "")).await;
    let client = Client::http1();
    for round in 0..4 {
        let resp = client.get(&gw.url("/get")).await;
        assert_eq!(resp.status(), StatusCode::OK, "round {round}");
        let post = Request::post(gw.url("/post"))
            .body(Full::new(Bytes::from_static(b"body")))
            .unwrap();
        assert_eq!(
            client.send(post).await.status(),
            StatusCode::OK,
            "round {round}"
        );
        // Every connection opened but the last has been closed again.
        let opened = up.connections();
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            up.wait_closed(opened - 1),
        )
        .await
        .expect("a second connection stayed open");
    }
    assert_eq!(up.request_count(), 8);
}
