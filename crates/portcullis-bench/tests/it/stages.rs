//! Stages ramp as configured: a rate ramp seen by the server, and users joining one by one.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use portcullis_test_support::{TestUpstream, full};

use crate::{arrivals_between, report, timed_upstream};

fn scenario(dir: &tempfile::TempDir, text: &str) -> String {
    let path = dir.path().join("scenario.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_ramp_sends_the_integral_of_the_stages() {
    let (up, arrivals) = timed_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    // 0 → 200/s over 2 s (200 requests: 50 in the first second, 150 in the second), then
    // 200/s for 1 s.
    let file = scenario(
        &dir,
        &format!(
            "base_url = \"{}\"\n\n[[stages]]\nduration = \"2s\"\nrate = 200\n\n\
             [[stages]]\nduration = \"1s\"\nrate = 200\n\n[[requests]]\nurl = \"/\"\n",
            up.url()
        ),
    );
    let r = report(&["--scenario", &file]).await;
    let arrivals = arrivals.lock().clone();
    let per_second: Vec<usize> = (0..3)
        .map(|s| arrivals_between(&arrivals, f64::from(s), f64::from(s + 1)))
        .collect();
    for (got, want) in per_second.iter().zip([50.0, 150.0, 200.0]) {
        assert!(
            (*got as f64 - want).abs() <= want * 0.1 + 3.0,
            "per second {per_second:?}"
        );
    }
    assert!(
        (r.overall.requests as f64 - 400.0).abs() <= 4.0,
        "{}",
        r.overall.requests
    );
    // The timeline records each interval's planned rate next to what was sent: the mean of
    // the stages over the interval (intervals are about a second; a late tick stretches one).
    let planned = |t: f64| match t {
        t if t < 2.0 => 50.0 * t * t,
        t if t < 3.0 => 200.0 + 200.0 * (t - 2.0),
        _ => 400.0,
    };
    assert!(r.timeline.len() >= 3, "{:?}", r.timeline);
    for s in &r.timeline {
        let want = (planned(s.t_s + s.span_s) - planned(s.t_s)) / s.span_s;
        assert!((s.target - want).abs() <= 0.5, "{s:?}: want {want}");
    }
    assert!(
        r.timeline[0].target < r.timeline[1].target,
        "the ramp rises"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_join_as_the_ramp_passes_their_number() {
    // Every request takes 20 ms; the server records how many were in flight when each began.
    let in_flight = Arc::new(AtomicUsize::new(0));
    let seen: Arc<Mutex<Vec<(Instant, usize)>>> = Arc::new(Mutex::new(Vec::new()));
    let (f, s) = (Arc::clone(&in_flight), Arc::clone(&seen));
    let up = TestUpstream::start(Arc::new(move |_req| {
        let (f, s) = (Arc::clone(&f), Arc::clone(&s));
        Box::pin(async move {
            let now = f.fetch_add(1, Ordering::SeqCst) + 1;
            s.lock().push((Instant::now(), now));
            tokio::time::sleep(Duration::from_millis(20)).await;
            f.fetch_sub(1, Ordering::SeqCst);
            http::Response::new(full("ok"))
        })
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    // 0 → 4 users over 2 s (user i joins at i/2 s), then 4 users for 1 s.
    let file = scenario(
        &dir,
        &format!(
            "base_url = \"{}\"\n\n[[stages]]\nduration = \"2s\"\nusers = 4\n\n\
             [[stages]]\nduration = \"1s\"\nusers = 4\n\n[[requests]]\nurl = \"/\"\n",
            up.url()
        ),
    );
    let r = report(&["--scenario", &file]).await;
    assert_eq!(r.connections, 4);
    let seen = seen.lock().clone();
    let start = seen.iter().map(|x| x.0).min().unwrap();
    let max_between = |from: f64, to: f64| {
        seen.iter()
            .filter(|(t, _)| {
                let t = t.duration_since(start).as_secs_f64();
                t >= from && t < to
            })
            .map(|x| x.1)
            .max()
            .unwrap_or(0)
    };
    assert_eq!(
        max_between(0.05, 0.4),
        1,
        "one user during the first half second"
    );
    assert_eq!(max_between(2.2, 2.9), 4, "four users on the plateau");
    assert_eq!(up.connections(), 4);
}
