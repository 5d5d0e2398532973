//! The final summary printed to stdout: run line, a percentile table per request kind, errors,
//! status codes, counted headers, checks and the threshold verdicts (which failed, by how much).

use std::{fmt::Write, time::Duration};

use crate::{
    duration::{format_latency, format_span},
    report::{Report, Stats},
};

fn ms(v: f64) -> String {
    format_latency(Duration::from_secs_f64((v / 1e3).max(0.0)))
}

/// Renders the summary of `report`.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let o = &report.overall;
    let _ = writeln!(
        out,
        "{} ({} model, HTTP/{}, {} connections)",
        report.name, report.model, report.http_version, report.connections
    );
    let _ = writeln!(
        out,
        "  {} requests in {} = {:.1} req/s, {} errors ({:.2}%)\n",
        o.requests,
        format_span(Duration::from_secs_f64(report.duration_s)),
        o.rps,
        o.errors.total(),
        o.error_rate * 100.0
    );
    if report.behind_schedule > 0 {
        let share = report.behind_schedule as f64 / o.requests.max(1) as f64 * 100.0;
        let _ = writeln!(
            out,
            "  {} requests ({share:.1}%) started over 10ms behind schedule: every connection \
             was busy (a slow server, or -c too low for the rate); their latency includes the wait\n",
            report.behind_schedule
        );
    }
    let width = report
        .requests
        .iter()
        .map(|s| s.name.len())
        .chain([7])
        .max()
        .unwrap_or(7);
    let _ = writeln!(
        out,
        "{:<width$} {:>9} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "request", "requests", "req/s", "errors", "p50", "p90", "p95", "p99", "p99.9", "max"
    );
    let row = |out: &mut String, s: &Stats| {
        let l = &s.latency_ms;
        let _ = writeln!(
            out,
            "{:<width$} {:>9} {:>9.1} {:>6.2}% {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            s.name,
            s.requests,
            s.rps,
            s.error_rate * 100.0,
            ms(l.p50),
            ms(l.p90),
            ms(l.p95),
            ms(l.p99),
            ms(l.p999),
            ms(l.max)
        );
    };
    if report.requests.len() > 1 {
        for s in &report.requests {
            row(&mut out, s);
        }
    }
    row(&mut out, o);
    let e = &o.errors;
    if e.total() > 0 {
        let _ = writeln!(
            out,
            "\nerrors: connect {}, timeout {}, transport {}, 4xx {}, 5xx {}",
            e.connect, e.timeout, e.transport, e.status_4xx, e.status_5xx
        );
        for (kind, message) in &o.error_examples {
            let _ = writeln!(out, "  first {kind} error: {message}");
        }
    }
    if !o.status.is_empty() {
        let codes: Vec<String> = o.status.iter().map(|(c, n)| format!("{c}: {n}")).collect();
        let _ = writeln!(out, "\nstatus: {}", codes.join(", "));
    }
    for (name, values) in &o.headers {
        let list: Vec<String> = values.iter().map(|(v, n)| format!("{v}: {n}")).collect();
        let _ = writeln!(out, "{name}: {}", list.join(", "));
    }
    if let Some(rate) = o.cache_hit_rate {
        let _ = writeln!(out, "cache hit rate: {:.1}%", rate * 100.0);
    }
    if !o.checks.is_empty() {
        let _ = writeln!(out, "\nchecks:");
        for c in &o.checks {
            let mark = if c.failed == 0 { "ok  " } else { "FAIL" };
            let _ = writeln!(
                out,
                "  {mark} {} ({} passed, {} failed)",
                c.check, c.passed, c.failed
            );
        }
    }
    if !report.thresholds.is_empty() {
        let failed = report.thresholds.iter().filter(|t| !t.passed).count();
        let _ = writeln!(
            out,
            "\nthresholds: {} of {} passed",
            report.thresholds.len() - failed,
            report.thresholds.len()
        );
        for t in &report.thresholds {
            let mark = if t.passed { "ok  " } else { "FAIL" };
            let actual = match t.actual {
                Some(v) => format_actual(&t.expression, v),
                None => "no data".to_owned(),
            };
            let _ = writeln!(out, "  {mark} {} (actual: {actual})", t.expression);
        }
    }
    out
}

fn format_actual(expression: &str, value: f64) -> String {
    match expression.parse::<crate::threshold::Threshold>() {
        Ok(t) => t.format_value(value),
        Err(_) => format!("{value}"),
    }
}
