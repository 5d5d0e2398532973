//! The request body limit over real sockets: a declared `Content-Length` above it gets 413
//! before any of the body is sent; a body without one (HTTP/1.1 chunked, HTTP/2) is cut off
//! at the limit, so the upstream never receives all of it; a route's `max_body_size`
//! overrides the global one.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, channel::Channel};
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis_test_support::{Client, RawConn, TestGateway, TestUpstream, echo, full};
use tokio::sync::mpsc;

use crate::{json, single_route};

/// How much of its request body an upstream read, and whether the body ended cleanly.
type BodyReport = (usize, bool);

/// An upstream that reads each request body to its end (or its error) and reports it.
async fn body_counter() -> (TestUpstream, mpsc::UnboundedReceiver<BodyReport>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let up = TestUpstream::start(Arc::new(move |req: Request<hyper::body::Incoming>| {
        let tx = tx.clone();
        Box::pin(async move {
            let mut body = req.into_body();
            let mut read = 0;
            let complete = loop {
                match body.frame().await {
                    Some(Ok(frame)) => read += frame.data_ref().map_or(0, Bytes::len),
                    Some(Err(_)) => break false,
                    None => break true,
                }
            };
            let _ = tx.send((read, complete));
            Response::new(full("read"))
        })
    }))
    .await;
    (up, rx)
}

async fn report(rx: &mut mpsc::UnboundedReceiver<BodyReport>) -> BodyReport {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("the upstream reports its body")
        .unwrap()
}

const LIMIT: usize = 1024;

fn limited(up: &TestUpstream) -> String {
    format!(
        "[request_limits]\nmax_body_size = {LIMIT}\n\n{}",
        single_route(&[up], "", "")
    )
}

#[tokio::test]
async fn a_declared_content_length_over_the_limit_gets_413_before_the_body_is_sent() {
    let up = TestUpstream::start(echo()).await;
    let gw = TestGateway::start(&limited(&up)).await;
    let mut conn = RawConn::connect(gw.addr).await;
    // The head only: 100 MiB announced, not one byte of it sent.
    conn.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 104857600\r\n\r\n")
        .await;
    let head = tokio::time::timeout(Duration::from_secs(5), conn.read_head())
        .await
        .expect("answered without waiting for the body");
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        json(&conn.read_exact(len).await)["error"],
        "request body too large"
    );
    assert_eq!(up.request_count(), 0, "nothing reached the upstream");
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_cut_off_before_the_upstream_has_all_of_it() {
    let (up, mut bodies) = body_counter().await;
    let gw = TestGateway::start(&limited(&up)).await;
    let chunked = |chunks: usize| {
        let mut text = String::from(
            "POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        );
        for _ in 0..chunks {
            text.push_str(&format!("200\r\n{}\r\n", "x".repeat(512)));
        }
        text.push_str("0\r\n\r\n");
        text
    };
    // At the limit: the upstream reads all of it.
    let mut conn = RawConn::connect(gw.addr).await;
    conn.send(chunked(2).as_bytes()).await;
    let (head, _) = conn.read_response().await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(report(&mut bodies).await, (LIMIT, true));

    // 8 KiB, eight times the limit: 413, and the upstream's body ends in an error at most at
    // the limit.
    let mut conn = RawConn::connect(gw.addr).await;
    conn.send(chunked(16).as_bytes()).await;
    let (head, body) = conn.read_response().await;
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert_eq!(json(&body)["status"], 413);
    let (read, complete) = report(&mut bodies).await;
    assert!(!complete, "the upstream's request was aborted");
    assert!(read <= LIMIT, "the upstream read {read} bytes");
}

#[tokio::test]
async fn an_http2_body_without_content_length_over_the_limit_gets_413() {
    let (up, mut bodies) = body_counter().await;
    let gw = TestGateway::start(&limited(&up)).await;
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);

    let mut statuses = Vec::new();
    for chunks in [2, 16] {
        let (mut tx, body) = Channel::<Bytes, std::convert::Infallible>::new(1);
        let req = Request::post(gw.url("/upload"))
            .version(http::Version::HTTP_2)
            .body(body)
            .unwrap();
        assert!(req.headers().get("content-length").is_none());
        // The sender stops quietly once the gateway stops reading.
        tokio::spawn(async move {
            for _ in 0..chunks {
                if tx.send_data(Bytes::from(vec![b'x'; 512])).await.is_err() {
                    return;
                }
            }
        });
        let resp = sender.send_request(req).await.unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            assert_eq!(json(&body)["error"], "request body too large");
        }
        statuses.push(status);
    }
    assert_eq!(statuses, [StatusCode::OK, StatusCode::PAYLOAD_TOO_LARGE]);
    assert_eq!(report(&mut bodies).await, (LIMIT, true));
    let (read, complete) = report(&mut bodies).await;
    assert!(!complete && read <= LIMIT, "the upstream read {read} bytes");
}

#[tokio::test]
async fn a_routes_max_body_size_overrides_the_global_limit() {
    let up = TestUpstream::start(echo()).await;
    let config = format!(
        "[request_limits]\nmax_body_size = 16\n\n\
         [[upstreams]]\nname = \"up\"\ntargets = [{{ url = \"{}\" }}]\n\n\
         [[routes]]\nname = \"uploads\"\nmatch = {{ path_prefix = \"/uploads\" }}\nupstream = \"up\"\nmax_body_size = 64\n\n\
         [[routes]]\nname = \"tiny\"\nmatch = {{ path_prefix = \"/tiny\" }}\nupstream = \"up\"\nmax_body_size = 4\n\n\
         [[routes]]\nname = \"rest\"\nupstream = \"up\"\n",
        up.url()
    );
    let gw = TestGateway::start(&config).await;
    let client = Client::http1();
    let post = |path: &str, len: usize| {
        Request::post(gw.url(path))
            .body(Full::new(Bytes::from(vec![b'x'; len])))
            .unwrap()
    };
    for (path, len, status) in [
        ("/uploads/a", 64, StatusCode::OK),
        ("/uploads/a", 65, StatusCode::PAYLOAD_TOO_LARGE),
        ("/other", 16, StatusCode::OK),
        ("/other", 17, StatusCode::PAYLOAD_TOO_LARGE),
        ("/tiny", 4, StatusCode::OK),
        ("/tiny", 5, StatusCode::PAYLOAD_TOO_LARGE),
    ] {
        let resp = client.send(post(path, len)).await;
        assert_eq!(resp.status(), status, "{path} with {len} bytes");
    }
    assert_eq!(up.request_count(), 3);
}
