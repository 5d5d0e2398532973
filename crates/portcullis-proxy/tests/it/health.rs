//! Active health checks against real targets that fail on command: a failing target leaves the
//! balancer and returns when it passes again; all-unhealthy fails open or closed as configured.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use http::StatusCode;
use portcullis_test_support::{Client, TestGateway, TestUpstream, full};

use crate::answering;

/// A target whose `/health` answers 200 or 503 as `up` says; other paths answer 200.
async fn switchable(up: Arc<AtomicBool>) -> TestUpstream {
    TestUpstream::respond(move |req| {
        let status = if req.uri().path() == "/health" && !up.load(Ordering::Relaxed) {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        };
        let mut resp = http::Response::new(full("x"));
        *resp.status_mut() = status;
        resp
    })
    .await
}

fn config(a: &TestUpstream, b: &TestUpstream, extra: &str) -> String {
    format!(
        "[[upstreams]]\nname = \"pair\"\ntargets = [{{ url = \"{}\" }}, {{ url = \"{}\" }}]\n\
         health = {{ path = \"/health\", interval = \"50ms\", timeout = \"1s\", healthy = 2, unhealthy = 2 }}\n{extra}\n\n\
         [[routes]]\nname = \"all\"\nupstream = \"pair\"\n",
        a.url(),
        b.url()
    )
}

fn traffic_to(up: &TestUpstream) -> usize {
    up.requests()
        .iter()
        .filter(|r| r.uri.path() != "/health")
        .count()
}

/// Waits until `up` has received `n` more health probes than it had.
async fn probes(up: &TestUpstream, n: usize) {
    let seen = up.request_count();
    up.wait_requests(seen + n).await;
}

#[tokio::test]
async fn a_failing_target_leaves_the_balancer_and_comes_back() {
    let (a_up, b_up) = (
        Arc::new(AtomicBool::new(true)),
        Arc::new(AtomicBool::new(true)),
    );
    let a = switchable(Arc::clone(&a_up)).await;
    let b = switchable(Arc::clone(&b_up)).await;
    let gw = TestGateway::start(&config(&a, &b, "")).await;
    let client = Client::http1();

    b_up.store(false, Ordering::Relaxed);
    // Two failing probes mark it down; the third proves the second was processed.
    probes(&b, 3).await;
    let before = traffic_to(&b);
    for _ in 0..20 {
        assert_eq!(client.get(&gw.url("/work")).await.status(), StatusCode::OK);
    }
    assert_eq!(traffic_to(&b), before, "no traffic to the unhealthy target");
    assert_eq!(traffic_to(&a), 20);

    b_up.store(true, Ordering::Relaxed);
    probes(&b, 3).await;
    for _ in 0..20 {
        client.get(&gw.url("/work")).await;
    }
    assert!(
        traffic_to(&b) >= before + 5,
        "traffic returns to the healthy target"
    );
}

#[tokio::test]
async fn all_unhealthy_fails_open_by_default_and_closed_when_configured() {
    let down = Arc::new(AtomicBool::new(false));
    // Each gateway has its own targets, so the probes counted are its own.
    let (a1, b1) = (
        switchable(Arc::clone(&down)).await,
        switchable(Arc::clone(&down)).await,
    );
    let (a2, b2) = (
        switchable(Arc::clone(&down)).await,
        switchable(Arc::clone(&down)).await,
    );
    let open = TestGateway::start(&config(&a1, &b1, "")).await;
    let closed =
        TestGateway::start(&config(&a2, &b2, "when_all_unhealthy = \"fail_closed\"")).await;
    for target in [&a1, &b1, &a2, &b2] {
        probes(target, 3).await;
    }
    let client = Client::http1();
    assert_eq!(
        client.get(&open.url("/x")).await.status(),
        StatusCode::OK,
        "fail open still tries a target"
    );
    let refused = client.get(&closed.url("/x")).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = crate::json(refused.body());
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("no healthy target"),
        "{body}"
    );
}

fn outlier_config(targets: &[&TestUpstream], outlier: &str) -> String {
    let targets: Vec<String> = targets
        .iter()
        .map(|t| format!("{{ url = \"{}\" }}", t.url()))
        .collect();
    format!(
        "[[upstreams]]\nname = \"pool\"\ntargets = [{}]\noutlier = {{ {outlier} }}\n\n\
         [[routes]]\nname = \"all\"\nupstream = \"pool\"\n",
        targets.join(", ")
    )
}

#[tokio::test]
async fn consecutive_failures_eject_a_target() {
    let good = answering(StatusCode::OK).await;
    let bad = answering(StatusCode::INTERNAL_SERVER_ERROR).await;
    let gw = TestGateway::start(&outlier_config(
        &[&good, &bad],
        "consecutive_failures = 3, base_ejection = \"60s\"",
    ))
    .await;
    let client = Client::http1();
    let mut failures = 0;
    for _ in 0..30 {
        if client.get(&gw.url("/x")).await.status() != StatusCode::OK {
            failures += 1;
        }
    }
    // Round robin alternates until the third 500 in a row from `bad`; then it is set aside.
    assert_eq!(
        bad.request_count(),
        3,
        "the failing target is ejected after 3 failures"
    );
    assert_eq!(failures, 3);
    assert_eq!(good.request_count(), 27);
}

#[tokio::test]
async fn ejection_never_takes_more_than_the_allowed_share() {
    let a = answering(StatusCode::BAD_GATEWAY).await;
    let b = answering(StatusCode::BAD_GATEWAY).await;
    let gw = TestGateway::start(&outlier_config(
        &[&a, &b],
        "consecutive_failures = 2, base_ejection = \"60s\", max_ejected_percent = 50",
    ))
    .await;
    let client = Client::http1();
    for _ in 0..20 {
        client.get(&gw.url("/x")).await;
    }
    // One of the two is ejected (50%); the other keeps taking traffic.
    let (na, nb) = (a.request_count(), b.request_count());
    // Round robin: a fails twice first and is ejected; b's second failure finds the cap (one of
    // two) taken, so b stays.
    assert_eq!((na, nb), (2, 18));
}
