//! Time limits against real slow upstreams: a route's whole-request deadline bounds the queue,
//! every retry and back-off and answers 504; an upstream silent mid-body is cut off.

use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt as _, Channel};
use portcullis_test_support::{Client, TestBody, TestGateway, TestUpstream};

use crate::{json, single_route};

#[tokio::test]
async fn the_deadline_cuts_a_hanging_upstream_short_of_its_per_try_timeout() {
    // Never answers; the per-try timeout (60 s) is far beyond the deadline.
    let (up, _release) = TestUpstream::held("late").await;
    let gw = TestGateway::start(&single_route(&[&up], "", "deadline = \"200ms\"")).await;
    let resp = Client::http1().get(&gw.url("/x")).await;
    assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
    let error = json(resp.body())["error"].as_str().unwrap().to_owned();
    assert!(error.contains("deadline"), "{error}");
}

#[tokio::test]
async fn the_deadline_spans_every_retry() {
    // Two hanging targets, three tries of up to 150 ms each: without a deadline the client
    // waits for all three; with one, the answer is the deadline's 504 and not every try ran.
    let (a, _ra) = TestUpstream::held("a").await;
    let (b, _rb) = TestUpstream::held("b").await;
    let gw = TestGateway::start(&single_route(
        &[&a, &b],
        "pool = { timeout = \"150ms\" }\nretry = { attempts = 3, backoff = \"1ms\", min_per_second = 100 }",
        "deadline = \"250ms\"",
    ))
    .await;
    let resp = Client::http1().get(&gw.url("/x")).await;
    assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
    let error = json(resp.body())["error"].as_str().unwrap().to_owned();
    assert!(error.contains("deadline"), "{error}");
    assert_eq!(
        a.request_count() + b.request_count(),
        2,
        "the second try was cut by the deadline and no third one started"
    );
}

#[tokio::test]
async fn the_deadline_bounds_the_wait_for_an_upstream_slot() {
    let (up, release) = TestUpstream::held("done").await;
    // `/slow` (no deadline) takes the only slot; `/quick` has a deadline.
    let config = format!(
        "[[upstreams]]\nname = \"up\"\ntargets = [{{ url = \"{}\" }}]\n\
         pool = {{ max_in_flight = 1, queue_timeout = \"60s\" }}\n\n\
         [[routes]]\nname = \"slow\"\nupstream = \"up\"\nmatch = {{ path_prefix = \"/slow\" }}\n\n\
         [[routes]]\nname = \"quick\"\nupstream = \"up\"\nmatch = {{ path_prefix = \"/quick\" }}\n\
         deadline = \"200ms\"\n",
        up.url()
    );
    let gw = TestGateway::start(&config).await;
    let client = Client::http1();
    let slow = tokio::spawn({
        let (client, url) = (client.clone(), gw.url("/slow"));
        async move { client.get(&url).await }
    });
    up.wait_requests(1).await;
    // The slot is taken and the queue would wait a minute; the deadline answers first.
    let quick = client.get(&gw.url("/quick")).await;
    assert_eq!(quick.status(), StatusCode::GATEWAY_TIMEOUT);
    let error = json(quick.body())["error"].as_str().unwrap().to_owned();
    assert!(error.contains("deadline"), "{error}");
    assert_eq!(
        up.request_count(),
        1,
        "the queued request never went upstream"
    );
    release.notify_waiters();
    assert_eq!(slow.await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn an_upstream_silent_mid_body_is_cut_off() {
    let (sender_tx, mut sender_rx) = tokio::sync::mpsc::unbounded_channel();
    let up = TestUpstream::start(Arc::new(move |_req| {
        let sender_tx = sender_tx.clone();
        Box::pin(async move {
            let (mut tx, body) = Channel::<Bytes, Box<dyn std::error::Error + Send + Sync>>::new(1);
            tx.send_data(Bytes::from_static(b"first ")).await.unwrap();
            // Kept open by the test, never finished: the upstream goes silent.
            sender_tx.send(tx).unwrap();
            Response::new(TestBody::new(body))
        })
    }))
    .await;
    let gw = TestGateway::start(&single_route(
        &[&up],
        "pool = { stream_idle_timeout = \"200ms\" }",
        "",
    ))
    .await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<Bytes>>();
    let resp = client
        .get(gw.url("/stream").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let _held = sender_rx.recv().await.unwrap();
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "first ");
    // The gateway ends the response early instead of holding the client forever.
    let rest = body.frame().await;
    assert!(
        matches!(rest, Some(Err(_))),
        "expected the body to be cut off, got {rest:?}"
    );
    // And it closed the upstream connection rather than pooling a half-read one.
    up.wait_closed(1).await;
}

#[tokio::test]
async fn a_client_that_hangs_up_cancels_its_upstream_request() {
    // The upstream never answers; the per-try timeout (60 s) would keep its connection busy
    // for a minute. A client that closes its connection while waiting cancels the request,
    // and the gateway closes the upstream connection it was using.
    let (up, _release) = TestUpstream::held("late").await;
    let gw = TestGateway::start(&single_route(&[&up], "", "")).await;
    let mut conn = portcullis_test_support::RawConn::connect(gw.addr).await;
    conn.send(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n").await;
    up.wait_requests(1).await;
    drop(conn);
    tokio::time::timeout(std::time::Duration::from_secs(10), up.wait_closed(1))
        .await
        .expect("the upstream connection is closed well before the 60 s timeout");
}

#[tokio::test]
async fn a_client_that_pipelines_its_next_request_is_not_taken_for_gone() {
    // The second request arrives while the first waits on the upstream: the connection is
    // alive, and both are answered in order.
    let up = TestUpstream::respond(|req| {
        http::Response::new(portcullis_test_support::full(req.uri().path().to_owned()))
    })
    .await;
    let gw = TestGateway::start(&single_route(&[&up], "", "")).await;
    let mut conn = portcullis_test_support::RawConn::connect(gw.addr).await;
    conn.send(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /two HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let (head, body) = conn.read_response().await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, b"/one");
    let (head, body) = conn.read_response().await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, b"/two");
}
