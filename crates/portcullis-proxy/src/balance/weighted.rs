//! Smooth weighted round robin (nginx's `ngx_http_upstream_get_peer`).
//!
//! Each pick adds every target's weight to its current score, picks the highest score, and
//! subtracts the total weight from the winner. Weights 5:1:1 give `a a b a c a a`, not
//! `a a a a a b c`, so a heavy target never gets a burst.

use parking_lot::Mutex;

#[derive(Debug)]
pub(super) struct SmoothWeighted {
    weights: Box<[i64]>,
    total: i64,
    current: Mutex<Box<[i64]>>,
}

impl SmoothWeighted {
    pub(super) fn new(weights: &[u32]) -> Self {
        let weights: Box<[i64]> = weights.iter().map(|&w| i64::from(w.max(1))).collect();
        Self {
            total: weights.iter().sum(),
            current: Mutex::new(vec![0; weights.len()].into_boxed_slice()),
            weights,
        }
    }

    pub(super) fn pick(&self) -> usize {
        let mut current = self.current.lock();
        let mut best = 0;
        for i in 0..current.len() {
            current[i] += self.weights[i];
            // Strictly greater: ties go to the lowest index, as in nginx.
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= self.total;
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_one_one_is_spread_like_nginx() {
        let w = SmoothWeighted::new(&[5, 1, 1]);
        let seq: Vec<usize> = (0..7).map(|_| w.pick()).collect();
        assert_eq!(seq, [0, 0, 1, 0, 2, 0, 0]);
    }
}
