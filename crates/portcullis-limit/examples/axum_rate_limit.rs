//! A Portcullis rate limit as a tower layer in front of an axum app, without the gateway.
//!
//! `cargo run -p portcullis-limit --example axum_rate_limit` starts the app on a free port with
//! a limit of 3 requests a minute per client address, asks it for `/hello` five times and
//! prints what came back: three answers with `RateLimit-Remaining` counting down, then 429s
//! with `Retry-After`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use axum::{Router, routing::get};
use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use hyper_util::{
    client::legacy::Client,
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use portcullis_http::{Body, ClientIp, body};
use portcullis_limit::{KeyPart, Limit, Policy, Quota, Rate, RateLimitLayer, RateLimiter};
use tower::{Layer, ServiceBuilder, ServiceExt};

// Plain functions rather than closures: a closure's inferred signature is too general for
// `Box<dyn Error>` bodies and fails the `Send` check in `tokio::spawn`.
fn box_response(resp: Response<axum::body::Body>) -> Response<Body> {
    resp.map(body::boxed)
}

/// Boxes the request body and records the peer as the client (behind a proxy you trust, insert
/// the client it reports instead).
fn accepted(
    peer: std::net::SocketAddr,
) -> impl Fn(Request<hyper::body::Incoming>) -> Request<Body> + Clone {
    move |req| {
        let mut req = req.map(body::boxed);
        req.extensions_mut().insert(ClientIp::from(peer));
        req
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let app = Router::new().route("/hello", get(|| async { "hello\n" }));

    // In this process; `RateLimiter::shared(policy, redis)` makes it exact across instances.
    let limiter = RateLimiter::local(Policy {
        scope: "axum-app".into(),
        limits: vec![Limit {
            name: "per-ip".into(),
            quota: Quota::gcra(Rate::new(3, Duration::from_secs(60))),
            key: vec![KeyPart::ClientIp],
        }],
        ..Policy::default()
    });
    let inner = ServiceBuilder::new()
        .map_response(box_response)
        .service(app);
    let service = RateLimitLayer::new(limiter).layer(inner);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                continue;
            };
            let svc = service.clone().map_request(accepted(peer));
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc))
                    .await;
            });
        }
    });

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    for _ in 0..5 {
        let resp = client.get(format!("http://{addr}/hello").parse()?).await?;
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .map_or("-".to_owned(), |v| v.to_str().unwrap_or("?").to_owned())
        };
        let line = format!(
            "{} RateLimit-Remaining: {} RateLimit-Reset: {:2} Retry-After: {:2}",
            resp.status(),
            header("ratelimit-remaining"),
            header("ratelimit-reset"),
            header("retry-after"),
        );
        let text = resp.into_body().collect().await?.to_bytes();
        println!("{line}  {}", String::from_utf8_lossy(&text).trim_end());
    }
    Ok(())
}
