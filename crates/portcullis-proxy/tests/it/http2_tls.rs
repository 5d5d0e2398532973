//! HTTP/2 to the gateway (h2c prior knowledge and TLS with ALPN), and HTTP/2 to upstreams.

use http::{StatusCode, Version};
use portcullis_test_support::{Client, SelfSigned, TestGateway, TestUpstream, echo, tls_get};

use crate::{json, single_route};

#[tokio::test]
async fn h2c_prior_knowledge_is_served_and_forwarded_as_http1() {
    let up = TestUpstream::start(echo()).await;
    let gw = TestGateway::start(&single_route(&[&up], "", "")).await;
    let resp = Client::http2().get(&gw.url("/over-h2")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.version(), Version::HTTP_2);
    let seen = json(resp.body());
    assert_eq!(seen["version"], "HTTP/1.1");
    assert_eq!(seen["uri"], "/over-h2");
    assert_eq!(seen["headers"]["via"], "2 portcullis");
}

#[tokio::test]
async fn http2_upstreams_multiplex_over_one_connection() {
    let up = TestUpstream::start(echo()).await;
    let gw = TestGateway::start(&single_route(&[&up], "protocol = \"http2\"", "")).await;
    let client = Client::http1();
    let mut tasks = Vec::new();
    for i in 0..10 {
        let (client, url) = (client.clone(), gw.url(&format!("/m/{i}")));
        tasks.push(tokio::spawn(async move { client.get(&url).await }));
    }
    for t in tasks {
        let resp = t.await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(json(resp.body())["version"], "HTTP/2.0");
    }
    assert_eq!(up.connections(), 1);
}

#[tokio::test]
async fn tls_listener_negotiates_h2_and_http1_by_alpn() {
    let up = TestUpstream::start(echo()).await;
    let cert = SelfSigned::generate();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ntls = {{ cert = \"{}\", key = \"{}\" }}\n\n{}",
        cert.cert_path.display(),
        cert.key_path.display(),
        single_route(&[&up], "", "")
    );
    let gw = TestGateway::start(&config).await;

    let (alpn, resp) = tls_get(gw.addr, &cert, &[b"h2", b"http/1.1"], "/secure").await;
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(resp.version(), Version::HTTP_2);
    assert_eq!(resp.status(), StatusCode::OK);
    let seen = json(resp.body());
    assert_eq!(seen["headers"]["x-forwarded-proto"], "https");

    let (alpn, resp) = tls_get(gw.addr, &cert, &[b"http/1.1"], "/secure").await;
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(resp.version(), Version::HTTP_11);
    assert_eq!(json(resp.body())["uri"], "/secure");
}
