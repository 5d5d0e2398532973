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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_with_its_own_mix_shifts_what_is_sent() {
    // The server records when each path arrived.
    let seen: Arc<Mutex<Vec<(Instant, String)>>> = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&seen);
    let up = TestUpstream::respond(move |req| {
        s.lock().push((Instant::now(), req.uri().path().to_owned()));
        http::Response::new(full("ok"))
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    // 100 requests/s for 3 s: only `browse` in the first second, only `buy` in the spike
    // second, then the requests' own 1:1 weights. A request's stage is that of its scheduled
    // time, so each stage sends exactly 100.
    let file = scenario(
        &dir,
        &format!(
            "base_url = \"{}\"\nstart = 100\n\n\
             [[stages]]\nduration = \"1s\"\nrate = 100\nmix = {{ browse = 1 }}\n\n\
             [[stages]]\nduration = \"1s\"\nrate = 100\nmix = {{ buy = 1 }}\n\n\
             [[stages]]\nduration = \"1s\"\nrate = 100\n\n\
             [[requests]]\nname = \"browse\"\nurl = \"/browse\"\n\n\
             [[requests]]\nname = \"buy\"\nurl = \"/buy\"\n",
            up.url()
        ),
    );
    let r = report(&["--scenario", &file]).await;
    let seen = seen.lock().clone();
    assert_eq!(seen.len(), 300);
    let first = seen.iter().map(|x| x.0).min().unwrap();
    // Per stage (a 50 ms margin either side of each boundary for the trip to the server):
    // how many of each path arrived.
    let count = |path: &str, from: f64, to: f64| {
        seen.iter()
            .filter(|(t, p)| {
                let t = t.duration_since(first).as_secs_f64();
                p == path && t >= from && t < to
            })
            .count()
    };
    let per_stage: Vec<(usize, usize)> = [(0.0, 0.95), (1.05, 1.95), (2.05, 3.5)]
        .iter()
        .map(|&(from, to)| (count("/browse", from, to), count("/buy", from, to)))
        .collect();
    // Each window is 0.9 s of a 100/s schedule, so it holds about 90 requests; a loaded
    // machine shifts a few across its edges, hence the lower bound of 75. The exact claims
    // are the zeros and the totals below.
    assert_eq!(per_stage[0].1, 0, "no buy before the spike: {per_stage:?}");
    assert!(per_stage[0].0 >= 75, "{per_stage:?}");
    assert_eq!(per_stage[1].0, 0, "only buy in the spike: {per_stage:?}");
    assert!(per_stage[1].1 >= 75, "{per_stage:?}");
    // Back to 1:1 for the last 100 (σ = 5): both kinds, neither far from half.
    let (browse, buy) = per_stage[2];
    assert!(
        (25..=75).contains(&browse) && (25..=75).contains(&buy),
        "{per_stage:?}"
    );
    // All of the first stage's 100 are `browse` and all of the spike's `buy`, whenever they
    // reached the server.
    let total = |path: &str| seen.iter().filter(|(_, p)| p == path).count();
    assert!(
        total("/browse") >= 100 && total("/buy") >= 100,
        "{} browse, {} buy",
        total("/browse"),
        total("/buy")
    );
    let reported: Vec<(String, u64)> = r
        .requests
        .iter()
        .map(|k| (k.name.clone(), k.requests))
        .collect();
    assert_eq!(
        reported,
        [
            ("browse".to_owned(), total("/browse") as u64),
            ("buy".to_owned(), total("/buy") as u64)
        ]
    );
}
