//! Request coalescing: one request per key goes upstream; the others wait for it.
//!
//! Our own in-flight map rather than moka's `get_with`, because the fill spans the whole
//! upstream exchange and may decide not to store (see shared/STACK.md §2.3). A leader holds a
//! [`Flight`]; dropping it (stored, not stored, failed or abandoned) wakes the waiters, who look
//! the key up again. Waiting is bounded by the caller's lock timeout.

use std::{collections::HashMap, sync::Arc, time::Duration};

use parking_lot::Mutex;
use tokio::sync::watch;

/// The map of keys being fetched.
#[derive(Debug, Default)]
pub struct Coalescer {
    flights: Arc<Mutex<HashMap<u128, watch::Receiver<()>>>>,
}

/// Proof of leadership for one key; dropping it ends the flight and wakes the waiters.
#[derive(Debug)]
pub struct Flight {
    digest: u128,
    flights: Arc<Mutex<HashMap<u128, watch::Receiver<()>>>>,
    // Dropped with the flight: receivers then see the channel closed.
    _done: watch::Sender<()>,
}

impl Drop for Flight {
    fn drop(&mut self) {
        self.flights.lock().remove(&self.digest);
    }
}

/// The outcome of [`Coalescer::join`].
#[derive(Debug)]
pub enum Joined {
    /// Nobody was fetching this key: the caller leads.
    Leader(Flight),
    /// Someone else is: wait on this.
    Waiter(Waiter),
}

/// A handle to wait for another request's flight.
#[derive(Debug)]
pub struct Waiter(watch::Receiver<()>);

impl Waiter {
    /// Waits until the flight ends or `timeout` passes; returns whether it ended.
    pub async fn wait(mut self, timeout: Duration) -> bool {
        // `changed` fails once the sender (the flight) is dropped; nothing is ever sent.
        tokio::time::timeout(timeout, async { while self.0.changed().await.is_ok() {} })
            .await
            .is_ok()
    }
}

impl Coalescer {
    /// Leads the flight for `digest`, or joins the one in progress.
    pub fn join(&self, digest: u128) -> Joined {
        let mut flights = self.flights.lock();
        if let Some(rx) = flights.get(&digest) {
            return Joined::Waiter(Waiter(rx.clone()));
        }
        let (tx, rx) = watch::channel(());
        flights.insert(digest, rx);
        Joined::Leader(Flight {
            digest,
            flights: Arc::clone(&self.flights),
            _done: tx,
        })
    }

    /// Leads the flight for `digest` only if nobody else is fetching it (for background
    /// refreshes: one per key).
    pub fn try_lead(&self, digest: u128) -> Option<Flight> {
        match self.join(digest) {
            Joined::Leader(f) => Some(f),
            Joined::Waiter(_) => None,
        }
    }

    /// Keys currently in flight.
    pub fn in_flight(&self) -> usize {
        self.flights.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_wake_when_the_leader_drops_and_the_key_is_free_again() {
        let c = Coalescer::default();
        let Joined::Leader(flight) = c.join(7) else {
            panic!("first caller leads")
        };
        let Joined::Waiter(w) = c.join(7) else {
            panic!("second caller waits")
        };
        assert!(c.try_lead(7).is_none());
        assert!(c.try_lead(8).is_some(), "other keys are independent");
        let waiting = tokio::spawn(w.wait(Duration::from_secs(30)));
        drop(flight);
        assert!(waiting.await.unwrap(), "woken, not timed out");
        assert_eq!(c.in_flight(), 0);
        assert!(matches!(c.join(7), Joined::Leader(_)));
    }

    #[tokio::test]
    async fn waiting_is_bounded() {
        let c = Coalescer::default();
        let _flight = c.try_lead(1).unwrap();
        let Joined::Waiter(w) = c.join(1) else {
            panic!()
        };
        assert!(
            !w.wait(Duration::from_millis(20)).await,
            "the leader never finished"
        );
    }
}
