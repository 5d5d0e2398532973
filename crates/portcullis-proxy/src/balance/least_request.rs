//! Least request by power of two choices: sample two distinct targets at random and take the one
//! with fewer requests in flight. Nearly as good as scanning all targets, O(1), and free of the
//! herd effect of "always the least loaded" when many gateways share the same view.

use std::sync::atomic::{AtomicUsize, Ordering};

pub(super) fn pick(in_flight: &[AtomicUsize]) -> usize {
    let n = in_flight.len();
    let a = fastrand::usize(..n);
    // A second, distinct sample: shift by 1..n so it never equals `a`.
    let b = (a + 1 + fastrand::usize(..n - 1)) % n;
    if in_flight[b].load(Ordering::Relaxed) < in_flight[a].load(Ordering::Relaxed) {
        b
    } else {
        a
    }
}
