//! A concurrency limit with a bounded FIFO wait queue and an optional adaptive limit, for the
//! gateway's proxy (per upstream) and for [`ConcurrencyLimitLayer`](crate::ConcurrencyLimitLayer).
//!
//! Hand-written rather than `tower::limit::ConcurrencyLimit`: tower's has no bounded queue
//! (callers wait in `poll_ready` for as long as it takes), no queue timeout, no adaptive mode,
//! and no counts to export as metrics, all of which the gateway needs.
//!
//! Slots are permits of a tokio [`Semaphore`], which is fair: waiters get freed slots in the
//! order they asked. In adaptive mode the limit moves without losing or double-counting a slot:
//! growing adds permits (or first cancels debt), shrinking forgets free permits, and when too
//! few are free, the rest becomes a debt that the next released permits pay by being forgotten
//! instead of returned. While a debt is owed no permit is free, and a slot granted to a waiter
//! just before the limit shrank pays the debt instead (the waiter waits on), so no call is
//! admitted above the current limit; calls already in flight are never revoked.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use parking_lot::Mutex;
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Instant,
};

use crate::adaptive::{AdaptiveConfig, Aimd, Sample};

/// How a [`ConcurrencyLimit`] behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConcurrencyConfig {
    /// Calls at once (0 admits none: every call waits, then is refused); the starting limit
    /// in adaptive mode (kept within its bounds).
    pub max_in_flight: usize,
    /// Calls that may wait for a slot; one more is refused at once (0: no queue).
    pub max_queue: usize,
    /// The longest wait for a slot.
    pub queue_timeout: Duration,
    /// Moves the limit with observed latency and failures (`None`: fixed at `max_in_flight`).
    pub adaptive: Option<AdaptiveConfig>,
}

/// Refused: no slot free and no room, or no time, to wait for one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Overloaded {
    /// The wait queue was full.
    #[error("at the concurrency limit and the wait queue is full")]
    QueueFull,
    /// No slot freed within the queue timeout.
    #[error("at the concurrency limit; no slot freed within the queue timeout")]
    QueueTimeout,
}

/// A concurrency limit with a bounded FIFO wait queue; cheap to share (`Arc` it, or keep one
/// per upstream).
///
/// In adaptive mode the limit follows AIMD on latency, fed by [`Permit::record`]; the
/// [`AdaptiveConfig`] docs describe the algorithm and its parameters.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::time::Duration;
/// use portcullis_resilience::{ConcurrencyConfig, ConcurrencyLimit, Overloaded};
///
/// let limit = ConcurrencyLimit::new(ConcurrencyConfig {
///     max_in_flight: 1,
///     max_queue: 0,
///     queue_timeout: Duration::from_secs(1),
///     adaptive: None,
/// });
/// let permit = limit.acquire().await.unwrap();
/// assert_eq!(limit.in_flight(), 1);
/// assert_eq!(limit.acquire().await.unwrap_err(), Overloaded::QueueFull);
/// drop(permit);
/// assert_eq!(limit.in_flight(), 0);
/// # }
/// ```
#[derive(Debug)]
pub struct ConcurrencyLimit {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    slots: Arc<Semaphore>,
    /// The limit now (written under `adaptive`'s lock; read without it).
    limit: AtomicUsize,
    in_flight: AtomicUsize,
    waiting: AtomicUsize,
    max_queue: usize,
    queue_timeout: Duration,
    adaptive: Option<Mutex<Adaptive>>,
}

#[derive(Debug)]
struct Adaptive {
    aimd: Aimd,
    /// Permits to forget as they come back: the limit shrank below the calls in flight.
    debt: usize,
}

/// One admitted call's slot, released when dropped. It is `Send + 'static`: carry it with a
/// streaming response body to count the call until its body ends.
#[derive(Debug)]
#[must_use = "the slot is released when the permit is dropped"]
pub struct Permit {
    shared: Arc<Shared>,
    slot: Option<OwnedSemaphorePermit>,
    round: u64,
    recorded: bool,
}

// === impl ConcurrencyLimit ===

impl ConcurrencyLimit {
    /// A limit with every slot free.
    pub fn new(config: ConcurrencyConfig) -> Self {
        let adaptive = config.adaptive.map(|a| Aimd::new(a, config.max_in_flight));
        let limit = adaptive.as_ref().map_or(
            config.max_in_flight.min(Semaphore::MAX_PERMITS),
            Aimd::limit,
        );
        Self {
            shared: Arc::new(Shared {
                slots: Arc::new(Semaphore::new(limit)),
                limit: AtomicUsize::new(limit),
                in_flight: AtomicUsize::new(0),
                waiting: AtomicUsize::new(0),
                max_queue: config.max_queue,
                queue_timeout: config.queue_timeout,
                adaptive: adaptive.map(|aimd| Mutex::new(Adaptive { aimd, debt: 0 })),
            }),
        }
    }

    /// A slot: at once when one is free, otherwise after waiting in line up to the queue
    /// timeout. Refused at once when the queue is full.
    pub async fn acquire(&self) -> Result<Permit, Overloaded> {
        let shared = &self.shared;
        if let Ok(slot) = Arc::clone(&shared.slots).try_acquire_owned()
            && let Some(permit) = shared.admit(slot)
        {
            return Ok(permit);
        }
        let queued = shared
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < shared.max_queue).then_some(n + 1)
            });
        if queued.is_err() {
            return Err(Overloaded::QueueFull);
        }
        // Leaves the queue however the wait ends, the caller giving up included.
        let _in_line = InLine(&shared.waiting);
        let deadline = Instant::now() + shared.queue_timeout;
        loop {
            let slot = tokio::time::timeout_at(deadline, Arc::clone(&shared.slots).acquire_owned());
            match slot.await {
                Ok(Ok(slot)) => {
                    if let Some(permit) = shared.admit(slot) {
                        return Ok(permit);
                    }
                }
                // The semaphore is never closed; a timeout is the only way here.
                _ => return Err(Overloaded::QueueTimeout),
            }
        }
    }

    /// The limit now (moves in adaptive mode).
    pub fn limit(&self) -> usize {
        self.shared.limit.load(Ordering::Acquire)
    }

    /// Calls holding a slot. Briefly above [`limit`](Self::limit) after the limit shrinks,
    /// until enough of them finish.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Acquire)
    }

    /// Calls waiting for a slot.
    pub fn waiting(&self) -> usize {
        self.shared.waiting.load(Ordering::Acquire)
    }

    /// Whether the limit adapts.
    pub fn is_adaptive(&self) -> bool {
        self.shared.adaptive.is_some()
    }
}

/// Counts a caller in the queue until dropped.
struct InLine<'a>(&'a AtomicUsize);

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

// === impl Shared ===

impl Shared {
    /// Counts a call in with `slot`, unless the limit shrank since the slot was granted and the
    /// slot is owed: then it pays the debt and the caller waits on (a slot granted to a waiter
    /// is handed over when released, before the waiter runs, so the limit may shrink between).
    fn admit(self: &Arc<Self>, slot: OwnedSemaphorePermit) -> Option<Permit> {
        let round = match &self.adaptive {
            None => {
                self.in_flight.fetch_add(1, Ordering::AcqRel);
                0
            }
            Some(adaptive) => {
                let mut state = adaptive.lock();
                if state.debt > 0 {
                    state.debt -= 1;
                    slot.forget();
                    return None;
                }
                // Counted under the lock, so a resize sees this call in flight.
                self.in_flight.fetch_add(1, Ordering::AcqRel);
                state.aimd.round()
            }
        };
        Some(Permit {
            shared: Arc::clone(self),
            slot: Some(slot),
            round,
            recorded: false,
        })
    }

    /// Moves the limit to `to`, keeping free + held = limit + debt.
    fn resize(&self, adaptive: &mut Adaptive, to: usize) {
        let from = self.limit.load(Ordering::Acquire);
        if to > from {
            let mut grow = to - from;
            let paid = grow.min(adaptive.debt);
            adaptive.debt -= paid;
            grow -= paid;
            if grow > 0 {
                self.slots.add_permits(grow);
            }
        } else if to < from {
            let shrink = from - to;
            let forgotten = self.slots.forget_permits(shrink);
            adaptive.debt += shrink - forgotten;
        }
        self.limit.store(to, Ordering::Release);
    }
}

// === impl Permit ===

impl Permit {
    /// Reports the call's outcome to the adaptive algorithm: its latency (admission to
    /// response head) and whether it failed (a 5xx, no response). The first report counts;
    /// later ones, and reports to a fixed limit, are ignored. The slot stays held until the
    /// permit is dropped; a permit dropped unreported releases its slot without a sample.
    pub fn record(&mut self, latency: Duration, failed: bool) {
        let Some(adaptive) = &self.shared.adaptive else {
            return;
        };
        if std::mem::replace(&mut self.recorded, true) {
            return;
        }
        let mut state = adaptive.lock();
        let to = state.aimd.update(Sample {
            latency,
            failed,
            in_flight: self.shared.in_flight.load(Ordering::Acquire),
            round: self.round,
        });
        self.shared.resize(&mut state, to);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let Some(slot) = self.slot.take() else {
            return;
        };
        // Counted out before the slot frees, so the next holder never sees one too many.
        self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
        if let Some(adaptive) = &self.shared.adaptive {
            // Decided and released under the lock: a resize in between would otherwise count
            // this slot as held while it is already free.
            let mut state = adaptive.lock();
            if state.debt > 0 {
                state.debt -= 1;
                slot.forget();
            } else {
                drop(slot);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn fixed(max_in_flight: usize, max_queue: usize) -> ConcurrencyLimit {
        ConcurrencyLimit::new(ConcurrencyConfig {
            max_in_flight,
            max_queue,
            queue_timeout: SECOND,
            adaptive: None,
        })
    }

    fn adaptive(min: usize, max: usize, initial: usize) -> ConcurrencyLimit {
        ConcurrencyLimit::new(ConcurrencyConfig {
            max_in_flight: initial,
            max_queue: 1_000,
            queue_timeout: SECOND,
            adaptive: Some(AdaptiveConfig {
                min_limit: min,
                max_limit: max,
                ..AdaptiveConfig::default()
            }),
        })
    }

    /// Free permits of the semaphore (what the next caller could take).
    fn free(limit: &ConcurrencyLimit) -> usize {
        limit.shared.slots.available_permits()
    }

    #[tokio::test]
    async fn a_free_slot_is_taken_at_once_and_freed_on_drop() {
        let limit = fixed(2, 0);
        let a = limit.acquire().await.unwrap();
        let b = limit.acquire().await.unwrap();
        assert_eq!((limit.in_flight(), limit.waiting()), (2, 0));
        assert_eq!(limit.acquire().await.unwrap_err(), Overloaded::QueueFull);
        drop(a);
        let _c = limit.acquire().await.unwrap();
        drop(b);
        assert_eq!(limit.in_flight(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_gives_up_after_the_queue_timeout() {
        let limit = fixed(1, 1);
        let _held = limit.acquire().await.unwrap();
        assert_eq!(limit.acquire().await.unwrap_err(), Overloaded::QueueTimeout);
        assert_eq!(limit.waiting(), 0, "it left the queue");
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_are_served_first_come_first_served_and_the_queue_is_bounded() {
        let limit = Arc::new(fixed(1, 3));
        let held = limit.acquire().await.unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for i in 0..3 {
            let (waiter, tx) = (Arc::clone(&limit), tx.clone());
            tokio::spawn(async move {
                let permit = waiter.acquire().await.unwrap();
                tx.send(i).unwrap();
                drop(permit);
            });
            // Each waiter is in line before the next one starts.
            while limit.waiting() <= i {
                tokio::task::yield_now().await;
            }
        }
        assert_eq!(limit.acquire().await.unwrap_err(), Overloaded::QueueFull);
        drop(held);
        let order = [rx.recv().await, rx.recv().await, rx.recv().await];
        assert_eq!(order, [Some(0), Some(1), Some(2)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_that_gives_up_leaves_the_queue() {
        let limit = fixed(1, 1);
        let _held = limit.acquire().await.unwrap();
        let waiting = tokio::time::timeout(SECOND / 10, limit.acquire()).await;
        assert!(waiting.is_err(), "still waiting when dropped");
        assert_eq!(limit.waiting(), 0);
        assert_eq!(
            limit.acquire().await.unwrap_err(),
            Overloaded::QueueTimeout,
            "the queue has room again"
        );
    }

    #[tokio::test]
    async fn a_fixed_limit_ignores_records() {
        let limit = fixed(3, 0);
        let mut p = limit.acquire().await.unwrap();
        p.record(Duration::from_secs(100), true);
        assert_eq!(limit.limit(), 3);
        assert!(!limit.is_adaptive());
    }

    #[tokio::test]
    async fn a_shrinking_limit_takes_back_slots_as_they_are_released() {
        let limit = adaptive(1, 10, 4);
        let mut first = limit.acquire().await.unwrap();
        first.record(Duration::from_millis(10), false);
        drop(first);
        let mut held: Vec<Permit> = Vec::new();
        for _ in 0..4 {
            held.push(limit.acquire().await.unwrap());
        }
        assert_eq!(free(&limit), 0);
        // Ten times the baseline: 4 × 0.9 = 3.6, so 3. The other three were admitted in the
        // same round and do not shrink it again.
        for p in &mut held {
            p.record(Duration::from_millis(100), false);
        }
        assert_eq!(limit.limit(), 3);
        assert_eq!(limit.in_flight(), 4, "held calls are never revoked");
        held.pop();
        assert_eq!(free(&limit), 0, "the first slot released pays the debt");
        held.pop();
        assert_eq!(free(&limit), 1);
        held.clear();
        assert_eq!(free(&limit), 3, "free + held = limit again");
    }

    #[tokio::test]
    async fn a_growing_limit_cancels_debt_before_adding_slots() {
        let limit = adaptive(1, 10, 3);
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(limit.acquire().await.unwrap());
        }
        {
            let mut state = limit.shared.adaptive.as_ref().unwrap().lock();
            limit.shared.resize(&mut state, 1);
            assert_eq!(state.debt, 2);
            limit.shared.resize(&mut state, 4);
            assert_eq!(state.debt, 0);
        }
        assert_eq!(free(&limit), 1, "4 − 3 held");
        held.clear();
        assert_eq!(free(&limit), 4);
    }

    /// Many tasks acquire while slow samples shrink the limit: whenever a call is admitted,
    /// the calls in flight are within the limit of that moment. On one thread, nothing runs
    /// between `acquire` returning and the check.
    #[tokio::test(start_paused = true)]
    async fn in_flight_never_exceeds_the_limit_while_it_shrinks() {
        let limit = Arc::new(adaptive(2, 64, 64));
        let violated = Arc::new(AtomicBool::new(false));
        let lowest = Arc::new(AtomicUsize::new(usize::MAX));
        let mut tasks = tokio::task::JoinSet::new();
        for task in 0..200_u64 {
            let (limit, violated, lowest) = (
                Arc::clone(&limit),
                Arc::clone(&violated),
                Arc::clone(&lowest),
            );
            tasks.spawn(async move {
                for call in 0..20_u64 {
                    let Ok(mut permit) = limit.acquire().await else {
                        continue;
                    };
                    if limit.in_flight() > limit.limit() {
                        violated.store(true, Ordering::SeqCst);
                    }
                    // Later calls are ever slower than the first ones: the limit shrinks.
                    tokio::time::sleep(Duration::from_millis(1 + task % 7)).await;
                    permit.record(Duration::from_millis(10 + call * 20), false);
                    lowest.fetch_min(limit.limit(), Ordering::SeqCst);
                }
            });
        }
        while let Some(joined) = tasks.join_next().await {
            joined.unwrap();
        }
        assert!(!violated.load(Ordering::SeqCst));
        let lowest = lowest.load(Ordering::SeqCst);
        assert!(lowest <= 32, "the limit shrank: {lowest}");
        assert_eq!(limit.in_flight(), 0);
        assert_eq!(free(&limit), limit.limit(), "no slot lost or counted twice");
    }

    /// Two threads acquiring, recording and releasing while the limit moves both ways: at the
    /// end no slot is lost or counted twice.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slots_add_up_after_concurrent_resizes() {
        let limit = Arc::new(adaptive(1, 16, 8));
        let mut tasks = tokio::task::JoinSet::new();
        for task in 0..16_u64 {
            let limit = Arc::clone(&limit);
            tasks.spawn(async move {
                for call in 0..500_u64 {
                    let Ok(mut permit) = limit.acquire().await else {
                        continue;
                    };
                    tokio::task::yield_now().await;
                    // Stretches of fast calls and of slow ones: the limit grows and shrinks.
                    let slow = (call / 50 + task) % 2 == 0;
                    permit.record(Duration::from_millis(if slow { 100 } else { 10 }), false);
                }
            });
        }
        while let Some(joined) = tasks.join_next().await {
            joined.unwrap();
        }
        assert_eq!((limit.in_flight(), limit.waiting()), (0, 0));
        assert_eq!(free(&limit), limit.limit());
        assert_eq!(limit.shared.adaptive.as_ref().unwrap().lock().debt, 0);
    }

    #[test]
    fn permits_travel_across_tasks() {
        fn assert_static_send<T: Send + 'static>() {}
        assert_static_send::<Permit>();
    }
}
