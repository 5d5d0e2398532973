//! Load balancers: choose one target of an upstream per request.
//!
//! Every balancer works on target indices and tracks in-flight requests per target (the
//! [`InFlight`] guard returned with each pick decrements on drop), so `least_request` has its
//! signal and the other algorithms get the count for free.

mod consistent_hash;
mod least_request;
mod weighted;

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
};

pub use consistent_hash::Maglev;
use portcullis_config::Balance;

/// Chooses targets for one upstream.
#[derive(Debug)]
pub struct Balancer {
    algorithm: Algorithm,
    in_flight: Arc<[AtomicUsize]>,
    /// Health per target (from active checks); all healthy without checks.
    healthy: Arc<[AtomicBool]>,
    /// With no healthy target: pick anyway (true) or refuse (false).
    fail_open: bool,
    /// Passive ejection per target: milliseconds since `epoch` until which it is set aside
    /// (0: not ejected).
    ejected_until: Arc<[AtomicU64]>,
    epoch: std::time::Instant,
}

#[derive(Debug)]
enum Algorithm {
    RoundRobin { next: AtomicUsize },
    Weighted(weighted::SmoothWeighted),
    LeastRequest,
    ConsistentHash(Maglev),
    Random,
}

impl Balancer {
    /// A balancer over targets with these names and weights (one entry per target, in order).
    /// Names feed consistent hashing, so a target keeps its keys when others are added.
    pub fn new(kind: Balance, names: &[&str], weights: &[u32]) -> Self {
        let n = names.len();
        let algorithm = match kind {
            Balance::RoundRobin => Algorithm::RoundRobin {
                next: AtomicUsize::new(0),
            },
            Balance::Weighted => Algorithm::Weighted(weighted::SmoothWeighted::new(weights)),
            Balance::LeastRequest => Algorithm::LeastRequest,
            Balance::ConsistentHash => Algorithm::ConsistentHash(Maglev::new(names)),
            Balance::Random => Algorithm::Random,
        };
        Self {
            algorithm,
            in_flight: (0..n).map(|_| AtomicUsize::new(0)).collect(),
            healthy: (0..n).map(|_| AtomicBool::new(true)).collect(),
            fail_open: true,
            ejected_until: (0..n).map(|_| AtomicU64::new(0)).collect(),
            epoch: std::time::Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Sets target `index` aside for `duration` (passive outlier ejection).
    pub fn eject(&self, index: usize, duration: std::time::Duration) {
        let until = self
            .now_ms()
            .saturating_add(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
            .max(1);
        self.ejected_until[index].store(until, Ordering::Relaxed);
    }

    /// Ends an ejection early.
    pub fn reinstate(&self, index: usize) {
        self.ejected_until[index].store(0, Ordering::Relaxed);
    }

    /// Whether target `index` is set aside now.
    pub fn is_ejected(&self, index: usize) -> bool {
        let until = self.ejected_until[index].load(Ordering::Relaxed);
        until != 0 && self.now_ms() < until
    }

    /// How many targets are set aside now.
    pub fn ejected_count(&self) -> usize {
        (0..self.len()).filter(|&i| self.is_ejected(i)).count()
    }

    /// Healthy and not ejected. The clock is read only for ejected targets.
    fn available(&self, index: usize) -> bool {
        if !self.healthy[index].load(Ordering::Relaxed) {
            return false;
        }
        let until = self.ejected_until[index].load(Ordering::Relaxed);
        until == 0 || self.now_ms() >= until
    }

    /// With no healthy target, refuse to pick (`fail_closed`) instead of picking anyway.
    pub fn fail_closed(mut self) -> Self {
        self.fail_open = false;
        self
    }

    /// Marks target `index` healthy or not; unhealthy targets are skipped while any is healthy.
    pub fn set_healthy(&self, index: usize, healthy: bool) {
        self.healthy[index].store(healthy, Ordering::Relaxed);
    }

    /// Whether target `index` is healthy.
    pub fn is_healthy(&self, index: usize) -> bool {
        self.healthy[index].load(Ordering::Relaxed)
    }

    /// How many targets are healthy.
    pub fn healthy_count(&self) -> usize {
        self.healthy
            .iter()
            .filter(|h| h.load(Ordering::Relaxed))
            .count()
    }

    /// Number of targets.
    pub fn len(&self) -> usize {
        self.in_flight.len()
    }

    /// Whether there are no targets (never true for a validated config).
    pub fn is_empty(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// Picks a target. `hash_key` is the consistent-hash key; without one, consistent hashing
    /// falls back to a random target (a request without the header or cookie has no affinity).
    /// An unhealthy pick moves on to the next healthy target (keys of a consistent hash stay
    /// where they are for healthy targets). `None` only when no target is healthy and the
    /// balancer fails closed.
    pub fn pick(&self, hash_key: Option<&[u8]>) -> Option<InFlight> {
        let n = self.len();
        let index = match &self.algorithm {
            _ if n <= 1 => 0,
            Algorithm::RoundRobin { next } => next.fetch_add(1, Ordering::Relaxed) % n,
            Algorithm::Weighted(w) => w.pick(),
            Algorithm::LeastRequest => least_request::pick(&self.in_flight),
            Algorithm::ConsistentHash(m) => match hash_key {
                Some(key) => m.pick(key),
                None => fastrand::usize(..n),
            },
            Algorithm::Random => fastrand::usize(..n),
        };
        let index = if self.available(index) {
            index
        } else {
            match (1..n)
                .map(|step| (index + step) % n)
                .find(|&i| self.available(i))
            {
                Some(i) => i,
                None if self.fail_open => index,
                None => return None,
            }
        };
        self.in_flight[index].fetch_add(1, Ordering::Relaxed);
        Some(InFlight {
            index,
            counters: Arc::clone(&self.in_flight),
        })
    }

    /// Counts a request in flight to target `index`, chosen by the caller (a retry moving to
    /// another target).
    pub fn pick_at(&self, index: usize) -> InFlight {
        self.in_flight[index].fetch_add(1, Ordering::Relaxed);
        InFlight {
            index,
            counters: Arc::clone(&self.in_flight),
        }
    }

    /// Requests in flight to target `index`.
    pub fn in_flight(&self, index: usize) -> usize {
        self.in_flight[index].load(Ordering::Relaxed)
    }
}

/// A picked target; counts as in flight until dropped (keep it alive with the response body).
#[derive(Debug)]
pub struct InFlight {
    index: usize,
    counters: Arc<[AtomicUsize]>,
}

impl InFlight {
    /// Index of the picked target.
    pub fn index(&self) -> usize {
        self.index
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.counters[self.index].fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shares(b: &Balancer, picks: usize) -> Vec<f64> {
        let mut counts = vec![0usize; b.len()];
        for _ in 0..picks {
            counts[b.pick(None).unwrap().index()] += 1;
        }
        counts.iter().map(|&c| c as f64 / picks as f64).collect()
    }

    #[test]
    fn unhealthy_targets_are_skipped_and_fail_closed_refuses() {
        let b = Balancer::new(Balance::RoundRobin, &["a", "b", "c"], &[1, 1, 1]);
        b.set_healthy(1, false);
        let picks: Vec<usize> = (0..6).map(|_| b.pick(None).unwrap().index()).collect();
        assert!(!picks.contains(&1), "{picks:?}");
        assert_eq!(b.healthy_count(), 2);
        for i in 0..3 {
            b.set_healthy(i, false);
        }
        assert!(b.pick(None).is_some(), "fail open picks anyway");
        let closed = Balancer::new(Balance::Random, &["a", "b"], &[1, 1]).fail_closed();
        closed.set_healthy(0, false);
        assert_eq!(closed.pick(None).unwrap().index(), 1);
        closed.set_healthy(1, false);
        assert!(closed.pick(None).is_none());
    }

    #[test]
    fn ejected_targets_are_skipped_until_their_time_is_up() {
        let b = Balancer::new(Balance::RoundRobin, &["a", "b"], &[1, 1]);
        b.eject(1, std::time::Duration::from_secs(60));
        assert!(b.is_ejected(1));
        assert_eq!(b.ejected_count(), 1);
        assert!((0..4).all(|_| b.pick(None).unwrap().index() == 0));
        b.reinstate(1);
        assert!(!b.is_ejected(1));
        let picks: Vec<usize> = (0..4).map(|_| b.pick(None).unwrap().index()).collect();
        assert!(picks.contains(&1), "{picks:?}");
    }

    #[test]
    fn round_robin_visits_targets_in_turn() {
        let b = Balancer::new(Balance::RoundRobin, &["a", "b", "c"], &[1, 1, 1]);
        let order: Vec<usize> = (0..6).map(|_| b.pick(None).unwrap().index()).collect();
        assert_eq!(order, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn weighted_three_to_one_gives_75_percent_within_2_points() {
        let b = Balancer::new(Balance::Weighted, &["a", "b"], &[3, 1]);
        let s = shares(&b, 10_000);
        assert!((s[0] - 0.75).abs() <= 0.02, "share of a: {}", s[0]);
    }

    #[test]
    fn random_spreads_evenly_within_2_points() {
        let b = Balancer::new(Balance::Random, &["a", "b", "c", "d"], &[1; 4]);
        for s in shares(&b, 10_000) {
            assert!((s - 0.25).abs() <= 0.02, "share {s}");
        }
    }

    #[test]
    fn in_flight_counts_follow_the_guards() {
        let b = Balancer::new(Balance::RoundRobin, &["a", "b"], &[1, 1]);
        let g1 = b.pick(None);
        let g2 = b.pick(None);
        let g3 = b.pick(None);
        assert_eq!((b.in_flight(0), b.in_flight(1)), (2, 1));
        drop((g1, g3));
        assert_eq!((b.in_flight(0), b.in_flight(1)), (0, 1));
        drop(g2);
        assert_eq!(b.in_flight(1), 0);
    }

    #[test]
    fn least_request_avoids_the_busy_target() {
        let b = Balancer::new(Balance::LeastRequest, &["a", "b", "c"], &[1; 3]);
        // Hold 50 requests on target 0; new picks should almost never choose it.
        let held: Vec<_> = (0..200)
            .map(|_| b.pick(None).unwrap())
            .filter(|g| g.index() == 0)
            .take(50)
            .collect();
        assert!(b.in_flight(0) >= 50 || held.len() < 50);
        let mut counts = [0usize; 3];
        for _ in 0..3000 {
            counts[b.pick(None).unwrap().index()] += 1;
        }
        // With power of two choices, target 0 wins only when both samples land on it (1/9).
        assert!(counts[0] < 3000 / 6, "busy target got {counts:?}");
    }

    #[test]
    fn consistent_hash_is_sticky_per_key() {
        let b = Balancer::new(Balance::ConsistentHash, &["a", "b", "c"], &[1; 3]);
        for key in ["user-1", "user-2", "user-3", "user-42"] {
            let first = b.pick(Some(key.as_bytes())).unwrap().index();
            for _ in 0..20 {
                assert_eq!(b.pick(Some(key.as_bytes())).unwrap().index(), first);
            }
        }
    }
}
