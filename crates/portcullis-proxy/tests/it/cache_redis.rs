//! The Redis tier with real redis-server processes and several gateway instances in one test:
//! fills shared across instances, purges by URL, tag and prefix seen everywhere (pub/sub),
//! soft purges, coalescing across instances, Redis restarts under load, memory off, and a
//! 3-master Redis Cluster.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use portcullis_test_support::{Client, RedisCluster, RedisServer, TestGateway, TestUpstream, full};

use crate::json;

/// An origin answering every GET with `max-age=60`, a body naming the path and a counter,
/// and `Surrogate-Key: items <last path segment>`.
async fn origin() -> TestUpstream {
    let n = Arc::new(AtomicUsize::new(0));
    TestUpstream::respond(move |req| {
        let i = n.fetch_add(1, Ordering::SeqCst);
        let path = req.uri().path().to_owned();
        let last = path.rsplit('/').next().unwrap_or("").to_owned();
        Response::builder()
            .header("cache-control", "max-age=60")
            .header("etag", format!("\"{last}\""))
            .header("surrogate-key", format!("items item-{last}"))
            .body(full(format!("{path} #{i}")))
            .unwrap()
    })
    .await
}

fn shared_config(redis_table: &str, up: &TestUpstream, cache_extra: &str) -> String {
    format!(
        "{redis_table}\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[cache]\n{cache_extra}\n\n\
         [[upstreams]]\nname = \"up\"\ntargets = [{{ url = \"{}\" }}]\n\n\
         [[routes]]\nname = \"all\"\nupstream = \"up\"\ncache = {{ ttl = \"60s\" }}\n",
        up.url()
    )
}

/// Two gateway instances with the same config.
async fn pair(config: &str) -> (TestGateway, TestGateway) {
    (
        TestGateway::start(config).await,
        TestGateway::start(config).await,
    )
}

fn redis_table(redis: &RedisServer) -> String {
    format!("[redis]\nurl = \"{}\"\ntimeout = \"500ms\"\n", redis.url())
}

fn header<'a>(r: &'a Response<Bytes>, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .map_or("", |v| v.to_str().unwrap_or(""))
}

/// `X-Cache` and `X-Cache-Tier` of a response.
fn cache_status(r: &Response<Bytes>) -> (String, String) {
    (
        header(r, "x-cache").to_owned(),
        header(r, "x-cache-tier").to_owned(),
    )
}

/// Polls `cond` until it holds (at most 10 s): for effects that happen in the background
/// (Redis writes, pub/sub delivery) and have no signal a test can wait on.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn writes(gw: &TestGateway) -> u64 {
    gw.cache()
        .tier()
        .expect("redis tier attached")
        .stats()
        .writes
}

/// Waits until `gw` has applied `n` invalidation messages from other instances.
async fn applied(gw: &TestGateway, n: u64) {
    let mut rx = gw.cache().tier().expect("redis tier attached").applied();
    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|&got| got >= n))
        .await
        .expect("invalidation applied within 10 s")
        .expect("tier alive");
}

/// Purges the resource at `path` (on the gateways' host) through `gw`'s admin API.
async fn purge_path(
    client: &Client,
    gw: &TestGateway,
    path: &str,
    soft: bool,
) -> serde_json::Value {
    let url = format!("http://{}{path}", gw.addr.ip());
    purge(
        client,
        gw,
        &format!("{{\"keys\":[\"{url}\"],\"soft\":{soft}}}"),
    )
    .await
}

async fn purge(client: &Client, gw: &TestGateway, body: &str) -> serde_json::Value {
    let r = client
        .send(
            Request::post(gw.admin_url("/admin/cache/purge"))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body.to_owned())))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK, "{:?}", r.body());
    json(r.body())
}

#[tokio::test]
async fn a_response_filled_on_one_instance_is_a_redis_hit_on_another() {
    let redis = RedisServer::start();
    let up = origin().await;
    let config = shared_config(&redis_table(&redis), &up, "");
    let (a, b) = pair(&config).await;
    let client = Client::http1();
    let first = client.get(&a.url("/items/1")).await;
    assert_eq!(cache_status(&first).0, "MISS");
    eventually("the fill to reach redis", || writes(&a) >= 1).await;

    let on_b = client.get(&b.url("/items/1")).await;
    assert_eq!(on_b.status(), StatusCode::OK);
    assert_eq!(cache_status(&on_b), ("HIT".into(), "redis".into()));
    assert_eq!(on_b.body(), first.body(), "the same stored response");
    assert!(header(&on_b, "age").parse::<u64>().is_ok());
    let again = client.get(&b.url("/items/1")).await;
    assert_eq!(
        cache_status(&again),
        ("HIT".into(), "memory".into()),
        "a redis hit fills memory"
    );
    assert_eq!(up.request_count(), 1);

    let stats = json(client.get(&b.admin_url("/admin/cache/stats")).await.body());
    assert_eq!(stats["total"]["redis_hits"], 1);
    assert_eq!(stats["total"]["hits"], 2);
    assert_eq!(stats["redis"]["state"], "up");
    assert_eq!(stats["total"]["hit_ratio_redis"], 0.5);

    let metrics = client.get(&b.admin_url("/metrics")).await;
    let text = String::from_utf8_lossy(metrics.body());
    for line in [
        "portcullis_cache_requests_total{route=\"all\",result=\"hit\",tier=\"redis\"} 1",
        "portcullis_cache_requests_total{route=\"all\",result=\"hit\",tier=\"memory\"} 1",
        "portcullis_cache_redis_operations_total{op=\"read\",result=\"ok\"} 1",
    ] {
        assert!(text.contains(line), "{line} not in:\n{text}");
    }
}

#[tokio::test]
async fn purges_by_url_tag_and_prefix_reach_every_instance() {
    let redis = RedisServer::start();
    let up = origin().await;
    let config = shared_config(&redis_table(&redis), &up, "");
    let (a, b) = pair(&config).await;
    let client = Client::http1();
    let paths = ["/items/1", "/items/2", "/items/3", "/other/4"];
    for p in paths {
        client.get(&a.url(p)).await;
    }
    eventually("fills in redis", || writes(&a) >= 4).await;
    // B reads everything once (from Redis), so both instances hold memory copies.
    for p in paths {
        assert_eq!(cache_status(&client.get(&b.url(p)).await).1, "redis");
    }
    let base = format!("http://{}", a.addr.ip());

    // By URL, through B: A's memory copy goes too.
    let r = purge_path(&client, &b, "/items/1", false).await;
    assert_eq!(r["purged"]["memory"], 1);
    assert_eq!(r["purged"]["redis"], 1);
    assert_eq!(r["propagated"], true);
    let url_set = format!("pc:t:{{url:{base}/items/1}}");
    assert_eq!(
        redis.cli(&["exists", &url_set]).trim(),
        "0",
        "the URL's index is gone"
    );
    applied(&a, 1).await;
    assert_eq!(
        cache_status(&client.get(&a.url("/items/1")).await).0,
        "MISS"
    );
    assert_eq!(cache_status(&client.get(&a.url("/items/2")).await).0, "HIT");

    // By tag (the origin's Surrogate-Key), through A.
    let r = purge(&client, &a, "{\"tags\":[\"item-2\"]}").await;
    assert_eq!(r["purged"]["redis"], 1);
    applied(&b, 1).await;
    assert_eq!(
        cache_status(&client.get(&b.url("/items/2")).await).0,
        "MISS"
    );

    // By prefix: /items/ goes, /other/ stays.
    eventually("refills in redis", || writes(&a) >= 5 && writes(&b) >= 1).await;
    let r = purge(&client, &b, &format!("{{\"prefix\":\"{base}/items/\"}}")).await;
    assert!(r["purged"]["redis"].as_u64().unwrap() >= 3, "{r}");
    applied(&a, 2).await;
    for p in ["/items/1", "/items/2", "/items/3"] {
        assert_eq!(cache_status(&client.get(&a.url(p)).await).0, "MISS", "{p}");
    }
    assert_eq!(cache_status(&client.get(&a.url("/other/4")).await).0, "HIT");
}

#[tokio::test]
async fn a_soft_purge_revalidates_instead_of_refetching() {
    let redis = RedisServer::start();
    let up = TestUpstream::respond(|req| {
        let matches = req
            .headers()
            .get("if-none-match")
            .is_some_and(|v| v == "\"v1\"");
        let b = Response::builder()
            .header("cache-control", "max-age=60")
            .header("etag", "\"v1\"");
        if matches {
            b.status(304).body(full("")).unwrap()
        } else {
            b.body(full("the body")).unwrap()
        }
    })
    .await;
    let config = shared_config(&redis_table(&redis), &up, "");
    let (a, b) = pair(&config).await;
    let client = Client::http1();
    client.get(&a.url("/doc")).await;
    eventually("the fill in redis", || writes(&a) >= 1).await;
    assert_eq!(cache_status(&client.get(&b.url("/doc")).await).1, "redis");

    let r = purge_path(&client, &a, "/doc", true).await;
    assert_eq!(r["purged"]["redis"], 1);
    applied(&b, 1).await;
    for gw in [&a, &b] {
        let r = client.get(&gw.url("/doc")).await;
        assert_eq!(header(&r, "x-cache"), "REVALIDATED");
        assert_eq!(r.body().as_ref(), b"the body");
    }
    let conditional = up
        .requests()
        .iter()
        .filter(|s| s.headers.contains_key("if-none-match"))
        .count();
    assert_eq!(conditional, 2, "each instance revalidated once");
    // A third instance starting now reads the stamped entry from Redis: stale, so it
    // revalidates too (or finds the entry an instance already refreshed).
    let c = TestGateway::start(&config).await;
    let r = client.get(&c.url("/doc")).await;
    assert_ne!(header(&r, "x-cache"), "MISS");
}

#[tokio::test]
async fn three_instances_missing_one_key_send_one_request_upstream() {
    let redis = RedisServer::start();
    let (up, release) = TestUpstream::held("filled once").await;
    let config = shared_config(&redis_table(&redis), &up, "");
    let gws = [
        TestGateway::start(&config).await,
        TestGateway::start(&config).await,
        TestGateway::start(&config).await,
    ];
    let client = Client::http1();
    let mut tasks = Vec::new();
    for gw in &gws {
        for _ in 0..100 {
            let (client, url) = (client.clone(), gw.url("/cold"));
            tasks.push(tokio::spawn(async move { client.get(&url).await }));
        }
    }
    up.wait_requests(1).await;
    // Release the fill only once the other two instances are waiting for it.
    let lock_waits = || -> u64 {
        gws.iter()
            .map(|g| g.cache().tier().unwrap().stats().lock_waits)
            .sum()
    };
    eventually("two instances to wait on the lock", || lock_waits() >= 2).await;
    release.notify_waiters();
    let mut bodies = 0;
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.body().as_ref(), b"filled once");
        bodies += 1;
    }
    assert_eq!(bodies, 300);
    assert_eq!(
        up.request_count(),
        1,
        "one fill for 300 cold requests on 3 instances"
    );
    assert_eq!(
        lock_waits(),
        2,
        "one leader per instance; two waited for the third"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_and_restarted_under_load_causes_no_errors_and_the_tier_resumes() {
    let mut redis = RedisServer::start();
    let up = origin().await;
    let config = shared_config(&redis_table(&redis), &up, "");
    let (a, b) = pair(&config).await;
    let client = Client::http1();
    // Load on both instances all along: new keys (fills) and repeated ones (hits).
    let sent = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for gw in [&a, &b] {
        let (client, base, sent, stop) = (
            client.clone(),
            gw.url(""),
            Arc::clone(&sent),
            Arc::clone(&stop),
        );
        load.push(tokio::spawn(async move {
            let mut bad = Vec::new();
            let mut n = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let path = if n.is_multiple_of(2) {
                    format!("/load/{n}")
                } else {
                    "/load/hot".to_owned()
                };
                let status = client.get(&format!("{base}{path}")).await.status();
                if !status.is_success() {
                    bad.push((path, status));
                }
                n += 1;
                sent.fetch_add(1, Ordering::SeqCst);
            }
            bad
        }));
    }
    let until_sent = |more: usize| {
        let target = sent.load(Ordering::SeqCst) + more;
        let sent = Arc::clone(&sent);
        async move { eventually("load to go on", || sent.load(Ordering::SeqCst) >= target).await }
    };
    until_sent(100).await;
    redis.stop();
    let tier = a.cache().tier().unwrap();
    eventually("the breaker to open", || !tier.redis().health().is_up()).await;
    until_sent(300).await;
    // Memory keeps serving what each instance holds.
    let hot = client.get(&a.url("/load/hot")).await;
    assert_eq!(cache_status(&hot), ("HIT".into(), "memory".into()));
    redis.restart();
    let before = writes(&a);
    eventually("writes to resume", || writes(&a) > before).await;
    until_sent(100).await;
    stop.store(true, Ordering::SeqCst);
    for task in load {
        let bad = task.await.unwrap();
        assert!(
            bad.is_empty(),
            "errors under load while redis went away: {bad:?}"
        );
    }
    // What A stores now, B reads from Redis (each fill is written in the background: try
    // new keys until one has been).
    let deadline = Instant::now() + Duration::from_secs(20);
    for k in 0.. {
        let path = format!("/after-restart/{k}");
        let written = writes(&a);
        client.get(&a.url(&path)).await;
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            eventually("the fill in redis", || writes(&a) > written),
        )
        .await;
        if cache_status(&client.get(&b.url(&path)).await) == ("HIT".into(), "redis".into()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "B never read A's fill from redis"
        );
    }
}

/// Runs `step` until `done` holds (at most 20 s): for recovery after a Redis restart, which
/// the breaker notices on a later request.
async fn eventually_async<F, Fut>(what: &str, mut step: F, mut done: impl FnMut() -> bool)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        step().await;
        for _ in 0..20 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn with_memory_off_every_hit_comes_from_redis() {
    let redis = RedisServer::start();
    let up = origin().await;
    let config = shared_config(&redis_table(&redis), &up, "memory_max = \"0\"");
    let gw = TestGateway::start(&config).await;
    let client = Client::http1();
    assert_eq!(cache_status(&client.get(&gw.url("/m")).await).0, "MISS");
    eventually("the fill in redis", || writes(&gw) >= 1).await;
    for _ in 0..3 {
        let r = client.get(&gw.url("/m")).await;
        assert_eq!(cache_status(&r), ("HIT".into(), "redis".into()));
    }
    assert_eq!(gw.cache().stats().memory_entries, 0);
    assert_eq!(up.request_count(), 1);
}

#[tokio::test]
async fn an_entry_of_another_format_is_a_miss_and_is_replaced() {
    let redis = RedisServer::start();
    let up = origin().await;
    let config = shared_config(&redis_table(&redis), &up, "");
    let a = TestGateway::start(&config).await;
    let client = Client::http1();
    client.get(&a.url("/v")).await;
    eventually("the fill in redis", || writes(&a) >= 1).await;
    let key = redis.cli(&["--scan", "--pattern", "pc:e:*"]);
    let key = key.trim();
    // An older (or newer) gateway's entry: another version byte.
    redis.cli(&["setrange", key, "3", "\u{7}"]);
    let b = TestGateway::start(&config).await;
    let r = client.get(&b.url("/v")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(cache_status(&r).0, "MISS");
    eventually("the replacement in redis", || writes(&b) >= 1).await;
    let c = TestGateway::start(&config).await;
    assert_eq!(cache_status(&client.get(&c.url("/v")).await).1, "redis");
}

#[tokio::test]
async fn the_redis_tier_shares_and_purges_on_a_cluster() {
    let cluster = RedisCluster::start();
    let up = origin().await;
    let seeds: Vec<String> = cluster.urls().iter().map(|u| format!("\"{u}\"")).collect();
    let table = format!(
        "[redis]\ncluster = [{}]\ntimeout = \"500ms\"\n",
        seeds.join(", ")
    );
    let config = shared_config(&table, &up, "");
    let (a, b) = pair(&config).await;
    let client = Client::http1();
    for i in 0..12 {
        client.get(&a.url(&format!("/items/{i}"))).await;
    }
    eventually("fills in the cluster", || writes(&a) >= 12).await;
    for i in 0..12 {
        let r = client.get(&b.url(&format!("/items/{i}"))).await;
        assert_eq!(cache_status(&r), ("HIT".into(), "redis".into()), "item {i}");
    }
    // Entries spread over the masters (hash tags keep each entry with its lock, not all in
    // one slot).
    let holding = cluster
        .nodes()
        .iter()
        .filter(|n| !n.cli(&["--scan", "--pattern", "pc:e:*"]).trim().is_empty())
        .count();
    assert!(holding >= 2, "entries on {holding} node(s)");
    let r = purge(&client, &b, "{\"tags\":[\"items\"]}").await;
    assert_eq!(r["purged"]["redis"], 12);
    applied(&a, 1).await;
    for i in 0..12 {
        let r = client.get(&a.url(&format!("/items/{i}"))).await;
        assert_eq!(cache_status(&r).0, "MISS", "item {i}");
    }
}

#[tokio::test]
async fn bad_purge_requests_get_400() {
    let redis = RedisServer::start();
    let up = origin().await;
    let gw = TestGateway::start(&shared_config(&redis_table(&redis), &up, "")).await;
    let client = Client::http1();
    for body in [
        "not json",
        "{}",
        "{\"keys\":[\"/relative\"]}",
        "{\"prefix\":\"no-scheme\"}",
        "{\"tags\":[\"x\"],\"unknown\":1}",
    ] {
        let r = client
            .send(
                Request::post(gw.admin_url("/admin/cache/purge"))
                    .body(Full::new(Bytes::from(body)))
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(json(r.body())["status"], 400);
    }
}

/// `X-Portcullis-Signature` for `body` at `timestamp`, computed here independently of the
/// gateway's code.
fn signature(secret: &str, timestamp: u64, body: &str) -> String {
    use aws_lc_rs::hmac;
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let tag = hmac::sign(&key, format!("{timestamp}.{body}").as_bytes());
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

async fn hook(
    client: &Client,
    gw: &TestGateway,
    ts: u64,
    sig: &str,
    body: &str,
) -> Response<Bytes> {
    client
        .send(
            Request::post(gw.admin_url("/hooks/cache/purge"))
                .header("x-portcullis-timestamp", ts.to_string())
                .header("x-portcullis-signature", sig)
                .body(Full::new(Bytes::from(body.to_owned())))
                .unwrap(),
        )
        .await
}

#[tokio::test]
async fn the_webhook_accepts_signed_purges_once_and_refuses_the_rest() {
    let redis = RedisServer::start();
    let up = origin().await;
    let config = shared_config(
        &redis_table(&redis),
        &up,
        "\n[cache.webhook]\nsecret = \"hook-secret\"\ntolerance = \"60s\"",
    );
    let (a, b) = pair(&config).await;
    let client = Client::http1();
    client.get(&a.url("/items/7")).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let body = "{\"tags\":[\"item-7\"]}";

    let bad = hook(
        &client,
        &a,
        now,
        &signature("wrong-secret", now, body),
        body,
    )
    .await;
    assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(json(bad.body())["error"], "bad signature");
    let old = now - 120;
    let stale = hook(&client, &a, old, &signature("hook-secret", old, body), body).await;
    assert_eq!(stale.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        json(stale.body())["error"],
        "timestamp outside the accepted window"
    );
    let unsigned = client
        .send(
            Request::post(a.admin_url("/hooks/cache/purge"))
                .body(Full::new(Bytes::from(body)))
                .unwrap(),
        )
        .await;
    assert_eq!(unsigned.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(cache_status(&client.get(&a.url("/items/7")).await).0, "HIT");

    let sig = signature("hook-secret", now, body);
    let ok = hook(&client, &a, now, &sig, body).await;
    assert_eq!(ok.status(), StatusCode::OK, "{:?}", ok.body());
    assert_eq!(json(ok.body())["purged"]["memory"], 1);
    assert_eq!(
        cache_status(&client.get(&a.url("/items/7")).await).0,
        "MISS"
    );
    // The same request again, on this instance or another: a replay.
    for gw in [&a, &b] {
        let replay = hook(&client, gw, now, &sig, body).await;
        assert_eq!(replay.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(json(replay.body())["error"], "replayed request");
    }
}

#[tokio::test]
async fn without_a_configured_webhook_the_endpoint_is_404() {
    let up = origin().await;
    let gw = TestGateway::start(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n{}",
        crate::single_route(&[&up], "", "cache = {}")
    ))
    .await;
    let client = Client::http1();
    let r = hook(&client, &gw, 1, "sha256=00", "{}").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

/// Measures purge propagation across 3 instances: from the start of a purge on one to both
/// others having applied its invalidation message. A measurement, not a check: run it with
/// `scripts/bench-cache-propagation` (release build, prints percentiles).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run with scripts/bench-cache-propagation"]
async fn measure_purge_propagation() {
    let redis = RedisServer::start();
    let up = origin().await;
    let config = shared_config(&redis_table(&redis), &up, "");
    let gws = [
        TestGateway::start(&config).await,
        TestGateway::start(&config).await,
        TestGateway::start(&config).await,
    ];
    let client = Client::http1();
    // Something to purge on every instance: 50 entries, read everywhere.
    for i in 0..50 {
        client.get(&gws[0].url(&format!("/items/{i}"))).await;
    }
    eventually("fills in redis", || writes(&gws[0]) >= 50).await;
    for gw in &gws[1..] {
        for i in 0..50 {
            client.get(&gw.url(&format!("/items/{i}"))).await;
        }
    }
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(300);
    let mut samples = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let from = round % 3;
        let others: Vec<_> = (0..3).filter(|&i| i != from).collect();
        let mut watches: Vec<_> = others
            .iter()
            .map(|&i| gws[i].cache().tier().unwrap().applied())
            .collect();
        let before: Vec<u64> = watches.iter_mut().map(|w| *w.borrow_and_update()).collect();
        let purge = portcullis_cache::Purge {
            tags: vec![format!("item-{}", round % 50)],
            ..portcullis_cache::Purge::default()
        };
        let started = Instant::now();
        let purged = gws[from].cache().purge(&purge).await;
        assert!(purged.propagated);
        for (w, b) in watches.iter_mut().zip(before) {
            w.wait_for(|&n| n > b).await.unwrap();
        }
        samples.push(started.elapsed());
    }
    samples.sort();
    let pct = |p: f64| {
        let i = ((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i].as_secs_f64() * 1000.0
    };
    println!(
        "purge propagation over {} purges, 3 instances: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        samples.len(),
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_sentinel_the_tier_follows_the_master_through_a_failover() {
    let sentinel = portcullis_test_support::RedisSentinel::start();
    let up = origin().await;
    let table = format!(
        "[redis]\nsentinel = [\"{}\"]\nsentinel_master = \"{}\"\ntimeout = \"500ms\"\n",
        sentinel.sentinel_url(),
        portcullis_test_support::SENTINEL_MASTER
    );
    let config = shared_config(&table, &up, "");
    let (a, b) = pair(&config).await;
    let client = Client::http1();
    // The first requests may come before the master is resolved: they are plain misses.
    let mut i = 0;
    eventually_async(
        "a fill to reach the master",
        || {
            i += 1;
            let (client, url) = (client.clone(), a.url(&format!("/before/{i}")));
            async move {
                client.get(&url).await;
            }
        },
        || writes(&a) >= 1,
    )
    .await;
    let first_master = sentinel.master_port();
    let stored = sentinel
        .server(first_master)
        .cli(&["--scan", "--pattern", "pc:e:*"]);
    assert!(!stored.trim().is_empty(), "the entry is on the master");

    let new_master = sentinel.failover();
    assert_ne!(new_master, first_master);
    // Fills after the failover land on the new master, and the other instance reads them.
    let before = writes(&a);
    let mut j = 0;
    eventually_async(
        "a fill to reach the new master",
        || {
            j += 1;
            let (client, url) = (client.clone(), a.url(&format!("/after/{j}")));
            async move {
                client.get(&url).await;
            }
        },
        || {
            writes(&a) > before
                && !sentinel
                    .server(new_master)
                    .cli(&["--scan", "--pattern", "pc:e:*"])
                    .trim()
                    .is_empty()
        },
    )
    .await;
    let mut hit = false;
    for k in 1..=j {
        let r = client.get(&b.url(&format!("/after/{k}"))).await;
        hit |= cache_status(&r) == ("HIT".into(), "redis".into());
    }
    assert!(hit, "instance B reads what A stored on the new master");
}

#[tokio::test]
async fn a_response_fetched_while_its_url_was_purged_is_not_stored() {
    let redis = RedisServer::start();
    let (up, release) = TestUpstream::held("fetched before the purge").await;
    let config = shared_config(&redis_table(&redis), &up, "");
    let (a, b) = pair(&config).await;
    let client = Client::http1();
    let pending = {
        let (client, url) = (client.clone(), a.url("/race"));
        tokio::spawn(async move { client.get(&url).await })
    };
    up.wait_requests(1).await;
    // The purge comes from the other instance while A's fill is at the origin.
    let r = purge_path(&client, &b, "/race", false).await;
    assert_eq!(r["propagated"], true);
    applied(&a, 1).await;
    release.notify_waiters();
    let first = pending.await.unwrap();
    assert_eq!(first.body().as_ref(), b"fetched before the purge");
    // Neither tier kept it: the next requests, on either instance, go to the origin.
    let (up_count, released) = (up.request_count(), Arc::clone(&release));
    let again = {
        let (client, url) = (client.clone(), b.url("/race"));
        tokio::spawn(async move { client.get(&url).await })
    };
    up.wait_requests(up_count + 1).await;
    released.notify_waiters();
    assert_eq!(cache_status(&again.await.unwrap()).0, "MISS");
    assert_eq!(writes(&a), 0, "nothing was written to redis");
    assert_eq!(a.cache().stats().memory_entries, 0);
}

#[tokio::test]
async fn an_acl_user_with_a_password_is_used_and_a_wrong_one_is_reported() {
    let redis = RedisServer::start_with(&[
        "--user",
        "default",
        "off",
        "--user",
        "gw",
        "on",
        ">s3cret-pass",
        "~*",
        "&*",
        "+@all",
    ]);
    let up = origin().await;
    let table = |password: &str| {
        format!(
            "[redis]\nurl = \"redis://gw:{password}@127.0.0.1:{}\"\ntimeout = \"500ms\"\n",
            redis.port()
        )
    };
    let config = shared_config(&table("s3cret-pass"), &up, "");
    let (a, b) = pair(&config).await;
    let client = Client::http1();
    client.get(&a.url("/acl")).await;
    eventually("the fill in redis", || writes(&a) >= 1).await;
    assert_eq!(
        cache_status(&client.get(&b.url("/acl")).await),
        ("HIT".into(), "redis".into())
    );
    // A wrong password: the gateway serves from memory and its counters say Redis fails.
    let wrong = TestGateway::start(&shared_config(&table("wrong"), &up, "")).await;
    for _ in 0..2 {
        assert_eq!(
            client.get(&wrong.url("/acl")).await.status(),
            StatusCode::OK
        );
    }
    let stats = wrong.cache().tier().unwrap().stats();
    assert!(stats.read_errors >= 1, "{stats:?}");
    assert_eq!(stats.writes, 0);
    let hit = client.get(&wrong.url("/acl")).await;
    assert_eq!(cache_status(&hit), ("HIT".into(), "memory".into()));
}

#[tokio::test]
async fn the_tier_works_over_tls() {
    let cert = portcullis_test_support::SelfSigned::generate();
    let redis = RedisServer::start_tls(&cert.cert_path, &cert.key_path);
    let up = origin().await;
    // The test certificate is self-signed: trusted through `tls_ca_file`.
    let table = format!(
        "[redis]\nurl = \"rediss://localhost:{}\"\ntls_ca_file = \"{}\"\ntimeout = \"500ms\"\n",
        redis.port(),
        cert.cert_path.display()
    );
    let config = shared_config(&table, &up, "");
    let (a, b) = pair(&config).await;
    let client = Client::http1();
    client.get(&a.url("/tls")).await;
    eventually("the fill in redis", || writes(&a) >= 1).await;
    assert_eq!(
        cache_status(&client.get(&b.url("/tls")).await),
        ("HIT".into(), "redis".into())
    );
    // Without the CA the certificate is refused: no Redis, but the requests are served.
    let untrusting = TestGateway::start(&shared_config(
        &format!(
            "[redis]\nurl = \"rediss://localhost:{}\"\ntimeout = \"500ms\"\n",
            redis.port()
        ),
        &up,
        "",
    ))
    .await;
    let r = client.get(&untrusting.url("/tls")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(cache_status(&r).0, "MISS");
    let stats = untrusting.cache().tier().unwrap().stats();
    assert!(stats.read_errors >= 1, "{stats:?}");
}

#[tokio::test]
async fn a_soft_purged_entry_is_still_served_stale_when_the_origin_fails() {
    let redis = RedisServer::start();
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let origin_fails = Arc::clone(&failing);
    let up = TestUpstream::respond(move |_req| {
        if origin_fails.load(Ordering::SeqCst) {
            return Response::builder().status(500).body(full("down")).unwrap();
        }
        Response::builder()
            .header("cache-control", "max-age=60, stale-if-error=300")
            .body(full("the last good copy"))
            .unwrap()
    })
    .await;
    let config = shared_config(&redis_table(&redis), &up, "");
    let (a, b) = pair(&config).await;
    let client = Client::http1();
    client.get(&a.url("/sie")).await;
    eventually("the fill in redis", || writes(&a) >= 1).await;
    let r = purge_path(&client, &a, "/sie", true).await;
    assert_eq!(r["purged"]["redis"], 1);
    failing.store(true, Ordering::SeqCst);
    // A has the softened copy in memory; B reads the stamped entry from Redis.
    for gw in [&a, &b] {
        let r = client.get(&gw.url("/sie")).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, "x-cache"), "STALE");
        assert_eq!(r.body().as_ref(), b"the last good copy");
    }
    // A hard purge leaves nothing to fall back on.
    let r = purge_path(&client, &a, "/sie", false).await;
    assert!(r["purged"]["memory"].as_u64().unwrap() >= 1);
    assert_eq!(
        client.get(&a.url("/sie")).await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
}
