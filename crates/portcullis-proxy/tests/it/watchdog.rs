//! Slow-client protection: a connection that makes no progress for `header_read_timeout`
//! while nothing is in flight is closed; slow requests and responses in progress are not.
//! These tests are about elapsed time, so they let real (short) periods pass.

use std::time::Duration;

use portcullis_test_support::{Client, TestGateway, TestUpstream};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::single_route;

const PERIOD: &str = "[server]\nlisten = \"127.0.0.1:0\"\nheader_read_timeout = \"200ms\"\n\n";

/// Waits (at most `limit`) for the peer to close the connection; true if it did.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 1024];
    matches!(
        tokio::time::timeout(limit, async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await,
        Ok(())
    )
}

#[tokio::test]
async fn an_unfinished_request_head_is_closed() {
    let up =
        TestUpstream::respond(|_| http::Response::new(portcullis_test_support::full("x"))).await;
    let gw = TestGateway::start(&format!("{PERIOD}{}", single_route(&[&up], "", ""))).await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    assert!(closed_within(&mut s, Duration::from_secs(5)).await);
    // A silent connection too.
    let mut silent = TcpStream::connect(gw.addr).await.unwrap();
    assert!(closed_within(&mut silent, Duration::from_secs(5)).await);
    assert_eq!(up.request_count(), 0);
}

#[tokio::test]
async fn dripping_a_head_byte_by_byte_does_not_keep_the_connection() {
    let up =
        TestUpstream::respond(|_| http::Response::new(portcullis_test_support::full("x"))).await;
    let gw = TestGateway::start(&format!("{PERIOD}{}", single_route(&[&up], "", ""))).await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nX-Slow: ").await.unwrap();
    let mut closed = false;
    for _ in 0..100 {
        if s.write_all(b"a").await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 64];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(50), s.read(&mut buf)).await
        {
            closed = true;
            break;
        }
    }
    assert!(closed, "still open after 5 s of dripping");
}

#[tokio::test]
async fn a_request_in_flight_longer_than_the_period_is_not_cut() {
    let (up, release) = TestUpstream::held("slow but fine").await;
    let gw = TestGateway::start(&format!("{PERIOD}{}", single_route(&[&up], "", ""))).await;
    let c = Client::http1();
    let url = gw.url("/slow");
    let pending = tokio::spawn(async move { c.get(&url).await });
    up.wait_requests(1).await;
    // Four periods with nothing written and no new request.
    tokio::time::sleep(Duration::from_millis(800)).await;
    release.notify_waiters();
    let resp = pending.await.unwrap();
    assert_eq!(resp.status(), http::StatusCode::OK);
    assert_eq!(&resp.body()[..], b"slow but fine");
}

#[tokio::test]
async fn a_kept_alive_connection_is_reused_within_the_period_and_closed_after() {
    let up =
        TestUpstream::respond(|_| http::Response::new(portcullis_test_support::full("x"))).await;
    let gw = TestGateway::start(&format!("{PERIOD}{}", single_route(&[&up], "", ""))).await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    for _ in 0..3 {
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).await.unwrap();
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&buf[..n])
        );
    }
    assert!(
        closed_within(&mut s, Duration::from_secs(5)).await,
        "idle keep-alive is closed"
    );
}
