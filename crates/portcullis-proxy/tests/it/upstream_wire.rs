//! The inline HTTP/1.1 client (bodyless idempotent requests) against an upstream that writes
//! its responses byte for byte: every body framing, interim responses, connection reuse and
//! closing, a pooled connection the upstream closed, malformed responses.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use portcullis_test_support::{Client, TestGateway};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    task::JoinHandle,
};

use crate::json;

/// What the upstream does for one request: the pieces it writes (each its own write), then
/// whether it closes the connection.
type Script = fn(&str) -> (Vec<&'static [u8]>, bool);

/// An upstream answering each request head by a script keyed on its request line.
struct WireUpstream {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl WireUpstream {
    async fn start(script: Script) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (acc, reqs) = (Arc::clone(&accepted), Arc::clone(&requests));
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                acc.fetch_add(1, Ordering::SeqCst);
                let reqs = Arc::clone(&reqs);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                            let mut chunk = [0u8; 4096];
                            match stream.read(&mut chunk).await {
                                Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                                _ => return,
                            }
                            continue;
                        };
                        let head: Vec<u8> = buf.drain(..end + 4).collect();
                        let head = String::from_utf8_lossy(&head).into_owned();
                        let line = head.lines().next().unwrap_or_default().to_owned();
                        reqs.fetch_add(1, Ordering::SeqCst);
                        let (pieces, close) = script(&line);
                        for piece in pieces {
                            if stream.write_all(piece).await.is_err() {
                                return;
                            }
                            let _ = stream.flush().await;
                        }
                        if close {
                            let _ = stream.shutdown().await;
                            return;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            accepted,
            requests,
            task,
        }
    }

    fn config(&self) -> String {
        format!(
            "[[upstreams]]\nname = \"up\"\ntargets = [{{ url = \"http://{}\" }}]\n\n[[routes]]\nname = \"all\"\nupstream = \"up\"\n",
            self.addr
        )
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for WireUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn framings(line: &str) -> (Vec<&'static [u8]>, bool) {
    if line.starts_with("HEAD /length ") {
        return (
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n"],
            false,
        );
    }
    let path = line.split(' ').nth(1).unwrap_or_default();
    match path {
        "/length" => (
            vec![
                b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nX-Up: a\r\nX-Up: b\r\n\r\nhello",
                b" world",
            ],
            false,
        ),
        "/chunked" => (
            vec![
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhel",
                b"lo\r\n6\r\n wor",
                b"ld\r\n0\r\nx-trailer: t\r\n\r\n",
            ],
            false,
        ),
        "/interim" => (
            vec![
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n",
                b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
            ],
            false,
        ),
        "/no-content" => (vec![b"HTTP/1.1 204 No Content\r\n\r\n"], false),
        "/until-close" => (
            vec![b"HTTP/1.1 200 OK\r\n\r\nto the ", b"end"],
            true,
        ),
        "/conn-close" => (
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbye"],
            false,
        ),
        "/both" => (
            vec![
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 99\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            ],
            false,
        ),
        _ => (
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"],
            false,
        ),
    }
}

async fn get(gw: &TestGateway, method: &str, path: &str) -> http::Response<Bytes> {
    let req = Request::builder()
        .method(method)
        .uri(gw.url(path))
        .body(Full::default())
        .unwrap();
    Client::http1().send(req).await
}

#[tokio::test]
async fn every_response_framing_reaches_the_client_intact() {
    let up = WireUpstream::start(framings).await;
    let gw = TestGateway::start(&up.config()).await;

    let resp = get(&gw, "GET", "/length").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(&resp.body()[..], b"hello world");
    let ups: Vec<_> = resp.headers().get_all("x-up").iter().collect();
    assert_eq!(ups, ["a", "b"]);

    let resp = get(&gw, "GET", "/chunked").await;
    assert_eq!(&resp.body()[..], b"hello world");
    assert!(resp.headers().get("x-trailer").is_none());

    let resp = get(&gw, "DELETE", "/interim").await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(&resp.body()[..], b"ok");

    let resp = get(&gw, "GET", "/no-content").await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert!(resp.body().is_empty());

    let resp = get(&gw, "HEAD", "/length").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-length"], "11");
    assert!(resp.body().is_empty());

    // All of these kept the one connection alive, one after the other.
    assert_eq!(up.accepted(), 1);

    let resp = get(&gw, "GET", "/until-close").await;
    assert_eq!(&resp.body()[..], b"to the end");
    let resp = get(&gw, "OPTIONS", "/x").await;
    assert_eq!(&resp.body()[..], b"hi");
    // The close-delimited body used up its connection; the next request needed another.
    assert_eq!(up.accepted(), 2);
}

#[tokio::test]
async fn connections_the_upstream_will_not_keep_are_not_reused() {
    let up = WireUpstream::start(framings).await;
    let gw = TestGateway::start(&up.config()).await;
    for path in ["/conn-close", "/both"] {
        let resp = get(&gw, "GET", path).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let before = up.accepted();
        let resp = get(&gw, "GET", "/x").await;
        assert_eq!(&resp.body()[..], b"hi");
        assert_eq!(
            up.accepted(),
            before + 1,
            "{path}: a new connection after it"
        );
    }
    // `/both` was read by its chunked framing, not by its Content-Length.
    assert_eq!(&get(&gw, "GET", "/both").await.body()[..], b"ok");
}

fn closes_after_answering(_line: &str) -> (Vec<&'static [u8]>, bool) {
    // A keep-alive response, then the upstream closes the connection anyway (as servers do
    // when their own idle timeout fires between requests).
    (
        vec![b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"],
        true,
    )
}

#[tokio::test]
async fn a_pooled_connection_the_upstream_closed_is_replaced_without_an_error() {
    let up = WireUpstream::start(closes_after_answering).await;
    let gw = TestGateway::start(&up.config()).await;
    for round in 0..5 {
        let resp = get(&gw, "GET", "/again").await;
        assert_eq!(resp.status(), StatusCode::OK, "round {round}");
        assert_eq!(&resp.body()[..], b"hi");
    }
    assert_eq!(up.requests.load(Ordering::SeqCst), 5);
    assert_eq!(up.accepted(), 5);
}

fn malformed(line: &str) -> (Vec<&'static [u8]>, bool) {
    let path = line.split(' ').nth(1).unwrap_or_default();
    let answer: &'static [u8] = match path {
        "/conflicting-length" => {
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"
        }
        "/bad-status-line" => b"HTTP/1.1 2OO OK\r\n\r\n",
        "/not-http" => b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
        "/bad-header" => b"HTTP/1.1 200 OK\r\nBad Header: x\r\nContent-Length: 0\r\n\r\n",
        "/upgrade-unasked" => b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
        _ => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
    };
    (vec![answer], true)
}

#[tokio::test]
async fn malformed_responses_are_502_with_the_json_error_body() {
    let up = WireUpstream::start(malformed).await;
    let gw = TestGateway::start(&up.config()).await;
    for path in [
        "/conflicting-length",
        "/bad-status-line",
        "/not-http",
        "/bad-header",
        "/upgrade-unasked",
    ] {
        let resp = get(&gw, "GET", path).await;
        assert_eq!(resp.status(), StatusCode::BAD_GATEWAY, "{path}");
        assert!(resp.headers().contains_key("x-request-id"), "{path}");
        let body = json(resp.body());
        assert_eq!(body["status"], 502, "{path}: {body}");
    }
    // The gateway goes on serving.
    assert_eq!(&get(&gw, "GET", "/fine").await.body()[..], b"hi");
}

fn truncated(_line: &str) -> (Vec<&'static [u8]>, bool) {
    (
        vec![b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part"],
        true,
    )
}

#[tokio::test]
async fn a_body_cut_short_by_the_upstream_is_not_passed_off_as_complete() {
    let up = WireUpstream::start(truncated).await;
    let gw = TestGateway::start(&up.config()).await;
    let mut conn = portcullis_test_support::RawConn::connect(gw.addr).await;
    conn.send(b"GET /t HTTP/1.1\r\nhost: x\r\n\r\n").await;
    // Everything the gateway sends before it closes the client connection.
    let got = conn.read_until(b"never sent").await;
    assert_eq!(up.requests.load(Ordering::SeqCst), 1);
    // Either the head had not gone out yet (the gateway closes at once), or it did and the
    // body stops short: never a complete 100-byte body.
    if !got.is_empty() {
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        let body_at = text.find("\r\n\r\n").unwrap() + 4;
        assert!(got.len() - body_at < 100, "{text}");
    }
}
