//! Methods, bodies, headers in and out, forwarded headers, host and path rewriting.

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use portcullis_test_support::{Client, RawConn, TestGateway, TestUpstream, echo, full};

use crate::{json, single_route};

#[tokio::test]
async fn methods_and_bodies_reach_the_upstream_unchanged() {
    let up = TestUpstream::start(echo()).await;
    let gw = TestGateway::start(&single_route(&[&up], "", "")).await;
    let client = Client::http1();
    for method in ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
        let body = format!("payload for {method}");
        let req = Request::builder()
            .method(method)
            .uri(gw.url("/things/1?b=2&a=1"))
            .body(Full::new(Bytes::from(body.clone())))
            .unwrap();
        let resp = client.send(req).await;
        assert_eq!(resp.status(), StatusCode::OK, "{method}");
        let seen = json(resp.body());
        assert_eq!(seen["method"], method);
        assert_eq!(seen["uri"], "/things/1?b=2&a=1");
        assert_eq!(seen["body"], body);
    }
    let head = client
        .send(Request::head(gw.url("/x")).body(Full::default()).unwrap())
        .await;
    assert_eq!(head.status(), StatusCode::OK);
    assert!(head.body().is_empty());
}

#[tokio::test]
async fn forwarded_headers_via_and_request_id_are_set() {
    let up = TestUpstream::start(echo()).await;
    let gw = TestGateway::start(&single_route(&[&up], "", "")).await;
    let req = Request::get(gw.url("/h"))
        .header("host", "shop.example")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-proto", "https")
        .header("forwarded", "for=6.6.6.6")
        .body(Full::default())
        .unwrap();
    let resp = Client::http1().send(req).await;
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(rid.len(), 32);
    assert_eq!(resp.headers()["via"], "1.1 portcullis");
    let seen = json(resp.body());
    let h = &seen["headers"];
    // 127.0.0.1 is not a trusted proxy here: client-sent values are replaced.
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "shop.example");
    assert!(h.get("forwarded").is_none());
    assert_eq!(h["via"], "1.1 portcullis");
    assert_eq!(h["x-request-id"], rid.as_str());
    // Without preserve_host the upstream sees its own authority.
    assert_eq!(h["host"], up.addr.to_string());
}

#[tokio::test]
async fn trusted_proxies_extend_the_forwarded_chain() {
    let up = TestUpstream::start(echo()).await;
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ntrusted_proxies = [\"127.0.0.0/8\"]\n\n{}",
        single_route(&[&up], "", "")
    );
    let gw = TestGateway::start(&config).await;
    let req = Request::get(gw.url("/h"))
        .header("x-forwarded-for", "198.51.100.7")
        .header("x-forwarded-proto", "https")
        .header("x-request-id", "client-chosen-id")
        .body(Full::default())
        .unwrap();
    let resp = Client::http1().send(req).await;
    assert_eq!(resp.headers()["x-request-id"], "client-chosen-id");
    let h = &json(resp.body())["headers"];
    assert_eq!(h["x-forwarded-for"], "198.51.100.7, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "https");
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_both_ways() {
    let up = TestUpstream::respond(|req| {
        // Report which hop-by-hop headers arrived, and send some back.
        let arrived: Vec<&str> = [
            "keep-alive",
            "x-hop",
            "proxy-authorization",
            "te",
            "upgrade",
        ]
        .into_iter()
        .filter(|h| req.headers().contains_key(*h))
        .collect();
        http::Response::builder()
            .header("connection", "x-resp-hop")
            .header("x-resp-hop", "1")
            .header("keep-alive", "timeout=5")
            .header("proxy-authenticate", "Basic")
            .header("x-end-to-end", "kept")
            .body(full(arrived.join(",")))
            .unwrap()
    })
    .await;
    let gw = TestGateway::start(&single_route(&[&up], "", "")).await;
    let mut conn = RawConn::connect(gw.addr).await;
    conn.send(
        b"GET /h HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, x-hop\r\nKeep-Alive: timeout=9\r\n\
          X-Hop: 1\r\nProxy-Authorization: Basic eA==\r\nTE: gzip\r\nUpgrade: h2c\r\n\r\n",
    )
    .await;
    let (head, body) = conn.read_response().await;
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("x-end-to-end: kept"), "{head}");
    for gone in ["x-resp-hop", "keep-alive:", "proxy-authenticate"] {
        assert!(!head.contains(gone), "{gone} leaked: {head}");
    }
    assert_eq!(body, b"", "hop-by-hop headers reached the upstream");
}

#[tokio::test]
async fn preserve_host_and_prefix_rewrites() {
    let up = TestUpstream::start(echo()).await;
    let config = format!(
        "[[upstreams]]\nname = \"up\"\ntargets = [{{ url = \"{}\" }}]\n\n\
         [[routes]]\nname = \"api\"\nmatch = {{ path_prefix = \"/api\" }}\nupstream = \"up\"\n\
         preserve_host = true\nstrip_prefix = \"/api\"\nadd_prefix = \"/internal/v2\"\n",
        up.url()
    );
    let gw = TestGateway::start(&config).await;
    let req = Request::get(gw.url("/api/users/7?full=1"))
        .header("host", "api.example.com:8443")
        .body(Full::default())
        .unwrap();
    let seen = json(Client::http1().send(req).await.body());
    assert_eq!(seen["uri"], "/internal/v2/users/7?full=1");
    assert_eq!(seen["headers"]["host"], "api.example.com:8443");
}

#[tokio::test]
async fn dot_segments_cannot_escape_a_route() {
    let up = TestUpstream::start(echo()).await;
    let config = format!(
        "[[upstreams]]\nname = \"up\"\ntargets = [{{ url = \"{}\" }}]\n\n\
         [[routes]]\nname = \"public\"\nmatch = {{ path_prefix = \"/public\" }}\nupstream = \"up\"\n",
        up.url()
    );
    let gw = TestGateway::start(&config).await;
    let mut conn = RawConn::connect(gw.addr).await;
    conn.send(b"GET /public/%2e%2e/admin HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let head = conn.read_head().await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    assert_eq!(up.request_count(), 0);
}

#[tokio::test]
async fn keep_alive_connections_to_the_upstream_are_reused() {
    let up = TestUpstream::start(echo()).await;
    let gw = TestGateway::start(&single_route(&[&up], "", "")).await;
    let client = Client::http1();
    for i in 0..20 {
        let resp = client.get(&gw.url(&format!("/n/{i}"))).await;
        assert_eq!(resp.status(), StatusCode::OK);
    }
    assert_eq!(up.request_count(), 20);
    assert_eq!(
        up.connections(),
        1,
        "sequential requests should share one pooled connection"
    );
}

#[tokio::test]
async fn idle_pooled_connections_are_closed_after_the_idle_timeout() {
    let up = TestUpstream::start(echo()).await;
    let gw = TestGateway::start(&single_route(
        &[&up],
        "pool = { idle_timeout = \"100ms\" }",
        "",
    ))
    .await;
    let client = Client::http1();
    assert_eq!(client.get(&gw.url("/one")).await.status(), StatusCode::OK);
    assert_eq!(up.connections(), 1);
    // The gateway closes the idle connection by itself (the upstream sees the close).
    tokio::time::timeout(std::time::Duration::from_secs(10), up.wait_closed(1))
        .await
        .expect("idle connection was never closed");
    assert_eq!(client.get(&gw.url("/two")).await.status(), StatusCode::OK);
    assert_eq!(
        up.connections(),
        2,
        "a fresh connection replaces the closed one"
    );
}

#[tokio::test]
async fn the_upstream_receives_the_normalized_path_on_plain_and_cached_routes() {
    for route_extra in ["", "cache = {}"] {
        let up = TestUpstream::start(echo()).await;
        let gw = TestGateway::start(&single_route(&[&up], "", route_extra)).await;
        let mut conn = RawConn::connect(gw.addr).await;
        conn.send(b"GET /a/./b/../c?q=1 HTTP/1.1\r\nHost: x\r\n\r\n")
            .await;
        let (head, body) = conn.read_response().await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(
            json(&body)["uri"],
            "/a/c?q=1",
            "route extra: {route_extra:?}"
        );
    }
}
