//! `--html FILE`: one self-contained page (no scripts, no CDN, no external fonts) with the
//! verdict, the threshold results, the percentile table per request kind, errors and status
//! codes, and two inline SVG charts drawn here from the timeline: latency over time (p50, p90,
//! p99) and throughput over time (requests and errors per second, and the planned rate).

use std::fmt::Write;

use crate::{
    duration::format_latency,
    report::{Report, Sample, Stats},
};

/// Escapes text for HTML.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn ms(v: f64) -> String {
    format_latency(std::time::Duration::from_secs_f64((v / 1e3).max(0.0)))
}

/// One line of a chart.
struct Series<'a> {
    name: &'a str,
    color: &'a str,
    dashed: bool,
    points: Vec<(f64, f64)>,
}

/// A "nice" axis maximum: 1, 2 or 5 times a power of ten, at least `v`.
fn nice_max(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|&m| m >= v)
        .unwrap_or(10.0 * p)
}

fn chart(title: &str, unit: &str, series: &[Series<'_>]) -> String {
    const W: f64 = 860.0;
    const H: f64 = 260.0;
    const L: f64 = 64.0;
    const R: f64 = 16.0;
    const T: f64 = 16.0;
    const B: f64 = 36.0;
    let x_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(0.0, f64::max)
        .max(1.0);
    let y_max = nice_max(
        series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .fold(0.0, f64::max),
    );
    let x = |v: f64| L + v / x_max * (W - L - R);
    let y = |v: f64| H - B - v / y_max * (H - T - B);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<figure><figcaption>{}</figcaption><svg viewBox="0 0 {W} {H}" width="100%" role="img" aria-label="{}" xmlns="http://www.w3.org/2000/svg">"#,
        esc(title),
        esc(title)
    );
    for i in 0..=4 {
        let v = y_max * f64::from(i) / 4.0;
        let _ = write!(
            svg,
            r##"<line x1="{L}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end" class="tick">{} {unit}</text>"##,
            W - R,
            L - 6.0,
            y(v) + 4.0,
            trim_number(v),
            y = y(v),
        );
    }
    let x_step = nice_max(x_max / 6.0);
    for i in 0..=6 {
        let v = x_step * f64::from(i);
        if v > x_max + 1e-9 {
            break;
        }
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{}" text-anchor="middle" class="tick">{}s</text>"#,
            x(v),
            H - B + 18.0,
            trim_number(v)
        );
    }
    for s in series.iter().filter(|s| !s.points.is_empty()) {
        let points: Vec<String> = s
            .points
            .iter()
            .map(|&(px, py)| format!("{:.1},{:.1}", x(px), y(py)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{}" stroke-width="1.8"{} points="{}"><title>{}</title></polyline>"#,
            s.color,
            if s.dashed {
                r#" stroke-dasharray="6 4""#
            } else {
                ""
            },
            points.join(" "),
            esc(s.name)
        );
    }
    svg.push_str("</svg><div class=\"legend\">");
    for s in series {
        let _ = write!(
            svg,
            r#"<span><i style="background:{}"></i>{}</span>"#,
            s.color,
            esc(s.name)
        );
    }
    svg.push_str("</div></figure>");
    svg
}

fn trim_number(v: f64) -> String {
    if v >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_owned()
    }
}

fn mid(s: &Sample) -> f64 {
    s.t_s + s.span_s / 2.0
}

fn stats_row(s: &Stats) -> String {
    let l = &s.latency_ms;
    format!(
        "<tr><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.2}%</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        esc(&s.name),
        s.requests,
        s.rps,
        s.error_rate * 100.0,
        ms(l.min),
        ms(l.p50),
        ms(l.p90),
        ms(l.p95),
        ms(l.p99),
        ms(l.p999),
        ms(l.max)
    )
}

/// Renders the report as a self-contained HTML page.
pub fn render(report: &Report) -> String {
    let mut h = String::new();
    let verdict = if report.thresholds.is_empty() {
        ("no thresholds", "neutral")
    } else if report.passed {
        ("all thresholds passed", "pass")
    } else {
        ("thresholds failed", "fail")
    };
    let _ = write!(
        h,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>portcullis bench: {title}</title>
<style>
body{{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:920px;padding:0 1rem;color:#222}}
h1{{font-size:1.3rem;margin-bottom:.2rem}} h2{{font-size:1.05rem;margin-top:1.8rem}}
table{{border-collapse:collapse;width:100%}} td,th{{padding:.25rem .5rem;border-bottom:1px solid #e5e5e5;text-align:right}}
td:first-child,th:first-child{{text-align:left}} .meta{{color:#555}}
.badge{{display:inline-block;padding:.15rem .6rem;border-radius:1rem;font-weight:600}}
.pass{{background:#dff3e3;color:#17602a}} .fail{{background:#fbe0e0;color:#8a1c1c}} .neutral{{background:#eee}}
figure{{margin:1rem 0}} figcaption{{font-weight:600;margin-bottom:.3rem}} .tick{{font-size:11px;fill:#666}}
.legend span{{margin-right:1rem;font-size:12px}} .legend i{{display:inline-block;width:12px;height:3px;margin-right:4px;vertical-align:middle}}
</style></head><body>
<h1>portcullis bench: {title}</h1>
<p class="meta">{target} &middot; {model} model &middot; HTTP/{version} &middot; {conns} connections &middot; {duration:.1}s &middot; {requests} requests &middot; {rps:.1} req/s &middot; errors {err:.2}%</p>
<p><span class="badge {class}">{verdict}</span></p>
"#,
        title = esc(&report.name),
        target = esc(&report.target),
        model = esc(&report.model),
        version = esc(&report.http_version),
        conns = report.connections,
        duration = report.duration_s,
        requests = report.overall.requests,
        rps = report.overall.rps,
        err = report.overall.error_rate * 100.0,
        class = verdict.1,
        verdict = verdict.0,
    );
    if !report.thresholds.is_empty() {
        h.push_str("<h2>Thresholds</h2><table id=\"thresholds\"><tr><th>threshold</th><th>actual</th><th>result</th></tr>");
        for t in &report.thresholds {
            let actual = t.actual.map_or_else(
                || "no data".to_owned(),
                |v| match t.expression.parse::<crate::threshold::Threshold>() {
                    Ok(th) => th.format_value(v),
                    Err(_) => format!("{v}"),
                },
            );
            let _ = write!(
                h,
                r#"<tr><td>{}</td><td>{}</td><td><span class="badge {}">{}</span></td></tr>"#,
                esc(&t.expression),
                esc(&actual),
                if t.passed { "pass" } else { "fail" },
                if t.passed { "pass" } else { "FAIL" }
            );
        }
        h.push_str("</table>");
    }
    h.push_str("<h2>Latency percentiles</h2><table id=\"percentiles\"><tr><th>request</th><th>requests</th><th>req/s</th><th>errors</th><th>min</th><th>p50</th><th>p90</th><th>p95</th><th>p99</th><th>p99.9</th><th>max</th></tr>");
    if report.requests.len() > 1 {
        for s in &report.requests {
            h.push_str(&stats_row(s));
        }
    }
    h.push_str(&stats_row(&report.overall));
    h.push_str("</table>");

    let tl = &report.timeline;
    let series = |name, color, dashed, f: &dyn Fn(&Sample) -> f64| Series {
        name,
        color,
        dashed,
        points: tl.iter().map(|s| (mid(s), f(s))).collect(),
    };
    h.push_str("<h2>Over time</h2>");
    h.push_str(&chart(
        "Latency over time",
        "ms",
        &[
            series("p50", "#2b7bb9", false, &|s| s.p50_ms),
            series("p90", "#e39b2b", false, &|s| s.p90_ms),
            series("p99", "#c0392b", false, &|s| s.p99_ms),
        ],
    ));
    let per_sec = |n: u64, s: &Sample| n as f64 / s.span_s.max(1e-9);
    let mut throughput = vec![
        series("requests/s", "#2b7bb9", false, &|s| per_sec(s.requests, s)),
        series("errors/s", "#c0392b", false, &|s| per_sec(s.errors, s)),
    ];
    if report.model == "open" {
        throughput.push(series("planned rate", "#888", true, &|s| s.target));
    }
    h.push_str(&chart("Throughput over time", "/s", &throughput));

    let o = &report.overall;
    h.push_str("<h2>Errors and responses</h2><table id=\"errors\">");
    let e = &o.errors;
    for (name, n) in [
        ("connect", e.connect),
        ("timeout", e.timeout),
        ("transport", e.transport),
        ("status 4xx", e.status_4xx),
        ("status 5xx", e.status_5xx),
    ] {
        let _ = write!(h, "<tr><td>{name}</td><td>{n}</td></tr>");
    }
    for (code, n) in &o.status {
        let _ = write!(h, "<tr><td>status {code}</td><td>{n}</td></tr>");
    }
    for (name, values) in &o.headers {
        for (v, n) in values {
            let _ = write!(h, "<tr><td>{}: {}</td><td>{n}</td></tr>", esc(name), esc(v));
        }
    }
    if let Some(rate) = o.cache_hit_rate {
        let _ = write!(
            h,
            "<tr><td>cache hit rate</td><td>{:.1}%</td></tr>",
            rate * 100.0
        );
    }
    h.push_str("</table>");
    if !o.checks.is_empty() {
        h.push_str("<h2>Checks</h2><table id=\"checks\"><tr><th>check</th><th>passed</th><th>failed</th></tr>");
        for c in &o.checks {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&c.check),
                c.passed,
                c.failed
            );
        }
        h.push_str("</table>");
    }
    h.push_str("</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_axis_maxima() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(3.2), 5.0);
        assert_eq!(nice_max(120.0), 200.0);
        assert_eq!(nice_max(1000.0), 1000.0);
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
