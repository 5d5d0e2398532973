//! Per-request hot functions of the proxy: route lookup, path normalization, balancer picks and
//! header rewriting. Run with `cargo bench -p portcullis-proxy`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{hint::black_box, net::IpAddr};

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method, Version};
use portcullis_config::{Balance, parse_host, parse_path, parse_path_prefix};
use portcullis_proxy::{
    balance::Balancer,
    headers::{TrustedProxies, Via, append_via, peer_header_value, remove_hop_by_hop},
    path,
    router::{Matcher, Router},
};

fn router_with(n: usize) -> Router<usize> {
    let mut routes = Vec::new();
    for i in 0..n {
        let (host, path) = match i % 3 {
            0 => (
                Some(format!("svc{i}.example.com")),
                parse_path_prefix(&format!("/api/v{i}")).unwrap(),
            ),
            1 => (
                None,
                parse_path(&format!("/api/projects{i}/{{id}}")).unwrap(),
            ),
            _ => (
                Some("*.example.com".to_owned()),
                parse_path_prefix(&format!("/s{i}")).unwrap(),
            ),
        };
        routes.push((
            Matcher {
                host: host.map(|h| parse_host(&h).unwrap()),
                path: Some(path),
                methods: vec![],
            },
            i,
        ));
    }
    routes.push((Matcher::default(), usize::MAX));
    Router::new(routes)
}

fn bench_router(c: &mut Criterion) {
    for n in [10, 100] {
        let r = router_with(n);
        c.bench_function(&format!("router/lookup/{n}_routes/template_hit"), |b| {
            b.iter(|| {
                r.lookup(
                    black_box(Some("x.test")),
                    black_box("/api/projects1/42"),
                    &Method::GET,
                )
            })
        });
        c.bench_function(&format!("router/lookup/{n}_routes/fallthrough"), |b| {
            b.iter(|| {
                r.lookup(
                    black_box(Some("x.test")),
                    black_box("/nothing/here"),
                    &Method::GET,
                )
            })
        });
    }
}

fn bench_path(c: &mut Criterion) {
    c.bench_function("path/normalize/clean", |b| {
        b.iter(|| path::normalize(black_box("/api/v1/users/42/orders")))
    });
    c.bench_function("path/normalize/dots", |b| {
        b.iter(|| path::normalize(black_box("/api/v1/../v2/./users")))
    });
}

fn bench_balancers(c: &mut Criterion) {
    let names = ["a:1", "b:1", "c:1", "d:1"];
    for (label, kind) in [
        ("round_robin", Balance::RoundRobin),
        ("weighted", Balance::Weighted),
        ("least_request", Balance::LeastRequest),
        ("consistent_hash", Balance::ConsistentHash),
        ("random", Balance::Random),
    ] {
        let b = Balancer::new(kind, &names, &[3, 1, 1, 1]);
        c.bench_function(&format!("balance/pick/{label}"), |bench| {
            bench.iter(|| b.pick(black_box(Some(b"user-12345".as_slice()))))
        });
    }
}

fn bench_headers(c: &mut Criterion) {
    let mut base = HeaderMap::new();
    base.insert("host", HeaderValue::from_static("api.example.com"));
    base.insert("user-agent", HeaderValue::from_static("wrk/4"));
    base.insert("accept", HeaderValue::from_static("*/*"));
    base.insert("connection", HeaderValue::from_static("keep-alive"));
    base.insert("x-forwarded-for", HeaderValue::from_static("198.51.100.7"));
    let trusted = TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap()]);
    let via = Via::new("portcullis").unwrap();
    let peer: IpAddr = "10.1.2.3".parse().unwrap();
    let peer_value = peer_header_value(peer);
    let host = HeaderValue::from_static("api.example.com");
    let direct: IpAddr = "203.0.113.9".parse().unwrap();
    let direct_value = peer_header_value(direct);
    for (label, peer, peer_value) in [
        ("from_trusted_proxy", peer, &peer_value),
        ("from_client", direct, &direct_value),
    ] {
        c.bench_function(&format!("headers/rewrite_request/{label}"), |b| {
            b.iter_batched(
                || base.clone(),
                |mut h| {
                    remove_hop_by_hop(&mut h, false);
                    trusted.set_forwarded(&mut h, peer, peer_value, false, Some(&host));
                    append_via(&mut h, Version::HTTP_11, &via);
                    h
                },
                criterion::BatchSize::SmallInput,
            )
        });
    }
}

criterion_group!(
    benches,
    bench_router,
    bench_path,
    bench_balancers,
    bench_headers
);
criterion_main!(benches);
