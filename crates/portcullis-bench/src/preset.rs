//! Named load shapes (the seeds' k6 profiles) as stage lists: a preset scales to a peak level
//! and a total duration, so `--preset stress --rate 500 -d 5m` and `preset = "stress"` in a
//! scenario mean the same run.

use std::{fmt, str::FromStr, time::Duration};

use crate::profile::Stage;

/// A named load shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// A minimal sanity run: one user (or one request per second) for the whole duration.
    Smoke,
    /// Ramp to the peak over 10% of the time, hold for 80%, ramp down over 10%.
    Load,
    /// Steps past the peak: 50%, 100%, 150% and 200% of it, each ramped then held, then down.
    Stress,
    /// A baseline at 10% of the peak, a sudden jump to the peak, and back.
    Spike,
    /// Endurance: a short ramp and a long hold at the peak.
    Soak,
}

impl Preset {
    /// All presets, in the order the docs list them.
    pub const ALL: [Preset; 5] = [
        Preset::Smoke,
        Preset::Load,
        Preset::Stress,
        Preset::Spike,
        Preset::Soak,
    ];

    /// The preset's name in flags and scenario files.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Smoke => "smoke",
            Preset::Load => "load",
            Preset::Stress => "stress",
            Preset::Spike => "spike",
            Preset::Soak => "soak",
        }
    }

    /// The duration used when none is given.
    pub fn default_duration(self) -> Duration {
        Duration::from_secs(match self {
            Preset::Smoke => 30,
            Preset::Load => 10 * 60,
            Preset::Stress => 20 * 60,
            Preset::Spike => 5 * 60,
            Preset::Soak => 2 * 3600,
        })
    }

    /// The starting level and stages for a run peaking at `peak` and lasting `total`.
    pub fn stages(self, peak: f64, total: Duration) -> (f64, Vec<Stage>) {
        // (fraction of the total duration, fraction of the peak) per stage.
        let shape: &[(f64, f64)] = match self {
            Preset::Smoke => return (1.0, vec![stage(total, 1.0, 1.0)]),
            Preset::Load => &[(0.1, 1.0), (0.8, 1.0), (0.1, 0.0)],
            Preset::Stress => &[
                (0.1, 0.5),
                (0.1, 0.5),
                (0.1, 1.0),
                (0.15, 1.0),
                (0.1, 1.5),
                (0.15, 1.5),
                (0.05, 2.0),
                (0.2, 2.0),
                (0.05, 0.0),
            ],
            Preset::Spike => &[
                (0.1, 0.1),
                (0.2, 0.1),
                (0.02, 1.0),
                (0.2, 1.0),
                (0.02, 0.1),
                (0.36, 0.1),
                (0.1, 0.0),
            ],
            Preset::Soak => &[(0.05, 1.0), (0.9, 1.0), (0.05, 0.0)],
        };
        let stages = shape
            .iter()
            .map(|&(time, level)| stage(total, time, level * peak))
            .collect();
        (0.0, stages)
    }
}

fn stage(total: Duration, fraction: f64, target: f64) -> Stage {
    Stage {
        duration: total.mul_f64(fraction),
        target,
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Preset {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Preset::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Preset::ALL.iter().map(|p| p.name()).collect();
                format!("unknown preset {s:?} (one of: {})", names.join(", "))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Profile;

    #[test]
    fn every_preset_fills_its_duration_and_reaches_its_peak() {
        for preset in Preset::ALL {
            let total = Duration::from_secs(100);
            let (start, stages) = preset.stages(200.0, total);
            let profile = Profile::new(start, &stages).unwrap();
            assert!(
                (profile.duration().as_secs_f64() - 100.0).abs() < 1e-6,
                "{preset}"
            );
            let want = match preset {
                Preset::Smoke => 1.0,
                Preset::Stress => 400.0,
                _ => 200.0,
            };
            assert!((profile.peak() - want).abs() < 1e-9, "{preset}");
        }
    }

    #[test]
    fn names_round_trip_and_unknown_names_list_the_choices() {
        for preset in Preset::ALL {
            assert_eq!(preset.name().parse::<Preset>(), Ok(preset));
        }
        let err = "burst".parse::<Preset>().unwrap_err();
        assert!(err.contains("smoke, load, stress, spike, soak"), "{err}");
    }
}
