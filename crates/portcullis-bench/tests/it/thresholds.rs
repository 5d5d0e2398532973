//! Thresholds decide the exit code: 0 when all hold, 99 when any fails, and the summary says
//! which failed and by how much.

use std::sync::atomic::{AtomicU64, Ordering};

use portcullis_bench::EXIT_THRESHOLDS_FAILED;
use portcullis_test_support::{TestUpstream, full};

use crate::bench;

#[tokio::test]
async fn passing_thresholds_exit_zero() {
    let up = TestUpstream::respond(|_| http::Response::new(full("ok"))).await;
    let out = bench(&[
        &up.url(),
        "-n",
        "200",
        "-c",
        "4",
        "-t",
        "p95 < 5s",
        "-t",
        "error_rate < 1%",
        "-t",
        "rps > 1",
        "-t",
        "requests >= 200",
    ])
    .await;
    assert_eq!(out.exit_code, 0, "{}", out.summary);
    assert!(
        out.summary.contains("thresholds: 4 of 4 passed"),
        "{}",
        out.summary
    );
    assert!(out.report.unwrap().passed);
}

#[tokio::test]
async fn a_failing_threshold_exits_99_and_is_named_in_the_summary() {
    let n = AtomicU64::new(0);
    let up = TestUpstream::respond(move |_| {
        let status = if n.fetch_add(1, Ordering::SeqCst).is_multiple_of(10) {
            500
        } else {
            200
        };
        http::Response::builder()
            .status(status)
            .body(full(""))
            .unwrap()
    })
    .await;
    let out = bench(&[
        &up.url(),
        "-n",
        "100",
        "-c",
        "1",
        "-t",
        "error_rate < 1%",
        "-t",
        "p99 < 10s",
        "-t",
        "cache_hit_rate > 0.5",
    ])
    .await;
    assert_eq!(out.exit_code, EXIT_THRESHOLDS_FAILED);
    let s = &out.summary;
    assert!(s.contains("thresholds: 1 of 3 passed"), "{s}");
    assert!(s.contains("FAIL error_rate < 1% (actual: 10.00%)"), "{s}");
    assert!(s.contains("ok   p99 < 10s"), "{s}");
    assert!(
        s.contains("FAIL cache_hit_rate > 0.5 (actual: no data)"),
        "{s}"
    );
    let report = out.report.unwrap();
    assert!(!report.passed);
    assert_eq!(report.thresholds[0].actual, Some(0.1));
}

#[tokio::test]
async fn thresholds_scoped_to_a_request_kind_judge_only_that_kind() {
    let up = TestUpstream::start(std::sync::Arc::new(
        |req: http::Request<hyper::body::Incoming>| {
            Box::pin(async move {
                if req.uri().path() == "/slow" {
                    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
                }
                http::Response::new(full("ok"))
            })
        },
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.toml");
    std::fs::write(
        &path,
        format!(
            "base_url = \"{}\"\nthresholds = [\"p50{{fast}} < 25ms\"]\n\n\
             [[stages]]\nduration = \"10s\"\nusers = 2\n\n\
             [[requests]]\nname = \"fast\"\nurl = \"/fast\"\n\n\
             [[requests]]\nname = \"slow\"\nurl = \"/slow\"\nthresholds = [\"p50 < 25ms\"]\n",
            up.url()
        ),
    )
    .unwrap();
    let out = bench(&["--scenario", path.to_str().unwrap(), "-n", "40"]).await;
    let r = out.report.unwrap();
    assert_eq!(r.thresholds.len(), 2);
    assert!(r.thresholds[0].passed, "{}", out.summary);
    assert_eq!(r.thresholds[1].expression, "p50{slow} < 25ms");
    assert!(!r.thresholds[1].passed, "{}", out.summary);
    assert_eq!(out.exit_code, EXIT_THRESHOLDS_FAILED);
}
