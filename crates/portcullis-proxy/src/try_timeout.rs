//! Per-try timeouts to upstreams, checked by one sweeping task per upstream instead of a
//! tokio timer per request.
//!
//! Why not `tokio::time::timeout`: it puts an entry in the runtime's timer wheel when the try
//! first waits and takes it out when the response comes, about 1,000 instructions of a proxied
//! request's 31,000 (callgrind, `scripts/bench-instructions`). Nearly every try ends long
//! before its timeout, so a timer's precision is wasted on it. Here a waiting try takes a slot
//! in a list (one uncontended lock) and gives it back; while any try waits, one task per
//! upstream looks over the list every [`TICK`] and wakes the tries past their deadline. A
//! timeout fires between its deadline and one tick after it. No crate offers such a coarse
//! timer (tokio-util's `DelayQueue` sits on the same wheel as `timeout`).

use std::{
    future::Future,
    sync::Arc,
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use tokio::sync::Notify;

/// How often the waiting tries are looked over: a timeout fires at most this late.
pub(crate) const TICK: Duration = Duration::from_millis(10);

/// The try did not finish by its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Elapsed;

/// The deadlines of one upstream's waiting tries. Dropping it ends its sweeping task.
#[derive(Default)]
pub(crate) struct Deadlines {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Wakes the sweeping task when a try starts waiting with none waiting before, or when the
    /// [`Deadlines`] is dropped.
    wake_sweeper: Notify,
}

#[derive(Default)]
struct State {
    /// Slots by index; `None` when free.
    slots: Vec<Option<Slot>>,
    /// The indexes of the free slots.
    free: Vec<usize>,
    sweeper_started: bool,
    closed: bool,
}

impl State {
    /// Slots in use: tries waiting now.
    fn waiting(&self) -> usize {
        self.slots.len() - self.free.len()
    }
}

struct Slot {
    deadline: Instant,
    waker: Waker,
    expired: bool,
}

impl std::fmt::Debug for Deadlines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deadlines")
            .field("waiting", &self.shared.state.lock().waiting())
            .finish()
    }
}

impl Deadlines {
    /// Runs `fut` until it finishes or `deadline` passes (noticed within a [`TICK`]).
    pub(crate) fn timeout<F: Future>(&self, deadline: Instant, fut: F) -> TryTimeout<'_, F> {
        TryTimeout {
            fut,
            deadline,
            registration: Registration {
                deadlines: self,
                slot: None,
            },
        }
    }

    /// Tries waiting now.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.shared.state.lock().waiting()
    }
}

impl Drop for Deadlines {
    fn drop(&mut self) {
        self.shared.state.lock().closed = true;
        self.shared.wake_sweeper.notify_one();
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Deadlines::timeout`]. Dropped, it gives its slot back.
    pub(crate) struct TryTimeout<'a, F> {
        #[pin]
        fut: F,
        deadline: Instant,
        registration: Registration<'a>,
    }
}

impl<F: Future> Future for TryTimeout<'_, F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(output) = this.fut.poll(cx) {
            return Poll::Ready(Ok(output));
        }
        if this.registration.wait(*this.deadline, cx) {
            Poll::Ready(Err(Elapsed))
        } else {
            Poll::Pending
        }
    }
}

/// A try's slot, while it has one.
struct Registration<'a> {
    deadlines: &'a Deadlines,
    slot: Option<usize>,
}

impl Registration<'_> {
    /// Records that the try waits, with `cx`'s waker; `true` once its deadline has passed.
    fn wait(&mut self, deadline: Instant, cx: &Context<'_>) -> bool {
        let shared = &self.deadlines.shared;
        let mut state = shared.state.lock();
        if let Some(i) = self.slot {
            if let Some(slot) = state.slots[i].as_mut() {
                if slot.expired {
                    return true;
                }
                if !slot.waker.will_wake(cx.waker()) {
                    slot.waker.clone_from(cx.waker());
                }
            }
            return false;
        }
        let slot = Some(Slot {
            deadline,
            waker: cx.waker().clone(),
            expired: false,
        });
        let i = match state.free.pop() {
            Some(i) => {
                state.slots[i] = slot;
                i
            }
            None => {
                state.slots.push(slot);
                state.slots.len() - 1
            }
        };
        self.slot = Some(i);
        let first = state.waiting() == 1;
        if !state.sweeper_started {
            state.sweeper_started = true;
            tokio::spawn(sweep(Arc::clone(shared)));
        }
        drop(state);
        if first {
            shared.wake_sweeper.notify_one();
        }
        false
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            let mut state = self.deadlines.shared.state.lock();
            state.slots[i] = None;
            state.free.push(i);
        }
    }
}

/// While tries wait, every [`TICK`]: marks those past their deadline and wakes them.
async fn sweep(shared: Arc<Shared>) {
    let mut expired: Vec<Waker> = Vec::new();
    loop {
        // A notification sent while the loop below ran is kept, so none is lost.
        shared.wake_sweeper.notified().await;
        loop {
            if shared.state.lock().closed {
                return;
            }
            tokio::time::sleep(TICK).await;
            let waiting = {
                let mut state = shared.state.lock();
                let now = Instant::now();
                for slot in state.slots.iter_mut().flatten() {
                    if !slot.expired && slot.deadline <= now {
                        slot.expired = true;
                        expired.push(slot.waker.clone());
                    }
                }
                state.waiting()
            };
            // Woken outside the lock: a woken try may run at once on another thread.
            for waker in expired.drain(..) {
                waker.wake();
            }
            if waiting == 0 {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_try_that_finishes_in_time_gives_its_output_and_its_slot_back() {
        let deadlines = Deadlines::default();
        let far = Instant::now() + Duration::from_secs(60);
        assert_eq!(deadlines.timeout(far, async { 7 }).await, Ok(7));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let waiting = deadlines.timeout(far, rx);
        let sender = async {
            tokio::task::yield_now().await;
            tx.send(8).unwrap();
        };
        let (got, ()) = tokio::join!(waiting, sender);
        assert_eq!(got, Ok(Ok(8)));
        assert_eq!(deadlines.waiting(), 0);
    }

    #[tokio::test]
    async fn a_try_past_its_deadline_ends_with_elapsed_and_never_before_it() {
        let deadlines = Deadlines::default();
        let start = Instant::now();
        let limit = Duration::from_millis(30);
        let never = std::future::pending::<()>();
        assert_eq!(deadlines.timeout(start + limit, never).await, Err(Elapsed));
        assert!(
            start.elapsed() >= limit,
            "fired early: {:?}",
            start.elapsed()
        );
        assert_eq!(deadlines.waiting(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_waiting_tries_each_end_at_their_own_deadline() {
        let deadlines = Arc::new(Deadlines::default());
        let start = Instant::now();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        // Eight tries that never finish, with deadlines 20 ms apart, and one that finishes.
        let mut tries = tokio::task::JoinSet::new();
        for n in 1..=8u32 {
            let d = Arc::clone(&deadlines);
            let deadline = start + Duration::from_millis(20) * n;
            tries.spawn(async move {
                let r = d.timeout(deadline, std::future::pending::<()>()).await;
                (n, r, Instant::now() >= deadline)
            });
        }
        let d = Arc::clone(&deadlines);
        let finishing =
            tokio::spawn(async move { d.timeout(start + Duration::from_secs(60), rx).await });
        let mut ended = Vec::new();
        while let Some(joined) = tries.join_next().await {
            let (n, r, after_deadline) = joined.unwrap();
            assert_eq!(r, Err(Elapsed));
            assert!(after_deadline, "try {n} ended before its deadline");
            ended.push(n);
        }
        ended.sort_unstable();
        assert_eq!(ended, (1..=8).collect::<Vec<_>>());
        tx.send(()).unwrap();
        assert_eq!(finishing.await.unwrap(), Ok(Ok(())));
        assert_eq!(deadlines.waiting(), 0);
    }

    #[tokio::test]
    async fn a_dropped_try_gives_its_slot_back_and_slots_are_reused() {
        let deadlines = Deadlines::default();
        let far = Instant::now() + Duration::from_secs(60);
        for _ in 0..3 {
            let mut waiting = Box::pin(deadlines.timeout(far, std::future::pending::<()>()));
            // One poll, so it takes a slot.
            let polled = std::future::poll_fn(|cx| Poll::Ready(waiting.as_mut().poll(cx))).await;
            assert!(polled.is_pending());
            assert_eq!(deadlines.waiting(), 1);
            drop(waiting);
            assert_eq!(deadlines.waiting(), 0);
        }
        assert_eq!(
            deadlines.shared.state.lock().slots.len(),
            1,
            "one slot, reused"
        );
    }
}
