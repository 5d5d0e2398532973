//! Cache warming (at start-up and through the admin API, with a cap on requests in flight)
//! and refresh-ahead of entries read near the end of their life.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use portcullis_test_support::{Client, TestGateway, TestUpstream, full};

use crate::json;

fn config(up: &TestUpstream, cache_extra: &str, route_cache: &str) -> String {
    format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n[cache]\n{cache_extra}\n\n\
         [[upstreams]]\nname = \"up\"\ntargets = [{{ url = \"{}\" }}]\n\n\
         [[routes]]\nname = \"all\"\nupstream = \"up\"\ncache = {{ {route_cache} }}\n",
        up.url()
    )
}

async fn origin() -> TestUpstream {
    TestUpstream::respond(|req| {
        Response::builder()
            .header("cache-control", "max-age=60")
            .body(full(req.uri().path().to_owned()))
            .unwrap()
    })
    .await
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn x_cache(r: &Response<Bytes>) -> &str {
    r.headers()
        .get("x-cache")
        .map_or("", |v| v.to_str().unwrap_or(""))
}

#[tokio::test]
async fn configured_urls_are_warmed_at_start_and_then_hit() {
    let up = origin().await;
    let gw = TestGateway::start(&config(
        &up,
        "[cache.warm]\nurls = [\"http://127.0.0.1/w/1\", \"http://127.0.0.1/w/2?b=2&a=1\"]",
        "",
    ))
    .await;
    up.wait_requests(2).await;
    eventually("both stored", || gw.cache().stats().total.stores >= 2).await;
    let client = Client::http1();
    let r = client.get(&gw.url("/w/1")).await;
    assert_eq!(x_cache(&r), "HIT");
    let r = client.get(&gw.url("/w/2?a=1&b=2")).await;
    assert_eq!(x_cache(&r), "HIT", "the query is normalized like any key");
    assert_eq!(up.request_count(), 2);
    let warmer = &up.requests()[0];
    assert_eq!(warmer.headers["user-agent"], "portcullis-cache-warmer");
}

#[tokio::test]
async fn the_admin_call_warms_at_most_n_at_once_and_reports() {
    let (now, max) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (n2, m2) = (Arc::clone(&now), Arc::clone(&max));
    let up = TestUpstream::start(Arc::new(move |req| {
        let (now, max) = (Arc::clone(&n2), Arc::clone(&m2));
        Box::pin(async move {
            let inflight = now.fetch_add(1, Ordering::SeqCst) + 1;
            max.fetch_max(inflight, Ordering::SeqCst);
            // Simulated origin latency, so requests overlap when they are allowed to.
            tokio::time::sleep(Duration::from_millis(20)).await;
            now.fetch_sub(1, Ordering::SeqCst);
            Response::builder()
                .header("cache-control", "max-age=60")
                .body(full(req.uri().path().to_owned()))
                .unwrap()
        })
    }))
    .await;
    let gw = TestGateway::start(&config(&up, "", "")).await;
    let client = Client::http1();
    let urls: Vec<String> = (0..10)
        .map(|i| format!("\"http://127.0.0.1/a/{i}\""))
        .collect();
    let body = format!(
        "{{\"urls\":[{}, \"/relative\"],\"concurrency\":2}}",
        urls.join(",")
    );
    let post = |body: String| {
        let client = client.clone();
        let url = gw.admin_url("/admin/cache/warm");
        async move {
            client
                .send(
                    Request::post(url)
                        .body(Full::new(Bytes::from(body)))
                        .unwrap(),
                )
                .await
        }
    };
    let r = post(body.clone()).await;
    assert_eq!(r.status(), StatusCode::OK);
    let report = json(r.body());
    assert_eq!(report["requested"], 11);
    assert_eq!(report["fetched"], 10);
    assert_eq!(report["failed"][0]["url"], "/relative");
    assert_eq!(report["failed"][0]["reason"], "not an absolute http(s) URL");
    assert!(
        max.load(Ordering::SeqCst) <= 2,
        "at most 2 warming requests at once"
    );
    assert_eq!(up.request_count(), 10);
    // Everything is cached now: a second run fetches nothing.
    let again = json(post(body).await.body());
    assert_eq!(again["cached"], 10);
    assert_eq!(up.request_count(), 10);
    let r = post("{\"urls\":[]}".into()).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn an_entry_read_near_the_end_of_its_life_is_refreshed_in_the_background() {
    let up = TestUpstream::respond(|_req| {
        // Nine of its ten seconds already used upstream: in its last 10%.
        Response::builder()
            .header("cache-control", "max-age=10")
            .header("age", "9")
            .header("etag", "\"e1\"")
            .body(full("near the end"))
            .unwrap()
    })
    .await;
    let gw = TestGateway::start(&config(&up, "", "refresh_ahead = 0.5")).await;
    let client = Client::http1();
    assert_eq!(x_cache(&client.get(&gw.url("/r")).await), "MISS");
    let hit = client.get(&gw.url("/r")).await;
    assert_eq!(x_cache(&hit), "HIT", "served at once from the cache");
    up.wait_requests(2).await;
    let refresh = &up.requests()[1];
    assert_eq!(
        refresh.headers["if-none-match"], "\"e1\"",
        "the refresh revalidates with the stored validator"
    );
}
