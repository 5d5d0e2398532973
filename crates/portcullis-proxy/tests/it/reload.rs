//! Reloading the configuration under load: requests never fail, new routes take effect,
//! refused configs change nothing, unchanged upstreams keep their connections.

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicUsize, Ordering},
};

use http::StatusCode;
use portcullis_test_support::{Client, TestGateway, TestUpstream, echo};

fn two_routes(default: &TestUpstream, other: &TestUpstream, with_extra: bool) -> String {
    let mut config = format!(
        "[[upstreams]]\nname = \"a\"\ntargets = [{{ url = \"{}\" }}]\n\n\
         [[upstreams]]\nname = \"b\"\ntargets = [{{ url = \"{}\" }}]\n\n\
         [[routes]]\nname = \"main\"\nmatch = {{ path_prefix = \"/x\" }}\nupstream = \"{}\"\n",
        default.url(),
        other.url(),
        if with_extra { "b" } else { "a" },
    );
    if with_extra {
        config.push_str(
            "\n[[routes]]\nname = \"extra\"\nmatch = { path_prefix = \"/extra\" }\nupstream = \"a\"\n",
        );
    }
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_reloads_under_constant_load_fail_no_request() {
    let a = TestUpstream::start(echo()).await;
    let b = TestUpstream::start(echo()).await;
    let gw = TestGateway::start(&two_routes(&a, &b, false)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut load = Vec::new();
    for _ in 0..8 {
        let (stop, ok, failed) = (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failed));
        let url = gw.url("/x/item");
        load.push(tokio::spawn(async move {
            let client = Client::http1();
            while !stop.load(Ordering::Relaxed) {
                if client.get(&url).await.status() == StatusCode::OK {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for i in 0..10 {
        let to_b = i % 2 == 0;
        let report = gw.reload(&two_routes(&a, &b, to_b)).expect("reload");
        assert_eq!(report.routes, if to_b { 2 } else { 1 });
        assert_eq!(report.upstreams_kept, 2, "unchanged upstreams are kept");
        // The load reaches the route's new upstream: the reload took effect.
        let target = if to_b { &b } else { &a };
        target.wait_requests(target.request_count() + 5).await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during reloads"
    );
    assert!(ok.load(Ordering::Relaxed) > 50);
    // The last reload (i = 9) routed /x to `a` and removed /extra.
    let client = Client::http1();
    assert_eq!(
        client.get(&gw.url("/extra/1")).await.status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_refused_reload_changes_nothing() {
    let a = TestUpstream::start(echo()).await;
    let b = TestUpstream::start(echo()).await;
    let gw = TestGateway::start(&two_routes(&a, &b, true)).await;
    let bad = "[[routes]]\nname = \"r\"\nupstream = \"missing\"\n";
    let err = gw.reload(bad).unwrap_err();
    assert!(err.contains("routes[0].upstream"), "{err}");
    let client = Client::http1();
    assert_eq!(
        client.get(&gw.url("/extra/1")).await.status(),
        StatusCode::OK
    );
    assert_eq!(client.get(&gw.url("/x/1")).await.status(), StatusCode::OK);
    assert_eq!(b.request_count(), 1, "/x still goes to b");
}

#[tokio::test]
async fn kept_upstreams_keep_their_pooled_connections_and_counters_continue() {
    let a = TestUpstream::start(echo()).await;
    let config = format!(
        "[[upstreams]]\nname = \"a\"\ntargets = [{{ url = \"{}\" }}]\n\n\
         [[routes]]\nname = \"main\"\nupstream = \"a\"\ncache = {{ ttl = \"60s\", ttl_override = true }}\n",
        a.url()
    );
    let gw = TestGateway::start(&config).await;
    let client = Client::http1();
    client.get(&gw.url("/one")).await;
    client.get(&gw.url("/one")).await;
    assert_eq!(a.connections(), 1);
    let report = gw.reload(&config).unwrap();
    assert_eq!(report.upstreams_kept, 1);
    assert!(report.needs_restart.is_empty(), "{report:?}");
    let again = client.get(&gw.url("/one")).await;
    assert_eq!(
        again.headers()["x-cache"],
        "HIT",
        "stored entries survive a reload"
    );
    client.get(&gw.url("/two")).await;
    assert_eq!(
        a.connections(),
        1,
        "the pooled connection was reused after the reload"
    );
    let stats = gw.cache().stats();
    assert_eq!(stats.routes.len(), 1);
    assert_eq!(
        stats.total.hits, 2,
        "hit counters continue across the reload"
    );

    // Changing the listener is reported as needing a restart.
    let moved = format!("[server]\nlisten = \"127.0.0.1:1\"\n\n{config}");
    let report = gw.reload(&moved).unwrap();
    assert_eq!(report.needs_restart, ["server.listen"]);
}
