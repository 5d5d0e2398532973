//! The response cache through the running gateway: real origins on loopback, real clients.
//!
//! Ages are set up with the origin's `Age` header (a response can arrive already stale), so no
//! test waits for wall-clock time to pass; the clock-driven freshness arithmetic is tested in
//! the cache crate with a manual clock.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use portcullis_test_support::{Client, TestBody, TestGateway, TestUpstream, full};
use tokio::sync::Notify;

use crate::single_route;

/// An origin answering `n:<count>` (1-based) with the headers `headers(count, request)` gives.
async fn counting(
    headers: impl Fn(usize, &Request<hyper::body::Incoming>) -> Vec<(&'static str, String)>
    + Send
    + Sync
    + 'static,
) -> TestUpstream {
    let count = AtomicUsize::new(0);
    TestUpstream::respond(move |req| {
        let n = count.fetch_add(1, Ordering::SeqCst) + 1;
        let mut resp = Response::new(full(format!("n:{n}")));
        for (k, v) in headers(n, req) {
            resp.headers_mut()
                .append(k, HeaderValue::from_str(&v).unwrap());
        }
        resp
    })
    .await
}

fn cached(up: &TestUpstream, route_cache: &str) -> String {
    single_route(&[up], "", &format!("cache = {{ {route_cache} }}"))
}

fn x_cache(r: &Response<Bytes>) -> &str {
    r.headers()
        .get("x-cache")
        .map_or("-", |v| v.to_str().unwrap())
}

fn body(r: &Response<Bytes>) -> &str {
    std::str::from_utf8(r.body()).unwrap()
}

async fn get_with(client: &Client, url: &str, headers: &[(&str, &str)]) -> Response<Bytes> {
    let mut req = Request::get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    client.send(req.body(Full::default()).unwrap()).await
}

#[tokio::test]
async fn a_cacheable_response_is_stored_and_served_with_age_and_x_cache() {
    let up = counting(|_, _| vec![("cache-control", "public, max-age=60".into())]).await;
    let gw = TestGateway::start(&cached(&up, "")).await;
    let c = Client::http1();
    let first = c.get(&gw.url("/a")).await;
    assert_eq!((x_cache(&first), body(&first)), ("MISS", "n:1"));
    let second = c.get(&gw.url("/a")).await;
    assert_eq!((x_cache(&second), body(&second)), ("HIT", "n:1"));
    assert_eq!(second.headers()["x-cache-tier"], "memory");
    assert!(second.headers().contains_key(header::AGE));
    assert!(second.headers().contains_key("x-request-id"));
    assert_ne!(
        first.headers()["x-request-id"],
        second.headers()["x-request-id"],
        "a hit gets its own request id, not the stored one"
    );
    // Another path is another key.
    assert_eq!(body(&c.get(&gw.url("/b")).await), "n:2");
    assert_eq!(up.request_count(), 2);
    let stats = gw.cache().stats();
    assert_eq!(
        (stats.total.hits, stats.total.misses, stats.total.stores),
        (1, 2, 2)
    );
}

#[tokio::test]
async fn query_parameters_are_normalized_and_ignored_ones_do_not_split_the_cache() {
    let up = counting(|_, _| vec![("cache-control", "max-age=60".into())]).await;
    let gw = TestGateway::start(&cached(&up, "ignore_query = [\"utm_*\"]")).await;
    let c = Client::http1();
    assert_eq!(body(&c.get(&gw.url("/p?b=2&a=1")).await), "n:1");
    let same = c.get(&gw.url("/p?a=1&utm_source=mail&b=2")).await;
    assert_eq!((x_cache(&same), body(&same)), ("HIT", "n:1"));
    // The origin still sees the query the client sent.
    assert_eq!(up.requests()[0].uri, "/p?b=2&a=1");
    assert_eq!(body(&c.get(&gw.url("/p?a=1&b=3")).await), "n:2");
}

#[tokio::test]
async fn no_store_private_and_set_cookie_responses_are_never_stored() {
    for (name, value) in [
        ("cache-control", "no-store, max-age=60"),
        ("cache-control", "private, max-age=60"),
        ("set-cookie", "sid=abc"),
    ] {
        let up = counting(move |_, _| {
            let mut h = vec![(name, value.to_owned())];
            if name == "set-cookie" {
                h.push(("cache-control", "public, max-age=60".into()));
            }
            h
        })
        .await;
        let gw = TestGateway::start(&cached(&up, "")).await;
        let c = Client::http1();
        for expected in ["n:1", "n:2"] {
            let r = c.get(&gw.url("/")).await;
            assert_eq!(
                (x_cache(&r), body(&r)),
                ("MISS", expected),
                "{name}: {value}"
            );
        }
        assert_eq!(gw.cache().stats().total.stores, 0, "{name}: {value}");
    }
}

/// An origin that answers with the caller's credentials in the body.
async fn whoami(cache_control: &'static str) -> TestUpstream {
    TestUpstream::respond(move |req| {
        let who = req
            .headers()
            .get(header::AUTHORIZATION)
            .map_or("anonymous", |v| v.to_str().unwrap())
            .to_owned();
        let mut resp = Response::new(full(who));
        resp.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(cache_control),
        );
        resp
    })
    .await
}

#[tokio::test]
async fn one_users_response_is_never_served_to_another() {
    // A shared route: authorized and private responses are not stored at all.
    let up = whoami("private, max-age=60").await;
    let gw = TestGateway::start(&cached(&up, "")).await;
    let c = Client::http1();
    let a = get_with(&c, &gw.url("/me"), &[("authorization", "Bearer alice")]).await;
    let b = get_with(&c, &gw.url("/me"), &[("authorization", "Bearer bob")]).await;
    let anon = c.get(&gw.url("/me")).await;
    assert_eq!(
        (body(&a), body(&b), body(&anon)),
        ("Bearer alice", "Bearer bob", "anonymous")
    );
    // Authorization without `public`: not stored even with max-age.
    let up = whoami("max-age=60").await;
    let gw = TestGateway::start(&cached(&up, "")).await;
    get_with(&c, &gw.url("/me"), &[("authorization", "Bearer alice")]).await;
    let b = get_with(&c, &gw.url("/me"), &[("authorization", "Bearer bob")]).await;
    assert_eq!(body(&b), "Bearer bob");
    assert_eq!(gw.cache().stats().total.stores, 0);

    // A per-consumer route: each consumer gets hits of its own response only.
    let up = whoami("private, max-age=60").await;
    let gw = TestGateway::start(&cached(&up, "per_consumer = true")).await;
    for _ in 0..2 {
        for who in ["Bearer alice", "Bearer bob"] {
            let r = get_with(&c, &gw.url("/me"), &[("authorization", who)]).await;
            assert_eq!(body(&r), who);
        }
    }
    assert_eq!(up.request_count(), 2, "the second round is all hits");
    // Anonymous requests on a per-consumer route do not share private responses either.
    assert_eq!(body(&c.get(&gw.url("/me")).await), "anonymous");
    assert_eq!(x_cache(&c.get(&gw.url("/me")).await), "MISS");
}

#[tokio::test]
async fn a_per_consumer_cache_is_keyed_by_the_authenticated_consumer_not_the_credential() {
    let up = counting(|_, _| vec![("cache-control", "private, max-age=60".into())]).await;
    // acme has two keys, bob one; none of them is sent in `Authorization`.
    let config = format!(
        "{}auth = \"api_key\"\n\n\
         [[consumers]]\nname = \"acme\"\napi_keys = [\"{}\", \"{}\"]\n\n\
         [[consumers]]\nname = \"bob\"\napi_keys = [\"{}\"]\n",
        cached(&up, "per_consumer = true"),
        portcullis_auth::hash_key_hex(b"acme-key-1"),
        portcullis_auth::hash_key_hex(b"acme-key-2"),
        portcullis_auth::hash_key_hex(b"bob-key"),
    );
    let gw = TestGateway::start(&config).await;
    let c = Client::http1();
    let url = gw.url("/me");
    let get = |key: &'static str| {
        let headers = [("x-api-key", key)];
        let (c, url) = (&c, &url);
        async move { get_with(c, url, &headers).await }
    };
    let r = get("acme-key-1").await;
    assert_eq!((x_cache(&r), body(&r)), ("MISS", "n:1"));
    // The same consumer with its other key: its own entry.
    let r = get("acme-key-2").await;
    assert_eq!((x_cache(&r), body(&r)), ("HIT", "n:1"));
    // Another consumer never gets acme's private response.
    let r = get("bob-key").await;
    assert_eq!((x_cache(&r), body(&r)), ("MISS", "n:2"));
    let r = get("bob-key").await;
    assert_eq!((x_cache(&r), body(&r)), ("HIT", "n:2"));
    let r = get("acme-key-1").await;
    assert_eq!((x_cache(&r), body(&r)), ("HIT", "n:1"));
    assert_eq!(up.request_count(), 2);
}

#[tokio::test]
async fn session_cookies_bypass_the_cache() {
    let up = counting(|_, _| vec![("cache-control", "max-age=60".into())]).await;
    let config = format!(
        "{}\n[cache]\nbypass_cookies = [\"session\"]\n",
        cached(&up, "")
    );
    let gw = TestGateway::start(&config).await;
    let c = Client::http1();
    c.get(&gw.url("/")).await;
    let r = get_with(&c, &gw.url("/"), &[("cookie", "theme=dark; session=s1")]).await;
    assert_eq!((x_cache(&r), body(&r)), ("BYPASS", "n:2"));
    let r = get_with(&c, &gw.url("/"), &[("cookie", "theme=dark")]).await;
    assert_eq!((x_cache(&r), body(&r)), ("HIT", "n:1"));
}

#[tokio::test]
async fn vary_stores_one_variant_per_header_value_and_vary_star_is_not_stored() {
    let up = TestUpstream::respond(|req| {
        let lang = req
            .headers()
            .get("accept-language")
            .map_or("none".into(), |v| v.to_str().unwrap().to_owned());
        let mut resp = Response::new(full(lang));
        let h = resp.headers_mut();
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=60"),
        );
        h.insert(header::VARY, HeaderValue::from_static("Accept-Language"));
        resp
    })
    .await;
    let gw = TestGateway::start(&cached(&up, "")).await;
    let c = Client::http1();
    for _ in 0..2 {
        for lang in ["en", "de"] {
            let r = get_with(&c, &gw.url("/"), &[("accept-language", lang)]).await;
            assert_eq!(body(&r), lang);
        }
        assert_eq!(body(&c.get(&gw.url("/")).await), "none");
    }
    assert_eq!(up.request_count(), 3, "three variants, each fetched once");

    let up =
        counting(|_, _| vec![("cache-control", "max-age=60".into()), ("vary", "*".into())]).await;
    let gw = TestGateway::start(&cached(&up, "")).await;
    c.get(&gw.url("/")).await;
    assert_eq!(body(&c.get(&gw.url("/")).await), "n:2");
}

#[tokio::test]
async fn accept_encoding_variants_are_normalized() {
    let up = TestUpstream::respond(|req| {
        let gzip = req
            .headers()
            .get("accept-encoding")
            .is_some_and(|v| v.to_str().unwrap().contains("gzip"));
        let mut resp = Response::new(full(if gzip { "gzipped" } else { "plain" }));
        let h = resp.headers_mut();
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=60"),
        );
        h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        if gzip {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        resp
    })
    .await;
    let gw = TestGateway::start(&cached(&up, "")).await;
    let c = Client::http1();
    let a = get_with(&c, &gw.url("/"), &[("accept-encoding", "gzip, deflate")]).await;
    let b = get_with(
        &c,
        &gw.url("/"),
        &[("accept-encoding", "deflate, gzip;q=0.9")],
    )
    .await;
    assert_eq!(
        (body(&a), x_cache(&b), body(&b)),
        ("gzipped", "HIT", "gzipped")
    );
    let plain = get_with(&c, &gw.url("/"), &[("accept-encoding", "identity")]).await;
    assert_eq!((x_cache(&plain), body(&plain)), ("MISS", "plain"));
    assert!(!plain.headers().contains_key(header::CONTENT_ENCODING));
}

#[tokio::test]
async fn concurrent_cold_requests_send_exactly_one_request_upstream() {
    let (up, release) = TestUpstream::held("filled").await;
    let gw = TestGateway::start(&cached(&up, "ttl = \"1m\"")).await;
    let c = Client::http2();
    let url = gw.url("/hot");
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let (c, url) = (c.clone(), url.clone());
            tokio::spawn(async move { c.get(&url).await })
        })
        .collect();
    up.wait_requests(1).await;
    release.notify_waiters();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!((r.status(), body(&r)), (StatusCode::OK, "filled"));
    }
    assert_eq!(up.request_count(), 1);
    let stats = gw.cache().stats().total;
    assert_eq!(stats.misses, 1);
    assert_eq!(stats.hits, 199);
}

#[tokio::test]
async fn uncacheable_keys_are_not_serialized_behind_a_lock() {
    // Every request is held until released; responses say no-store.
    let release = Arc::new(Notify::new());
    let gate = Arc::clone(&release);
    let up = TestUpstream::start(Arc::new(move |_req| {
        let gate = Arc::clone(&gate);
        Box::pin(async move {
            gate.notified().await;
            let mut resp = Response::new(full("private"));
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp
        })
    }))
    .await;
    let gw = TestGateway::start(&cached(&up, "")).await;
    let c = Client::http2();
    let first = tokio::spawn({
        let (c, url) = (c.clone(), gw.url("/x"));
        async move { c.get(&url).await }
    });
    up.wait_requests(1).await;
    release.notify_waiters();
    first.await.unwrap();
    // Now the key is hit-for-miss: two concurrent requests both reach the origin at once
    // (with a lock, the second would wait for the first and this would never return).
    let both: Vec<_> = (0..2)
        .map(|_| {
            let (c, url) = (c.clone(), gw.url("/x"));
            tokio::spawn(async move { c.get(&url).await })
        })
        .collect();
    up.wait_requests(3).await;
    release.notify_waiters();
    for t in both {
        assert_eq!(body(&t.await.unwrap()), "private");
    }
}

#[tokio::test]
async fn stale_responses_are_revalidated_with_their_validators() {
    // Always stale on arrival (Age beyond max-age); 304 when the validator matches.
    let up = TestUpstream::respond(|req| {
        let matches = req
            .headers()
            .get(header::IF_NONE_MATCH)
            .is_some_and(|v| v == "\"v1\"");
        let mut resp = Response::new(full(if matches { "" } else { "body-v1" }));
        if matches {
            *resp.status_mut() = StatusCode::NOT_MODIFIED;
        }
        let h = resp.headers_mut();
        h.insert(header::ETAG, HeaderValue::from_static("\"v1\""));
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=10"),
        );
        h.insert(header::AGE, HeaderValue::from_static("20"));
        h.insert("x-origin-seen", HeaderValue::from_static("yes"));
        resp
    })
    .await;
    let gw = TestGateway::start(&cached(&up, "")).await;
    let c = Client::http1();
    assert_eq!(x_cache(&c.get(&gw.url("/doc")).await), "MISS");
    let r = c.get(&gw.url("/doc")).await;
    assert_eq!(
        (r.status(), x_cache(&r), body(&r)),
        (StatusCode::OK, "REVALIDATED", "body-v1")
    );
    let seen = up.requests();
    assert_eq!(seen.len(), 2);
    assert!(!seen[0].headers.contains_key(header::IF_NONE_MATCH));
    assert_eq!(seen[1].headers[header::IF_NONE_MATCH], "\"v1\"");
    // A client that already has v1 gets a 304 from the revalidated entry.
    let r = get_with(&c, &gw.url("/doc"), &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(
        (r.status(), x_cache(&r)),
        (StatusCode::NOT_MODIFIED, "REVALIDATED")
    );
    assert_eq!(r.headers()[header::ETAG], "\"v1\"");
}

#[tokio::test]
async fn conditional_requests_are_answered_from_the_cache() {
    let up = counting(|_, _| {
        vec![
            ("cache-control", "max-age=60".into()),
            ("etag", "\"abc\"".into()),
            ("last-modified", "Mon, 01 Jan 2024 00:00:00 GMT".into()),
        ]
    })
    .await;
    let gw = TestGateway::start(&cached(&up, "")).await;
    let c = Client::http1();
    // Even the first, conditional request fills the cache: the origin is asked without the
    // client's validator and the client gets a 304.
    let r = get_with(&c, &gw.url("/"), &[("if-none-match", "\"abc\"")]).await;
    assert_eq!(
        (r.status(), x_cache(&r)),
        (StatusCode::NOT_MODIFIED, "MISS")
    );
    assert!(!up.requests()[0].headers.contains_key(header::IF_NONE_MATCH));
    let r = get_with(&c, &gw.url("/"), &[("if-none-match", "W/\"abc\"")]).await;
    assert_eq!((r.status(), x_cache(&r)), (StatusCode::NOT_MODIFIED, "HIT"));
    assert!(r.body().is_empty());
    let r = get_with(
        &c,
        &gw.url("/"),
        &[("if-modified-since", "Tue, 02 Jan 2024 00:00:00 GMT")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    let r = get_with(&c, &gw.url("/"), &[("if-none-match", "\"other\"")]).await;
    assert_eq!((r.status(), body(&r)), (StatusCode::OK, "n:1"));
    assert_eq!(up.request_count(), 1);
}

#[tokio::test]
async fn etag_is_added_when_the_route_asks() {
    let up = counting(|_, _| vec![("cache-control", "max-age=60".into())]).await;
    let gw = TestGateway::start(&cached(&up, "etag = true")).await;
    let c = Client::http1();
    c.get(&gw.url("/")).await;
    let hit = c.get(&gw.url("/")).await;
    let etag = hit.headers()[header::ETAG].to_str().unwrap().to_owned();
    assert!(
        etag.starts_with('"') && etag.len() > 10,
        "strong etag: {etag}"
    );
    let r = get_with(&c, &gw.url("/"), &[("if-none-match", &etag)]).await;
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn stale_while_revalidate_answers_at_once_and_refreshes_in_the_background() {
    // Response 1 arrives stale but within stale-while-revalidate; the refresh (response 2) is
    // held until the test has seen the stale answer.
    let release = Arc::new(Notify::new());
    let gate = Arc::clone(&release);
    let count = Arc::new(AtomicUsize::new(0));
    let up = TestUpstream::start(Arc::new(move |_req| {
        let gate = Arc::clone(&gate);
        let n = count.fetch_add(1, Ordering::SeqCst) + 1;
        Box::pin(async move {
            let mut resp: Response<TestBody> = Response::new(full(format!("v{n}")));
            let h = resp.headers_mut();
            h.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("max-age=10, stale-while-revalidate=600"),
            );
            if n == 1 {
                h.insert(header::AGE, HeaderValue::from_static("30"));
            } else {
                gate.notified().await;
            }
            resp
        })
    }))
    .await;
    let gw = TestGateway::start(&cached(&up, "")).await;
    let c = Client::http1();
    assert_eq!(body(&c.get(&gw.url("/")).await), "v1");
    // Stale, served at once while the refresh is still held at the origin.
    let stale = c.get(&gw.url("/")).await;
    assert_eq!((x_cache(&stale), body(&stale)), ("STALE", "v1"));
    up.wait_requests(2).await;
    // More stale hits do not start more refreshes.
    let again = c.get(&gw.url("/")).await;
    assert_eq!((x_cache(&again), body(&again)), ("STALE", "v1"));
    assert_eq!(up.request_count(), 2);
    release.notify_waiters();
    // The refreshed copy replaces the stale one.
    let mut last = String::new();
    for _ in 0..500 {
        let r = c.get(&gw.url("/")).await;
        last = format!("{} {}", x_cache(&r), body(&r));
        if last == "HIT v2" {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(last, "HIT v2");
    assert_eq!(up.request_count(), 2);
}

/// An origin whose first response (`n:1`, with `cache_control`) arrives already stale
/// (`Age: 30`), and which answers 503 from then on; with the count of requests it got.
async fn stale_then_failing(cache_control: &'static str) -> (TestUpstream, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&count);
    let up = TestUpstream::respond(move |_| {
        let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
        let mut resp = Response::new(full(format!("n:{n}")));
        if n == 1 {
            let h = resp.headers_mut();
            h.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static(cache_control),
            );
            h.insert(header::AGE, HeaderValue::from_static("30"));
        } else {
            *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        }
        resp
    })
    .await;
    (up, count)
}

#[tokio::test]
async fn stale_if_error_serves_the_stored_copy_and_backs_off_the_failing_origin() {
    let (up, count) = stale_then_failing("max-age=10, stale-if-error=600").await;
    let gw = TestGateway::start(&cached(&up, "")).await;
    let c = Client::http1();
    assert_eq!(body(&c.get(&gw.url("/")).await), "n:1");
    let r = c.get(&gw.url("/")).await;
    assert_eq!(
        (r.status(), x_cache(&r), body(&r)),
        (StatusCode::OK, "STALE", "n:1")
    );
    assert_eq!(count.load(Ordering::SeqCst), 2);
    // Within the back-off interval the origin is not asked again.
    for _ in 0..5 {
        let r = c.get(&gw.url("/")).await;
        assert_eq!((x_cache(&r), body(&r)), ("STALE", "n:1"));
    }
    assert_eq!(count.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn stale_if_error_covers_an_origin_that_is_gone() {
    let up = counting(|_, _| {
        vec![
            ("cache-control", "max-age=1, stale-if-error=600".into()),
            ("age", "5".into()),
            // No pooled connection outlives the origin.
            ("connection", "close".into()),
        ]
    })
    .await;
    let config = cached(&up, "");
    let gw = TestGateway::start(&config).await;
    let c = Client::http1();
    assert_eq!(body(&c.get(&gw.url("/")).await), "n:1");
    drop(up);
    let r = c.get(&gw.url("/")).await;
    assert_eq!(
        (r.status(), x_cache(&r), body(&r)),
        (StatusCode::OK, "STALE", "n:1")
    );
    // Without stale-if-error, the error goes through.
    let r = c.get(&gw.url("/other")).await;
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn must_revalidate_responses_are_never_served_stale() {
    let (up, _) = stale_then_failing("max-age=10, must-revalidate, stale-if-error=600").await;
    let gw = TestGateway::start(&cached(&up, "")).await;
    let c = Client::http1();
    c.get(&gw.url("/")).await;
    assert_eq!(
        c.get(&gw.url("/")).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test]
async fn successful_writes_invalidate_the_resource_and_tags() {
    let up = TestUpstream::respond(|req| {
        let mut resp = Response::new(full(format!("{} {}", req.method(), req.uri())));
        let h = resp.headers_mut();
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=60"),
        );
        if req.uri().path() == "/items" {
            h.insert("surrogate-key", HeaderValue::from_static("item-list"));
        }
        resp
    })
    .await;
    let config = format!(
        "[[upstreams]]\nname = \"up\"\ntargets = [{{ url = \"{}\" }}]\n\n\
         [[routes]]\nname = \"read\"\nupstream = \"up\"\nmatch = {{ methods = [\"GET\"] }}\ncache = {{ tags = [\"items\"] }}\n\n\
         [[routes]]\nname = \"write\"\nupstream = \"up\"\nmatch = {{ methods = [\"POST\", \"PUT\"] }}\ninvalidate_tags_on_write = [\"item-list\"]\n",
        up.url()
    );
    let gw = TestGateway::start(&config).await;
    let c = Client::http1();
    let list = c.get(&gw.url("/items")).await;
    assert!(
        !list.headers().contains_key("surrogate-key"),
        "tag header is stripped"
    );
    c.get(&gw.url("/items/1")).await;
    c.get(&gw.url("/items/2")).await;
    assert_eq!(x_cache(&c.get(&gw.url("/items/1")).await), "HIT");
    // PUT /items/1 invalidates /items/1 (same URL) and /items (by the write route's tag).
    let put = c
        .send(
            Request::put(gw.url("/items/1"))
                .body(Full::from("x"))
                .unwrap(),
        )
        .await;
    assert_eq!(put.status(), StatusCode::OK);
    assert_eq!(x_cache(&c.get(&gw.url("/items/1")).await), "MISS");
    assert_eq!(x_cache(&c.get(&gw.url("/items")).await), "MISS");
    assert_eq!(x_cache(&c.get(&gw.url("/items/2")).await), "HIT");
    // Purging a route tag from the API drops everything that route stored.
    assert_eq!(gw.cache().purge_tag("items"), 3);
    assert_eq!(x_cache(&c.get(&gw.url("/items/2")).await), "MISS");
}

#[tokio::test]
async fn oversize_responses_pass_through_unstored() {
    let big = vec![b'x'; 64 * 1024];
    let up = TestUpstream::respond(move |_| {
        let mut resp = Response::new(full(big.clone()));
        resp.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=60"),
        );
        resp
    })
    .await;
    let config = format!(
        "{}\n[cache]\nmax_object_size = \"16KiB\"\n",
        cached(&up, "")
    );
    let gw = TestGateway::start(&config).await;
    let c = Client::http1();
    for _ in 0..2 {
        let r = c.get(&gw.url("/big")).await;
        assert_eq!((x_cache(&r), r.body().len()), ("MISS", 64 * 1024));
    }
    assert_eq!(up.request_count(), 2);
    assert_eq!(gw.cache().stats().memory_entries, 0);
}

#[tokio::test]
async fn head_is_answered_from_a_stored_get_and_only_if_cached_never_goes_upstream() {
    let up = counting(|_, _| vec![("cache-control", "max-age=60".into())]).await;
    let gw = TestGateway::start(&cached(&up, "")).await;
    let c = Client::http1();
    let miss = get_with(&c, &gw.url("/x"), &[("cache-control", "only-if-cached")]).await;
    assert_eq!(miss.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(up.request_count(), 0);
    c.get(&gw.url("/x")).await;
    let head = c
        .send(Request::head(gw.url("/x")).body(Full::default()).unwrap())
        .await;
    assert_eq!((head.status(), x_cache(&head)), (StatusCode::OK, "HIT"));
    assert!(head.body().is_empty());
    let hit = get_with(&c, &gw.url("/x"), &[("cache-control", "only-if-cached")]).await;
    assert_eq!((x_cache(&hit), body(&hit)), ("HIT", "n:1"));
    assert_eq!(up.request_count(), 1);
}

#[tokio::test]
async fn request_no_cache_and_max_age_zero_go_to_the_origin() {
    let up = counting(|_, _| vec![("cache-control", "max-age=60".into())]).await;
    let gw = TestGateway::start(&cached(&up, "")).await;
    let c = Client::http1();
    c.get(&gw.url("/")).await;
    let r = get_with(&c, &gw.url("/"), &[("cache-control", "no-cache")]).await;
    assert_eq!(body(&r), "n:2");
    let r = get_with(&c, &gw.url("/"), &[("cache-control", "max-age=0")]).await;
    assert_eq!(body(&r), "n:3");
    let r = get_with(&c, &gw.url("/"), &[("pragma", "no-cache")]).await;
    assert_eq!(body(&r), "n:4");
    // And the refetched copy replaced the stored one.
    let r = c.get(&gw.url("/")).await;
    assert_eq!((x_cache(&r), body(&r)), ("HIT", "n:4"));
}

#[tokio::test]
async fn route_ttl_caches_responses_without_cache_headers_and_override_wins() {
    let up = counting(|_, _| vec![]).await;
    let gw = TestGateway::start(&cached(&up, "ttl = \"5m\"")).await;
    let c = Client::http1();
    c.get(&gw.url("/")).await;
    assert_eq!(x_cache(&c.get(&gw.url("/")).await), "HIT");
    // Without a TTL, a bare 200 is not reused.
    let up = counting(|_, _| vec![]).await;
    let gw = TestGateway::start(&cached(&up, "")).await;
    c.get(&gw.url("/")).await;
    assert_eq!(body(&c.get(&gw.url("/")).await), "n:2");
    // ttl_override beats the origin's max-age=0 but never no-store.
    let up = counting(|_, _| vec![("cache-control", "max-age=0".into())]).await;
    let gw = TestGateway::start(&cached(&up, "ttl = \"5m\", ttl_override = true")).await;
    c.get(&gw.url("/")).await;
    assert_eq!(x_cache(&c.get(&gw.url("/")).await), "HIT");
    let up = counting(|_, _| vec![("cache-control", "no-store".into())]).await;
    let gw = TestGateway::start(&cached(&up, "ttl = \"5m\", ttl_override = true")).await;
    c.get(&gw.url("/")).await;
    assert_eq!(body(&c.get(&gw.url("/")).await), "n:2");
}

#[tokio::test]
async fn the_memory_tier_stays_within_its_byte_budget() {
    let up = TestUpstream::respond(|_| {
        let mut resp = Response::new(full(vec![b'x'; 4096]));
        resp.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=600"),
        );
        resp
    })
    .await;
    let config = format!(
        "{}\n[cache]\nmemory_max = \"256KiB\"\nmax_object_size = \"64KiB\"\n",
        cached(&up, "")
    );
    let gw = TestGateway::start(&config).await;
    let c = Client::http2();
    for i in 0..400 {
        c.get(&gw.url(&format!("/k/{i}"))).await;
    }
    let stats = gw.cache().stats();
    assert_eq!(stats.total.stores, 400);
    assert!(
        stats.memory_bytes <= 256 * 1024,
        "{} bytes",
        stats.memory_bytes
    );
    assert!(
        stats.memory_entries > 10 && stats.memory_entries < 100,
        "{} entries",
        stats.memory_entries
    );
}

#[tokio::test]
async fn routes_without_a_cache_table_are_untouched() {
    let up = counting(|_, _| vec![("cache-control", "max-age=60".into())]).await;
    let gw = TestGateway::start(&single_route(&[&up], "", "")).await;
    let c = Client::http1();
    c.get(&gw.url("/")).await;
    let r = c.get(&gw.url("/")).await;
    assert_eq!((x_cache(&r), body(&r)), ("-", "n:2"));
}

#[tokio::test]
async fn graphql_queries_are_cached_by_operation_and_mutations_invalidate() {
    let up = TestUpstream::start(portcullis_test_support::echo()).await;
    let gw = TestGateway::start(&cached(&up, "graphql = true, ttl = \"1m\"")).await;
    let c = Client::http1();
    let post = |body: &'static str| {
        Request::post(gw.url("/graphql"))
            .header("content-type", "application/json")
            .body(Full::from(body))
            .unwrap()
    };
    let q1 = r#"{"query":"query Q($id: ID!) { user(id: $id) { name } }","variables":{"id":"1"}}"#;
    let q1_reformatted = r#"{"variables":{"id":"1"},"query":"query Q($id: ID!) {\n  user(id: $id) {\n    name\n  }\n}"}"#;
    let q2 = r#"{"query":"query Q($id: ID!) { user(id: $id) { name } }","variables":{"id":"2"}}"#;
    let first = c.send(post(q1)).await;
    assert_eq!(x_cache(&first), "MISS");
    assert!(
        body(&first).contains("user(id: $id)"),
        "the origin got the body: {}",
        body(&first)
    );
    let again = c.send(post(q1_reformatted)).await;
    assert_eq!((x_cache(&again), again.body()), ("HIT", first.body()));
    assert_eq!(x_cache(&c.send(post(q2)).await), "MISS");
    assert_eq!(up.request_count(), 2);
    // A mutation goes through and drops the endpoint's cached queries.
    let m = c
        .send(post(
            r#"{"query":"mutation { rename(id: \"1\", name: \"x\") { id } }"}"#,
        ))
        .await;
    assert_eq!((m.status(), x_cache(&m)), (StatusCode::OK, "BYPASS"));
    assert_eq!(x_cache(&c.send(post(q1)).await), "MISS");
    // Not GraphQL: passed through untouched.
    let other = c.send(post("plain text")).await;
    assert_eq!(
        (other.status(), x_cache(&other)),
        (StatusCode::OK, "BYPASS")
    );
}

#[tokio::test]
async fn methods_of_unknown_safety_invalidate_but_safe_ones_do_not() {
    let up = counting(|_, _| vec![("cache-control", "max-age=60".into())]).await;
    let gw = TestGateway::start(&cached(&up, "")).await;
    let c = Client::http1();
    let send = |method: &'static [u8]| {
        Request::builder()
            .method(http::Method::from_bytes(method).unwrap())
            .uri(gw.url("/r"))
            .body(Full::default())
            .unwrap()
    };
    c.get(&gw.url("/r")).await;
    c.send(send(b"OPTIONS")).await;
    assert_eq!(x_cache(&c.get(&gw.url("/r")).await), "HIT");
    c.send(send(b"M-SEARCH")).await;
    assert_eq!(x_cache(&c.get(&gw.url("/r")).await), "MISS");
}

#[tokio::test]
async fn must_understand_keeps_unknown_status_codes_out() {
    let up = TestUpstream::respond(|_| {
        let mut resp = Response::new(full("odd"));
        *resp.status_mut() = StatusCode::from_u16(599).unwrap();
        resp.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=3600, must-understand"),
        );
        resp
    })
    .await;
    let gw = TestGateway::start(&cached(&up, "")).await;
    let c = Client::http1();
    c.get(&gw.url("/")).await;
    assert_eq!(x_cache(&c.get(&gw.url("/")).await), "MISS");
    assert_eq!(up.request_count(), 2);
}

#[tokio::test]
async fn surrogate_control_for_this_cache_overrides_cache_control_and_is_removed() {
    let up = counting(|_, _| {
        vec![
            ("cache-control", "no-store".into()),
            ("surrogate-control", "max-age=60;portcullis".into()),
        ]
    })
    .await;
    let gw = TestGateway::start(&cached(&up, "")).await;
    let c = Client::http1();
    let first = c.get(&gw.url("/")).await;
    assert!(!first.headers().contains_key("surrogate-control"));
    assert_eq!(
        first.headers()[header::CACHE_CONTROL],
        "no-store",
        "browsers still see theirs"
    );
    let hit = c.get(&gw.url("/")).await;
    assert_eq!((x_cache(&hit), body(&hit)), ("HIT", "n:1"));
    assert_eq!(
        up.requests()[0].headers["surrogate-capability"],
        "portcullis=\"Surrogate/1.0\""
    );
    // Targeted at another device: ignored, so no-store holds.
    let up = counting(|_, _| {
        vec![
            ("cache-control", "no-store".into()),
            ("surrogate-control", "max-age=60;other-cdn".into()),
        ]
    })
    .await;
    let gw = TestGateway::start(&cached(&up, "")).await;
    c.get(&gw.url("/")).await;
    assert_eq!(x_cache(&c.get(&gw.url("/")).await), "MISS");
}

#[tokio::test]
async fn ranges_are_answered_from_a_stored_complete_response() {
    let up = counting(|_, _| vec![("cache-control", "max-age=60".into())]).await;
    let gw = TestGateway::start(&cached(&up, "")).await;
    let c = Client::http1();
    c.get(&gw.url("/")).await;
    let r = get_with(&c, &gw.url("/"), &[("range", "bytes=1-")]).await;
    assert_eq!((r.status(), body(&r)), (StatusCode::PARTIAL_CONTENT, ":1"));
    assert_eq!(r.headers()[header::CONTENT_RANGE], "bytes 1-2/3");
    let r = get_with(&c, &gw.url("/"), &[("range", "bytes=9-")]).await;
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.headers()[header::CONTENT_RANGE], "bytes */3");
    assert_eq!(up.request_count(), 1);
}

#[tokio::test]
async fn stored_responses_are_compressed_once_per_coding_and_hits_never_compress() {
    let json = "{\"items\": [1, 2, 3]} ".repeat(200);
    let payload = json.clone();
    let up = TestUpstream::respond(move |_| {
        let mut resp = Response::new(full(payload.clone()));
        let h = resp.headers_mut();
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=60"),
        );
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(header::ETAG, HeaderValue::from_static("\"j1\""));
        resp
    })
    .await;
    let gw = TestGateway::start(&cached(&up, "compress = true")).await;
    let c = Client::http1();
    let ae = |coding: &'static str| [("accept-encoding", coding)];
    // The filling response goes out as the origin sent it, now varying on Accept-Encoding.
    let first = get_with(&c, &gw.url("/j"), &ae("gzip")).await;
    assert_eq!((x_cache(&first), body(&first)), ("MISS", json.as_str()));
    assert!(
        first.headers()[header::VARY]
            .to_str()
            .unwrap()
            .contains("Accept-Encoding")
    );
    for coding in ["gzip", "br", "zstd", "gzip"] {
        let r = get_with(&c, &gw.url("/j"), &ae(coding)).await;
        assert_eq!(x_cache(&r), "HIT", "{coding}");
        assert_eq!(r.headers()[header::CONTENT_ENCODING], coding);
        assert_eq!(
            r.headers()[header::ETAG],
            "W/\"j1\"",
            "another representation"
        );
        assert!(
            r.body().len() < json.len() / 4,
            "{coding}: {} bytes",
            r.body().len()
        );
    }
    let gz = get_with(&c, &gw.url("/j"), &ae("gzip")).await;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz.body()[..]), &mut text)
        .unwrap();
    assert_eq!(text, json);
    let plain = get_with(&c, &gw.url("/j"), &ae("identity")).await;
    assert_eq!((x_cache(&plain), body(&plain)), ("HIT", json.as_str()));
    assert!(!plain.headers().contains_key(header::CONTENT_ENCODING));
    assert_eq!(up.request_count(), 1);
    // Three codings derived, plus the identity copy.
    assert_eq!(gw.cache().stats().memory_entries, 1);
}

#[tokio::test]
async fn responses_the_cache_does_not_store_are_compressed_as_they_pass() {
    let json = "{\"id\": 7, \"name\": \"private item\"} ".repeat(200);
    let payload = json.clone();
    let up = TestUpstream::respond(move |req| {
        let mut resp = Response::new(full(payload.clone()));
        let h = resp.headers_mut();
        let cc = match req.uri().path() {
            "/private" => "private, max-age=60",
            _ => "no-store",
        };
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cc));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp
    })
    .await;
    let gw = TestGateway::start(&cached(&up, "compress = true")).await;
    let c = Client::http1();
    for path in ["/no-store", "/private", "/no-store"] {
        let r = get_with(&c, &gw.url(path), &[("accept-encoding", "gzip, br;q=0.5")]).await;
        assert_eq!(x_cache(&r), "MISS", "{path}");
        assert_eq!(r.headers()[header::CONTENT_ENCODING], "gzip", "{path}");
        assert!(r.body().len() < json.len() / 4, "{path}");
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&r.body()[..]), &mut text)
            .unwrap();
        assert_eq!(text, json, "{path}");
        // Identity for a client that does not ask.
        let plain = get_with(&c, &gw.url(path), &[]).await;
        assert_eq!(body(&plain), json.as_str(), "{path}");
        assert!(!plain.headers().contains_key(header::CONTENT_ENCODING));
    }
    // An Authorization request is bypassed, and compressed likewise.
    let r = get_with(
        &c,
        &gw.url("/no-store"),
        &[("accept-encoding", "zstd"), ("authorization", "Bearer t")],
    )
    .await;
    assert_eq!(r.headers()[header::CONTENT_ENCODING], "zstd");
    assert_eq!(
        zstd::stream::decode_all(&r.body()[..]).unwrap(),
        json.as_bytes()
    );
    assert_eq!(gw.cache().stats().memory_entries, 0, "nothing was stored");
}

#[tokio::test]
async fn no_transform_and_small_bodies_are_not_compressed() {
    let up = TestUpstream::respond(|req| {
        let big = req.uri().path() == "/big";
        let mut resp = Response::new(full(if big { "x".repeat(4096) } else { "tiny".into() }));
        let h = resp.headers_mut();
        let cc = if big {
            "max-age=60, no-transform"
        } else {
            "max-age=60"
        };
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cc));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        resp
    })
    .await;
    let gw = TestGateway::start(&cached(&up, "compress = true")).await;
    let c = Client::http1();
    for path in ["/big", "/small"] {
        get_with(&c, &gw.url(path), &[("accept-encoding", "gzip")]).await;
        let r = get_with(&c, &gw.url(path), &[("accept-encoding", "gzip")]).await;
        assert_eq!(x_cache(&r), "HIT", "{path}");
        assert!(
            !r.headers().contains_key(header::CONTENT_ENCODING),
            "{path}"
        );
    }
}

#[tokio::test]
async fn fields_named_by_no_cache_or_private_are_not_stored_but_the_rest_is() {
    let up = counting(|_, _| {
        vec![
            (
                "cache-control",
                "max-age=60, no-cache=\"X-Secret\", private=\"X-User\"".into(),
            ),
            ("x-secret", "s3cr3t".into()),
            ("x-user", "alice".into()),
            ("x-public", "kept".into()),
        ]
    })
    .await;
    let gw = TestGateway::start(&cached(&up, "")).await;
    let c = Client::http1();
    let first = c.get(&gw.url("/")).await;
    assert_eq!(
        first.headers()["x-secret"],
        "s3cr3t",
        "the origin's own answer is untouched"
    );
    let hit = c.get(&gw.url("/")).await;
    assert_eq!((x_cache(&hit), body(&hit)), ("HIT", "n:1"));
    assert!(!hit.headers().contains_key("x-secret"));
    assert!(!hit.headers().contains_key("x-user"));
    assert_eq!(hit.headers()["x-public"], "kept");
}

#[tokio::test]
async fn a_head_response_with_matching_validators_freshens_the_stored_get() {
    let up = TestUpstream::respond(|req| {
        let head = req.method() == http::Method::HEAD;
        let mut resp = Response::new(full(if head { "" } else { "the body" }));
        let h = resp.headers_mut();
        h.insert(header::ETAG, HeaderValue::from_static("\"v1\""));
        if head {
            h.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("max-age=600"),
            );
        } else {
            // Stale on arrival.
            h.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("max-age=10"),
            );
            h.insert(header::AGE, HeaderValue::from_static("30"));
        }
        resp
    })
    .await;
    let gw = TestGateway::start(&cached(&up, "")).await;
    let c = Client::http1();
    c.get(&gw.url("/")).await;
    let head = c
        .send(Request::head(gw.url("/")).body(Full::default()).unwrap())
        .await;
    assert_eq!(
        (head.status(), x_cache(&head)),
        (StatusCode::OK, "REVALIDATED")
    );
    let get = c.get(&gw.url("/")).await;
    assert_eq!((x_cache(&get), body(&get)), ("HIT", "the body"));
    assert_eq!(get.headers()[header::CACHE_CONTROL], "max-age=600");
    assert_eq!(up.request_count(), 2);
}
