//! Service-level objectives per route and the alerts they raise.
//!
//! Each evaluation compares a route's rolling statistics ([`crate::StatsHistory`]) over its SLO
//! window with its objectives (p95, p99 latency; 5xx rate). A missed objective opens an alert; it
//! resolves when the objective holds again. Windows with fewer than `min_requests` requests
//! judge nothing, so a handful of slow requests at night pages nobody. The error budget burn
//! rate (`error_rate / objective`, 1 = spending the budget exactly as fast as allowed) is kept
//! for the metrics.

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime},
};

use parking_lot::Mutex;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, gauge::ConstGauge},
};
use serde::Serialize;

use crate::WindowStats;

/// One objective of a route.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Objective {
    /// 95th percentile latency at most this many milliseconds.
    P95Ms(f64),
    /// 99th percentile latency at most this many milliseconds.
    P99Ms(f64),
    /// Share of 5xx responses at most this.
    ErrorRate(f64),
}

impl Objective {
    /// The objective's name in alerts and labels.
    pub fn name(self) -> &'static str {
        match self {
            Self::P95Ms(_) => "p95",
            Self::P99Ms(_) => "p99",
            Self::ErrorRate(_) => "error_rate",
        }
    }

    fn target(self) -> f64 {
        match self {
            Self::P95Ms(t) | Self::P99Ms(t) | Self::ErrorRate(t) => t,
        }
    }

    /// The measured value, if the window has one.
    fn value(self, stats: &WindowStats) -> Option<f64> {
        match self {
            Self::P95Ms(_) => stats.p95_ms,
            Self::P99Ms(_) => stats.p99_ms,
            Self::ErrorRate(_) => Some(stats.error_rate),
        }
    }
}

/// A route's objectives.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteSlo {
    /// The route's name.
    pub route: String,
    /// What must hold.
    pub objectives: Vec<Objective>,
    /// Judged over this window.
    pub window: Duration,
    /// Smaller windows judge nothing.
    pub min_requests: u64,
}

/// An objective being missed.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Alert {
    /// The route.
    pub route: String,
    /// `p95`, `p99` or `error_rate`.
    pub objective: &'static str,
    /// The objective (milliseconds, or a share).
    pub target: f64,
    /// The latest measured value.
    pub value: f64,
    /// The window judged, seconds.
    pub window_seconds: u64,
    /// When it started, RFC 3339.
    pub since: String,
}

/// A change of an alert, for notifications.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AlertEvent {
    /// `firing` or `resolved`.
    pub status: &'static str,
    /// The alert (for `resolved`, as it last was).
    #[serde(flatten)]
    pub alert: Alert,
}

#[derive(Debug, Default)]
struct Book {
    active: BTreeMap<(String, &'static str), Alert>,
    /// Burn rate per route with an error-rate objective, as of the last evaluation.
    burn: BTreeMap<String, f64>,
}

/// The alerts in force, across evaluations (and reloads).
#[derive(Debug, Default)]
pub struct AlertBook {
    book: Mutex<Book>,
}

impl AlertBook {
    /// Judges every route's objectives against `stats(route, window)`; returns what fired and
    /// what resolved. Alerts of routes no longer configured resolve.
    pub fn evaluate(
        &self,
        slos: &[RouteSlo],
        mut stats: impl FnMut(&str, Duration) -> Option<WindowStats>,
        now: SystemTime,
    ) -> Vec<AlertEvent> {
        let mut book = self.book.lock();
        let mut events = Vec::new();
        let mut judged = std::collections::BTreeSet::new();
        book.burn.clear();
        for slo in slos {
            let Some(window) = stats(&slo.route, slo.window) else {
                continue;
            };
            for &objective in &slo.objectives {
                let key = (slo.route.clone(), objective.name());
                judged.insert(key.clone());
                if let Objective::ErrorRate(target) = objective {
                    book.burn
                        .insert(slo.route.clone(), window.error_rate / target);
                }
                if window.requests < slo.min_requests {
                    // Too little to judge: keep whatever state there is.
                    continue;
                }
                let value = objective.value(&window);
                let missed = value.is_some_and(|v| v > objective.target());
                match (missed, book.active.get_mut(&key)) {
                    (true, Some(alert)) => alert.value = value.unwrap_or_default(),
                    (true, None) => {
                        let alert = Alert {
                            route: slo.route.clone(),
                            objective: objective.name(),
                            target: objective.target(),
                            value: value.unwrap_or_default(),
                            window_seconds: slo.window.as_secs(),
                            since: crate::rfc3339(now),
                        };
                        events.push(AlertEvent {
                            status: "firing",
                            alert: alert.clone(),
                        });
                        book.active.insert(key, alert);
                    }
                    (false, Some(_)) => {
                        if let Some(mut alert) = book.active.remove(&key) {
                            if let Some(v) = value {
                                alert.value = v;
                            }
                            events.push(AlertEvent {
                                status: "resolved",
                                alert,
                            });
                        }
                    }
                    (false, None) => {}
                }
            }
        }
        let gone: Vec<_> = book
            .active
            .keys()
            .filter(|k| !judged.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            if let Some(alert) = book.active.remove(&key) {
                events.push(AlertEvent {
                    status: "resolved",
                    alert,
                });
            }
        }
        events
    }

    /// The alerts firing now.
    pub fn active(&self) -> Vec<Alert> {
        self.book.lock().active.values().cloned().collect()
    }
}

impl Collector for AlertBook {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let book = self.book.lock();
        {
            let mut family = encoder.encode_descriptor(
                "portcullis_slo_error_budget_burn_rate",
                "5xx rate over the SLO window divided by the error-rate objective (1 = on budget)",
                None,
                MetricType::Gauge,
            )?;
            for (route, burn) in &book.burn {
                ConstGauge::new(*burn)
                    .encode(family.encode_family(&[("route", route.as_str())])?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "portcullis_slo_alerts_firing",
            "SLO alerts firing, by route and objective",
            None,
            MetricType::Gauge,
        )?;
        for (route, objective) in book.active.keys() {
            ConstGauge::new(1i64).encode(
                family.encode_family(&[("route", route.as_str()), ("objective", objective)])?,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(requests: u64, errors: u64, p95: f64) -> WindowStats {
        WindowStats {
            requests,
            errors,
            error_rate: errors as f64 / requests.max(1) as f64,
            p95_ms: Some(p95),
            p99_ms: Some(p95 * 2.0),
            ..WindowStats::default()
        }
    }

    fn slo() -> RouteSlo {
        RouteSlo {
            route: "api".into(),
            objectives: vec![Objective::P95Ms(200.0), Objective::ErrorRate(0.01)],
            window: Duration::from_secs(300),
            min_requests: 20,
        }
    }

    #[test]
    fn alerts_fire_once_and_resolve_once() {
        let book = AlertBook::default();
        let now = SystemTime::UNIX_EPOCH;
        let slos = [slo()];
        let ok = book.evaluate(&slos, |_, _| Some(stats(100, 0, 50.0)), now);
        assert!(ok.is_empty());
        let slow = book.evaluate(&slos, |_, _| Some(stats(100, 0, 400.0)), now);
        assert_eq!(slow.len(), 1);
        assert_eq!((slow[0].status, slow[0].alert.objective), ("firing", "p95"));
        assert_eq!(slow[0].alert.value, 400.0);
        assert!(
            book.evaluate(&slos, |_, _| Some(stats(100, 0, 450.0)), now)
                .is_empty()
        );
        assert_eq!(book.active()[0].value, 450.0, "the value follows");
        let both = book.evaluate(&slos, |_, _| Some(stats(100, 5, 100.0)), now);
        let got: Vec<_> = both.iter().map(|e| (e.status, e.alert.objective)).collect();
        assert_eq!(got, [("resolved", "p95"), ("firing", "error_rate")]);
    }

    #[test]
    fn small_windows_judge_nothing_and_removed_routes_resolve() {
        let book = AlertBook::default();
        let now = SystemTime::UNIX_EPOCH;
        let slos = [slo()];
        assert!(
            book.evaluate(&slos, |_, _| Some(stats(5, 5, 900.0)), now)
                .is_empty()
        );
        book.evaluate(&slos, |_, _| Some(stats(100, 50, 900.0)), now);
        assert_eq!(book.active().len(), 2);
        let gone = book.evaluate(&[], |_, _| None, now);
        assert_eq!(gone.len(), 2);
        assert!(gone.iter().all(|e| e.status == "resolved"));
        assert!(book.active().is_empty());
    }

    #[test]
    fn burn_rate_is_exported() {
        let book = AlertBook::default();
        book.evaluate(
            &[slo()],
            |_, _| Some(stats(100, 2, 10.0)),
            SystemTime::UNIX_EPOCH,
        );
        let mut text = String::new();
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(std::sync::Arc::new(book)));
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(r#"portcullis_slo_error_budget_burn_rate{route="api"} 2.0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"portcullis_slo_alerts_firing{route="api",objective="error_rate"} 1"#),
            "{text}"
        );
    }
}
