//! Load profiles: a level (requests per second in the open model, concurrent users in the
//! closed model) that ramps linearly from stage to stage, as k6's `stages` do.
//!
//! The open model needs the send time of the k-th request: the `t` where the integral of the
//! rate from 0 to `t` reaches `k`. Each stage is linear, so its integral is quadratic and the
//! inversion is exact ([`Profile::arrival`]); the schedule is computed, never accumulated, so
//! it does not drift over a long run. The closed model needs the time at which user `i` becomes
//! active ([`Profile::next_above`]).

use std::time::Duration;

/// One stage: ramp linearly from the previous level to `target` over `duration`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stage {
    /// How long the ramp (or hold, when the target equals the previous level) lasts.
    pub duration: Duration,
    /// The level reached at the end of the stage.
    pub target: f64,
}

#[derive(Debug, Clone, Copy)]
struct Segment {
    start: f64,
    len: f64,
    from: f64,
    to: f64,
    /// Integral of the level from time 0 to `start`.
    area_before: f64,
}

impl Segment {
    fn area(&self) -> f64 {
        (self.from + self.to) / 2.0 * self.len
    }

    fn level(&self, t: f64) -> f64 {
        if self.len == 0.0 {
            return self.to;
        }
        self.from + (self.to - self.from) * ((t - self.start) / self.len)
    }
}

/// A piecewise-linear level over time, starting at `start` and following the stages.
///
/// ```
/// use std::time::Duration;
/// use portcullis_bench::profile::{Profile, Stage};
///
/// // Ramp from 0 to 100 requests/s over 10 s: 500 requests, the k-th at sqrt(k / 5) s.
/// let ramp = Stage { duration: Duration::from_secs(10), target: 100.0 };
/// let p = Profile::new(0.0, &[ramp]).unwrap();
/// assert!((p.total_arrivals() - 500.0).abs() < 1e-9);
/// assert!((p.arrival(125).unwrap() - 5.0).abs() < 1e-9);
/// ```
#[derive(Debug, Clone)]
pub struct Profile {
    segments: Vec<Segment>,
    total: f64,
}

impl Profile {
    /// A profile from a starting level and stages.
    pub fn new(start: f64, stages: &[Stage]) -> Result<Self, String> {
        if stages.is_empty() {
            return Err("at least one stage is needed".to_owned());
        }
        if !start.is_finite() || start < 0.0 {
            return Err(format!("start level {start} must be zero or more"));
        }
        let mut segments = Vec::with_capacity(stages.len());
        let (mut t, mut level, mut area) = (0.0, start, 0.0);
        for (i, stage) in stages.iter().enumerate() {
            if !stage.target.is_finite() || stage.target < 0.0 {
                return Err(format!(
                    "stage {}: target {} must be zero or more",
                    i + 1,
                    stage.target
                ));
            }
            let seg = Segment {
                start: t,
                len: stage.duration.as_secs_f64(),
                from: level,
                to: stage.target,
                area_before: area,
            };
            area += seg.area();
            t += seg.len;
            level = stage.target;
            segments.push(seg);
        }
        if t <= 0.0 {
            return Err("the stages last no time at all".to_owned());
        }
        Ok(Self { segments, total: t })
    }

    /// A constant level for `duration`.
    pub fn constant(level: f64, duration: Duration) -> Result<Self, String> {
        Self::new(
            level,
            &[Stage {
                duration,
                target: level,
            }],
        )
    }

    /// How long the profile lasts.
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.total)
    }

    /// The highest level reached.
    pub fn peak(&self) -> f64 {
        self.segments
            .iter()
            .map(|s| s.from.max(s.to))
            .fold(0.0, f64::max)
    }

    /// The level at `t` seconds (0 after the end).
    pub fn level_at(&self, t: f64) -> f64 {
        if t < 0.0 || t > self.total {
            return 0.0;
        }
        self.segments
            .iter()
            .find(|s| t <= s.start + s.len)
            .map_or(0.0, |s| s.level(t))
    }

    /// How many stages the profile has (one segment each).
    pub fn stage_count(&self) -> usize {
        self.segments.len()
    }

    /// The stage (0-based) running at `t` seconds: stages hold `[start, end)`, so a request
    /// due exactly at a boundary belongs to the stage that begins there. Before the start it
    /// is the first stage, after the end the last.
    pub fn stage_at(&self, t: f64) -> usize {
        self.segments
            .iter()
            .position(|s| t < s.start + s.len)
            .unwrap_or(self.segments.len().saturating_sub(1))
    }

    /// The integral of the level from 0 to `t` (arrivals scheduled by then, in the open model).
    pub fn integral(&self, t: f64) -> f64 {
        let t = t.clamp(0.0, self.total);
        self.segments
            .iter()
            .find(|s| t <= s.start + s.len)
            .map_or(self.total_arrivals(), |s| {
                let tau = t - s.start;
                s.area_before + (s.from + s.level(t)) / 2.0 * tau
            })
    }

    /// The mean level over `[from, to]` seconds (the planned rate or users of an interval).
    pub fn mean_level(&self, from: f64, to: f64) -> f64 {
        if to <= from {
            return self.level_at(from);
        }
        (self.integral(to) - self.integral(from)) / (to - from)
    }

    /// Total arrivals the profile schedules (its integral over the whole run).
    pub fn total_arrivals(&self) -> f64 {
        self.segments
            .last()
            .map_or(0.0, |s| s.area_before + s.area())
    }

    /// When the `k`-th arrival (0-based) is due, in seconds from the start: the `t` at which
    /// the integral of the level reaches `k`. `None` when the profile ends first.
    pub fn arrival(&self, k: u64) -> Option<f64> {
        let x = k as f64;
        let seg = self
            .segments
            .iter()
            .find(|s| x < s.area_before + s.area() || (x == 0.0 && s.area() > 0.0))?;
        let x = x - seg.area_before;
        let slope = if seg.len == 0.0 {
            0.0
        } else {
            (seg.to - seg.from) / seg.len
        };
        // Solve slope/2 τ² + from τ = x for τ in the form that stays stable when slope → 0.
        let disc = (seg.from * seg.from + 2.0 * slope * x).max(0.0);
        let denom = seg.from + disc.sqrt();
        let tau = if x == 0.0 {
            if seg.from > 0.0 { 0.0 } else { f64::NAN }
        } else if denom > 0.0 {
            2.0 * x / denom
        } else {
            f64::NAN
        };
        let tau = if tau.is_nan() {
            // Level 0 at the segment start: the first arrival waits until the area reaches x.
            let x = x.max(1e-9);
            (2.0 * x / slope.max(1e-12)).sqrt()
        } else {
            tau
        };
        let t = seg.start + tau.min(seg.len);
        (t < self.total).then_some(t)
    }

    /// The earliest time at or after `t` at which the level exceeds `threshold` (the moment user
    /// number `threshold` becomes active). `None` when that never happens again.
    pub fn next_above(&self, t: f64, threshold: f64) -> Option<f64> {
        for seg in &self.segments {
            let end = seg.start + seg.len;
            if end < t {
                continue;
            }
            let from_t = t.max(seg.start);
            if seg.level(from_t) > threshold {
                return Some(from_t);
            }
            if seg.to > threshold && seg.to > seg.from {
                let cross = seg.start + (threshold - seg.from) / (seg.to - seg.from) * seg.len;
                // Strictly above: a microsecond after the crossing.
                return Some(cross.max(from_t) + 1e-6).filter(|&c| c < self.total);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(secs: u64, target: f64) -> Stage {
        Stage {
            duration: Duration::from_secs(secs),
            target,
        }
    }

    #[test]
    fn constant_rate_spaces_arrivals_evenly_and_stops_at_the_end() {
        let p = Profile::constant(100.0, Duration::from_secs(2)).unwrap();
        assert_eq!(p.arrival(0), Some(0.0));
        assert!((p.arrival(50).unwrap() - 0.5).abs() < 1e-9);
        assert!((p.arrival(199).unwrap() - 1.99).abs() < 1e-9);
        assert_eq!(p.arrival(200), None);
        assert!((p.total_arrivals() - 200.0).abs() < 1e-9);
    }

    #[test]
    fn a_linear_ramp_from_zero_inverts_its_quadratic_integral() {
        // 0 → 100/s over 10 s: integral(t) = 5 t², so arrival k is at sqrt(k / 5).
        let p = Profile::new(0.0, &[stage(10, 100.0)]).unwrap();
        for k in [1u64, 20, 125, 499] {
            let want = (k as f64 / 5.0).sqrt();
            assert!((p.arrival(k).unwrap() - want).abs() < 1e-6, "k={k}");
        }
        assert_eq!(p.arrival(500), None);
    }

    #[test]
    fn ramping_down_and_holding_compose() {
        // hold 10/s for 1 s (10 arrivals), then 10 → 0 over 2 s (10 more).
        let p = Profile::new(10.0, &[stage(1, 10.0), stage(2, 0.0)]).unwrap();
        assert!((p.total_arrivals() - 20.0).abs() < 1e-9);
        // The 15th arrival: 5 into the ramp-down, 10τ - 2.5τ² = 5 → τ = 2 - sqrt(2).
        let want = 1.0 + 2.0 - 2f64.sqrt();
        assert!((p.arrival(15).unwrap() - want).abs() < 1e-6);
        assert!((p.level_at(2.0) - 5.0).abs() < 1e-9);
    }

    #[test]
    fn the_integral_gives_mean_levels_of_intervals() {
        let p = Profile::new(0.0, &[stage(2, 200.0), stage(1, 200.0)]).unwrap();
        assert!((p.integral(1.0) - 50.0).abs() < 1e-9);
        assert!((p.integral(3.0) - 400.0).abs() < 1e-9);
        assert!((p.mean_level(1.0, 2.0) - 150.0).abs() < 1e-9);
        assert!(
            (p.mean_level(2.5, 3.5) - 100.0).abs() < 1e-9,
            "0 after the end"
        );
    }

    #[test]
    fn users_activate_when_the_ramp_passes_their_number() {
        // 0 → 10 users over 10 s: user 3 (the fourth) starts just after 3 s.
        let p = Profile::new(0.0, &[stage(10, 10.0), stage(5, 10.0)]).unwrap();
        let t = p.next_above(0.0, 3.0).unwrap();
        assert!((t - 3.0).abs() < 1e-3, "{t}");
        assert_eq!(p.next_above(12.0, 3.0), Some(12.0));
        assert_eq!(p.next_above(0.0, 10.0), None);
        assert!((p.peak() - 10.0).abs() < 1e-9);
    }

    #[test]
    fn stages_hold_half_open_intervals_and_clamp_at_the_ends() {
        let p = Profile::new(0.0, &[stage(1, 10.0), stage(2, 10.0), stage(1, 0.0)]).unwrap();
        assert_eq!(p.stage_count(), 3);
        let at: Vec<usize> = [-1.0, 0.0, 0.999, 1.0, 2.5, 3.0, 3.999, 4.0, 9.0]
            .iter()
            .map(|&t| p.stage_at(t))
            .collect();
        assert_eq!(at, [0, 0, 0, 1, 1, 2, 2, 2, 2]);
        // A stage of no duration never holds a moment: the next one starts at once.
        let p = Profile::new(0.0, &[stage(0, 10.0), stage(1, 10.0)]).unwrap();
        assert_eq!(p.stage_at(0.0), 1);
    }

    #[test]
    fn rejects_negative_levels_and_empty_profiles() {
        assert!(Profile::new(0.0, &[]).is_err());
        assert!(Profile::new(0.0, &[stage(1, -1.0)]).is_err());
        assert!(Profile::new(0.0, &[stage(0, 1.0)]).is_err());
    }
}
