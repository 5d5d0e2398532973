//! The limiter's per-request cost in the process: resolving a request's keys and deciding one
//! limit, and two limits at once (all-or-nothing across shards). Run with
//! `cargo bench -p portcullis-limit`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{hint::black_box, net::IpAddr, time::Duration};

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis_limit::{Caller, KeyPart, Limit, Policy, Quota, Rate, RateLimiter};

fn limiter(limits: usize) -> RateLimiter {
    let per = [
        Quota::gcra(Rate::new(1_000_000_000, Duration::from_secs(1))),
        Quota::sliding_window(Rate::new(1_000_000_000, Duration::from_secs(3600))),
    ];
    RateLimiter::local(Policy {
        scope: "bench".into(),
        limits: (0..limits)
            .map(|i| Limit {
                name: format!("l{i}").into(),
                quota: per[i % 2],
                key: vec![KeyPart::ClientIp],
            })
            .collect(),
        ..Policy::default()
    })
}

fn bench(c: &mut Criterion) {
    let req = http::Request::get("/api/x").body(()).unwrap();
    for n in [1, 2] {
        let limiter = limiter(n);
        let mut i = 0u32;
        c.bench_function(&format!("limit/local_{n}_limits_prepare_and_decide"), |b| {
            b.iter(|| {
                // 4096 clients in rotation: a realistic spread over the shards.
                i = (i + 1) % 4096;
                let ip = IpAddr::from((0x0a00_0000 + i).to_be_bytes());
                let pending = limiter
                    .prepare(black_box(&req), Caller::of(&req, ip))
                    .unwrap();
                black_box(limiter.decide_local(&pending).unwrap().verdict.allowed)
            });
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
