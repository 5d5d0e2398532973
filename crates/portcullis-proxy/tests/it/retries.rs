//! Retries against real failing targets: idempotent requests move to another target and the
//! client sees no error; requests with a body are never repeated; the budget caps amplification.

use http::{Request, StatusCode};
use http_body_util::Full;
use portcullis_test_support::{Client, TestGateway};

use crate::{answering, refused_port};

fn config(urls: &[String], retry: &str) -> String {
    let targets: Vec<String> = urls
        .iter()
        .map(|u| format!("{{ url = \"{u}\" }}"))
        .collect();
    format!(
        "[[upstreams]]\nname = \"pool\"\ntargets = [{}]\nretry = {{ {retry} }}\n\n\
         [[routes]]\nname = \"all\"\nupstream = \"pool\"\n",
        targets.join(", ")
    )
}

#[tokio::test]
async fn idempotent_requests_move_to_a_healthy_target() {
    let bad = answering(StatusCode::SERVICE_UNAVAILABLE).await;
    let good = answering(StatusCode::OK).await;
    let gw = TestGateway::start(&config(&[bad.url(), good.url()], "backoff = \"1ms\"")).await;
    let client = Client::http1();
    for _ in 0..10 {
        assert_eq!(client.get(&gw.url("/x")).await.status(), StatusCode::OK);
    }
    assert!(
        bad.request_count() >= 1,
        "round robin sent some to the failing target"
    );
    assert_eq!(
        good.request_count(),
        10,
        "every request ended on the healthy one"
    );
    // The retried request arrives as the client sent it, rewritten for its new target.
    // (Every request reaching `good`, retried ones included, must look the same.)
    for seen in good.requests() {
        assert_eq!(seen.uri.path(), "/x");
        let h = &seen.headers;
        assert_eq!(h["host"], good.addr.to_string());
        assert_eq!(h["x-forwarded-for"], "127.0.0.1");
        assert_eq!(h.get_all("via").iter().count(), 1);
        assert!(h.contains_key("x-request-id"));
        assert!(h.contains_key("traceparent"));
        assert!(!h.contains_key("connection"));
    }
}

#[tokio::test]
async fn refused_connections_are_retried_elsewhere() {
    let port = refused_port().await;
    let good = answering(StatusCode::OK).await;
    let gw = TestGateway::start(&config(
        &[format!("http://127.0.0.1:{port}"), good.url()],
        "backoff = \"1ms\"",
    ))
    .await;
    let client = Client::http1();
    for _ in 0..6 {
        assert_eq!(client.get(&gw.url("/x")).await.status(), StatusCode::OK);
    }
    assert_eq!(good.request_count(), 6);
}

#[tokio::test]
async fn requests_with_a_body_are_not_repeated() {
    let bad = answering(StatusCode::SERVICE_UNAVAILABLE).await;
    let good = answering(StatusCode::OK).await;
    let gw = TestGateway::start(&config(&[bad.url(), good.url()], "backoff = \"1ms\"")).await;
    let client = Client::http1();
    // Round robin starts at the failing target.
    let post = Request::post(gw.url("/orders"))
        .body(Full::from("{\"qty\": 1}"))
        .unwrap();
    assert_eq!(
        client.send(post).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!((bad.request_count(), good.request_count()), (1, 0));
}

#[tokio::test]
async fn the_budget_caps_retry_amplification() {
    let a = answering(StatusCode::BAD_GATEWAY).await;
    let b = answering(StatusCode::BAD_GATEWAY).await;
    let gw = TestGateway::start(&config(
        &[a.url(), b.url()],
        "attempts = 5, backoff = \"1ms\", budget_percent = 20, min_per_second = 1",
    ))
    .await;
    let client = Client::http1();
    for _ in 0..100 {
        assert_eq!(
            client.get(&gw.url("/x")).await.status(),
            StatusCode::BAD_GATEWAY
        );
    }
    let total = a.request_count() + b.request_count();
    // Without a budget, 5 attempts each would be 500 upstream requests. The budget allows
    // 20% of the requests plus a floor of 1/s over its 10 s window.
    assert!(total > 100, "some retries happened: {total}");
    assert!(
        total <= 100 + 20 + 10 + 2,
        "retries amplified the outage: {total}"
    );
}

/// A target that reads each request head and then resets the connection (RST, not FIN).
/// Returns its URL and how many requests it reset.
async fn resetting() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::AsyncReadExt as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = std::sync::Arc::clone(&count);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let seen = std::sync::Arc::clone(&seen);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
                        _ => return,
                    }
                }
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                // Linger 0: closing sends RST.
                let _ = stream.set_zero_linger();
                drop(stream);
            });
        }
    });
    (url, count)
}

#[tokio::test]
async fn reset_connections_are_retried_elsewhere() {
    let (reset_url, resets) = resetting().await;
    let good = answering(StatusCode::OK).await;
    let gw = TestGateway::start(&config(&[reset_url, good.url()], "backoff = \"1ms\"")).await;
    let client = Client::http1();
    for _ in 0..6 {
        assert_eq!(client.get(&gw.url("/x")).await.status(), StatusCode::OK);
    }
    assert!(
        resets.load(std::sync::atomic::Ordering::SeqCst) >= 1,
        "round robin sent some to the resetting target"
    );
    assert_eq!(good.request_count(), 6);
}

#[tokio::test]
async fn a_retry_forwards_the_normalized_path() {
    let bad = answering(StatusCode::SERVICE_UNAVAILABLE).await;
    let good = answering(StatusCode::OK).await;
    let gw = TestGateway::start(&config(&[bad.url(), good.url()], "backoff = \"1ms\"")).await;
    let client = Client::http1();
    for _ in 0..4 {
        let resp = client.get(&gw.url("/public/../orders?id=7")).await;
        assert_eq!(resp.status(), StatusCode::OK);
    }
    assert!(
        bad.request_count() >= 1,
        "some went to the failing target first"
    );
    for seen in bad.requests().iter().chain(good.requests().iter()) {
        assert_eq!(seen.uri, "/orders?id=7");
    }
}
