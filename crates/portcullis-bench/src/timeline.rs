//! The per-interval series behind the charts: one [`Sample`] a second, bounded. When a run
//! outlasts [`MAX_SAMPLES`] intervals, neighbours are merged and the interval doubles, so an
//! endurance run keeps a fixed-size series. Merged percentiles are approximations (the median
//! weighted by requests, the tail percentiles and the maximum as the larger of the two); exact
//! whole-run percentiles come from the run's histograms, not from here.

use crate::report::{Sample, round};

/// The most samples kept.
pub const MAX_SAMPLES: usize = 1800;

/// A bounded series of samples.
#[derive(Debug, Clone)]
pub(crate) struct Timeline {
    samples: Vec<Sample>,
    span: f64,
}

impl Default for Timeline {
    fn default() -> Self {
        Self {
            samples: Vec::new(),
            span: 1.0,
        }
    }
}

fn merge(a: &Sample, b: &Sample) -> Sample {
    let n = a.requests + b.requests;
    let weighted = |x: f64, y: f64| {
        if n == 0 {
            x.max(y)
        } else {
            (x * a.requests as f64 + y * b.requests as f64) / n as f64
        }
    };
    Sample {
        t_s: a.t_s,
        span_s: round(a.span_s + b.span_s, 6),
        target: a.target,
        requests: n,
        errors: a.errors + b.errors,
        p50_ms: round(weighted(a.p50_ms, b.p50_ms), 3),
        p90_ms: a.p90_ms.max(b.p90_ms),
        p99_ms: a.p99_ms.max(b.p99_ms),
        max_ms: a.max_ms.max(b.max_ms),
    }
}

impl Timeline {
    /// Adds the latest interval.
    pub(crate) fn push(&mut self, sample: Sample) {
        match self.samples.last_mut() {
            // Ticks are about a second apart; half a second of slack absorbs timer jitter.
            Some(last) if last.span_s + 0.5 < self.span => *last = merge(last, &sample),
            _ => self.samples.push(sample),
        }
        if self.samples.len() > MAX_SAMPLES {
            self.span *= 2.0;
            self.samples = self
                .samples
                .chunks(2)
                .map(|pair| match pair {
                    [a, b] => merge(a, b),
                    [a] => *a,
                    _ => unreachable!("chunks(2) yields one or two"),
                })
                .collect();
        }
    }

    /// The samples.
    pub(crate) fn into_samples(self) -> Vec<Sample> {
        self.samples
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t: f64) -> Sample {
        Sample {
            t_s: t,
            span_s: 1.0,
            target: 1.0,
            requests: 10,
            errors: 1,
            p50_ms: 1.0,
            p90_ms: 2.0,
            p99_ms: t,
            max_ms: t,
        }
    }

    #[test]
    fn a_long_run_keeps_a_bounded_series_that_covers_it_all() {
        let mut tl = Timeline::default();
        let n = MAX_SAMPLES * 5;
        for i in 0..n {
            tl.push(sample(i as f64));
        }
        let s = tl.into_samples();
        assert!(s.len() <= MAX_SAMPLES);
        let requests: u64 = s.iter().map(|x| x.requests).sum();
        assert_eq!(requests, 10 * n as u64);
        let covered: f64 = s.iter().map(|x| x.span_s).sum();
        assert!((covered - n as f64).abs() < 1e-6);
        assert_eq!(s.last().unwrap().max_ms, (n - 1) as f64);
    }
}
