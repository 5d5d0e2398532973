//! A circuit breaker: closed (requests flow, outcomes counted), open (requests fail fast),
//! half-open (a few probes decide).
//!
//! It trips on `consecutive_failures` failures in a row, or when, over the rolling `window`
//! with at least `min_requests` requests, the failure rate reaches `failure_rate`. A failure is
//! what the caller says (the gateway: a 5xx, a refused or reset connection, a timeout, or a
//! call slower than `slow_call` when set). Open lasts `open_for`, doubled after each trip that
//! follows a failed half-open probe (at most `max_open_for`); then up to `half_open_probes`
//! requests are let through: that many successes close it, one failure opens it again.
//! Operators may force it open or closed, or reset it. Every state change is an event.
//!
//! Time is passed in (`now: Instant`), so tests drive it without sleeping.

use std::{
    collections::VecDeque,
    sync::atomic::{AtomicU8, Ordering},
    time::{Duration, Instant, SystemTime},
};

use parking_lot::Mutex;
use serde::Serialize;

/// How a breaker behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// Failures in a row that trip it (0: off).
    pub consecutive_failures: u32,
    /// Failure share over the window that trips it (0: off).
    pub failure_rate: f64,
    /// The window needs this many requests before the rate counts.
    pub min_requests: u32,
    /// The rolling window of the failure rate.
    pub window: Duration,
    /// First open period.
    pub open_for: Duration,
    /// The longest open period.
    pub max_open_for: Duration,
    /// Probes let through half-open; this many successes close it.
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_rate: 0.5,
            min_requests: 10,
            window: Duration::from_secs(10),
            open_for: Duration::from_secs(30),
            max_open_for: Duration::from_secs(300),
            half_open_probes: 2,
        }
    }
}

/// The breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Requests flow.
    Closed,
    /// Requests fail fast.
    Open,
    /// A few probes are let through.
    HalfOpen,
}

impl BreakerState {
    /// 0 closed, 1 open, 2 half-open (for a gauge).
    pub fn code(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::Open => 1,
            Self::HalfOpen => 2,
        }
    }
}

/// A state change.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BreakerEvent {
    /// From.
    pub from: BreakerState,
    /// To.
    pub to: BreakerState,
    /// Why (`consecutive failures`, `failure rate 0.62`, `probe failed`, `probes passed`,
    /// `open period over`, `forced open`, `forced closed`, `reset`).
    pub reason: String,
    /// When, seconds since the Unix epoch.
    pub at_unix: f64,
}

/// Refused: open (or half-open with every probe slot taken) for this much longer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    /// Time until the next probe may go through.
    pub retry_after: Duration,
}

/// Permission for one call; report its outcome with [`Breaker::record`].
#[derive(Debug)]
#[must_use = "report the outcome with Breaker::record"]
pub struct Ticket {
    probe: bool,
}

/// What the admin API shows.
#[derive(Debug, Clone, Serialize)]
pub struct BreakerSnapshot {
    /// The state.
    pub state: BreakerState,
    /// Forced by an operator (stays until closed or reset).
    pub forced: bool,
    /// Requests and failures in the current window.
    pub window_requests: u32,
    /// Failures in the current window.
    pub window_failures: u32,
    /// Failures in a row now.
    pub consecutive_failures: u32,
    /// Seconds until half-open, when open.
    pub open_remaining_seconds: Option<f64>,
    /// Recent state changes, oldest first.
    pub events: Vec<BreakerEvent>,
}

/// Events kept for the admin API.
const EVENTS_KEPT: usize = 32;
/// Buckets of the rolling window.
const BUCKETS: usize = 10;

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    forced: bool,
    consecutive: u32,
    /// (bucket start, requests, failures), oldest first.
    buckets: VecDeque<(Instant, u32, u32)>,
    open_until: Option<Instant>,
    current_open_for: Duration,
    probes_in_flight: u32,
    probe_successes: u32,
    events: VecDeque<BreakerEvent>,
}

/// One circuit breaker.
#[derive(Debug)]
pub struct Breaker {
    config: BreakerConfig,
    inner: Mutex<Inner>,
    /// `inner.state` mirrored (as [`BreakerState::code`]) for lock-free reads: a closed breaker
    /// admits without taking the lock, so the healthy path pays one lock per call, not two.
    state: AtomicU8,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                forced: false,
                consecutive: 0,
                buckets: VecDeque::with_capacity(BUCKETS + 1),
                open_until: None,
                current_open_for: config.open_for,
                probes_in_flight: 0,
                probe_successes: 0,
                events: VecDeque::with_capacity(EVENTS_KEPT),
            }),
            state: AtomicU8::new(0),
            config,
        }
    }

    /// May a call go through now?
    pub fn admit(&self, now: Instant) -> Result<Ticket, Rejected> {
        if self.state() == BreakerState::Closed {
            // A call racing with a trip gets through, as it would a moment earlier.
            return Ok(Ticket { probe: false });
        }
        let mut s = self.inner.lock();
        match s.state {
            BreakerState::Closed => Ok(Ticket { probe: false }),
            BreakerState::Open => {
                let until = s.open_until.unwrap_or(now);
                if s.forced || now < until {
                    return Err(Rejected {
                        retry_after: until
                            .saturating_duration_since(now)
                            .max(Duration::from_secs(1)),
                    });
                }
                self.transition(&mut s, BreakerState::HalfOpen, "open period over".into());
                s.probes_in_flight = 1;
                Ok(Ticket { probe: true })
            }
            BreakerState::HalfOpen => {
                if s.probes_in_flight + s.probe_successes < self.config.half_open_probes {
                    s.probes_in_flight += 1;
                    Ok(Ticket { probe: true })
                } else {
                    Err(Rejected {
                        retry_after: Duration::from_secs(1),
                    })
                }
            }
        }
    }

    /// Reports the outcome of an admitted call.
    // By value on purpose: a ticket is reported once.
    #[allow(clippy::needless_pass_by_value)]
    pub fn record(&self, ticket: Ticket, failed: bool, now: Instant) {
        // Consumed: one report per admitted call.
        let Ticket { probe } = ticket;
        let mut s = self.inner.lock();
        if probe {
            s.probes_in_flight = s.probes_in_flight.saturating_sub(1);
        }
        self.count(&mut s, failed, now);
        match s.state {
            BreakerState::HalfOpen if probe => {
                if failed {
                    let next = s
                        .current_open_for
                        .saturating_mul(2)
                        .min(self.config.max_open_for);
                    s.current_open_for = next;
                    self.open(&mut s, now, "probe failed".into());
                } else {
                    s.probe_successes += 1;
                    if s.probe_successes >= self.config.half_open_probes {
                        s.current_open_for = self.config.open_for;
                        self.close(&mut s, "probes passed".into());
                    }
                }
            }
            BreakerState::Closed if failed && !s.forced => {
                if self.config.consecutive_failures > 0
                    && s.consecutive >= self.config.consecutive_failures
                {
                    let reason = format!("{} consecutive failures", s.consecutive);
                    self.open(&mut s, now, reason);
                } else if self.config.failure_rate > 0.0 {
                    let (requests, failures) = totals(&s);
                    let rate = f64::from(failures) / f64::from(requests.max(1));
                    if requests >= self.config.min_requests && rate >= self.config.failure_rate {
                        self.open(
                            &mut s,
                            now,
                            format!("failure rate {rate:.2} over {requests} requests"),
                        );
                    }
                }
            }
            _ => {}
        }
    }

    /// Gives back an admitted call's ticket without an outcome: the caller went away before
    /// the call finished (its request future was dropped). Nothing is counted; a half-open
    /// probe's slot frees for another probe, where a lost ticket would hold it for good.
    // By value on purpose: a ticket is reported once.
    #[allow(clippy::needless_pass_by_value)]
    pub fn release(&self, ticket: Ticket) {
        let Ticket { probe } = ticket;
        if probe {
            let mut s = self.inner.lock();
            s.probes_in_flight = s.probes_in_flight.saturating_sub(1);
        }
    }

    /// Forces it open until [`Breaker::force_closed`] or [`Breaker::reset`].
    pub fn force_open(&self, now: Instant) {
        let mut s = self.inner.lock();
        s.forced = true;
        self.open(&mut s, now, "forced open".into());
    }

    /// Forces it closed (and keeps it closed until reset): requests flow whatever happens.
    pub fn force_closed(&self) {
        let mut s = self.inner.lock();
        s.forced = true;
        self.close(&mut s, "forced closed".into());
    }

    /// Back to a fresh closed breaker that trips on its own again.
    pub fn reset(&self) {
        let mut s = self.inner.lock();
        s.forced = false;
        s.consecutive = 0;
        s.buckets.clear();
        s.current_open_for = self.config.open_for;
        self.close(&mut s, "reset".into());
    }

    /// The state now (open turns half-open only when a request asks).
    pub fn state(&self) -> BreakerState {
        match self.state.load(Ordering::Acquire) {
            0 => BreakerState::Closed,
            1 => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        }
    }

    /// For the admin API.
    pub fn snapshot(&self, now: Instant) -> BreakerSnapshot {
        let s = self.inner.lock();
        let (requests, failures) = totals(&s);
        BreakerSnapshot {
            state: s.state,
            forced: s.forced,
            window_requests: requests,
            window_failures: failures,
            consecutive_failures: s.consecutive,
            open_remaining_seconds: (s.state == BreakerState::Open).then(|| {
                s.open_until
                    .map_or(0.0, |u| u.saturating_duration_since(now).as_secs_f64())
            }),
            events: s.events.iter().cloned().collect(),
        }
    }

    fn count(&self, s: &mut Inner, failed: bool, now: Instant) {
        s.consecutive = if failed { s.consecutive + 1 } else { 0 };
        let width = self.config.window / BUCKETS as u32;
        while s.buckets.front().is_some_and(|(start, _, _)| {
            now.saturating_duration_since(*start) >= self.config.window
        }) {
            s.buckets.pop_front();
        }
        match s.buckets.back_mut() {
            Some((start, requests, failures)) if now.saturating_duration_since(*start) < width => {
                *requests += 1;
                *failures += u32::from(failed);
            }
            _ => s.buckets.push_back((now, 1, u32::from(failed))),
        }
    }

    fn open(&self, s: &mut Inner, now: Instant, reason: String) {
        s.open_until = Some(now + s.current_open_for);
        s.probe_successes = 0;
        s.probes_in_flight = 0;
        self.transition(s, BreakerState::Open, reason);
    }

    fn close(&self, s: &mut Inner, reason: String) {
        s.open_until = None;
        s.probe_successes = 0;
        s.probes_in_flight = 0;
        s.consecutive = 0;
        s.buckets.clear();
        self.transition(s, BreakerState::Closed, reason);
    }

    fn transition(&self, s: &mut Inner, to: BreakerState, reason: String) {
        let from = s.state;
        s.state = to;
        self.state.store(to.code() as u8, Ordering::Release);
        if s.events.len() == EVENTS_KEPT {
            s.events.pop_front();
        }
        s.events.push_back(BreakerEvent {
            from,
            to,
            reason,
            at_unix: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        });
    }

    /// The last event, if any (for logging right after a call).
    pub fn last_event(&self) -> Option<BreakerEvent> {
        self.inner.lock().events.back().cloned()
    }
}

fn totals(s: &Inner) -> (u32, u32) {
    s.buckets
        .iter()
        .fold((0, 0), |(r, f), (_, br, bf)| (r + br, f + bf))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(BreakerConfig {
            consecutive_failures: 3,
            failure_rate: 0.5,
            min_requests: 10,
            window: Duration::from_secs(10),
            open_for: Duration::from_secs(30),
            max_open_for: Duration::from_secs(100),
            half_open_probes: 2,
        })
    }

    fn call(b: &Breaker, failed: bool, now: Instant) -> bool {
        match b.admit(now) {
            Ok(t) => {
                b.record(t, failed, now);
                true
            }
            Err(_) => false,
        }
    }

    #[test]
    fn consecutive_failures_trip_it_and_it_fails_fast() {
        let b = breaker();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(call(&b, true, t0));
        }
        assert_eq!(b.state(), BreakerState::Open);
        let rejected = b.admit(t0 + Duration::from_secs(10)).unwrap_err();
        assert_eq!(rejected.retry_after, Duration::from_secs(20));
    }

    #[test]
    fn the_failure_rate_needs_the_minimum_volume() {
        let b = breaker();
        let t0 = Instant::now();
        // Alternating: never 3 in a row, rate 50%.
        for i in 0..9 {
            assert!(call(&b, i % 2 == 0, t0));
        }
        assert_eq!(
            b.state(),
            BreakerState::Closed,
            "9 requests are below the minimum"
        );
        call(&b, true, t0);
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.last_event().unwrap().reason.contains("failure rate"));
    }

    #[test]
    fn old_outcomes_leave_the_window() {
        let b = breaker();
        let t0 = Instant::now();
        for i in 0..9 {
            call(&b, i % 2 == 0, t0);
        }
        // 20 s later the window is empty: one failure does nothing.
        call(&b, true, t0 + Duration::from_secs(20));
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn half_open_probes_close_it_or_reopen_it_longer() {
        let b = breaker();
        let t0 = Instant::now();
        for _ in 0..3 {
            call(&b, true, t0);
        }
        let t1 = t0 + Duration::from_secs(30);
        let p1 = b.admit(t1).unwrap();
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let p2 = b.admit(t1).unwrap();
        assert!(b.admit(t1).is_err(), "only two probes at once");
        b.record(p1, false, t1);
        b.record(p2, true, t1);
        assert_eq!(b.state(), BreakerState::Open, "a failed probe reopens it");
        // Open twice as long now: 60 s.
        assert!(b.admit(t1 + Duration::from_secs(59)).is_err());
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..2 {
            let p = b.admit(t2).unwrap();
            b.record(p, false, t2);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        let reasons: Vec<String> = b
            .snapshot(t2)
            .events
            .into_iter()
            .map(|e| e.reason)
            .collect();
        assert_eq!(reasons.last().unwrap(), "probes passed");
    }

    #[test]
    fn a_released_probe_frees_its_slot_without_counting() {
        let b = breaker();
        let t0 = Instant::now();
        for _ in 0..3 {
            call(&b, true, t0);
        }
        let t1 = t0 + Duration::from_secs(30);
        let p1 = b.admit(t1).unwrap();
        let p2 = b.admit(t1).unwrap();
        assert!(b.admit(t1).is_err());
        b.release(p1);
        let p3 = b.admit(t1).unwrap();
        assert_eq!(
            b.state(),
            BreakerState::HalfOpen,
            "a release decides nothing"
        );
        b.record(p2, false, t1);
        b.record(p3, false, t1);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn operators_can_force_and_reset() {
        let b = breaker();
        let t0 = Instant::now();
        b.force_open(t0);
        assert!(
            b.admit(t0 + Duration::from_secs(3600)).is_err(),
            "forced open stays open"
        );
        b.force_closed();
        for _ in 0..10 {
            assert!(call(&b, true, t0));
        }
        assert_eq!(
            b.state(),
            BreakerState::Closed,
            "forced closed ignores failures"
        );
        b.reset();
        for _ in 0..3 {
            call(&b, true, t0);
        }
        assert_eq!(b.state(), BreakerState::Open);
    }
}
