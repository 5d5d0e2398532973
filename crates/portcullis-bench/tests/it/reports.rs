//! Reports: the JSON schema round-trips and keeps its field names, `compare` flags
//! regressions, and the HTML page is self-contained with its charts and table.

use std::collections::BTreeSet;

use portcullis_bench::{EXIT_THRESHOLDS_FAILED, Report, report::SCHEMA};
use portcullis_test_support::{TestUpstream, full};

use crate::{bench, report};

fn keys(v: &serde_json::Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test]
async fn the_json_report_round_trips_and_keeps_its_schema() {
    let up = TestUpstream::respond(|_| {
        http::Response::builder()
            .header("x-cache", "HIT")
            .body(full("ok"))
            .unwrap()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.json");
    let out = bench(&[
        &up.url(),
        "-n",
        "50",
        "-c",
        "2",
        "-t",
        "p99 < 10s",
        "--json",
        path.to_str().unwrap(),
    ])
    .await;
    let written = out.report.unwrap();
    let read = Report::read_json(&path).unwrap();
    assert_eq!(read, written);
    assert_eq!(read.schema, SCHEMA);

    // The field names are the contract: renaming one breaks readers (bump SCHEMA instead).
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(
        keys(&v),
        set(&[
            "schema",
            "name",
            "target",
            "model",
            "http_version",
            "connections",
            "started_unix_ms",
            "duration_s",
            "behind_schedule",
            "overall",
            "requests",
            "timeline",
            "thresholds",
            "passed"
        ])
    );
    assert_eq!(
        keys(&v["overall"]),
        set(&[
            "name",
            "requests",
            "responses",
            "rps",
            "error_rate",
            "errors",
            "status",
            "latency_ms",
            "bytes_received",
            "headers",
            "cache_hit_rate",
            "checks",
            "error_examples"
        ])
    );
    assert_eq!(
        keys(&v["overall"]["latency_ms"]),
        set(&["min", "mean", "p50", "p90", "p95", "p99", "p999", "max"])
    );
    assert_eq!(
        keys(&v["overall"]["errors"]),
        set(&[
            "connect",
            "timeout",
            "transport",
            "status_4xx",
            "status_5xx"
        ])
    );
    assert_eq!(v["overall"]["status"]["200"], 50);
    assert_eq!(v["overall"]["cache_hit_rate"], 1.0);
    assert_eq!(
        keys(&v["thresholds"][0]),
        set(&["expression", "actual", "passed"])
    );
}

#[tokio::test]
async fn reports_of_another_schema_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.json");
    std::fs::write(&path, "{\"schema\": \"portcullis-bench/0\"}").unwrap();
    let err = Report::read_json(&path).unwrap_err().to_string();
    assert!(err.contains("not a portcullis bench report"), "{err}");
}

#[tokio::test]
async fn compare_shows_changes_and_gates_regressions() {
    let up = TestUpstream::respond(|_| http::Response::new(full("ok"))).await;
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.json");
    let b = dir.path().join("b.json");
    let base = report(&[
        &up.url(),
        "-n",
        "50",
        "-c",
        "1",
        "--json",
        a.to_str().unwrap(),
    ])
    .await;
    let mut slower = base.clone();
    slower.overall.latency_ms.p95 = base.overall.latency_ms.p95 * 2.0;
    slower.write_json(&b).unwrap();

    let out = bench(&[
        "compare",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--max-regression",
        "10%",
    ])
    .await;
    assert_eq!(out.exit_code, EXIT_THRESHOLDS_FAILED, "{}", out.summary);
    let line = out.summary.lines().find(|l| l.contains("p95_ms")).unwrap();
    assert!(
        line.contains("+100.0%") && line.ends_with("REGRESSION"),
        "{line}"
    );
    assert!(
        !out.summary
            .lines()
            .find(|l| l.contains("p50_ms"))
            .unwrap()
            .contains("REGRESSION")
    );

    let out = bench(&[
        "compare",
        a.to_str().unwrap(),
        a.to_str().unwrap(),
        "--max-regression",
        "10%",
    ])
    .await;
    assert_eq!(out.exit_code, 0, "{}", out.summary);
    assert!(out.summary.contains("no regression beyond 10.0%"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_html_report_is_one_self_contained_page_with_charts_and_percentiles() {
    let up = TestUpstream::respond(|_| http::Response::new(full("ok"))).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.html");
    let r = report(&[
        &up.url(),
        "--rate",
        "100",
        "-d",
        "2s",
        "-t",
        "p99 < 10s",
        "--html",
        path.to_str().unwrap(),
    ])
    .await;
    let html = std::fs::read_to_string(&path).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.trim_end().ends_with("</html>"));
    assert_eq!(
        html.matches("<svg").count(),
        2,
        "latency and throughput charts"
    );
    assert_eq!(html.matches("<svg").count(), html.matches("</svg>").count());
    assert_eq!(
        html.matches("<table").count(),
        html.matches("</table>").count()
    );
    assert!(html.contains("Latency over time") && html.contains("Throughput over time"));
    assert!(
        html.matches("<polyline").count() >= 5,
        "p50, p90, p99, requests/s, errors/s"
    );
    assert!(html.contains("id=\"percentiles\""));
    assert!(
        html.contains("p99 &lt; 10s"),
        "thresholds are listed, escaped"
    );
    // Self-contained: no scripts, no external resources.
    assert!(!html.contains("<script"));
    assert!(!html.contains("src="));
    assert!(!html.contains("<link"));
    assert!(!html.contains("https://"));
    assert!(r.timeline.len() >= 2, "{:?}", r.timeline);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_html_report_renders_in_a_headless_browser() {
    let up = TestUpstream::respond(|_| http::Response::new(full("ok"))).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.html");
    report(&[
        &up.url(),
        "--rate",
        "100",
        "-d",
        "2s",
        "--html",
        path.to_str().unwrap(),
    ])
    .await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/report-render-check"
    );
    let shot = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/bench-report.png");
    let out = std::process::Command::new(script)
        .args([path.to_str().unwrap(), shot])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(shot).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG screenshot");
}
