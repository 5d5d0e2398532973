//! What a limit allows, and the two algorithms' arithmetic on one key's state.
//!
//! Time is nanoseconds on the deciding clock: the process's monotonic clock for local limits,
//! Redis's `TIME` for shared ones (the Lua script in `redis_script.rs` mirrors this file line by
//! line, so both backends answer alike).

use std::time::Duration;

/// `limit` requests per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests (cost units) per period; at least 1.
    pub limit: u64,
    /// The period; at least 1 ms.
    pub period: Duration,
}

impl Rate {
    /// `limit` per `period`.
    pub fn new(limit: u64, period: Duration) -> Self {
        Self {
            limit: limit.max(1),
            period: period.max(Duration::from_millis(1)),
        }
    }

    fn period_ns(self) -> u64 {
        u64::try_from(self.period.as_nanos()).unwrap_or(u64::MAX)
    }
}

/// How a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Algorithm {
    /// Generic cell rate algorithm: requests are spaced `period / limit` apart on average, with
    /// up to `burst` at once. Smooth, one timestamp of state per key.
    #[default]
    Gcra,
    /// Sliding-window counter: at most `limit` per window, the previous window's count weighted
    /// by how much of it still overlaps. "N per window" semantics.
    SlidingWindow,
}

/// One limit: a rate, a burst (GCRA only) and an algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// The sustained rate.
    pub rate: Rate,
    /// The most requests allowed at once from an idle key (GCRA); defaults to `rate.limit`.
    pub burst: u64,
    /// The algorithm.
    pub algorithm: Algorithm,
}

impl Quota {
    /// A GCRA quota with `burst` equal to the rate's limit.
    pub fn gcra(rate: Rate) -> Self {
        Self {
            rate,
            burst: rate.limit,
            algorithm: Algorithm::Gcra,
        }
    }

    /// A sliding-window quota.
    pub fn sliding_window(rate: Rate) -> Self {
        Self {
            rate,
            burst: rate.limit,
            algorithm: Algorithm::SlidingWindow,
        }
    }

    /// The same quota with `burst`.
    #[must_use]
    pub fn with_burst(mut self, burst: u64) -> Self {
        self.burst = burst.max(1);
        self
    }

    /// The most a single request may cost and still ever pass.
    pub fn capacity(&self) -> u64 {
        match self.algorithm {
            Algorithm::Gcra => self.burst,
            Algorithm::SlidingWindow => self.rate.limit,
        }
    }

    /// This quota shared by `n` instances each enforcing its part (the fallback when Redis is
    /// unavailable): limit and burst divided, never below 1.
    #[must_use]
    pub fn divided(self, n: u64) -> Self {
        let n = n.max(1);
        Self {
            rate: Rate::new((self.rate.limit / n).max(1), self.rate.period),
            burst: (self.burst / n).max(1),
            algorithm: self.algorithm,
        }
    }

    /// The nanoseconds between two requests at the sustained rate (GCRA's emission interval).
    pub(crate) fn interval_ns(&self) -> u64 {
        (self.rate.period_ns() / self.rate.limit).max(1)
    }

    /// Window length in nanoseconds (sliding window).
    pub(crate) fn window_ns(&self) -> u64 {
        self.rate.period_ns()
    }
}

/// One key's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// GCRA's theoretical arrival time.
    Gcra { tat: u64 },
    /// Sliding window: the current window's index, its count, the previous window's count.
    Window {
        index: u64,
        current: u64,
        previous: u64,
    },
}

impl State {
    /// Whether the state still matters at `now` (else it equals no state and can be dropped).
    pub(crate) fn is_live(&self, now: u64, quota_window_ns: u64) -> bool {
        match *self {
            Self::Gcra { tat } => tat > now,
            Self::Window { index, .. } => index + 1 >= now / quota_window_ns.max(1),
        }
    }
}

/// The answer of one limit for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Whether the request fits.
    pub allowed: bool,
    /// The limit's size (requests per period), for `RateLimit-Limit`.
    pub limit: u64,
    /// Requests still allowed right after this one (or now, if refused).
    pub remaining: u64,
    /// Until the quota is whole again (GCRA) or the window ends (sliding window).
    pub reset: Duration,
    /// When refused: until the same request would pass.
    pub retry_after: Duration,
}

/// Decides one request of `cost` against `state` at `now`; returns the outcome and, when
/// allowed, the state to store.
pub(crate) fn decide(
    quota: &Quota,
    state: Option<State>,
    now: u64,
    cost: u64,
) -> (Outcome, Option<State>) {
    match quota.algorithm {
        Algorithm::Gcra => gcra(quota, state, now, cost),
        Algorithm::SlidingWindow => window(quota, state, now, cost),
    }
}

fn gcra(quota: &Quota, state: Option<State>, now: u64, cost: u64) -> (Outcome, Option<State>) {
    let interval = quota.interval_ns();
    let tolerance = interval.saturating_mul(quota.burst);
    let stored = match state {
        Some(State::Gcra { tat }) => tat,
        _ => now,
    };
    let tat = stored.max(now);
    let new_tat = tat.saturating_add(interval.saturating_mul(cost));
    if new_tat - now <= tolerance {
        let outcome = Outcome {
            allowed: true,
            limit: quota.rate.limit,
            remaining: (tolerance - (new_tat - now)) / interval,
            reset: Duration::from_nanos(new_tat - now),
            retry_after: Duration::ZERO,
        };
        (outcome, Some(State::Gcra { tat: new_tat }))
    } else {
        let outcome = Outcome {
            allowed: false,
            limit: quota.rate.limit,
            remaining: tolerance.saturating_sub(tat - now) / interval,
            reset: Duration::from_nanos(tat - now),
            retry_after: Duration::from_nanos(new_tat - tolerance - now),
        };
        (outcome, None)
    }
}

#[allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]
fn window(quota: &Quota, state: Option<State>, now: u64, cost: u64) -> (Outcome, Option<State>) {
    let size = quota.window_ns();
    let limit = quota.rate.limit;
    let index = now / size;
    let elapsed = now % size;
    let (current, previous) = match state {
        Some(State::Window {
            index: i,
            current,
            previous,
        }) if i == index => (current, previous),
        Some(State::Window {
            index: i, current, ..
        }) if i + 1 == index => (0, current),
        _ => (0, 0),
    };
    let overlap = (size - elapsed) as f64 / size as f64;
    let weighted = previous as f64 * overlap + current as f64;
    let to_window_end = Duration::from_nanos(size - elapsed);
    if weighted + cost as f64 <= limit as f64 {
        let outcome = Outcome {
            allowed: true,
            limit,
            remaining: (limit as f64 - weighted - cost as f64).floor() as u64,
            reset: to_window_end,
            retry_after: Duration::ZERO,
        };
        let next = State::Window {
            index,
            current: current + cost,
            previous,
        };
        return (outcome, Some(next));
    }
    // When would it fit? Within this window, once enough of the previous one has slid out;
    // else in the next, once enough of this one has.
    let retry_ns = if current + cost <= limit && previous > 0 {
        let free = (limit - cost - current) as f64;
        let at = size as f64 * (1.0 - free / previous as f64);
        (at.ceil() as u64).saturating_sub(elapsed).max(1)
    } else if cost <= limit {
        let at = if current == 0 {
            0.0
        } else {
            size as f64 * (1.0 - (limit - cost) as f64 / current as f64)
        };
        (size - elapsed) + at.ceil() as u64
    } else {
        // Costs more than the window holds: it never fits.
        u64::MAX
    };
    let outcome = Outcome {
        allowed: false,
        limit,
        remaining: (limit as f64 - weighted).max(0.0).floor() as u64,
        reset: to_window_end,
        retry_after: Duration::from_nanos(retry_ns),
    };
    (outcome, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn run(quota: &Quota, state: &mut Option<State>, now: u64, cost: u64) -> Outcome {
        let (outcome, next) = decide(quota, *state, now, cost);
        if let Some(next) = next {
            *state = Some(next);
        }
        outcome
    }

    #[test]
    fn gcra_allows_a_burst_then_the_steady_rate() {
        // 10 per second, burst 5: five at once, then one every 100 ms.
        let quota = Quota::gcra(Rate::new(10, Duration::from_secs(1))).with_burst(5);
        let mut state = None;
        let t0 = 1_000 * SEC;
        for left in (0..5).rev() {
            let o = run(&quota, &mut state, t0, 1);
            assert!(o.allowed);
            assert_eq!(o.remaining, left);
        }
        let refused = run(&quota, &mut state, t0, 1);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, Duration::from_millis(100));
        assert_eq!(refused.remaining, 0);
        // A refusal does not consume: at exactly t0 + 100 ms one more passes, and only one.
        let t1 = t0 + SEC / 10;
        assert!(run(&quota, &mut state, t1, 1).allowed);
        assert!(!run(&quota, &mut state, t1, 1).allowed);
        // Idle for long enough, the whole burst is back.
        let t2 = t1 + SEC;
        let o = run(&quota, &mut state, t2, 1);
        assert!(o.allowed);
        assert_eq!(o.remaining, 4);
    }

    #[test]
    fn gcra_cost_counts_as_that_many_requests() {
        let quota = Quota::gcra(Rate::new(10, Duration::from_secs(1)));
        let mut state = None;
        let o = run(&quota, &mut state, SEC, 4);
        assert_eq!(o.remaining, 6);
        assert!(!run(&quota, &mut state, SEC, 7).allowed, "7 > 6 left");
        assert!(run(&quota, &mut state, SEC, 6).allowed);
        assert_eq!(o.reset, Duration::from_millis(400));
    }

    #[test]
    fn sliding_window_counts_n_per_window_and_weights_the_previous_one() {
        let quota = Quota::sliding_window(Rate::new(10, Duration::from_secs(10)));
        let mut state = None;
        let w = 100 * 10 * SEC; // start of a window
        for _ in 0..10 {
            assert!(run(&quota, &mut state, w + SEC, 1).allowed);
        }
        let refused = run(&quota, &mut state, w + SEC, 1);
        assert!(!refused.allowed);
        // Full window: it fits when the next window has slid 1/10 past this one's start.
        assert_eq!(refused.retry_after, Duration::from_secs(9 + 1));
        // At 30% into the next window, 70% of the previous 10 still count: 7, so 3 fit.
        let next = w + 10 * SEC + 3 * SEC;
        for _ in 0..3 {
            assert!(run(&quota, &mut state, next, 1).allowed);
        }
        assert!(!run(&quota, &mut state, next, 1).allowed);
        // Two windows later, nothing counts.
        let o = run(&quota, &mut state, w + 30 * SEC, 1);
        assert!(o.allowed);
        assert_eq!(o.remaining, 9);
    }

    #[test]
    fn sliding_window_edges_never_admit_more_than_the_limit_across_the_boundary() {
        let quota = Quota::sliding_window(Rate::new(100, Duration::from_secs(60)));
        let mut state = None;
        let w = 1_000 * 60 * SEC;
        let mut admitted = 0;
        // 60 at the very end of a window, then a flood just after the boundary.
        for _ in 0..60 {
            admitted += u64::from(run(&quota, &mut state, w + 60 * SEC - 1, 1).allowed);
        }
        for _ in 0..200 {
            admitted += u64::from(run(&quota, &mut state, w + 60 * SEC + 1, 1).allowed);
        }
        assert_eq!(admitted, 100);
    }

    #[test]
    fn a_cost_above_capacity_never_passes() {
        let quota = Quota::sliding_window(Rate::new(5, Duration::from_secs(1)));
        let (o, next) = decide(&quota, None, SEC, 6);
        assert!(!o.allowed);
        assert!(next.is_none());
        assert_eq!(o.retry_after, Duration::from_nanos(u64::MAX));
    }

    #[test]
    fn divided_quotas_never_reach_zero() {
        let q = Quota::gcra(Rate::new(100, Duration::from_secs(60))).divided(3);
        assert_eq!((q.rate.limit, q.burst), (33, 33));
        let tiny = Quota::gcra(Rate::new(2, Duration::from_secs(1))).divided(10);
        assert_eq!((tiny.rate.limit, tiny.burst), (1, 1));
    }
}
