//! The Redis backend against real `redis-server` processes: exact across instances, fallback
//! while Redis is down and return once it is back, and Redis Cluster.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::{net::IpAddr, sync::Arc, time::Duration};

use portcullis_limit::{Backend, Caller, KeyPart, Limit, Policy, Quota, Rate, RateLimiter};
use portcullis_redis::{Redis, RedisConfig};
use portcullis_test_support::{RedisCluster, RedisServer};

fn redis(url: &str) -> Redis {
    Redis::connect(&RedisConfig {
        url: Some(url.to_owned()),
        timeout: Duration::from_millis(500),
        ..RedisConfig::default()
    })
    .expect("client")
}

fn policy(scope: &str, limits: Vec<(&str, Quota, Vec<KeyPart>)>) -> Policy {
    Policy {
        scope: scope.into(),
        limits: limits
            .into_iter()
            .map(|(name, quota, key)| Limit {
                name: name.into(),
                quota,
                key,
            })
            .collect(),
        instances: 3,
        ..Policy::default()
    }
}

fn request() -> http::Request<()> {
    http::Request::new(())
}

const CLIENT: &str = "198.51.100.7";

async fn admitted(limiters: &[Arc<RateLimiter>], total: usize) -> (usize, usize) {
    let ip: IpAddr = CLIENT.parse().unwrap();
    let tasks: Vec<_> = (0..total)
        .map(|i| {
            let limiter = Arc::clone(&limiters[i % limiters.len()]);
            tokio::spawn(async move {
                let req = request();
                let pending = limiter
                    .prepare(&req, Caller::of(&req, ip))
                    .expect("limited");
                let d = limiter.decide(&pending).await.expect("decision");
                (d.verdict.allowed, d.backend)
            })
        })
        .collect();
    let (mut allowed, mut on_redis) = (0, 0);
    for t in tasks {
        let (ok, backend) = t.await.unwrap();
        allowed += usize::from(ok);
        on_redis += usize::from(backend == Backend::Redis);
    }
    (allowed, on_redis)
}

fn three(redis: &Redis, policy: &Policy) -> Vec<Arc<RateLimiter>> {
    // Three limiters with their own handles stand for three gateway instances.
    (0..3)
        .map(|_| Arc::new(RateLimiter::shared(policy.clone(), redis.clone())))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_admit_exactly_the_limit_with_a_sliding_window() {
    let server = RedisServer::start();
    let handles: Vec<Redis> = (0..3).map(|_| redis(&server.url())).collect();
    let p = policy(
        "exact-window",
        vec![(
            "m",
            Quota::sliding_window(Rate::new(100, Duration::from_secs(60))),
            vec![KeyPart::ClientIp],
        )],
    );
    let limiters: Vec<_> = handles
        .iter()
        .map(|h| Arc::new(RateLimiter::shared(p.clone(), h.clone())))
        .collect();
    let (allowed, on_redis) = admitted(&limiters, 300).await;
    assert_eq!(on_redis, 300, "every decision was made on Redis");
    assert_eq!(allowed, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_admit_exactly_the_burst_with_gcra() {
    let server = RedisServer::start();
    let p = policy(
        "exact-gcra",
        vec![(
            "h",
            Quota::gcra(Rate::new(100, Duration::from_secs(3600))),
            vec![KeyPart::ClientIp],
        )],
    );
    let (allowed, on_redis) = admitted(&three(&redis(&server.url()), &p), 300).await;
    assert_eq!(on_redis, 300);
    assert_eq!(allowed, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_by_one_limit_consumes_nothing_on_redis() {
    let server = RedisServer::start();
    let r = redis(&server.url());
    let p = policy(
        "two-limits",
        vec![
            (
                "per-ip",
                Quota::gcra(Rate::new(5, Duration::from_secs(3600))),
                vec![KeyPart::ClientIp],
            ),
            (
                "global",
                Quota::gcra(Rate::new(1000, Duration::from_secs(3600))),
                vec![],
            ),
        ],
    );
    let limiter = RateLimiter::shared(p, r);
    let ip: IpAddr = CLIENT.parse().unwrap();
    let req = request();
    let pending = limiter.prepare(&req, Caller::of(&req, ip)).unwrap();
    for _ in 0..25 {
        limiter.decide(&pending).await.unwrap();
    }
    // Another client sees the global limit charged for the 5 admitted requests only.
    let req = request();
    let other = limiter
        .prepare(&req, Caller::of(&req, "198.51.100.8".parse().unwrap()))
        .unwrap();
    let d = limiter.decide(&other).await.unwrap();
    assert_eq!(d.backend, Backend::Redis);
    assert!(d.verdict.allowed);
    // Binding: per-ip has 4 left, global 1000 - 6.
    assert_eq!(d.verdict.binding.remaining, 4);
    let global_key = server.cli(&["--scan", "--pattern", "pc:rl:{two-limits}:-:global:*"]);
    let global_key = global_key.trim();
    assert!(!global_key.is_empty(), "the global limit's key exists");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_falls_back_to_local_shares_and_recovers() {
    let mut server = RedisServer::start();
    let r = redis(&server.url());
    let p = policy(
        "fallback",
        vec![(
            "h",
            Quota::gcra(Rate::new(30, Duration::from_secs(3600))),
            vec![KeyPart::ClientIp],
        )],
    );
    let limiter = RateLimiter::shared(p, r.clone());
    let ip: IpAddr = CLIENT.parse().unwrap();
    let req = request();
    let pending = limiter.prepare(&req, Caller::of(&req, ip)).unwrap();
    assert_eq!(
        limiter.decide(&pending).await.unwrap().backend,
        Backend::Redis
    );

    server.stop();
    // Each instance enforces its share: 30 / 3 instances = 10.
    let mut allowed = 0;
    for _ in 0..40 {
        let d = limiter.decide(&pending).await.unwrap();
        assert_eq!(d.backend, Backend::Fallback);
        allowed += u32::from(d.verdict.allowed);
    }
    assert_eq!(allowed, 10);
    assert!(!r.health().is_up());

    server.restart();
    // The breaker lets a probe through after its back-off; wait for the first Redis decision.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let d = limiter.decide(&pending).await.unwrap();
        if d.backend == Backend::Redis {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never returned to Redis"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(r.health().is_up());
    let stats = limiter.stats().snapshot();
    let fallback = stats
        .iter()
        .find(|(b, ..)| *b == Backend::Fallback)
        .unwrap();
    assert!(fallback.1 + fallback.2 >= 40, "fallback decisions counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_work_on_redis_cluster_with_keys_in_one_slot() {
    let cluster = RedisCluster::start();
    let r = Redis::connect(&RedisConfig {
        cluster: cluster.urls(),
        timeout: Duration::from_secs(2),
        ..RedisConfig::default()
    })
    .unwrap();
    // Different keys per limit: the scope is the hash tag.
    let mixed = policy(
        "cluster-mixed",
        vec![
            (
                "per-ip",
                Quota::gcra(Rate::new(3, Duration::from_secs(3600))),
                vec![KeyPart::ClientIp],
            ),
            (
                "global",
                Quota::sliding_window(Rate::new(100, Duration::from_secs(60))),
                vec![],
            ),
        ],
    );
    // Same key for all limits: the caller is in the tag, spreading callers over the nodes.
    let same = policy(
        "cluster-same",
        vec![
            (
                "s",
                Quota::gcra(Rate::new(10, Duration::from_secs(1))),
                vec![KeyPart::ClientIp],
            ),
            (
                "h",
                Quota::gcra(Rate::new(2, Duration::from_secs(3600))),
                vec![KeyPart::ClientIp],
            ),
        ],
    );
    for (p, expected) in [(mixed, 3), (same, 2)] {
        let (allowed, on_redis) = admitted(&three(&r, &p), 20).await;
        assert_eq!(on_redis, 20);
        assert_eq!(allowed, expected);
    }
}

fn script_calls(server: &RedisServer) -> u64 {
    let stats = server.cli(&["info", "commandstats"]);
    ["cmdstat_evalsha:", "cmdstat_eval:"]
        .iter()
        .filter_map(|name| {
            let line = stats.lines().find(|l| l.starts_with(name))?;
            line.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_cut_redis_calls_and_stay_exact_once_spent() {
    let server = RedisServer::start();
    let r = redis(&server.url());
    let p = policy(
        "leased",
        vec![(
            "h",
            Quota::gcra(Rate::new(100, Duration::from_secs(3600))),
            vec![KeyPart::ClientIp],
        )],
    );
    let limiters: Vec<Arc<RateLimiter>> = (0..3)
        .map(|_| {
            Arc::new(
                RateLimiter::shared(p.clone(), r.clone()).with_leases(10, Duration::from_secs(60)),
            )
        })
        .collect();
    let before = script_calls(&server);
    // Each instance gets its share of requests in turn, so every leased unit is spent.
    let ip: IpAddr = CLIENT.parse().unwrap();
    let mut allowed = 0;
    for i in 0..300 {
        let limiter = &limiters[i % 3];
        let req = request();
        let pending = limiter.prepare(&req, Caller::of(&req, ip)).unwrap();
        let d = limiter.decide(&pending).await.unwrap();
        assert_eq!(d.backend, Backend::Redis);
        allowed += usize::from(d.verdict.allowed);
    }
    assert_eq!(
        allowed, 100,
        "leases are taken from Redis, so the total stays exact"
    );
    let calls = script_calls(&server) - before;
    // Ten leases of ten would do; near the limit requests go one by one, and a refusal is
    // remembered until its Retry-After, so the 200 refused requests cost a call per instance.
    assert!(calls <= 30, "{calls} script calls for 300 requests");
}
