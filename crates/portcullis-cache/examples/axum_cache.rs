//! The Portcullis cache as a tower layer in front of an axum app, without the gateway.
//!
//! `cargo run -p portcullis-cache --example axum_cache` starts the app on a free port, asks it
//! for `/time` three times and prints what came back: the first answer is computed (`MISS`),
//! the others come from the cache (`HIT`) with the same body and a growing `Age`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::{Router, routing::get};
use http::{Request, Response, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::{
    client::legacy::Client,
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use portcullis_cache::{Cache, CacheConfig, CacheLayer, RoutePolicy};
use portcullis_http::{Body, body};
use tower::{Layer, ServiceBuilder, ServiceExt};

/// An expensive handler: the cache should call it once.
async fn time() -> ([(header::HeaderName, &'static str); 1], String) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    (
        [(header::CACHE_CONTROL, "public, max-age=60")],
        format!("computed at {}.{:03}\n", now.as_secs(), now.subsec_millis()),
    )
}

// Plain functions rather than closures: a closure's inferred signature is too general for
// `Box<dyn Error>` bodies and fails the `Send` check in `tokio::spawn`.
fn box_response(resp: Response<axum::body::Body>) -> Response<Body> {
    resp.map(body::boxed)
}

fn box_request(req: Request<hyper::body::Incoming>) -> Request<Body> {
    req.map(body::boxed)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The app, unchanged: any axum Router.
    let app = Router::new().route("/time", get(time));

    // One cache (the memory tier and counters), one policy per cached route or app.
    let cache = Cache::new(CacheConfig {
        memory_max: 64 << 20,
        ..CacheConfig::default()
    });
    let policy = cache.register(RoutePolicy::new("axum-app"));

    // The layer speaks `portcullis_http::Body`; the router accepts it as a request body, and
    // its responses are boxed on the way out.
    let inner = ServiceBuilder::new()
        .map_response(box_response)
        .service(app);
    let service = CacheLayer::new(cache.clone(), policy).layer(inner);

    // Serve it with hyper (axum::serve works the same with an adapter for the request body).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let svc = service.clone().map_request(box_request);
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc))
                    .await;
            });
        }
    });

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    for _ in 0..3 {
        let resp = client.get(format!("http://{addr}/time").parse()?).await?;
        let x_cache = resp.headers()["x-cache"].to_str()?.to_owned();
        let age = resp
            .headers()
            .get(header::AGE)
            .map_or("-".to_owned(), |v| v.to_str().unwrap_or("?").to_owned());
        let text = resp.into_body().collect().await?.to_bytes();
        print!(
            "X-Cache: {x_cache:5} Age: {age:2} {}",
            String::from_utf8_lossy(&text)
        );
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let stats = cache.stats();
    println!(
        "hits {} misses {} hit ratio {:.2}",
        stats.total.hits,
        stats.total.misses,
        stats.total.hit_ratio()
    );
    Ok(())
}
