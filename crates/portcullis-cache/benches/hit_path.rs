//! The cache's per-request work on a hit: key building, the memory-tier lookup, the freshness
//! decision and the response built from the stored copy. Run with
//! `cargo bench -p portcullis-cache`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{hint::black_box, sync::Arc, time::SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method, Request, Response, Uri, header};
use http_body_util::BodyExt;
use portcullis_cache::{
    Cache, CacheConfig, CacheControl, RequestTarget, RoutePolicy, decide,
    key::{self, KeyInput, KeyParts, QueryIgnore},
};
use portcullis_http::body;

const TARGET: RequestTarget<'static> = RequestTarget {
    scheme: "http",
    host: "api.example.com",
    path: "/small",
};

fn browser_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::HOST, HeaderValue::from_static("api.example.com"));
    h.insert(
        header::USER_AGENT,
        HeaderValue::from_static("Mozilla/5.0 (X11; Linux x86_64)"),
    );
    h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    h.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("gzip, deflate, br"),
    );
    h
}

/// A cache holding `/small` (1000 bytes, the shared harness's response).
fn filled() -> (Cache, Arc<RoutePolicy>) {
    let cache = Cache::new(CacheConfig::default());
    let policy = cache.register(RoutePolicy::new("bench"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let fetch = |_req: Request<portcullis_http::Body>| async {
            let mut resp = Response::new(body::full(vec![b'x'; 1000]));
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            h.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            );
            h.insert(
                header::DATE,
                HeaderValue::from_str(&httpdate::fmt_http_date(SystemTime::now())).unwrap(),
            );
            h.insert(header::SERVER, HeaderValue::from_static("origin"));
            resp
        };
        let mut req = Request::get("/small").body(body::empty()).unwrap();
        *req.headers_mut() = browser_headers();
        let resp = cache.serve(&policy, TARGET, req, fetch).await;
        resp.into_body().collect().await.unwrap();
    });
    (cache, policy)
}

fn hit_path(c: &mut Criterion) {
    let (cache, policy) = filled();
    let headers = browser_headers();
    let uri: Uri = "/small?b=2&a=1".parse().unwrap();
    let plain: Uri = "/small".parse().unwrap();
    assert!(
        cache
            .serve_fresh(&policy, TARGET, &Method::GET, &plain, &headers)
            .is_some()
    );

    c.bench_function("cache/serve_fresh hit (1000 B)", |b| {
        b.iter(|| {
            cache.serve_fresh(
                &policy,
                TARGET,
                &Method::GET,
                black_box(&plain),
                black_box(&headers),
            )
        })
    });
    c.bench_function("cache/serve_fresh miss", |b| {
        b.iter(|| {
            cache.serve_fresh(
                &policy,
                TARGET,
                &Method::GET,
                black_box(&uri),
                black_box(&headers),
            )
        })
    });
    let parts = KeyParts {
        ignore_query: QueryIgnore::new(["utm_*"]),
        ..KeyParts::default()
    };
    let input = KeyInput {
        scheme: "http",
        host: "api.example.com",
        path: "/small",
        query: Some("b=2&a=1&utm_source=x"),
        consumer: None,
        operation: None,
    };
    c.bench_function("cache/key build (sorted query, ignore list)", |b| {
        b.iter(|| key::build(black_box(&input), &headers, &parts))
    });
    let cc_headers = {
        let mut h = HeaderMap::new();
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300, stale-while-revalidate=30"),
        );
        h
    };
    c.bench_function("cache/Cache-Control parse", |b| {
        b.iter(|| CacheControl::from_headers(black_box(&cc_headers)))
    });
    let meta = portcullis_cache::StoredMeta {
        response_time: SystemTime::now(),
        initial_age: std::time::Duration::ZERO,
        lifetime: std::time::Duration::from_secs(300),
        no_cache: false,
        must_revalidate: false,
        stale_while_revalidate: std::time::Duration::ZERO,
        stale_if_error: std::time::Duration::ZERO,
    };
    let none = CacheControl::default();
    c.bench_function("cache/freshness decision", |b| {
        b.iter(|| decide(black_box(&meta), &none, false, SystemTime::now()))
    });
}

criterion_group!(benches, hit_path);
criterion_main!(benches);
