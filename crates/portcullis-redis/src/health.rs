//! The breaker in front of Redis: after a failure, calls stop for a back-off period, then one
//! probe at a time tests whether Redis answers again.
//!
//! One failure is enough to open it: callers all have a local fallback, and a Redis that misses
//! its budget once under load is better given a moment than a queue. Back-off doubles from
//! 250 ms to 5 s while probes keep failing.

use std::{
    sync::atomic::{AtomicU8, Ordering},
    time::{Duration, Instant},
};

use parking_lot::Mutex;

const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

const UP: u8 = 0;
const DOWN: u8 = 1;
const PROBING: u8 = 2;

/// What the breaker says about Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthState {
    /// Calls go through.
    Up,
    /// Calls are refused until the back-off ends.
    Down,
    /// One probe call is testing Redis; other calls are refused.
    Probing,
}

impl HealthState {
    /// `up`, `down` or `probing`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Down => "down",
            Self::Probing => "probing",
        }
    }
}

/// The breaker's state; the fast path (Redis up) is one atomic load.
#[derive(Debug)]
pub struct RedisHealth {
    state: AtomicU8,
    timing: Mutex<Timing>,
}

#[derive(Debug)]
struct Timing {
    retry_at: Instant,
    backoff: Duration,
}

/// Leave to make one call; report its outcome.
#[derive(Debug)]
#[must_use = "report the outcome"]
pub(crate) struct Permit<'a> {
    health: &'a RedisHealth,
    probe: bool,
}

impl RedisHealth {
    pub(crate) fn new() -> Self {
        Self {
            state: AtomicU8::new(UP),
            timing: Mutex::new(Timing {
                retry_at: Instant::now(),
                backoff: FIRST_BACKOFF,
            }),
        }
    }

    /// The current state.
    pub fn state(&self) -> HealthState {
        match self.state.load(Ordering::Acquire) {
            UP => HealthState::Up,
            DOWN => HealthState::Down,
            _ => HealthState::Probing,
        }
    }

    /// Whether calls are going through.
    pub fn is_up(&self) -> bool {
        self.state() == HealthState::Up
    }

    pub(crate) fn try_acquire(&self) -> Option<Permit<'_>> {
        self.try_acquire_at(Instant::now())
    }

    fn try_acquire_at(&self, now: Instant) -> Option<Permit<'_>> {
        match self.state.load(Ordering::Acquire) {
            UP => Some(Permit {
                health: self,
                probe: false,
            }),
            DOWN => {
                let timing = self.timing.lock();
                if now < timing.retry_at {
                    return None;
                }
                // Only one caller wins the probe.
                self.state
                    .compare_exchange(DOWN, PROBING, Ordering::AcqRel, Ordering::Acquire)
                    .ok()
                    .map(|_| Permit {
                        health: self,
                        probe: true,
                    })
            }
            _ => None,
        }
    }

    /// Records a failure; true when it changed the state from up (log once per outage).
    fn fail_at(&self, now: Instant, probe: bool) -> bool {
        let mut timing = self.timing.lock();
        let was = self.state.load(Ordering::Acquire);
        if was == DOWN {
            return false;
        }
        if probe {
            timing.backoff = (timing.backoff * 2).min(MAX_BACKOFF);
        } else if was == PROBING {
            // A call that started before the outage; the probe decides.
            return false;
        } else {
            timing.backoff = FIRST_BACKOFF;
        }
        timing.retry_at = now + timing.backoff;
        self.state.store(DOWN, Ordering::Release);
        was == UP
    }

    fn succeed(&self, probe: bool) {
        if probe {
            let _timing = self.timing.lock();
            self.state.store(UP, Ordering::Release);
            tracing::info!("redis answers again; leaving local fallbacks");
        }
    }
}

impl Permit<'_> {
    /// The call succeeded.
    pub(crate) fn succeeded(self) {
        self.health.succeed(self.probe);
    }

    /// The call failed; true when this opened the breaker.
    pub(crate) fn failed(self) -> bool {
        self.failed_at(Instant::now())
    }

    fn failed_at(self, now: Instant) -> bool {
        self.health.fail_at(now, self.probe)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_stops_calls_until_one_probe_succeeds() {
        let health = RedisHealth::new();
        let t0 = Instant::now();
        assert!(health.try_acquire_at(t0).expect("up").failed_at(t0));
        assert_eq!(health.state(), HealthState::Down);
        assert!(
            health
                .try_acquire_at(t0 + Duration::from_millis(100))
                .is_none()
        );
        let probe = health
            .try_acquire_at(t0 + FIRST_BACKOFF)
            .expect("probe after the back-off");
        assert_eq!(health.state(), HealthState::Probing);
        assert!(
            health.try_acquire_at(t0 + FIRST_BACKOFF).is_none(),
            "one probe at a time"
        );
        probe.succeeded();
        assert!(health.is_up());
    }

    #[test]
    fn failed_probes_double_the_backoff_up_to_the_cap() {
        let health = RedisHealth::new();
        let mut now = Instant::now();
        assert!(health.try_acquire_at(now).expect("up").failed_at(now));
        let mut expected = FIRST_BACKOFF;
        for _ in 0..8 {
            assert!(
                health
                    .try_acquire_at(now + expected - Duration::from_millis(1))
                    .is_none()
            );
            now += expected;
            let probe = health.try_acquire_at(now).expect("probe");
            assert!(
                !probe.failed_at(now),
                "only the first failure reports the outage"
            );
            expected = (expected * 2).min(MAX_BACKOFF);
        }
        assert_eq!(expected, MAX_BACKOFF);
    }
}
