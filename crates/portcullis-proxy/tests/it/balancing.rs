//! Each balancer, observed from the upstreams' side through the running gateway.

use std::{sync::Arc, time::Duration};

use http::{Request, StatusCode};
use http_body_util::Full;
use portcullis_test_support::{Client, TestGateway, TestUpstream, full};

use crate::single_route;

async fn three() -> Vec<TestUpstream> {
    let mut v = Vec::new();
    for _ in 0..3 {
        v.push(TestUpstream::respond(|_| http::Response::new(full("ok"))).await);
    }
    v
}

async fn send_n(gw: &TestGateway, n: usize, header: Option<(&str, String)>) {
    let client = Client::http1();
    for i in 0..n {
        let mut req = Request::get(gw.url(&format!("/r/{i}")));
        if let Some((name, value)) = &header {
            req = req.header(*name, value.as_str());
        }
        let resp = client.send(req.body(Full::default()).unwrap()).await;
        assert_eq!(resp.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn round_robin_spreads_exactly_evenly() {
    let ups = three().await;
    let gw = TestGateway::start(&single_route(
        &ups.iter().collect::<Vec<_>>(),
        "balance = \"round_robin\"",
        "",
    ))
    .await;
    send_n(&gw, 30, None).await;
    let counts: Vec<usize> = ups.iter().map(TestUpstream::request_count).collect();
    assert_eq!(counts, [10, 10, 10]);
}

#[tokio::test]
async fn weighted_follows_the_weights() {
    let a = TestUpstream::respond(|_| http::Response::new(full("a"))).await;
    let b = TestUpstream::respond(|_| http::Response::new(full("b"))).await;
    let config = format!(
        "[[upstreams]]\nname = \"up\"\nbalance = \"weighted\"\ntargets = [{{ url = \"{}\", weight = 3 }}, {{ url = \"{}\", weight = 1 }}]\n\n\
         [[routes]]\nname = \"all\"\nupstream = \"up\"\n",
        a.url(),
        b.url()
    );
    let gw = TestGateway::start(&config).await;
    send_n(&gw, 400, None).await;
    // Smooth weighted round robin is deterministic: exactly 3:1.
    assert_eq!((a.request_count(), b.request_count()), (300, 100));
}

#[tokio::test]
async fn random_reaches_every_target() {
    let ups = three().await;
    let gw = TestGateway::start(&single_route(
        &ups.iter().collect::<Vec<_>>(),
        "balance = \"random\"",
        "",
    ))
    .await;
    send_n(&gw, 300, None).await;
    for up in &ups {
        // Expected 100 each; the chance of fewer than 50 is negligible (binomial, p = 1/3).
        assert!(up.request_count() >= 50, "{}", up.request_count());
    }
}

#[tokio::test]
async fn consistent_hash_keeps_a_key_on_one_target() {
    let ups = three().await;
    let gw = TestGateway::start(&single_route(
        &ups.iter().collect::<Vec<_>>(),
        "balance = \"consistent_hash\"\nhash_on = \"header:x-user\"",
        "",
    ))
    .await;
    for user in ["alice", "bob", "carol", "dave"] {
        let before: Vec<usize> = ups.iter().map(TestUpstream::request_count).collect();
        send_n(&gw, 10, Some(("x-user", user.to_owned()))).await;
        let grew: Vec<usize> = ups
            .iter()
            .zip(&before)
            .map(|(u, b)| u.request_count() - b)
            .collect();
        assert_eq!(
            grew.iter().filter(|&&g| g > 0).count(),
            1,
            "{user}: {grew:?}"
        );
        assert_eq!(grew.iter().sum::<usize>(), 10);
    }
}

#[tokio::test]
async fn consistent_hash_on_cookie() {
    let ups = three().await;
    let gw = TestGateway::start(&single_route(
        &ups.iter().collect::<Vec<_>>(),
        "balance = \"consistent_hash\"\nhash_on = \"cookie:sid\"",
        "",
    ))
    .await;
    send_n(
        &gw,
        12,
        Some(("cookie", "theme=dark; sid=session-77".to_owned())),
    )
    .await;
    let counts: Vec<usize> = ups.iter().map(TestUpstream::request_count).collect();
    assert!(counts.contains(&12), "{counts:?}");
}

#[tokio::test]
async fn least_request_steers_around_a_busy_target() {
    // Target `slow` holds every request until released; `fast` answers at once.
    let (slow, release) = TestUpstream::held("slow").await;
    let fast = TestUpstream::respond(|_| http::Response::new(full("fast"))).await;
    let gw = Arc::new(
        TestGateway::start(&single_route(
            &[&slow, &fast],
            "balance = \"least_request\"",
            "",
        ))
        .await,
    );
    // Park one request on `slow`. Ties are broken at random, so a request may go to `fast`
    // (and finish) instead; send another until one is parked. Then every pick compares both
    // targets (two choices out of two), and `fast` has fewer in flight.
    let mut parked = None;
    for _ in 0..50 {
        let gw2 = Arc::clone(&gw);
        let mut handle = tokio::spawn(async move { Client::http1().get(&gw2.url("/p")).await });
        let reached_slow = tokio::time::timeout(Duration::from_secs(10), async {
            tokio::select! {
                () = slow.wait_requests(1) => true,
                _ = &mut handle => false,
            }
        })
        .await
        .expect("request neither parked nor finished");
        if reached_slow {
            parked = Some(handle);
            break;
        }
    }
    let parked = parked.expect("no request reached the slow target");
    let before_fast = fast.request_count();
    send_n(&gw, 50, None).await;
    assert_eq!(
        fast.request_count() - before_fast,
        50,
        "requests went to the busy target"
    );
    assert_eq!(slow.request_count(), 1);
    release.notify_waiters();
    let resp = parked.await.unwrap();
    assert_eq!(resp.body().as_ref(), b"slow");
}
