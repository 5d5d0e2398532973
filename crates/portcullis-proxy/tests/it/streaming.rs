//! Bodies stream through the gateway in both directions: nothing waits for a whole body.
//! Proven with signals (a chunk arrives while its sender still holds the rest back), plus 10 MiB
//! transfers checked byte for byte. Bounded gateway memory during those transfers is checked
//! against the real binary in crates/portcullis/tests/cli.rs.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Channel, Full};
use hyper_util::rt::TokioIo;
use portcullis_test_support::{Client, TestBody, TestGateway, TestUpstream};
use tokio::{net::TcpStream, sync::oneshot};

use crate::single_route;

const MIB: usize = 1 << 20;

/// The byte at position `i` of the test pattern.
fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}

fn chunk(start: usize, len: usize) -> Bytes {
    (start..start + len).map(pattern).collect()
}

type ChanBody = Channel<Bytes, std::convert::Infallible>;

/// An HTTP/1.1 connection to the gateway that can send a streaming request body.
async fn connect(gw: &TestGateway) -> hyper::client::conn::http1::SendRequest<ChanBody> {
    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

#[tokio::test]
async fn response_chunks_arrive_before_the_upstream_finishes() {
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let release_rx = Arc::new(parking_lot::Mutex::new(Some(release_rx)));
    let up = TestUpstream::start(Arc::new(move |_req| {
        let release = release_rx.lock().take();
        Box::pin(async move {
            let (mut tx, body) = Channel::<Bytes, Box<dyn std::error::Error + Send + Sync>>::new(1);
            tokio::spawn(async move {
                tx.send_data(Bytes::from_static(b"first ")).await.unwrap();
                if let Some(r) = release {
                    let _ = r.await;
                }
                tx.send_data(Bytes::from_static(b"second")).await.unwrap();
            });
            Response::new(TestBody::new(body))
        })
    }))
    .await;
    let gw = TestGateway::start(&single_route(&[&up], "", "")).await;
    let mut send = connect(&gw).await;
    let (_tx, empty) = Channel::new(1);
    drop(_tx);
    let resp = send
        .send_request(
            Request::get("/stream")
                .header("host", "x")
                .body(empty)
                .unwrap(),
        )
        .await
        .unwrap();
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(
        first, "first ",
        "first chunk did not arrive before the upstream finished"
    );
    release_tx.send(()).unwrap();
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, "second");
}

#[tokio::test]
async fn request_chunks_reach_the_upstream_before_the_client_finishes() {
    let (got_first_tx, got_first_rx) = oneshot::channel::<Bytes>();
    let got_first_tx = Arc::new(parking_lot::Mutex::new(Some(got_first_tx)));
    let up = TestUpstream::start(Arc::new(move |req| {
        let notify = got_first_tx.lock().take();
        Box::pin(async move {
            let mut body = req.into_body();
            let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
            if let Some(n) = notify {
                n.send(first.clone()).unwrap();
            }
            let rest = body.collect().await.unwrap().to_bytes();
            Response::new(portcullis_test_support::full(format!(
                "{}+{}",
                first.len(),
                rest.len()
            )))
        })
    }))
    .await;
    let gw = TestGateway::start(&single_route(&[&up], "", "")).await;
    let mut send = connect(&gw).await;
    let (mut tx, body) = Channel::new(1);
    let resp = tokio::spawn(async move {
        send.send_request(
            Request::post("/upload")
                .header("host", "x")
                .body(body)
                .unwrap(),
        )
        .await
        .unwrap()
    });
    tx.send_data(Bytes::from_static(b"part-one")).await.unwrap();
    // The upstream holds the first chunk while we still hold the second.
    let first = got_first_rx.await.unwrap();
    assert_eq!(first, "part-one");
    tx.send_data(Bytes::from_static(b"part-two!"))
        .await
        .unwrap();
    drop(tx);
    let resp = resp.await.unwrap();
    let text = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(text, "8+9");
}

#[tokio::test]
async fn ten_mib_download_streams_intact() {
    let up = TestUpstream::start(Arc::new(|_req| {
        Box::pin(async move {
            let (mut tx, body) = Channel::<Bytes, Box<dyn std::error::Error + Send + Sync>>::new(4);
            tokio::spawn(async move {
                let step = 64 * 1024;
                for start in (0..10 * MIB).step_by(step) {
                    if tx.send_data(chunk(start, step)).await.is_err() {
                        return;
                    }
                }
            });
            Response::new(TestBody::new(body))
        })
    }))
    .await;
    let gw = TestGateway::start(&single_route(&[&up], "", "")).await;
    let resp = Client::http1().get(&gw.url("/big")).await;
    let body = resp.body();
    assert_eq!(body.len(), 10 * MIB);
    assert!(
        body.iter().enumerate().all(|(i, &b)| b == pattern(i)),
        "corrupted download"
    );
}

#[tokio::test]
async fn ten_mib_upload_streams_intact() {
    let up = TestUpstream::start(Arc::new(|req| {
        Box::pin(async move {
            let mut body = req.into_body();
            let (mut n, mut ok) = (0usize, true);
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame.unwrap().into_data() {
                    ok &= data.iter().enumerate().all(|(i, &b)| b == pattern(n + i));
                    n += data.len();
                }
            }
            Response::new(portcullis_test_support::full(format!("{n} {ok}")))
        })
    }))
    .await;
    let gw = TestGateway::start(&single_route(&[&up], "", "")).await;
    let body: Bytes = (0..10 * MIB).map(pattern).collect();
    let resp = Client::http1()
        .send(Request::put(gw.url("/up")).body(Full::new(body)).unwrap())
        .await;
    assert_eq!(resp.body(), &format!("{} true", 10 * MIB));
}
