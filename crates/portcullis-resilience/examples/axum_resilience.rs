//! The Portcullis resilience layers in front of an axum app, without the gateway.
//!
//! `cargo run -p portcullis-resilience --example axum_resilience` starts the app on a free port
//! behind load shedding, a concurrency limit of 2 (no queue), a circuit breaker (3 failures in
//! a row) and a 1 s deadline, then asks it for:
//!
//! 1. `/hello`: 200;
//! 2. `/work` three times at once: two 200s and one 503 (no free slot, `Retry-After: 1`);
//! 3. `/stuck`: 504 after the 1 s deadline (the breaker counts it as a failure);
//! 4. `/broken` twice: the app's 500s, the third failure in a row opens the breaker;
//! 5. `/hello` again: 503 from the open breaker with `Retry-After`, the app not called.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{Router, http::StatusCode, routing::get};
use http_body_util::{BodyExt, Empty};
use hyper_util::{
    client::legacy::Client,
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use portcullis_resilience::{
    Breaker, BreakerConfig, BreakerLayer, ConcurrencyConfig, ConcurrencyLimit,
    ConcurrencyLimitLayer, DeadlineLayer, LoadShedLayer,
};
use tower::ServiceBuilder;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let app = Router::new()
        .route("/hello", get(|| async { "hello\n" }))
        .route(
            "/work",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                "worked\n"
            }),
        )
        .route(
            "/stuck",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                "too late\n"
            }),
        )
        .route(
            "/broken",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "broken\n") }),
        );

    let limit = Arc::new(ConcurrencyLimit::new(ConcurrencyConfig {
        max_in_flight: 2,
        max_queue: 0,
        queue_timeout: Duration::from_millis(100),
        // `Some(AdaptiveConfig { .. })` moves the limit with the app's latency and failures.
        adaptive: None,
    }));
    let breaker = Arc::new(Breaker::new(BreakerConfig {
        consecutive_failures: 3,
        open_for: Duration::from_secs(10),
        ..BreakerConfig::default()
    }));
    // Outermost first: shed, queue for a slot, fail fast, then time the call, so that timeouts
    // count as failures for the breaker.
    let service = ServiceBuilder::new()
        .layer(LoadShedLayer::new(100))
        .layer(ConcurrencyLimitLayer::new(Arc::clone(&limit)))
        .layer(BreakerLayer::new(Arc::clone(&breaker)))
        .layer(DeadlineLayer::new(Duration::from_secs(1)))
        .service(app);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let svc = TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });

    println!("{}", ask(addr, "/hello").await?);
    let at_once: Vec<_> = (0..3).map(|_| tokio::spawn(ask(addr, "/work"))).collect();
    for answer in at_once {
        println!("{}", answer.await??);
    }
    println!("{}", ask(addr, "/stuck").await?);
    for _ in 0..2 {
        println!("{}", ask(addr, "/broken").await?);
    }
    println!("breaker: {:?}", breaker.state());
    println!("{}", ask(addr, "/hello").await?);
    Ok(())
}

/// `GET path`, as one line: status, `Retry-After` and body.
async fn ask(addr: SocketAddr, path: &'static str) -> anyhow::Result<String> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let resp = client.get(format!("http://{addr}{path}").parse()?).await?;
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map_or("-".to_owned(), |v| v.to_str().unwrap_or("?").to_owned());
    let text = resp.into_body().collect().await?.to_bytes();
    Ok(format!(
        "{path:8} {status} Retry-After: {retry_after:2}  {}",
        String::from_utf8_lossy(&text).trim_end()
    ))
}
