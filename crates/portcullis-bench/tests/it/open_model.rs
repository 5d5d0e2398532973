//! The open model: the arrival rate holds whatever the server does, and latency counts from
//! the intended send time (coordinated omission corrected).

use std::{
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use portcullis_test_support::{TestUpstream, full};

use crate::{arrivals_between, report, timed_upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_constant_rate_is_held_within_two_percent_over_ten_seconds() {
    let (up, arrivals) = timed_upstream().await;
    let r = report(&[&up.url(), "--rate", "1000", "-d", "10s", "-c", "32"]).await;
    let arrivals = arrivals.lock().clone();
    // Everything scheduled was sent and answered...
    let total = r.overall.requests as f64;
    assert!((total - 10_000.0).abs() <= 200.0, "{total} requests");
    assert!(
        (r.overall.rps - 1000.0).abs() <= 20.0,
        "{} req/s",
        r.overall.rps
    );
    // ...and spread evenly: the server saw 1000/s in the middle nine seconds, not bursts.
    let middle = arrivals_between(&arrivals, 0.5, 9.5) as f64;
    assert!((middle - 9000.0).abs() <= 180.0, "{middle} arrivals in 9 s");
    assert_eq!(r.overall.errors.total(), 0);
    assert!(
        r.behind_schedule < 100,
        "the generator kept up: {}",
        r.behind_schedule
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_second_server_stall_shows_up_in_the_percentiles() {
    // From 1 s to 2 s after its first request the server answers nothing (as in a GC pause or
    // a blocked event loop); requests arriving then are answered when the stall ends.
    let first: Arc<OnceLock<Instant>> = Arc::new(OnceLock::new());
    let up = TestUpstream::start(Arc::new(move |_req| {
        let first = Arc::clone(&first);
        Box::pin(async move {
            let start = *first.get_or_init(Instant::now);
            let t = start.elapsed();
            if t >= Duration::from_secs(1) && t < Duration::from_secs(2) {
                tokio::time::sleep_until((start + Duration::from_secs(2)).into()).await;
            }
            http::Response::new(full("ok"))
        })
    }))
    .await;
    let r = report(&[&up.url(), "--rate", "200", "-d", "3s", "-c", "16"]).await;
    let l = &r.overall.latency_ms;
    // About 200 of the 600 requests were due during the stall; measured from their intended
    // send time their latencies spread over 0..1 s. A generator that waits for a free
    // connection before starting the clock would see only the 16 stuck in flight.
    assert!(l.p99 >= 900.0, "p99 {} ms", l.p99);
    assert!(l.p90 >= 500.0, "p90 {} ms", l.p90);
    assert!(l.p50 < 100.0, "p50 {} ms", l.p50);
    assert!(
        (r.overall.requests as f64 - 600.0).abs() <= 12.0,
        "{}",
        r.overall.requests
    );
    // The report says the schedule slipped because every connection was stuck.
    assert!(r.behind_schedule >= 100, "{}", r.behind_schedule);
}
