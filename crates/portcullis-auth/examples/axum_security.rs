//! Portcullis edge security as a tower layer in front of an axum app, without the gateway.
//!
//! `cargo run -p portcullis-auth --example axum_security` starts the app on a free port behind
//! an API-key check with CORS and security headers, then asks it four things and prints the
//! answers: no key (401 JSON), a wrong key (401), the right key (the handler sees the consumer
//! and not the key), and a CORS preflight (204, answered by the layer).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use axum::{Router, extract::Request as AxumRequest, routing::get};
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Empty};
use hyper_util::{
    client::legacy::Client,
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use portcullis_auth::{
    AuthMode, AuthOptions, Authenticator, ClientIp, ConsumerId, ConsumerSpec, CorsOptions,
    EdgeOptions, RouteAuth, RouteSecurity, SecurityHeaderOptions, SecurityLayer, hash_key,
};
use portcullis_http::{Body, body};
use tower::{Layer, ServiceBuilder, ServiceExt};

/// The handler reads the consumer the layer authenticated.
async fn whoami(req: AxumRequest) -> String {
    let consumer = req
        .extensions()
        .get::<ConsumerId>()
        .map(|c| c.0.to_string());
    let key = req.headers().get("x-api-key").is_some();
    format!("consumer {consumer:?}, key forwarded: {key}\n")
}

// Plain functions rather than closures: a closure's inferred signature is too general for
// `Box<dyn Error>` bodies and fails the `Send` check in `tokio::spawn`.
fn box_response(resp: Response<axum::body::Body>) -> Response<Body> {
    resp.map(body::boxed)
}

/// Boxes the request body and records the peer as the client, for IP rules (behind a proxy you
/// trust, insert the client it reports instead).
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
    let app = Router::new().route("/whoami", get(whoami));

    // Consumers with API keys, stored as SHA-256 hashes (`portcullis hash-key` prints one).
    let auth = Arc::new(Authenticator::new(
        vec![ConsumerSpec {
            name: "acme".into(),
            tier: Some("premium".into()),
            groups: vec![],
            api_key_hashes: vec![hash_key(b"s3cret-key")],
        }],
        AuthOptions::default(),
    )?);
    let security = RouteSecurity::new(
        auth,
        RouteAuth {
            mode: AuthMode::ApiKey,
            acl: None,
        },
    )
    .with_edge(&EdgeOptions {
        cors: Some(CorsOptions {
            origins: vec!["https://app.example".into()],
            headers: vec!["x-api-key".into()],
            ..CorsOptions::default()
        }),
        headers: SecurityHeaderOptions {
            hsts: Some("max-age=31536000".into()),
            frame_options: Some("DENY".into()),
            content_type_options: true,
            ..SecurityHeaderOptions::default()
        },
        ..EdgeOptions::default()
    })?;
    let inner = ServiceBuilder::new()
        .map_response(box_response)
        .service(app);
    let service = SecurityLayer::new(security).layer(inner);

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
    let url = format!("http://{addr}/whoami");
    let asks = [
        ("no key", Request::get(&url).body(Empty::new())?),
        (
            "wrong key",
            Request::get(&url)
                .header("x-api-key", "guess")
                .body(Empty::new())?,
        ),
        (
            "right key",
            Request::get(&url)
                .header("x-api-key", "s3cret-key")
                .body(Empty::new())?,
        ),
        (
            "preflight",
            Request::builder()
                .method(Method::OPTIONS)
                .uri(&url)
                .header("origin", "https://app.example")
                .header("access-control-request-method", "GET")
                .header("access-control-request-headers", "x-api-key")
                .body(Empty::new())?,
        ),
    ];
    for (what, req) in asks {
        let resp = client.request(req).await?;
        let status = resp.status();
        let hsts = resp.headers().contains_key("strict-transport-security");
        let cors = resp
            .headers()
            .get("access-control-allow-origin")
            .map_or("-".to_owned(), |v| v.to_str().unwrap_or("?").to_owned());
        let text = resp.into_body().collect().await?.to_bytes();
        println!(
            "{what:9} {status} HSTS: {hsts} Allow-Origin: {cors}  {}",
            String::from_utf8_lossy(&text).trim_end()
        );
    }
    Ok(())
}
