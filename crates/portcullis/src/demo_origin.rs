//! The quick start's demo origin: a small JSON API so the gateway has something to proxy on a
//! fresh machine. `/hello`, `/echo` (returns the request body), `/slow?ms=N`, `/health`.

use std::{convert::Infallible, time::Duration};

use anyhow::Context;
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::net::TcpListener;

/// Starts one demo origin instance per address; returns the bound addresses.
pub(crate) async fn start(addrs: &[String]) -> anyhow::Result<Vec<std::net::SocketAddr>> {
    let mut bound = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let listener = TcpListener::bind(addr.as_str()).await.with_context(|| {
            format!("demo origin cannot listen on {addr} (is the port in use?)")
        })?;
        let instance = i + 1;
        bound.push(listener.local_addr()?);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(req, instance));
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
    }
    Ok(bound)
}

async fn handle(
    req: Request<Incoming>,
    instance: usize,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let json = |status: StatusCode, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        Ok(r)
    };
    match path.as_str() {
        "/hello" => json(
            StatusCode::OK,
            format!(r#"{{"message":"hello from the demo origin","instance":{instance}}}"#),
        ),
        "/health" => json(StatusCode::OK, r#"{"ok":true}"#.into()),
        "/echo" => {
            let body = req
                .into_body()
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            let mut r = Response::new(Full::new(body));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/octet-stream"),
            );
            Ok(r)
        }
        "/slow" => {
            let ms = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("ms="))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(500)
                .min(10_000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            json(
                StatusCode::OK,
                format!(r#"{{"slept_ms":{ms},"instance":{instance}}}"#),
            )
        }
        _ => json(
            StatusCode::NOT_FOUND,
            r#"{"error":"no such demo endpoint"}"#.into(),
        ),
    }
}
