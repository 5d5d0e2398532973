//! The listener's live connections: one sweep per period for the slow-client watchdog
//! (`watchdog.rs`) and one signal for graceful shutdown.
//!
//! Why not a ticker per connection and hyper-util's graceful watcher: both are futures that a
//! connection's task polls on every wake-up, whether or not they are due, which cost about
//! 900 instructions per poll, and a proxied request takes three polls (BENCHMARKS.md). Here
//! a connection's task reads one atomic per poll and registers its waker; a sweep every
//! `header_read_timeout` over all connections closes those that made no progress, and
//! shutdown signals them all at once.

use std::{
    collections::HashMap,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use parking_lot::Mutex;
use pin_project_lite::pin_project;
use tokio::sync::Notify;
use tracing::debug;

use crate::{
    hangup::HangUp,
    watchdog::{Progress, Signal},
};

/// The connections of one listener.
#[derive(Debug, Default)]
pub(crate) struct Connections {
    live: Mutex<HashMap<u64, Entry>>,
    next_id: AtomicU64,
    /// Notified when the last connection ends.
    emptied: Notify,
}

#[derive(Debug)]
struct Entry {
    progress: Arc<Progress>,
    /// The progress seen by the previous sweep (none before the first).
    last: Option<(u64, u64)>,
}

/// A connection's place in [`Connections`]; leaving it (dropping) removes the connection.
#[derive(Debug)]
pub(crate) struct Registration {
    connections: Arc<Connections>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut live = self.connections.live.lock();
        live.remove(&self.id);
        if live.is_empty() {
            self.connections.emptied.notify_waiters();
        }
    }
}

impl Connections {
    /// Adds a connection whose progress is `progress`.
    pub(crate) fn register(self: &Arc<Self>, progress: Arc<Progress>) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.live.lock().insert(
            id,
            Entry {
                progress,
                last: None,
            },
        );
        Registration {
            connections: Arc::clone(self),
            id,
        }
    }

    /// Connections open now.
    pub(crate) fn count(&self) -> usize {
        self.live.lock().len()
    }

    /// Closes every connection that made no progress since the previous sweep while nothing
    /// was in flight: called once per `header_read_timeout`, that bounds a silent or dripping
    /// client to between one and two periods.
    pub(crate) fn sweep(&self) {
        for entry in self.live.lock().values_mut() {
            let now = entry.progress.snapshot();
            if entry.last == Some(now) && !entry.progress.busy() {
                entry.progress.signal(Signal::Close);
            }
            entry.last = Some(now);
        }
    }

    /// Sweeps every `period` until dropped (the caller aborts it when the listener ends).
    pub(crate) async fn sweep_every(self: Arc<Self>, period: Duration) {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            self.sweep();
        }
    }

    /// Asks every connection to finish what is in flight and close (HTTP/1.1: after the
    /// current response; HTTP/2: GOAWAY).
    pub(crate) fn shut_down_gracefully(&self) {
        for entry in self.live.lock().values() {
            entry.progress.signal(Signal::Shutdown);
        }
    }

    /// Resolves once no connection is open.
    pub(crate) async fn drained(&self) {
        loop {
            let emptied = self.emptied.notified();
            tokio::pin!(emptied);
            emptied.as_mut().enable();
            if self.count() == 0 {
                return;
            }
            emptied.await;
        }
    }
}

pin_project! {
    /// A connection's future, closed (dropped) when the sweep says so, and told to shut down
    /// gracefully when the listener does.
    pub(crate) struct Supervised<F, G> {
        #[pin]
        conn: F,
        progress: Arc<Progress>,
        graceful: Option<G>,
        peer: SocketAddr,
        // Watches for the client hanging up while a request is in flight (hangup.rs).
        hang_up: Option<HangUp>,
        _registration: Registration,
    }
}

impl<F, G> Supervised<F, G>
where
    F: Future,
    G: FnOnce(Pin<&mut F>),
{
    /// Supervises `conn`; `graceful` starts its graceful shutdown; `hang_up` watches its
    /// client's socket.
    pub(crate) fn new(
        conn: F,
        progress: Arc<Progress>,
        registration: Registration,
        graceful: G,
        peer: SocketAddr,
        hang_up: Option<HangUp>,
    ) -> Self {
        Self {
            conn,
            progress,
            graceful: Some(graceful),
            peer,
            hang_up,
            _registration: registration,
        }
    }
}

impl<F, G> Future for Supervised<F, G>
where
    F: Future,
    G: FnOnce(Pin<&mut F>),
{
    /// The connection's own output, or `None` when the watchdog closed it or its client hung
    /// up mid-request.
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let signal = this.progress.signalled();
        match signal {
            Signal::Close => {
                debug!(peer = %this.peer, "closing connection: no complete request or response progress within header_read_timeout");
                return Poll::Ready(None);
            }
            Signal::Shutdown => {
                if let Some(graceful) = this.graceful.take() {
                    graceful(this.conn.as_mut());
                }
            }
            Signal::None => {}
        }
        match this.conn.poll(cx) {
            Poll::Ready(out) => Poll::Ready(Some(out)),
            Poll::Pending => {
                // A request waiting on its upstream is cancelled, with the connection, when
                // its client hangs up (hyper does not look: it allows half-closed connections).
                if this.progress.busy()
                    && let Some(hang_up) = this.hang_up.as_mut()
                    && hang_up.poll(cx).is_ready()
                {
                    debug!(peer = %this.peer, "client hung up while its request was in flight");
                    return Poll::Ready(None);
                }
                this.progress.waker.register(cx.waker());
                // A signal set between the read above and the registration would be missed.
                if this.progress.signalled() != signal {
                    cx.waker().wake_by_ref();
                }
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_sweep_closes_only_connections_idle_for_a_whole_period() {
        let connections = Arc::new(Connections::default());
        let idle = Arc::new(Progress::default());
        let working = Arc::new(Progress::default());
        let waiting = Arc::new(Progress::default());
        let _r = [
            connections.register(Arc::clone(&idle)),
            connections.register(Arc::clone(&working)),
            connections.register(Arc::clone(&waiting)),
        ];
        connections.sweep();
        // The first sweep only records where each connection stands.
        assert_eq!(idle.signalled(), Signal::None);
        working.request();
        let _in_flight = waiting.in_flight();
        connections.sweep();
        assert_eq!(idle.signalled(), Signal::Close);
        assert_eq!(working.signalled(), Signal::None);
        assert_eq!(
            waiting.signalled(),
            Signal::None,
            "a request in flight is progress"
        );
        assert_eq!(connections.count(), 3);
        drop(_r);
        assert_eq!(connections.count(), 0);
    }

    #[test]
    fn shutdown_signals_every_connection_and_close_wins_over_it() {
        let connections = Arc::new(Connections::default());
        let a = Arc::new(Progress::default());
        let _r = connections.register(Arc::clone(&a));
        connections.shut_down_gracefully();
        assert_eq!(a.signalled(), Signal::Shutdown);
        a.signal(Signal::Close);
        a.signal(Signal::Shutdown);
        assert_eq!(a.signalled(), Signal::Close);
    }
}
