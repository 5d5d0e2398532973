//! Rolling statistics per route for the admin API and the dashboard: requests, server errors
//! and latency percentiles over the last 1, 5 and 15 minutes.
//!
//! The hot path only adds to cumulative atomic counters ([`RouteTotals`]); a ticker takes a
//! snapshot of every route every [`TICK`], and a window is the difference between now and the
//! snapshot taken the window's length ago. Latencies go into log-linear buckets (four per
//! doubling, 64 µs to about 34 s), so a percentile is exact to within a quarter of its value;
//! Prometheus histograms are the precise record, these are for a live overview. Memory is
//! bounded: 90 snapshots of 83 counters per route.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use serde::Serialize;

/// Snapshot interval.
pub const TICK: Duration = Duration::from_secs(10);
/// The longest window kept.
const HORIZON: Duration = Duration::from_secs(15 * 60);
const BUCKETS: usize = 81;
/// The lower bound of bucket 1, in microseconds (bucket 0 holds everything faster).
const BASE_US: u64 = 64;

/// Cumulative counters of one route.
#[derive(Debug)]
pub struct RouteTotals {
    requests: AtomicU64,
    errors: AtomicU64,
    latency: [AtomicU64; BUCKETS],
}

impl Default for RouteTotals {
    fn default() -> Self {
        Self {
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl RouteTotals {
    /// Counts one request; `server_error` for a 5xx.
    pub fn record(&self, elapsed: Duration, server_error: bool) {
        self.requests.fetch_add(1, Relaxed);
        if server_error {
            self.errors.fetch_add(1, Relaxed);
        }
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.latency[bucket_of(us)].fetch_add(1, Relaxed);
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            requests: self.requests.load(Relaxed),
            errors: self.errors.load(Relaxed),
            latency: self.latency.iter().map(|b| b.load(Relaxed)).collect(),
        }
    }
}

/// The bucket of a latency in microseconds.
fn bucket_of(us: u64) -> usize {
    if us < BASE_US {
        return 0;
    }
    let log2 = 63 - us.leading_zeros() as usize;
    let doublings = log2 - BASE_US.trailing_zeros() as usize;
    let quarter = ((us >> (log2 - 2)) & 3) as usize;
    (1 + doublings * 4 + quarter).min(BUCKETS - 1)
}

/// The upper bound of bucket `i`, in milliseconds.
fn bucket_upper_ms(i: usize) -> f64 {
    if i == 0 {
        return BASE_US as f64 / 1000.0;
    }
    let doublings = (i - 1) / 4;
    let quarter = (i - 1) % 4;
    let lower = (BASE_US << doublings) as f64;
    lower * (1.0 + (quarter + 1) as f64 / 4.0) / 1000.0
}

#[derive(Debug, Clone, Default)]
struct Snapshot {
    requests: u64,
    errors: u64,
    latency: Vec<u64>,
}

impl Snapshot {
    fn minus(&self, earlier: Option<&Snapshot>) -> Snapshot {
        let Some(e) = earlier else {
            return self.clone();
        };
        Snapshot {
            requests: self.requests.saturating_sub(e.requests),
            errors: self.errors.saturating_sub(e.errors),
            latency: self
                .latency
                .iter()
                .zip(e.latency.iter().chain(std::iter::repeat(&0)))
                .map(|(a, b)| a.saturating_sub(*b))
                .collect(),
        }
    }

    fn percentile_ms(&self, q: f64) -> Option<f64> {
        let total: u64 = self.latency.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.latency.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(bucket_upper_ms(i));
            }
        }
        Some(bucket_upper_ms(BUCKETS - 1))
    }
}

/// One window's figures for one route (or all routes).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct WindowStats {
    /// Requests answered.
    pub requests: u64,
    /// Of which 5xx.
    pub errors: u64,
    /// Requests per second over the window.
    pub rps: f64,
    /// `errors / requests` (0 without requests).
    pub error_rate: f64,
    /// Latency percentiles (upper bound of the bucket), milliseconds; absent without requests.
    pub p50_ms: Option<f64>,
    /// 95th percentile.
    pub p95_ms: Option<f64>,
    /// 99th percentile.
    pub p99_ms: Option<f64>,
    /// The span actually covered, seconds (shorter than asked while the process is young).
    pub seconds: f64,
}

impl WindowStats {
    fn from(diff: &Snapshot, seconds: f64) -> Self {
        Self {
            requests: diff.requests,
            errors: diff.errors,
            rps: if seconds > 0.0 {
                diff.requests as f64 / seconds
            } else {
                0.0
            },
            error_rate: if diff.requests > 0 {
                diff.errors as f64 / diff.requests as f64
            } else {
                0.0
            },
            p50_ms: diff.percentile_ms(0.50),
            p95_ms: diff.percentile_ms(0.95),
            p99_ms: diff.percentile_ms(0.99),
            seconds,
        }
    }
}

/// Every route's totals and their recent snapshots.
#[derive(Debug)]
pub struct StatsHistory {
    started: Instant,
    routes: Mutex<BTreeMap<String, Arc<RouteTotals>>>,
    ring: Mutex<VecDeque<(Instant, BTreeMap<String, Snapshot>)>>,
}

impl Default for StatsHistory {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            routes: Mutex::default(),
            ring: Mutex::default(),
        }
    }
}

impl StatsHistory {
    /// The totals of `route`, created on first use (kept across reloads by name).
    pub fn totals(&self, route: &str) -> Arc<RouteTotals> {
        Arc::clone(self.routes.lock().entry(route.to_owned()).or_default())
    }

    /// Takes a snapshot of every route (call every [`TICK`]).
    pub fn tick(&self, now: Instant) {
        let snapshot: BTreeMap<String, Snapshot> = self
            .routes
            .lock()
            .iter()
            .map(|(name, totals)| (name.clone(), totals.snapshot()))
            .collect();
        let mut ring = self.ring.lock();
        ring.push_back((now, snapshot));
        while ring
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > HORIZON + TICK)
        {
            ring.pop_front();
        }
    }

    /// Each route's figures over the last `span` (and the sum over all routes), as of `now`.
    pub fn window(
        &self,
        now: Instant,
        span: Duration,
    ) -> (WindowStats, Vec<(String, WindowStats)>) {
        let current: BTreeMap<String, Snapshot> = self
            .routes
            .lock()
            .iter()
            .map(|(name, totals)| (name.clone(), totals.snapshot()))
            .collect();
        let ring = self.ring.lock();
        // The newest snapshot at least `span` old; none while the process is younger than
        // `span`, and then the window covers everything since start.
        let (base_at, base) = match ring
            .iter()
            .rev()
            .find(|(at, _)| now.duration_since(*at) >= span)
        {
            Some((at, snap)) => (*at, Some(snap)),
            None => (self.started, None),
        };
        let seconds = now.duration_since(base_at).as_secs_f64();
        let mut all = Snapshot {
            latency: vec![0; BUCKETS],
            ..Snapshot::default()
        };
        let routes = current
            .iter()
            .map(|(name, snap)| {
                let diff = snap.minus(base.and_then(|b| b.get(name)));
                all.requests += diff.requests;
                all.errors += diff.errors;
                for (a, d) in all.latency.iter_mut().zip(&diff.latency) {
                    *a += d;
                }
                (name.clone(), WindowStats::from(&diff, seconds))
            })
            .collect();
        (WindowStats::from(&all, seconds), routes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_a_quarter_wide_and_ordered() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(63), 0);
        assert_eq!(bucket_of(64), 1);
        assert_eq!(bucket_of(80), 2);
        assert_eq!(bucket_of(128), 5);
        let mut last = 0;
        for us in (64..40_000_000).step_by(997) {
            let b = bucket_of(us);
            assert!(b >= last, "{us}");
            last = b;
            let upper = bucket_upper_ms(b) * 1000.0;
            if b < BUCKETS - 1 {
                assert!(
                    upper > us as f64 && upper <= us as f64 * 1.26,
                    "{us} -> {upper}"
                );
            }
        }
    }

    #[test]
    fn windows_are_differences_of_snapshots() {
        let history = StatsHistory::default();
        let api = history.totals("api");
        let t0 = Instant::now();
        for _ in 0..90 {
            api.record(Duration::from_millis(2), false);
        }
        for _ in 0..10 {
            api.record(Duration::from_millis(200), true);
        }
        history.tick(t0 + Duration::from_secs(60));
        for _ in 0..50 {
            api.record(Duration::from_millis(1), false);
        }
        let (all, routes) = history.window(t0 + Duration::from_secs(120), Duration::from_secs(60));
        assert_eq!(routes.len(), 1);
        assert_eq!(all.requests, 50, "only what came after the snapshot");
        assert_eq!(all.errors, 0);
        assert!((all.rps - 50.0 / 60.0).abs() < 1e-9);
        let p99 = all.p99_ms.unwrap();
        assert!((1.0..=1.25).contains(&p99), "{p99}");

        let (long, _) = history.window(t0 + Duration::from_secs(120), Duration::from_secs(300));
        assert_eq!(
            long.requests, 150,
            "a window longer than the process covers everything"
        );
        assert_eq!(long.errors, 10);
        let p95 = long.p95_ms.unwrap();
        assert!((200.0..=250.0).contains(&p95), "{p95}");
        assert!((long.error_rate - 10.0 / 150.0).abs() < 1e-9);
    }
}
