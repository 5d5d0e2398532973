//! Rate limits on routes: headers on every response, 429 with `Retry-After` past the limit,
//! keys that spoofed forwarded headers cannot change, cache hits counted or not, costs per
//! method, and limits exact across gateway instances sharing a real Redis (with fallback while
//! it is down).

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use portcullis_test_support::{Client, RedisServer, TestGateway, TestUpstream, echo, full};

use crate::{json, single_route};

fn header<'a>(r: &'a http::Response<Bytes>, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

async fn get_with(client: &Client, url: &str, headers: &[(&str, &str)]) -> http::Response<Bytes> {
    let mut b = Request::get(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    client.send(b.body(Full::new(Bytes::new())).unwrap()).await
}

#[tokio::test]
async fn requests_past_the_limit_get_429_with_headers_and_never_reach_the_upstream() {
    let up = TestUpstream::start(echo()).await;
    let gw = TestGateway::start(&single_route(
        &[&up],
        "",
        "rate_limit = { rate = \"3/min\" }",
    ))
    .await;
    let client = Client::http1();
    for left in ["2", "1", "0"] {
        let r = client.get(&gw.url("/x")).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, "ratelimit-limit"), "3");
        assert_eq!(header(&r, "ratelimit-remaining"), left);
        assert!(r.headers().get("retry-after").is_none());
    }
    let r = client.get(&gw.url("/x")).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&r, "ratelimit-remaining"), "0");
    // GCRA: one request's worth comes back every 20 s.
    assert_eq!(header(&r, "retry-after"), "20");
    let body = json(r.body());
    assert_eq!(body["status"], 429);
    assert_eq!(body["error"], "rate limit exceeded");
    assert_eq!(body["request_id"], header(&r, "x-request-id"));
    assert_eq!(up.request_count(), 3);
}

#[tokio::test]
async fn a_spoofed_forwarded_for_from_an_untrusted_peer_does_not_change_the_key() {
    let up = TestUpstream::start(echo()).await;
    let gw = TestGateway::start(&single_route(
        &[&up],
        "",
        "rate_limit = { rate = \"2/min\", by = \"ip\" }",
    ))
    .await;
    let client = Client::http1();
    let statuses: Vec<StatusCode> = futures_statuses(&client, &gw.url("/"), 4, |i| {
        vec![("x-forwarded-for".to_owned(), format!("203.0.113.{i}"))]
    })
    .await;
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
}

#[tokio::test]
async fn a_trusted_proxy_forwarded_for_keys_each_client_apart() {
    let up = TestUpstream::start(echo()).await;
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ntrusted_proxies = [\"127.0.0.1\"]\n\n{}",
        single_route(&[&up], "", "rate_limit = { rate = \"1/min\" }")
    );
    let gw = TestGateway::start(&config).await;
    let client = Client::http1();
    let statuses = futures_statuses(&client, &gw.url("/"), 3, |i| {
        vec![("x-forwarded-for".to_owned(), format!("203.0.113.{i}"))]
    })
    .await;
    assert_eq!(statuses, [StatusCode::OK; 3], "three clients, one each");
    let again = get_with(&client, &gw.url("/"), &[("x-forwarded-for", "203.0.113.0")]).await;
    assert_eq!(again.status(), StatusCode::TOO_MANY_REQUESTS);
}

/// Sends `n` requests one after another with `headers(i)`; returns their statuses.
async fn futures_statuses(
    client: &Client,
    url: &str,
    n: usize,
    headers: impl Fn(usize) -> Vec<(String, String)>,
) -> Vec<StatusCode> {
    let mut out = Vec::new();
    for i in 0..n {
        let h = headers(i);
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        out.push(get_with(client, url, &h).await.status());
    }
    out
}

#[tokio::test]
async fn api_keys_get_separate_limits_and_costs_apply_per_method() {
    let up = TestUpstream::start(echo()).await;
    let gw = TestGateway::start(&single_route(
        &[&up],
        "",
        "rate_limit = { rate = \"4/min\", by = \"api_key\", cost = { POST = 3 } }",
    ))
    .await;
    let client = Client::http1();
    let post = |key: &'static str| {
        Request::post(gw.url("/"))
            .header("x-api-key", key)
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap()
    };
    // A POST costs 3 of the 4: one more GET fits, then nothing.
    assert_eq!(client.send(post("alpha")).await.status(), StatusCode::OK);
    let r = get_with(&client, &gw.url("/"), &[("x-api-key", "alpha")]).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "ratelimit-remaining"), "0");
    assert_eq!(
        client.send(post("alpha")).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // Another key has its own quota.
    assert_eq!(client.send(post("beta")).await.status(), StatusCode::OK);
}

async fn cached_origin() -> TestUpstream {
    TestUpstream::respond(|_| {
        let mut r = http::Response::new(full("cached"));
        r.headers_mut().insert(
            "cache-control",
            http::HeaderValue::from_static("public, max-age=60"),
        );
        r
    })
    .await
}

#[tokio::test]
async fn cache_hits_count_against_the_limit_by_default() {
    let up = cached_origin().await;
    let gw = TestGateway::start(&single_route(
        &[&up],
        "",
        "cache = {}\nrate_limit = { rate = \"2/min\" }",
    ))
    .await;
    let client = Client::http1();
    let first = client.get(&gw.url("/c")).await;
    let second = client.get(&gw.url("/c")).await;
    assert_eq!(header(&second, "x-cache"), "HIT");
    assert_eq!(header(&second, "ratelimit-remaining"), "0");
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(
        client.get(&gw.url("/c")).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(up.request_count(), 1);
}

#[tokio::test]
async fn cache_hits_can_be_left_uncounted() {
    let up = cached_origin().await;
    let gw = TestGateway::start(&single_route(
        &[&up],
        "",
        "cache = {}\nrate_limit = { rate = \"2/min\", count_cache_hits = false }",
    ))
    .await;
    let client = Client::http1();
    for _ in 0..5 {
        assert_eq!(client.get(&gw.url("/c")).await.status(), StatusCode::OK);
    }
    // Misses still count: two distinct URLs use the quota up.
    assert_eq!(client.get(&gw.url("/d")).await.status(), StatusCode::OK);
    assert_eq!(
        client.get(&gw.url("/e")).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn exempt_networks_are_never_limited() {
    let up = TestUpstream::start(echo()).await;
    let gw = TestGateway::start(&single_route(
        &[&up],
        "",
        "rate_limit = { rate = \"1/min\", exempt_cidrs = [\"127.0.0.0/8\"] }",
    ))
    .await;
    let client = Client::http1();
    for _ in 0..3 {
        let r = client.get(&gw.url("/")).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.headers().get("ratelimit-limit").is_none());
    }
}

fn shared_config(redis: &RedisServer, up: &TestUpstream, route: &str) -> String {
    format!(
        "[redis]\nurl = \"{}\"\ntimeout = \"500ms\"\n\n[rate_limit]\ninstances = 3\npolicy_headers = true\n\n{}",
        redis.url(),
        single_route(&[up], "", route)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gateways_sharing_redis_admit_exactly_100_of_300() {
    let redis = RedisServer::start();
    let up = TestUpstream::start(echo()).await;
    let config = shared_config(
        &redis,
        &up,
        "rate_limit = { rate = \"100/min\", algorithm = \"sliding_window\" }",
    );
    let gateways = [
        TestGateway::start(&config).await,
        TestGateway::start(&config).await,
        TestGateway::start(&config).await,
    ];
    let client = Client::http1();
    let tasks: Vec<_> = (0..300)
        .map(|i| {
            let (client, url) = (client.clone(), gateways[i % 3].url("/"));
            tokio::spawn(async move { client.get(&url).await })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match r.status() {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert_eq!(header(&r, "ratelimit-policy"), "\"default\";q=100;w=60");
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(ok, 100);
    assert_eq!(up.request_count(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_each_gateway_enforces_its_share_and_says_so_in_metrics() {
    let mut redis = RedisServer::start();
    let up = TestUpstream::start(echo()).await;
    let config = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n{}",
        shared_config(&redis, &up, "rate_limit = { rate = \"30/h\" }")
    );
    let gw = TestGateway::start(&config).await;
    let client = Client::http1();
    assert_eq!(client.get(&gw.url("/")).await.status(), StatusCode::OK);
    redis.stop();
    let mut ok = 0;
    for _ in 0..20 {
        let status = client.get(&gw.url("/")).await.status();
        assert!(
            status == StatusCode::OK || status == StatusCode::TOO_MANY_REQUESTS,
            "{status}"
        );
        ok += usize::from(status == StatusCode::OK);
    }
    // 30 per hour over 3 instances: 10 each while Redis is away.
    assert_eq!(ok, 10);
    let ready = client.get(&gw.admin_url("/health/ready")).await;
    assert_eq!(ready.status(), StatusCode::OK, "still ready: it serves");
    let ready = json(ready.body());
    assert_eq!(ready["status"], "degraded");
    assert!(
        ready["reasons"][0].as_str().unwrap().contains("redis"),
        "{ready}"
    );
    let metrics = client.get(&gw.admin_url("/metrics")).await;
    let text = String::from_utf8_lossy(metrics.body());
    assert!(text.contains("portcullis_redis_up 0"), "{text}");
    assert!(
        text.contains(
            "portcullis_rate_limit_decisions_total{route=\"all\",backend=\"fallback\",result=\"limited\"} 10"
        ),
        "{text}"
    );
}

fn tiered_config(up: &TestUpstream, top: &str) -> String {
    let hash = |k: &str| portcullis_auth::hash_key_hex(k.as_bytes());
    format!(
        "{top}[[consumers]]\nname = \"acme\"\ntier = \"premium\"\napi_keys = [\"{}\"]\n\n[[consumers]]\nname = \"hobby\"\ntier = \"free\"\napi_keys = [\"{}\"]\n\n[[consumers]]\nname = \"hobby2\"\ntier = \"free\"\napi_keys = [\"{}\"]\n\n{}",
        hash("key-acme"),
        hash("key-hobby"),
        hash("key-hobby2"),
        single_route(
            &[up],
            "",
            "auth = \"api_key\"\nrate_limit = { by = \"consumer\", rate = \"1/h\", tiers = { free = \"2/h\", premium = \"5/h\" } }"
        )
    )
}

async fn admitted_for(client: &Client, gw: &TestGateway, key: &str, n: usize) -> usize {
    let mut ok = 0;
    for _ in 0..n {
        let r = get_with(client, &gw.url("/"), &[("x-api-key", key)]).await;
        ok += usize::from(r.status() == StatusCode::OK);
    }
    ok
}

#[tokio::test]
async fn authenticated_consumers_get_their_tiers_limits_each_on_their_own() {
    let up = TestUpstream::start(echo()).await;
    let gw = TestGateway::start(&tiered_config(&up, "")).await;
    let client = Client::http1();
    assert_eq!(admitted_for(&client, &gw, "key-acme", 8).await, 5);
    assert_eq!(admitted_for(&client, &gw, "key-hobby", 8).await, 2);
    // Keyed by consumer, not by tier: another free consumer has its own two.
    assert_eq!(admitted_for(&client, &gw, "key-hobby2", 8).await, 2);
    // Unauthenticated requests never reach the limiter: 401 first.
    let anon = client.get(&gw.url("/")).await;
    assert_eq!(anon.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiers_apply_on_redis_too() {
    let redis = RedisServer::start();
    let up = TestUpstream::start(echo()).await;
    let config = tiered_config(&up, &format!("[redis]\nurl = \"{}\"\n\n", redis.url()));
    let gw = TestGateway::start(&config).await;
    let client = Client::http1();
    assert_eq!(admitted_for(&client, &gw, "key-acme", 8).await, 5);
    assert_eq!(admitted_for(&client, &gw, "key-hobby", 8).await, 2);
    let keys = redis.cli(&["--scan", "--pattern", "pc:rl:*"]);
    assert!(keys.contains(":tier:premium:premium"), "{keys}");
    assert!(keys.contains(":tier:free:free"), "{keys}");
}

#[tokio::test]
async fn gateway_errors_of_allowed_requests_carry_the_limit_headers_too() {
    let port = crate::refused_port().await;
    let gw = TestGateway::start(&format!(
        "[[upstreams]]\nname = \"gone\"\ntargets = [{{ url = \"http://127.0.0.1:{port}\" }}]\n\n\
         [[routes]]\nname = \"all\"\nupstream = \"gone\"\nrate_limit = {{ rate = \"5/min\" }}\n"
    ))
    .await;
    let r = Client::http1().get(&gw.url("/")).await;
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(header(&r, "ratelimit-remaining"), "4");
}
