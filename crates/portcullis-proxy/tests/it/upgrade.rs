//! WebSocket (and any HTTP/1.1 Upgrade) passes through: the 101 and then raw bytes both ways.

use std::sync::Arc;

use http::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use portcullis_test_support::{RawConn, TestGateway, TestUpstream, full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::single_route;

/// An upstream that accepts `Upgrade: websocket` and then echoes bytes, upper-cased.
async fn upgrading_upstream() -> TestUpstream {
    TestUpstream::start(Arc::new(|mut req| {
        Box::pin(async move {
            let ok = req
                .headers()
                .get("upgrade")
                .is_some_and(|v| v == "websocket")
                && req.headers().contains_key("sec-websocket-key");
            if !ok {
                let mut r = Response::new(full("expected an upgrade"));
                *r.status_mut() = StatusCode::BAD_REQUEST;
                return r;
            }
            let on_upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let Ok(upgraded) = on_upgrade.await else {
                    return;
                };
                let mut io = TokioIo::new(upgraded);
                let mut buf = [0u8; 1024];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    buf[..n].make_ascii_uppercase();
                    if io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
            Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("connection", "upgrade")
                .header("upgrade", "websocket")
                .header("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
                .body(full(""))
                .unwrap()
        })
    }))
    .await
}

#[tokio::test]
async fn websocket_upgrade_is_passed_through() {
    let up = upgrading_upstream().await;
    let gw = TestGateway::start(&single_route(&[&up], "", "")).await;
    let mut conn = RawConn::connect(gw.addr).await;
    conn.send(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await;
    let head = conn.read_head().await.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    assert!(head.contains("connection: upgrade"), "{head}");
    assert!(
        head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    for msg in [&b"hello"[..], b"second message"] {
        conn.send(msg).await;
        let back = conn.read_exact(msg.len()).await;
        assert_eq!(back, msg.to_ascii_uppercase());
    }
}

#[tokio::test]
async fn upgrade_headers_are_dropped_for_plain_requests() {
    let up = upgrading_upstream().await;
    let gw = TestGateway::start(&single_route(&[&up], "", "")).await;
    // `Upgrade` without `Connection: upgrade` is not an upgrade request: the header is
    // hop-by-hop and must not reach the upstream.
    let mut conn = RawConn::connect(gw.addr).await;
    conn.send(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nSec-WebSocket-Key: x\r\n\r\n")
        .await;
    let head = conn.read_head().await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
}
