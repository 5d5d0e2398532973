//! Failure paths: upstream refused (502), upstream slow (504), malformed and oversized requests,
//! `Expect: 100-continue`.

use std::time::Duration;

use http::StatusCode;
use portcullis_test_support::{Client, RawConn, TestGateway, TestUpstream, echo, full};

use crate::{json, refused_port, single_route};

#[tokio::test]
async fn refused_upstream_gives_502_json() {
    let port = refused_port().await;
    let config = format!(
        "[[upstreams]]\nname = \"gone\"\ntargets = [{{ url = \"http://127.0.0.1:{port}\" }}]\n\n\
         [[routes]]\nname = \"all\"\nupstream = \"gone\"\n"
    );
    let gw = TestGateway::start(&config).await;
    let resp = Client::http1().get(&gw.url("/x")).await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body = json(resp.body());
    assert_eq!(body["status"], 502);
    assert_eq!(
        body["request_id"],
        resp.headers()["x-request-id"].to_str().unwrap()
    );
    assert!(body["error"].as_str().unwrap().contains("gone"), "{body}");
}

#[tokio::test]
async fn slow_upstream_gives_504_json_after_the_route_timeout() {
    let (up, _never) = TestUpstream::held("late").await;
    let gw = TestGateway::start(&single_route(&[&up], "", "timeout = \"200ms\"")).await;
    let resp = tokio::time::timeout(
        Duration::from_secs(10),
        Client::http1().get(&gw.url("/slow")),
    )
    .await
    .expect("gateway answered");
    assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
    let body = json(resp.body());
    assert_eq!(body["status"], 504);
    assert!(
        body["error"].as_str().unwrap().contains("timed out"),
        "{body}"
    );
}

#[tokio::test]
async fn malformed_requests_get_400_and_the_gateway_keeps_serving() {
    let up = TestUpstream::start(echo()).await;
    let gw = TestGateway::start(&single_route(&[&up], "", "")).await;
    for garbage in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\n",
    ] {
        let mut conn = RawConn::connect(gw.addr).await;
        conn.send(garbage).await;
        let (head, body) = conn.read_response().await;
        assert!(
            head.starts_with("HTTP/1.1 400"),
            "{:?}: {head}",
            String::from_utf8_lossy(garbage)
        );
        assert_contract_error(&head, &body, 400);
    }
    assert_eq!(up.request_count(), 0);
    // Garbage after a good request on the same kept-alive connection: answered, then refused.
    let mut conn = RawConn::connect(gw.addr).await;
    conn.send(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let (head, _) = conn.read_response().await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    conn.send(b"GARBAGE\r\n\r\n").await;
    let (head, body) = conn.read_response().await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert_contract_error(&head, &body, 400);
    let resp = Client::http1().get(&gw.url("/still-ok")).await;
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn oversized_headers_get_431() {
    let up = TestUpstream::start(echo()).await;
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nmax_header_bytes = \"16KiB\"\n\n{}",
        single_route(&[&up], "", "")
    );
    let gw = TestGateway::start(&config).await;
    let mut conn = RawConn::connect(gw.addr).await;
    let big = "a".repeat(64 * 1024);
    conn.send(format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes())
        .await;
    let (head, body) = conn.read_response().await;
    assert!(head.starts_with("HTTP/1.1 431"), "{head}");
    assert_contract_error(&head, &body, 431);
    assert_eq!(up.request_count(), 0);
}

/// hyper's own refusals carry the contract too: JSON body, `X-Request-Id`, connection closed.
fn assert_contract_error(head: &str, body: &[u8], status: u16) {
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("content-type: application/json"), "{head}");
    assert!(lower.contains("connection: close"), "{head}");
    let id = lower
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .unwrap_or_else(|| panic!("no x-request-id: {head}"));
    let body = json(body);
    assert_eq!(body["status"], status, "{body}");
    assert_eq!(body["request_id"], id, "{body}");
}

#[tokio::test]
async fn a_response_after_a_good_request_is_never_rewritten() {
    // An upstream body that is byte for byte hyper's automatic 400 passes through untouched:
    // the connection had a request reach the service before that write.
    let date = "Mon, 23 Nov 2026 13:45:47 GMT";
    let fake = format!(
        "HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: {date}\r\n\r\n"
    );
    let body = fake.clone();
    let up = TestUpstream::respond(move |_| http::Response::new(full(body.clone()))).await;
    let gw = TestGateway::start(&single_route(&[&up], "", "")).await;
    let mut conn = RawConn::connect(gw.addr).await;
    conn.send(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let (head, got) = conn.read_response().await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(got, fake.as_bytes());
}

#[tokio::test]
async fn expect_100_continue_is_answered_before_the_body_is_sent() {
    let up = TestUpstream::start(echo()).await;
    let gw = TestGateway::start(&single_route(&[&up], "", "")).await;
    let mut conn = RawConn::connect(gw.addr).await;
    conn.send(
        b"PUT /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .await;
    // The client waits for the interim response before sending the body.
    let interim = conn.read_head().await;
    assert!(interim.starts_with("HTTP/1.1 100 Continue"), "{interim}");
    conn.send(b"hello").await;
    let (head, body) = conn.read_response().await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let body = json(&body);
    assert_eq!(body["body"], "hello");
    assert!(
        body["headers"].get("expect").is_none(),
        "Expect was forwarded"
    );
}

#[tokio::test]
async fn connect_timeout_gives_504_json() {
    // A listener that never accepts, with its accept queue filled: further SYNs are dropped,
    // so connecting hangs until the gateway's connect_timeout.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    loop {
        match tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            Ok(Ok(s)) => fillers.push(s),
            Ok(Err(e)) => panic!("filler connect failed: {e}"),
            Err(_) => break,
        }
        assert!(fillers.len() < 64, "accept queue never filled");
    }
    let config = format!(
        "[[upstreams]]\nname = \"blackhole\"\ntargets = [{{ url = \"http://{addr}\" }}]\n\
         pool = {{ connect_timeout = \"200ms\" }}\n\n[[routes]]\nname = \"all\"\nupstream = \"blackhole\"\n"
    );
    let gw = TestGateway::start(&config).await;
    let resp = tokio::time::timeout(Duration::from_secs(10), Client::http1().get(&gw.url("/x")))
        .await
        .expect("gateway answered");
    assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(json(resp.body())["status"], 504);
    drop((fillers, listener));
}
