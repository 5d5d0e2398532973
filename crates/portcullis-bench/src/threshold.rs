//! SLO thresholds: `p95 < 200ms`, `error_rate < 1%`, `rps > 1000`, `cache_hit_rate > 0.8`,
//! optionally scoped to one request kind as `p95{login} < 300ms`. A run passes only when every
//! threshold holds; the binary then exits 0.

use std::{fmt, str::FromStr};

use crate::{duration::parse_duration, report::Stats};

/// What a threshold measures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Metric {
    /// A latency percentile (0 to 100), in milliseconds.
    Percentile(f64),
    /// Fastest latency (ms).
    Min,
    /// Mean latency (ms).
    Mean,
    /// Slowest latency (ms).
    Max,
    /// Errors over requests (fraction).
    ErrorRate,
    /// Requests per second.
    Rps,
    /// Share of `X-Cache` hits (fraction).
    CacheHitRate,
    /// Share of passed checks (fraction).
    Checks,
    /// Finished requests.
    Requests,
    /// Errors.
    Errors,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Millis,
    Fraction,
    Count,
}

impl Metric {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "min" => Metric::Min,
            "mean" | "avg" => Metric::Mean,
            "max" => Metric::Max,
            "median" => Metric::Percentile(50.0),
            "error_rate" => Metric::ErrorRate,
            "rps" => Metric::Rps,
            "cache_hit_rate" => Metric::CacheHitRate,
            "checks" => Metric::Checks,
            "requests" => Metric::Requests,
            "errors" => Metric::Errors,
            _ => {
                let p: f64 = name.strip_prefix('p')?.parse().ok()?;
                // `p999` is p99.9, as in most tools' column names.
                let p = if name == "p999" { 99.9 } else { p };
                if !(0.0..=100.0).contains(&p) {
                    return None;
                }
                Metric::Percentile(p)
            }
        })
    }

    fn unit(self) -> Unit {
        match self {
            Metric::Percentile(_) | Metric::Min | Metric::Mean | Metric::Max => Unit::Millis,
            Metric::ErrorRate | Metric::CacheHitRate | Metric::Checks => Unit::Fraction,
            Metric::Rps | Metric::Requests | Metric::Errors => Unit::Count,
        }
    }
}

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl Op {
    fn holds(self, actual: f64, limit: f64) -> bool {
        match self {
            Op::Lt => actual < limit,
            Op::Le => actual <= limit,
            Op::Gt => actual > limit,
            Op::Ge => actual >= limit,
        }
    }
}

/// A parsed threshold.
///
/// ```
/// use portcullis_bench::threshold::{Metric, Threshold};
///
/// let t: Threshold = "p95{login} < 300ms".parse().unwrap();
/// assert_eq!(t.metric, Metric::Percentile(95.0));
/// assert_eq!((t.scope.as_deref(), t.limit), (Some("login"), 300.0));
/// assert!(t.holds(Some(250.0)) && !t.holds(Some(300.0)) && !t.holds(None));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    /// The expression as written.
    pub text: String,
    /// The request kind it applies to (all requests when `None`).
    pub scope: Option<String>,
    /// The metric.
    pub metric: Metric,
    /// The comparison.
    pub op: Op,
    /// The limit, in the metric's unit (ms, fraction, count).
    pub limit: f64,
}

impl Threshold {
    /// The same threshold scoped to a request kind (unless it already names one); the text
    /// then reads `p95{kind} < 300ms`.
    pub fn scoped(mut self, kind: &str) -> Self {
        if self.scope.is_none() {
            if let Some(at) = self.text.find(['<', '>']) {
                let (lhs, rhs) = self.text.split_at(at);
                self.text = format!("{}{{{kind}}} {rhs}", lhs.trim_end());
            }
            self.scope = Some(kind.to_owned());
        }
        self
    }

    /// The measured value, or `None` when there is nothing to measure.
    pub fn actual(&self, stats: &Stats, percentile: impl Fn(f64) -> f64) -> Option<f64> {
        let l = &stats.latency_ms;
        let has_latency = stats.requests > stats.errors.connect + stats.errors.transport;
        Some(match self.metric {
            Metric::Percentile(p) if has_latency => percentile(p),
            Metric::Min if has_latency => l.min,
            Metric::Mean if has_latency => l.mean,
            Metric::Max if has_latency => l.max,
            Metric::Percentile(_) | Metric::Min | Metric::Mean | Metric::Max => return None,
            Metric::ErrorRate => stats.error_rate,
            Metric::Rps => stats.rps,
            Metric::CacheHitRate => stats.cache_hit_rate?,
            Metric::Checks => {
                let (passed, failed) = stats
                    .checks
                    .iter()
                    .fold((0u64, 0u64), |(p, f), c| (p + c.passed, f + c.failed));
                if passed + failed == 0 {
                    return None;
                }
                passed as f64 / (passed + failed) as f64
            }
            Metric::Requests => stats.requests as f64,
            Metric::Errors => stats.errors.total() as f64,
        })
    }

    /// Whether `actual` satisfies the threshold (no data never does).
    pub fn holds(&self, actual: Option<f64>) -> bool {
        actual.is_some_and(|a| self.op.holds(a, self.limit))
    }

    /// `actual` in the metric's unit, for summaries.
    pub fn format_value(&self, value: f64) -> String {
        match self.metric.unit() {
            Unit::Millis => crate::duration::format_latency(std::time::Duration::from_secs_f64(
                (value / 1e3).max(0.0),
            )),
            Unit::Fraction => format!("{:.2}%", value * 100.0),
            Unit::Count => format!("{value:.1}"),
        }
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Threshold {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| format!("threshold {text:?}: {why}");
        let (op, at, len) = [("<=", Op::Le), (">=", Op::Ge), ("<", Op::Lt), (">", Op::Gt)]
            .iter()
            .find_map(|(sym, op)| text.find(sym).map(|at| (*op, at, sym.len())))
            .ok_or_else(|| bad("expected METRIC < VALUE (or <=, >, >=), e.g. \"p95 < 200ms\""))?;
        let lhs = text[..at].trim();
        let rhs = text[at + len..].trim();
        let (name, scope) = match lhs.split_once('{') {
            Some((name, rest)) => {
                let scope = rest
                    .strip_suffix('}')
                    .ok_or_else(|| bad("expected METRIC{request} with a closing '}'"))?;
                (name.trim(), Some(scope.trim().to_owned()))
            }
            None => (lhs, None),
        };
        let metric = Metric::parse(name).ok_or_else(|| {
            bad(&format!(
                "unknown metric {name:?} (p50, p90, p95, p99, p99.9, min, mean, max, \
                 error_rate, rps, cache_hit_rate, checks, requests, errors)"
            ))
        })?;
        let limit = match metric.unit() {
            Unit::Millis => {
                parse_duration(rhs)
                    .map_err(|e| bad(&format!("{e}; latency limits need a unit, e.g. 200ms")))?
                    .as_secs_f64()
                    * 1e3
            }
            Unit::Fraction => match rhs.strip_suffix('%') {
                Some(pct) => pct.trim().parse::<f64>().map(|p| p / 100.0),
                None => rhs.parse::<f64>(),
            }
            .map_err(|_| bad(&format!("{rhs:?} is not a rate (write 1% or 0.01)")))?,
            Unit::Count => rhs
                .parse::<f64>()
                .map_err(|_| bad(&format!("{rhs:?} is not a number")))?,
        };
        if !limit.is_finite() {
            return Err(bad("the limit must be a finite number"));
        }
        Ok(Self {
            text: text.trim().to_owned(),
            scope,
            metric,
            op,
            limit,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_latency_rate_and_count_thresholds() {
        let t: Threshold = "p95 < 200ms".parse().unwrap();
        assert_eq!(
            (t.metric, t.op, t.limit),
            (Metric::Percentile(95.0), Op::Lt, 200.0)
        );
        let t: Threshold = "p99.9{login} <= 1s".parse().unwrap();
        assert_eq!(t.metric, Metric::Percentile(99.9));
        assert_eq!((t.scope.as_deref(), t.limit), (Some("login"), 1000.0));
        let t: Threshold = "error_rate < 1%".parse().unwrap();
        assert!((t.limit - 0.01).abs() < 1e-12);
        let t: Threshold = "cache_hit_rate > 0.8".parse().unwrap();
        assert_eq!(
            (t.metric, t.op, t.limit),
            (Metric::CacheHitRate, Op::Gt, 0.8)
        );
        let t: Threshold = "rps >= 1000".parse().unwrap();
        assert_eq!((t.metric, t.op, t.limit), (Metric::Rps, Op::Ge, 1000.0));
    }

    #[test]
    fn bad_expressions_explain_themselves() {
        let err = |s: &str| s.parse::<Threshold>().unwrap_err();
        assert!(err("p95 200ms").contains("expected METRIC < VALUE"));
        assert!(err("p95 < 200").contains("need a unit"));
        assert!(err("latency < 2s").contains("unknown metric \"latency\""));
        assert!(err("error_rate < lots").contains("not a rate"));
        assert!(err("p95{x < 2s").contains("closing"));
        assert!(err("p101 < 2s").contains("unknown metric"));
    }

    #[test]
    fn scoping_names_the_kind_in_the_text() {
        let t: Threshold = "p95 < 300ms".parse().unwrap();
        let t = t.scoped("login");
        assert_eq!(
            (t.text.as_str(), t.scope.as_deref()),
            ("p95{login} < 300ms", Some("login"))
        );
        let reparsed: Threshold = t.text.parse().unwrap();
        assert_eq!(reparsed, t);
    }

    #[test]
    fn no_data_never_passes() {
        let t: Threshold = "cache_hit_rate > 0.5".parse().unwrap();
        assert!(!t.holds(None));
        assert!(t.holds(Some(0.9)));
        assert!(!t.holds(Some(0.5)));
    }
}
