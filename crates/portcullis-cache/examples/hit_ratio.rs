//! Hit ratio of the memory tier's eviction policy (moka's TinyLFU admission + LRU, as
//! `MemoryStore` uses it) against plain LRU (moka's LRU policy), quick_cache (S3-FIFO style)
//! and Pingora's TinyUFO (TinyLFU admission + S3-FIFO), on the same synthetic traces:
//! a Zipf(0.9) popularity over 100k URLs, and the same with one-off scans mixed in (crawlers,
//! cache-busting query strings), which is where admission matters.
//!
//! `cargo run --release -p portcullis-cache --example hit_ratio`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use moka::{policy::EvictionPolicy, sync::Cache};

const KEYS: u64 = 100_000;
const REQUESTS: usize = 2_000_000;

/// Draws ranks 0..n with probability proportional to 1/(rank+1)^s, by inverse CDF.
struct Zipf {
    cdf: Vec<f64>,
    state: u64,
}

impl Zipf {
    fn new(n: u64, s: f64, seed: u64) -> Self {
        let mut cdf = Vec::with_capacity(n as usize);
        let mut sum = 0.0;
        for r in 0..n {
            sum += 1.0 / ((r + 1) as f64).powf(s);
            cdf.push(sum);
        }
        for c in &mut cdf {
            *c /= sum;
        }
        Self { cdf, state: seed }
    }

    /// xorshift64*: deterministic, so both policies see the same trace.
    fn uniform(&mut self) -> f64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        (self.state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn next(&mut self) -> u64 {
        let u = self.uniform();
        self.cdf.partition_point(|&c| c < u) as u64
    }
}

fn trace(scan_share: f64) -> Vec<u64> {
    let mut z = Zipf::new(KEYS, 0.9, 0x9E37_79B9_7F4A_7C15);
    let mut scan_key = KEYS;
    (0..REQUESTS)
        .map(|_| {
            if z.uniform() < scan_share {
                scan_key += 1;
                scan_key
            } else {
                z.next()
            }
        })
        .collect()
}

fn moka_ratio(policy: EvictionPolicy, capacity: u64, trace: &[u64]) -> f64 {
    let cache: Cache<u64, ()> = Cache::builder()
        .max_capacity(capacity)
        .eviction_policy(policy)
        .build();
    count_hits(trace, |k| {
        let hit = cache.get(&k).is_some();
        if !hit {
            cache.insert(k, ());
        }
        hit
    })
}

/// quick_cache's unsynchronized cache: S3-FIFO-style admission and eviction (a small and a
/// main queue plus a ghost queue), sized in entries.
fn quick_cache_ratio(capacity: u64, trace: &[u64]) -> f64 {
    let mut cache = quick_cache::unsync::Cache::<u64, ()>::new(capacity as usize);
    count_hits(trace, |k| {
        let hit = cache.get(&k).is_some();
        if !hit {
            cache.insert(k, ());
        }
        hit
    })
}

/// Pingora's TinyUFO: TinyLFU admission in front of S3-FIFO eviction; every entry weighs 1.
fn tinyufo_ratio(capacity: u64, trace: &[u64]) -> f64 {
    let cache = tinyufo::TinyUfo::<u64, ()>::new(capacity as usize, capacity as usize);
    count_hits(trace, |k| {
        let hit = cache.get(&k).is_some();
        if !hit {
            cache.put(k, (), 1);
        }
        hit
    })
}

fn count_hits(trace: &[u64], mut lookup: impl FnMut(u64) -> bool) -> f64 {
    let hits = trace.iter().filter(|&&k| lookup(k)).count();
    hits as f64 / trace.len() as f64
}

fn main() {
    println!("| trace | cache size | TinyLFU (MemoryStore) | LRU | quick_cache | TinyUFO |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, scan) in [
        ("Zipf 0.9, 100k URLs", 0.0),
        ("same + 20% one-off scans", 0.2),
    ] {
        let t = trace(scan);
        for capacity in [1_000u64, 10_000] {
            let tiny = moka_ratio(EvictionPolicy::tiny_lfu(), capacity, &t);
            let lru = moka_ratio(EvictionPolicy::lru(), capacity, &t);
            let quick = quick_cache_ratio(capacity, &t);
            let ufo = tinyufo_ratio(capacity, &t);
            println!(
                "| {name} | {capacity} | {:.1}% | {:.1}% | {:.1}% | {:.1}% |",
                tiny * 100.0,
                lru * 100.0,
                quick * 100.0,
                ufo * 100.0
            );
        }
    }
}
