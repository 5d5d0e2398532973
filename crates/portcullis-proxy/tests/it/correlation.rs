//! Correlation headers: request ids under a configured name, W3C trace context continued or
//! started for the upstream hop, `X-Response-Time` and `Server-Timing`.

use http::{Request, StatusCode};
use http_body_util::Full;
use portcullis_test_support::{Client, TestGateway, TestUpstream, echo};

use crate::single_route;

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn upstream_header(up: &TestUpstream, i: usize, name: &str) -> Option<String> {
    up.requests()[i]
        .headers
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

#[tokio::test]
async fn traceparent_is_continued_with_the_gateways_span_or_started() {
    let up = TestUpstream::start(echo()).await;
    let gw = TestGateway::start(&single_route(&[&up], "", "")).await;
    let client = Client::http1();
    let req = Request::get(gw.url("/a"))
        .header("traceparent", PARENT)
        .header("tracestate", "vendor=abc")
        .body(Full::default())
        .unwrap();
    assert_eq!(client.send(req).await.status(), StatusCode::OK);
    let sent = upstream_header(&up, 0, "traceparent").unwrap();
    assert!(
        sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{sent}"
    );
    assert_ne!(
        &sent[36..52],
        "00f067aa0ba902b7",
        "the gateway's hop has its own span id"
    );
    assert!(sent.ends_with("-01"), "{sent}");
    assert_eq!(
        upstream_header(&up, 0, "tracestate").as_deref(),
        Some("vendor=abc")
    );

    // No (or a malformed) parent: a new trace.
    for incoming in [None, Some("00-garbage")] {
        let mut req = Request::get(gw.url("/b"));
        if let Some(v) = incoming {
            req = req.header("traceparent", v);
        }
        client.send(req.body(Full::default()).unwrap()).await;
    }
    let first = upstream_header(&up, 1, "traceparent").unwrap();
    let second = upstream_header(&up, 2, "traceparent").unwrap();
    for started in [&first, &second] {
        assert_eq!(started.len(), 55, "{started}");
        assert!(
            started.starts_with("00-") && started.ends_with("-01"),
            "{started}"
        );
    }
    assert_ne!(first[3..35], second[3..35], "each new trace has its own id");
}

#[tokio::test]
async fn trace_context_can_be_switched_off() {
    let up = TestUpstream::start(echo()).await;
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ntrace_context = false\n\n{}",
        single_route(&[&up], "", "")
    );
    let gw = TestGateway::start(&config).await;
    let req = Request::get(gw.url("/a"))
        .header("traceparent", PARENT)
        .body(Full::default())
        .unwrap();
    Client::http1().send(req).await;
    assert_eq!(
        upstream_header(&up, 0, "traceparent").as_deref(),
        Some(PARENT)
    );
    Client::http1().get(&gw.url("/b")).await;
    assert_eq!(upstream_header(&up, 1, "traceparent"), None);
}

#[tokio::test]
async fn the_request_id_header_name_is_configurable() {
    let up = TestUpstream::start(echo()).await;
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nrequest_id_header = \"x-correlation-id\"\n\n{}",
        single_route(&[&up], "", "")
    );
    let gw = TestGateway::start(&config).await;
    let client = Client::http1();
    let req = Request::get(gw.url("/a"))
        .header("x-correlation-id", "corr-42")
        .body(Full::default())
        .unwrap();
    let resp = client.send(req).await;
    assert_eq!(resp.headers()["x-correlation-id"], "corr-42");
    assert!(!resp.headers().contains_key("x-request-id"));
    assert_eq!(
        upstream_header(&up, 0, "x-correlation-id").as_deref(),
        Some("corr-42")
    );
    // Gateway errors carry it too, under the configured name only.
    let gw2 = TestGateway::start(
        "[server]\nlisten = \"127.0.0.1:0\"\nrequest_id_header = \"x-correlation-id\"\n\n\
         [[upstreams]]\nname = \"u\"\ntargets = [{ url = \"http://127.0.0.1:9\" }]\n\n\
         [[routes]]\nname = \"r\"\nmatch = { path = \"/only\" }\nupstream = \"u\"\n",
    )
    .await;
    let missing = client.get(&gw2.url("/nope")).await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let id = missing.headers()["x-correlation-id"].to_str().unwrap();
    assert!(!missing.headers().contains_key("x-request-id"));
    let body = crate::json(missing.body());
    assert_eq!(body["request_id"], id);
}

#[tokio::test]
async fn timing_headers_report_the_upstream_leg_and_the_cache() {
    let up = TestUpstream::start(echo()).await;
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ntiming_headers = true\n\n{}",
        single_route(&[&up], "", "cache = { ttl = \"60s\", ttl_override = true }")
    );
    let gw = TestGateway::start(&config).await;
    let client = Client::http1();
    let miss = client.get(&gw.url("/t")).await;
    let timing = miss.headers()["server-timing"].to_str().unwrap();
    assert!(timing.contains("cache;desc=\"MISS\""), "{timing}");
    assert!(timing.contains("total;dur="), "{timing}");
    assert!(
        miss.headers()["x-response-time"]
            .to_str()
            .unwrap()
            .ends_with("ms")
    );
    let hit = client.get(&gw.url("/t")).await;
    let timing = hit.headers()["server-timing"].to_str().unwrap();
    assert!(timing.contains("cache;desc=\"HIT\""), "{timing}");
    assert!(
        !timing.contains("upstream;"),
        "a hit has no upstream leg: {timing}"
    );

    // Off by default.
    let plain = TestGateway::start(&single_route(&[&up], "", "")).await;
    let resp = client.get(&plain.url("/t")).await;
    assert!(!resp.headers().contains_key("server-timing"));
    assert!(!resp.headers().contains_key("x-response-time"));
}

#[tokio::test]
async fn uncached_responses_time_the_upstream_leg() {
    let up = TestUpstream::start(echo()).await;
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ntiming_headers = true\n\n{}",
        single_route(&[&up], "", "")
    );
    let gw = TestGateway::start(&config).await;
    let resp = Client::http1().get(&gw.url("/u")).await;
    let timing = resp.headers()["server-timing"].to_str().unwrap();
    assert!(timing.starts_with("upstream;dur="), "{timing}");
}
