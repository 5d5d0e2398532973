//! The live dashboard in a real browser: headless Chromium loads it from a running gateway
//! under load (scripts/dashboard-check), checks that its figures update, saves a screenshot.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use http::StatusCode;
use portcullis_test_support::{Client, TestGateway, TestUpstream, echo};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_updates_in_a_headless_browser() {
    let up = TestUpstream::start(echo()).await;
    let gw = TestGateway::start(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [[upstreams]]\nname = \"origin\"\ntargets = [{{ url = \"{}\" }}]\n\n\
         [[routes]]\nname = \"api\"\nupstream = \"origin\"\n",
        up.url()
    ))
    .await;
    let client = Client::http1();
    let page = client.get(&gw.admin_url("/dashboard")).await;
    assert_eq!(page.status(), StatusCode::OK);
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    let html = String::from_utf8(page.body().to_vec()).unwrap();
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no external assets"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (stop, url) = (Arc::clone(&stop), gw.url("/work"));
        tokio::spawn(async move {
            let client = Client::http1();
            while !stop.load(Ordering::Relaxed) {
                client.get(&url).await;
            }
        })
    };
    up.wait_requests(20).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/dashboard-check");
    let shot = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/dashboard.png");
    let admin = gw.admin_url("");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(script)
            .args([&admin, shot])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(shot).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG screenshot");
}
