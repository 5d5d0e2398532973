//! `portcullis bench compare A.json B.json`: the change of every headline metric from a
//! baseline report to a candidate, overall and per request kind, for regression checks in CI
//! (`--max-regression 10%` exits 99 when latency grew or throughput fell by more).

use std::fmt::Write;

use crate::report::{Report, Stats};

/// One compared metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Delta {
    /// The request kind (`all` overall).
    pub scope: String,
    /// The metric (`p95_ms`, `rps`...).
    pub metric: &'static str,
    /// Baseline value.
    pub baseline: f64,
    /// Candidate value.
    pub candidate: f64,
    /// Whether higher values are better (throughput) or worse (latency, errors).
    pub higher_is_better: bool,
}

impl Delta {
    /// Relative change, `(candidate - baseline) / baseline`; `None` when the baseline is 0.
    pub fn change(&self) -> Option<f64> {
        (self.baseline != 0.0).then(|| (self.candidate - self.baseline) / self.baseline)
    }

    /// How much worse the candidate is, as a fraction (negative when better).
    pub fn regression(&self) -> Option<f64> {
        self.change()
            .map(|c| if self.higher_is_better { -c } else { c })
    }
}

fn deltas(scope: &str, a: &Stats, b: &Stats) -> Vec<Delta> {
    let row = |metric, x: f64, y: f64, higher_is_better| Delta {
        scope: scope.to_owned(),
        metric,
        baseline: x,
        candidate: y,
        higher_is_better,
    };
    let (la, lb) = (&a.latency_ms, &b.latency_ms);
    vec![
        row("rps", a.rps, b.rps, true),
        row("error_rate", a.error_rate, b.error_rate, false),
        row("p50_ms", la.p50, lb.p50, false),
        row("p90_ms", la.p90, lb.p90, false),
        row("p95_ms", la.p95, lb.p95, false),
        row("p99_ms", la.p99, lb.p99, false),
        row("p999_ms", la.p999, lb.p999, false),
        row("max_ms", la.max, lb.max, false),
    ]
}

/// All compared metrics: overall, then each request kind present in both reports.
pub fn compare(a: &Report, b: &Report) -> Vec<Delta> {
    let mut out = deltas("all", &a.overall, &b.overall);
    for ka in &a.requests {
        if let Some(kb) = b.requests.iter().find(|k| k.name == ka.name)
            && (a.requests.len() > 1 || b.requests.len() > 1)
        {
            out.extend(deltas(&ka.name, ka, kb));
        }
    }
    out
}

/// The metrics `--max-regression` gates: throughput and the p50, p95 and p99 latencies.
pub fn gated(delta: &Delta) -> bool {
    matches!(delta.metric, "rps" | "p50_ms" | "p95_ms" | "p99_ms")
}

/// Renders the comparison as a table; returns it and whether any gated metric regressed by
/// more than `max_regression`.
pub fn render(a: &Report, b: &Report, max_regression: Option<f64>) -> (String, bool) {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "A: {} ({} requests, {:.1}s)",
        a.name, a.overall.requests, a.duration_s
    );
    let _ = writeln!(
        out,
        "B: {} ({} requests, {:.1}s)\n",
        b.name, b.overall.requests, b.duration_s
    );
    let _ = writeln!(
        out,
        "{:<24} {:<11} {:>12} {:>12} {:>9}",
        "request", "metric", "A", "B", "change"
    );
    let mut regressed = false;
    for d in compare(a, b) {
        let change = d
            .change()
            .map_or_else(|| "n/a".to_owned(), |c| format!("{:+.1}%", c * 100.0));
        let worse = max_regression
            .is_some_and(|limit| gated(&d) && d.regression().is_some_and(|r| r > limit));
        regressed |= worse;
        let _ = writeln!(
            out,
            "{:<24} {:<11} {:>12.3} {:>12.3} {:>9}{}",
            d.scope,
            d.metric,
            d.baseline,
            d.candidate,
            change,
            if worse { "  REGRESSION" } else { "" }
        );
    }
    if let Some(limit) = max_regression {
        let _ = writeln!(
            out,
            "\n{}",
            if regressed {
                format!("regression beyond {:.1}% (exit 99)", limit * 100.0)
            } else {
                format!("no regression beyond {:.1}%", limit * 100.0)
            }
        );
    }
    (out, regressed)
}
