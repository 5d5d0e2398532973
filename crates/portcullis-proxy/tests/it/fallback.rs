//! A route's fallback response against real failing upstreams: it replaces the gateway's own
//! 502/503/504 (unreachable, breaker open), never an upstream's own answer, loses to a stale
//! cached copy, and is never cached itself.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use http::{Response, StatusCode};
use portcullis_test_support::{Client, TestGateway, TestUpstream, full};

use crate::{refused_port, single_route};

const FALLBACK: &str = "fallback = { body = '{\"items\":[]}', headers = { x-degraded = \"1\" } }";

#[tokio::test]
async fn an_unreachable_upstream_gets_the_fallback_instead_of_502() {
    let port = refused_port().await;
    let config = format!(
        "[[upstreams]]\nname = \"up\"\ntargets = [{{ url = \"http://127.0.0.1:{port}\" }}]\n\n\
         [[routes]]\nname = \"all\"\nupstream = \"up\"\n{FALLBACK}\n"
    );
    let gw = TestGateway::start(&config).await;
    let resp = Client::http1().get(&gw.url("/items")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.body().as_ref(), br#"{"items":[]}"#);
    let h = resp.headers();
    assert_eq!(h["x-fallback"], "unreachable");
    assert_eq!(h["x-degraded"], "1");
    assert_eq!(h["content-type"], "application/json");
    assert_eq!(h["cache-control"], "no-store");
    assert!(h.contains_key("x-request-id"));
}

#[tokio::test]
async fn an_open_breaker_gets_the_fallback_but_the_upstreams_own_errors_pass() {
    let failing = Arc::new(AtomicBool::new(true));
    let flag = Arc::clone(&failing);
    let up = TestUpstream::respond(move |_| {
        let mut resp = Response::new(full("origin"));
        if flag.load(Ordering::Relaxed) {
            *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        }
        resp
    })
    .await;
    let gw = TestGateway::start(&single_route(
        &[&up],
        "breaker = { consecutive_failures = 2, open_for = \"1m\" }",
        FALLBACK,
    ))
    .await;
    let client = Client::http1();
    for _ in 0..2 {
        let resp = client.get(&gw.url("/x")).await;
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!resp.headers().contains_key("x-fallback"));
    }
    for _ in 0..3 {
        let resp = client.get(&gw.url("/x")).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["x-fallback"], "breaker_open");
    }
    assert_eq!(up.request_count(), 2, "nothing went upstream while open");
}

#[tokio::test]
async fn a_stale_copy_wins_and_the_fallback_is_never_cached() {
    let up = TestUpstream::respond(|_| {
        Response::builder()
            .header("cache-control", "max-age=0, stale-if-error=600")
            // No pooled connection outlives the origin.
            .header("connection", "close")
            .body(full("stored"))
            .unwrap()
    })
    .await;
    let gw = TestGateway::start(&single_route(
        &[&up],
        "",
        &format!("cache = {{ }}\n{FALLBACK}"),
    ))
    .await;
    let client = Client::http1();
    assert_eq!(client.get(&gw.url("/a")).await.body().as_ref(), b"stored");
    drop(up);
    let stale = client.get(&gw.url("/a")).await;
    assert_eq!(stale.status(), StatusCode::OK);
    assert_eq!(stale.body().as_ref(), b"stored", "the stale copy is served");
    assert!(!stale.headers().contains_key("x-fallback"));
    // Nothing stored for /b: the fallback answers, every time (never a cache hit).
    for _ in 0..2 {
        let resp = client.get(&gw.url("/b")).await;
        assert_eq!(resp.headers()["x-fallback"], "unreachable");
        assert_ne!(
            resp.headers().get("x-cache").map(|v| v.as_bytes()),
            Some(&b"HIT"[..])
        );
    }
}
