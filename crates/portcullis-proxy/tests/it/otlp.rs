//! OTLP span export against a real HTTP collector on loopback: every request's span arrives
//! with the trace id and span id the upstream saw in `traceparent`, the caller's span as parent,
//! the configured service name and headers; an unsampled caller's trace is not exported.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use portcullis_test_support::{Client, TestGateway, TestUpstream, full};
use tokio::sync::mpsc;

use crate::answering;

/// A collector that answers 200 and hands each export's headers and body to the test.
async fn collector() -> (
    TestUpstream,
    mpsc::UnboundedReceiver<(http::HeaderMap, Bytes)>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let up = TestUpstream::start(Arc::new(move |req: Request<hyper::body::Incoming>| {
        let tx = tx.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            let _ = tx.send((parts.headers, body));
            Response::new(full(""))
        })
    }))
    .await;
    (up, rx)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn config(collector: &TestUpstream, origin: &TestUpstream) -> String {
    format!(
        "[otlp]\nendpoint = \"{}/v1/traces\"\nservice_name = \"portcullis-test\"\n\
         flush_interval = \"50ms\"\nheaders = {{ x-api-key = \"k-123\" }}\n\n\
         [[upstreams]]\nname = \"up\"\ntargets = [{{ url = \"{}\" }}]\n\n\
         [[routes]]\nname = \"all\"\nupstream = \"up\"\n",
        collector.url(),
        origin.url()
    )
}

/// Waits (bounded) for the next export.
async fn next_export(
    rx: &mut mpsc::UnboundedReceiver<(http::HeaderMap, Bytes)>,
) -> (http::HeaderMap, Bytes) {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("no export within 10 s")
        .expect("collector stopped")
}

#[tokio::test]
async fn a_requests_span_reaches_the_collector_with_the_ids_sent_upstream() {
    let (collector, mut exports) = collector().await;
    let origin = answering(StatusCode::OK).await;
    let gw = TestGateway::start(&config(&collector, &origin)).await;
    let trace_id: u128 = 0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736;
    let parent: u64 = 0x00f0_67aa_0ba9_02b7;
    let resp = Client::http1()
        .send(
            Request::get(gw.url("/orders/7"))
                .header(
                    "traceparent",
                    format!("00-{trace_id:032x}-{parent:016x}-01"),
                )
                .body(Full::<Bytes>::default())
                .unwrap(),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let request_id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    // The gateway's span id is the parent id the origin saw.
    let sent = origin.requests()[0].headers["traceparent"]
        .to_str()
        .unwrap()
        .to_owned();
    let span_id = u64::from_str_radix(&sent[36..52], 16).unwrap();

    let (headers, body) = next_export(&mut exports).await;
    assert_eq!(headers["content-type"], "application/x-protobuf");
    assert_eq!(headers["x-api-key"], "k-123");
    // Protobuf carries ids as raw bytes and strings as UTF-8.
    assert!(contains(&body, &trace_id.to_be_bytes()), "trace id");
    assert!(contains(&body, &span_id.to_be_bytes()), "span id");
    assert!(contains(&body, &parent.to_be_bytes()), "parent span id");
    for text in [
        "portcullis-test",
        "GET all",
        "http.route",
        "url.path",
        "/orders/7",
        "http.response.status_code",
        request_id.as_str(),
    ] {
        assert!(contains(&body, text.as_bytes()), "{text:?} missing");
    }
}

#[tokio::test]
async fn an_unsampled_callers_trace_is_not_exported() {
    let (collector, mut exports) = collector().await;
    let origin = answering(StatusCode::OK).await;
    let gw = TestGateway::start(&config(&collector, &origin)).await;
    let client = Client::http1();
    let get = |trace: u128, flags: &str| {
        Request::get(gw.url("/x"))
            .header(
                "traceparent",
                format!("00-{trace:032x}-00f067aa0ba902b7-{flags}"),
            )
            .body(Full::<Bytes>::default())
            .unwrap()
    };
    let unsampled: u128 = 0x1111_2222_3333_4444_5555_6666_7777_8888;
    let sampled: u128 = 0x9999_aaaa_bbbb_cccc_dddd_eeee_ffff_0001;
    client.send(get(unsampled, "00")).await;
    client.send(get(sampled, "01")).await;
    // The unsampled request finished first: had it been queued, it would be in this export
    // or an earlier one.
    loop {
        let (_, body) = next_export(&mut exports).await;
        assert!(
            !contains(&body, &unsampled.to_be_bytes()),
            "unsampled trace exported"
        );
        if contains(&body, &sampled.to_be_bytes()) {
            break;
        }
    }
}
