//! The adaptive concurrency limit's algorithm: AIMD on latency, as a pure state machine fed
//! explicit samples, so its decisions are tested without a clock or a server.
//!
//! **Which and why.** AIMD (additive increase, multiplicative decrease: TCP Reno's congestion
//! avoidance, and Netflix concurrency-limits' `AIMDLimit`), with the "slow" signal taken
//! against a long-term latency baseline as in Netflix's `Gradient2Limit`. It was chosen over
//! Gradient2 itself because every decision is one comparison and one multiplication, so an
//! operator can predict it from the parameters below, and because a failed call has to shrink
//! the limit too, which Gradient2 ignores.
//!
//! For each sample (one call's latency to the response head, whether it failed, and how many
//! calls were in flight):
//!
//! - **Baseline**: an exponentially weighted moving average of the latencies of calls that did
//!   not fail, weight `1 / baseline_window` per sample (the first sample seeds it). Failed
//!   calls are left out: refused connections fail fast and would drag it down. A lasting shift
//!   in latency becomes the new baseline after a few `baseline_window`s of samples, as
//!   Gradient2's long-term RTT does, so a slower but healthy upstream is not held at
//!   `min_limit` forever.
//! - **Decrease**: a call that failed, or took longer than `tolerance` × the baseline,
//!   multiplies the limit by `backoff`, at most once per "round": only calls admitted since the
//!   last decrease may decrease it again (TCP's one reduction per window, QUIC's recovery
//!   period, RFC 9002 §7.3.2), so a burst of slow calls that were all in flight together
//!   counts as one signal instead of collapsing the limit to `min_limit`.
//! - **Increase**: any other call adds `increase / limit`, about `increase` per limit's worth
//!   of good calls (one per round trip, like TCP), but only while the limit is in use (at
//!   least half of it in flight): an idle limit proves nothing, and would otherwise grow to
//!   `max_limit` and admit a burst the upstream never showed it can take.
//!
//! The limit is kept as a real number and used rounded down, never below `min_limit` nor above
//! `max_limit`.

use std::time::Duration;

/// The adaptive mode of a [`ConcurrencyLimit`](crate::ConcurrencyLimit): AIMD on latency.
/// `max_in_flight` of the [`ConcurrencyConfig`](crate::ConcurrencyConfig) is the starting
/// limit.
///
/// Each call reports its latency to the response head and whether it failed. A failed call, or
/// one slower than `tolerance` × the baseline latency (a moving average over about
/// `baseline_window` calls that did not fail), multiplies the limit by `backoff`, once per
/// round of calls admitted together. Any other call adds `increase / limit` while at least half
/// the limit is in use. A lasting change of latency becomes the new baseline after a few
/// `baseline_window`s of calls. AIMD (TCP's congestion avoidance, Netflix concurrency-limits'
/// `AIMDLimit`) rather than Gradient2: each decision is one comparison and one multiplication,
/// predictable from these parameters, and failures shrink the limit too.
///
/// Out-of-range values are corrected when the limit is built: `min_limit` at least 1,
/// `max_limit` at least `min_limit`, and a `tolerance` ≤ 1, a `backoff` outside (0, 1), an
/// `increase` ≤ 0 or a `baseline_window` < 1 take their defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptiveConfig {
    /// The limit never goes below this (default 1).
    pub min_limit: usize,
    /// The limit never goes above this (default 1000).
    pub max_limit: usize,
    /// A call slower than this many times the baseline latency counts as slow (default 2.0).
    pub tolerance: f64,
    /// A slow or failed call multiplies the limit by this (default 0.9).
    pub backoff: f64,
    /// Good calls raise the limit by about this much per limit's worth of calls (default 1.0).
    pub increase: f64,
    /// Samples the baseline latency averages over (default 200).
    pub baseline_window: f64,
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        Self {
            min_limit: 1,
            max_limit: 1000,
            tolerance: 2.0,
            backoff: 0.9,
            increase: 1.0,
            baseline_window: 200.0,
        }
    }
}

impl AdaptiveConfig {
    /// The config with its bounds ordered and out-of-range parameters at their defaults, and
    /// `max_limit` within what a semaphore can count.
    pub(crate) fn sanitized(self) -> Self {
        let d = Self::default();
        let min_limit = self.min_limit.max(1);
        let max_limit = self.max_limit.clamp(
            min_limit,
            tokio::sync::Semaphore::MAX_PERMITS.max(min_limit),
        );
        Self {
            min_limit,
            max_limit,
            tolerance: if self.tolerance > 1.0 && self.tolerance.is_finite() {
                self.tolerance
            } else {
                d.tolerance
            },
            backoff: if self.backoff > 0.0 && self.backoff < 1.0 {
                self.backoff
            } else {
                d.backoff
            },
            increase: if self.increase > 0.0 && self.increase.is_finite() {
                self.increase
            } else {
                d.increase
            },
            baseline_window: if self.baseline_window >= 1.0 && self.baseline_window.is_finite() {
                self.baseline_window
            } else {
                d.baseline_window
            },
        }
    }
}

/// One finished call, as the algorithm sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sample {
    /// Time from admission to the response head.
    pub(crate) latency: Duration,
    /// A 5xx or no response.
    pub(crate) failed: bool,
    /// Calls in flight when it finished (itself included).
    pub(crate) in_flight: usize,
    /// [`Aimd::round`] when the call was admitted.
    pub(crate) round: u64,
}

/// The AIMD state: the limit, the baseline latency and the decrease round.
#[derive(Debug, Clone)]
pub(crate) struct Aimd {
    config: AdaptiveConfig,
    estimate: f64,
    /// Seconds; `None` until the first call that did not fail.
    baseline: Option<f64>,
    /// How many decreases so far: calls admitted in an earlier round cannot decrease again.
    round: u64,
}

impl Aimd {
    /// Starts at `initial`, within the bounds of the (sanitized) `config`.
    pub(crate) fn new(config: AdaptiveConfig, initial: usize) -> Self {
        let config = config.sanitized();
        Self {
            estimate: initial.clamp(config.min_limit, config.max_limit) as f64,
            config,
            baseline: None,
            round: 0,
        }
    }

    /// The limit now.
    pub(crate) fn limit(&self) -> usize {
        // `as` saturates; the clamp keeps the bounds whatever rounding did.
        (self.estimate.floor() as usize).clamp(self.config.min_limit, self.config.max_limit)
    }

    /// The decrease round new calls are admitted in.
    pub(crate) fn round(&self) -> u64 {
        self.round
    }

    /// The baseline latency, once a call has succeeded.
    #[cfg(test)]
    pub(crate) fn baseline(&self) -> Option<Duration> {
        self.baseline.map(Duration::from_secs_f64)
    }

    /// Takes one sample into account; returns the limit after it.
    pub(crate) fn update(&mut self, sample: Sample) -> usize {
        let c = &self.config;
        let latency = sample.latency.as_secs_f64();
        let slow = self.baseline.is_some_and(|b| latency > b * c.tolerance);
        if !sample.failed {
            self.baseline = Some(match self.baseline {
                None => latency,
                Some(b) => b + (latency - b) / c.baseline_window,
            });
        }
        if sample.failed || slow {
            if sample.round == self.round {
                self.estimate = (self.estimate * c.backoff).max(c.min_limit as f64);
                self.round += 1;
            }
        } else if sample.in_flight.saturating_mul(2) >= self.limit() {
            self.estimate = (self.estimate + c.increase / self.estimate).min(c.max_limit as f64);
        }
        self.limit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn aimd(min: usize, max: usize, initial: usize) -> Aimd {
        Aimd::new(
            AdaptiveConfig {
                min_limit: min,
                max_limit: max,
                ..AdaptiveConfig::default()
            },
            initial,
        )
    }

    /// A sample of a call admitted in the current round, with the limit fully in use.
    fn sample(a: &Aimd, latency: Duration, failed: bool) -> Sample {
        Sample {
            latency,
            failed,
            in_flight: a.limit(),
            round: a.round(),
        }
    }

    fn feed(a: &mut Aimd, n: usize, latency: Duration, failed: bool) {
        for _ in 0..n {
            let s = sample(a, latency, failed);
            a.update(s);
        }
    }

    #[test]
    fn a_sustained_latency_rise_shrinks_the_limit_to_the_minimum() {
        let mut a = aimd(4, 100, 100);
        feed(&mut a, 50, 10 * MS, false);
        assert_eq!(
            a.limit(),
            100,
            "steady latency at the maximum keeps it there"
        );
        let mut limits = Vec::new();
        for _ in 0..60 {
            let s = sample(&a, 100 * MS, false);
            limits.push(a.update(s));
        }
        assert!(
            limits.windows(2).take(20).all(|w| w[1] < w[0]),
            "every slow call of a new round shrinks it: {limits:?}"
        );
        assert_eq!(a.limit(), 4, "{limits:?}");
    }

    #[test]
    fn good_latency_grows_the_limit_to_the_maximum() {
        let mut a = aimd(1, 50, 1);
        feed(&mut a, 5_000, 10 * MS, false);
        assert_eq!(a.limit(), 50);
        feed(&mut a, 100, 10 * MS, false);
        assert_eq!(a.limit(), 50, "never above the maximum");
    }

    #[test]
    fn growth_is_about_one_per_limits_worth_of_good_calls() {
        let mut a = aimd(1, 1000, 20);
        feed(&mut a, 20, 10 * MS, false);
        assert_eq!(a.limit(), 20, "20 calls at a limit of 20 add about one");
        feed(&mut a, 1, 10 * MS, false);
        assert_eq!(a.limit(), 21);
    }

    #[test]
    fn an_idle_limit_does_not_grow() {
        let mut a = aimd(1, 100, 10);
        for _ in 0..1_000 {
            a.update(Sample {
                latency: 10 * MS,
                failed: false,
                in_flight: 4,
                round: a.round(),
            });
        }
        assert_eq!(a.limit(), 10, "4 in flight of 10 is below half");
    }

    #[test]
    fn failures_shrink_the_limit_whatever_their_latency() {
        let mut a = aimd(2, 100, 100);
        feed(&mut a, 10, 10 * MS, false);
        feed(&mut a, 1, MS, true);
        assert_eq!(a.limit(), 90, "one failure: × 0.9");
        feed(&mut a, 100, MS, true);
        assert_eq!(a.limit(), 2);
        assert_eq!(
            a.baseline(),
            Some(10 * MS),
            "fast failures leave the baseline alone"
        );
    }

    #[test]
    fn a_burst_of_slow_calls_admitted_together_shrinks_it_once() {
        let mut a = aimd(1, 100, 100);
        feed(&mut a, 10, 10 * MS, false);
        let round = a.round();
        for _ in 0..50 {
            a.update(Sample {
                latency: 100 * MS,
                failed: true,
                in_flight: 100,
                round,
            });
        }
        assert_eq!(a.limit(), 90);
    }

    #[test]
    fn a_lasting_shift_in_latency_becomes_the_new_baseline() {
        let mut a = aimd(1, 100, 100);
        feed(&mut a, 10, 10 * MS, false);
        feed(&mut a, 2_000, 100 * MS, false);
        let baseline = a.baseline().unwrap();
        assert!(baseline > 90 * MS, "{baseline:?}");
        let low = a.limit();
        feed(&mut a, 5_000, 100 * MS, false);
        assert!(a.limit() > low, "it grows again at the new normal");
    }

    #[test]
    fn the_limit_never_leaves_its_bounds() {
        // A fixed xorshift sequence: reproducible, no dependency.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut a = aimd(3, 40, 1_000);
        assert_eq!(a.limit(), 40, "the start is clamped too");
        for _ in 0..100_000 {
            let r = next();
            let s = Sample {
                latency: Duration::from_micros(r % 200_000),
                failed: r % 7 == 0,
                in_flight: (r >> 8) as usize % 60,
                round: a.round() - (r >> 16) % 2 * u64::from(a.round() > 0),
            };
            let limit = a.update(s);
            assert!((3..=40).contains(&limit), "{limit}");
        }
    }

    #[test]
    fn out_of_range_parameters_are_corrected() {
        let c = AdaptiveConfig {
            min_limit: 0,
            max_limit: 0,
            tolerance: 0.5,
            backoff: 1.5,
            increase: f64::NAN,
            baseline_window: 0.0,
        }
        .sanitized();
        let d = AdaptiveConfig::default();
        assert_eq!((c.min_limit, c.max_limit), (1, 1));
        assert_eq!(
            (c.tolerance, c.backoff, c.increase, c.baseline_window),
            (d.tolerance, d.backoff, d.increase, d.baseline_window)
        );
    }
}
