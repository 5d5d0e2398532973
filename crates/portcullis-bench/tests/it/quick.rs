//! Quick mode from flags: request count, method/headers/body, HTTP/2, TLS, error kinds,
//! counted headers, and refusals of bad input.

use std::sync::atomic::{AtomicU64, Ordering};

use http::Version;
use portcullis_test_support::{SelfSigned, TestGateway, TestUpstream, echo, full};

use crate::{bench, bench_error, parse, report};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_count_sends_exactly_that_many_over_fixed_connections() {
    let up = TestUpstream::respond(|_| http::Response::new(full("ok"))).await;
    let r = report(&[&up.url(), "-n", "300", "-c", "4"]).await;
    assert_eq!(r.overall.requests, 300);
    assert_eq!(up.request_count(), 300);
    assert_eq!(r.overall.status.get(&200), Some(&300));
    assert_eq!(r.overall.bytes_received, 600);
    assert_eq!(r.model, "closed");
    assert!(up.connections() <= 4, "{} connections", up.connections());
    assert!(r.overall.latency_ms.p50 > 0.0);
    assert!(r.overall.latency_ms.p50 <= r.overall.latency_ms.p99);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_the_server_closes_are_replaced_without_errors() {
    let up = TestUpstream::respond(|_| {
        http::Response::builder()
            .header("connection", "close")
            .body(full("bye"))
            .unwrap()
    })
    .await;
    let r = report(&[&up.url(), "-n", "20", "-c", "1"]).await;
    assert_eq!(
        r.overall.errors.total(),
        0,
        "{:?}",
        r.overall.error_examples
    );
    assert_eq!(r.overall.status.get(&200), Some(&20));
    assert_eq!(up.connections(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_bodies_and_head_responses_are_framed_right() {
    use http_body_util::BodyExt;
    let up = TestUpstream::respond(|req| {
        if req.method() == http::Method::HEAD {
            // A HEAD response announces a length but sends no body.
            return http::Response::builder()
                .header("content-length", "100")
                .body(full(""))
                .unwrap();
        }
        // No length: the server streams the body chunked.
        let (mut tx, body) =
            http_body_util::Channel::<bytes::Bytes, std::convert::Infallible>::new(4);
        tokio::spawn(async move {
            for part in ["hello ", "chunked ", "world"] {
                if tx.send_data(bytes::Bytes::from(part)).await.is_err() {
                    return;
                }
            }
        });
        http::Response::new(body.map_err(|never| match never {}).boxed_unsync())
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.toml");
    let text = "base_url = \"BASE\"\n[[stages]]\nduration = \"10s\"\nusers = 2\n\n\
                [[requests]]\nurl = \"/\"\nchecks = { body_contains = \"chunked world\" }\n";
    std::fs::write(&path, text.replace("BASE", &up.url())).unwrap();
    let r = report(&["--scenario", path.to_str().unwrap(), "-n", "50"]).await;
    assert_eq!(
        r.overall.errors.total(),
        0,
        "{:?}",
        r.overall.error_examples
    );
    assert_eq!(r.overall.bytes_received, 50 * 19);
    assert_eq!(r.requests[0].checks[0].passed, 50);
    assert!(
        up.connections() <= 2,
        "chunked responses keep the connection"
    );

    let r = report(&[
        &up.url(),
        "-m",
        "HEAD",
        "-n",
        "20",
        "-c",
        "1",
        "--timeout",
        "2s",
    ])
    .await;
    assert_eq!(r.overall.status.get(&200), Some(&20));
    assert_eq!((r.overall.errors.total(), r.overall.bytes_received), (0, 0));
}

#[tokio::test]
async fn method_headers_and_body_reach_the_server() {
    let up = TestUpstream::start(echo()).await;
    let url = format!("{}/submit?x=1", up.url());
    // A Host header replaces the URL's.
    report(&[&up.url(), "-n", "1", "-H", "Host: api.example.test"]).await;
    let seen = up.requests();
    assert_eq!(seen[0].headers.get_all("host").iter().count(), 1);
    assert_eq!(seen[0].headers["host"], "api.example.test");

    let r = report(&[
        &url,
        "-n",
        "3",
        "-c",
        "1",
        "-m",
        "PUT",
        "-H",
        "x-api-key: k1",
        "-H",
        "accept: text/plain",
        "-b",
        "{\"a\":1}",
    ])
    .await;
    assert_eq!(r.overall.requests, 3);
    let seen = &up.requests()[1..];
    assert_eq!(seen.len(), 3);
    for s in seen {
        assert_eq!(s.method, http::Method::PUT);
        assert_eq!(s.uri.to_string(), "/submit?x=1");
        assert_eq!(s.headers["x-api-key"], "k1");
        assert_eq!(s.headers["accept"], "text/plain");
        assert_eq!(s.headers["content-length"], "7");
        assert_eq!(s.headers["host"], up.addr.to_string().as_str());
    }
}

#[tokio::test]
async fn http2_uses_prior_knowledge_over_plain_http() {
    let up = TestUpstream::respond(|_| http::Response::new(full("ok"))).await;
    let r = report(&[&up.url(), "--http2", "-n", "20", "-c", "2"]).await;
    assert_eq!(r.http_version, "2");
    assert_eq!(r.overall.status.get(&200), Some(&20));
    assert!(up.requests().iter().all(|s| s.version == Version::HTTP_2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_streams_share_connections() {
    // Each request waits 20 ms; the server records the most it held at once.
    let in_flight = std::sync::Arc::new(AtomicU64::new(0));
    let most = std::sync::Arc::new(AtomicU64::new(0));
    let (now, max) = (
        std::sync::Arc::clone(&in_flight),
        std::sync::Arc::clone(&most),
    );
    let up = TestUpstream::start(std::sync::Arc::new(move |_req| {
        let (now, max) = (std::sync::Arc::clone(&now), std::sync::Arc::clone(&max));
        Box::pin(async move {
            max.fetch_max(now.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            now.fetch_sub(1, Ordering::SeqCst);
            http::Response::new(full("ok"))
        })
    }))
    .await;
    let r = report(&[
        &up.url(),
        "--http2",
        "--streams",
        "4",
        "-c",
        "8",
        "-n",
        "80",
    ])
    .await;
    assert_eq!(
        r.overall.status.get(&200),
        Some(&80),
        "{:?}",
        r.overall.error_examples
    );
    assert_eq!(r.connections, 2);
    assert_eq!(up.connections(), 2, "8 users in groups of 4 streams");
    assert!(up.requests().iter().all(|s| s.version == Version::HTTP_2));
    // One stream at a time per connection would never hold more than 2.
    assert!(
        most.load(Ordering::SeqCst) > 2,
        "{most:?} in flight at most"
    );

    let err = crate::bench_error(&[&up.url(), "--streams", "4", "-n", "1"]).await;
    assert!(err.contains("need HTTP/2"), "{err}");
}

#[tokio::test]
async fn https_targets_are_verified_against_a_given_ca_and_speak_both_versions() {
    let up = TestUpstream::start(echo()).await;
    let cert = SelfSigned::generate();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ntls = {{ cert = \"{}\", key = \"{}\" }}\n\n\
         [[upstreams]]\nname = \"up\"\ntargets = [{{ url = \"{}\" }}]\n\n\
         [[routes]]\nname = \"all\"\nupstream = \"up\"\n",
        cert.cert_path.display(),
        cert.key_path.display(),
        up.url()
    );
    let gw = TestGateway::start(&config).await;
    let url = format!("https://localhost:{}/secure", gw.addr.port());
    let cacert = cert.cert_path.display().to_string();
    for extra in [None, Some("--http2")] {
        let mut args = vec![url.as_str(), "-n", "10", "-c", "2", "--cacert", &cacert];
        args.extend(extra);
        let r = report(&args).await;
        assert_eq!(
            r.overall.status.get(&200),
            Some(&10),
            "{extra:?}: {:?}",
            r.overall
        );
    }
    // Without the CA, the self-signed certificate is refused: connect errors, not responses.
    let r = report(&[&url, "-n", "2", "-c", "1"]).await;
    assert_eq!(r.overall.errors.connect, 2);
    // --insecure accepts it.
    let r = report(&[&url, "-n", "2", "-c", "1", "--insecure"]).await;
    assert_eq!(r.overall.status.get(&200), Some(&2));
}

#[tokio::test]
async fn refused_connections_are_connect_errors_with_the_reason() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let r = report(&[&format!("http://127.0.0.1:{port}/"), "-n", "5", "-c", "1"]).await;
    assert_eq!(r.overall.errors.connect, 5);
    assert_eq!(r.overall.responses, 0);
    assert!((r.overall.error_rate - 1.0).abs() < 1e-9);
    assert!(
        r.overall.error_examples["connect"].contains("refused"),
        "{:?}",
        r.overall.error_examples
    );
}

#[tokio::test]
async fn slow_responses_become_timeouts_measured_at_the_timeout() {
    let (up, _release) = TestUpstream::held("late").await;
    let r = report(&[&up.url(), "-n", "2", "-c", "2", "--timeout", "200ms"]).await;
    assert_eq!(r.overall.errors.timeout, 2);
    assert!(
        r.overall.latency_ms.p50 >= 199.0,
        "{:?}",
        r.overall.latency_ms
    );
}

#[tokio::test]
async fn status_classes_and_counted_headers_give_error_and_cache_hit_rates() {
    let n = AtomicU64::new(0);
    let up = TestUpstream::respond(move |_| {
        let i = n.fetch_add(1, Ordering::SeqCst);
        let (status, cache) = match i % 4 {
            0 => (200, "HIT"),
            1 => (200, "MISS"),
            2 => (404, "HIT"),
            _ => (503, "STALE"),
        };
        http::Response::builder()
            .status(status)
            .header("x-cache", cache)
            .header("x-served-by", "a")
            .body(full(""))
            .unwrap()
    })
    .await;
    let r = report(&[
        &up.url(),
        "-n",
        "400",
        "-c",
        "1",
        "--count-header",
        "X-Served-By",
    ])
    .await;
    let o = &r.overall;
    assert_eq!((o.errors.status_4xx, o.errors.status_5xx), (100, 100));
    assert!((o.error_rate - 0.5).abs() < 1e-9);
    assert_eq!(o.cache_hit_rate, Some(0.5));
    assert_eq!(o.headers["x-cache"]["MISS"], 100);
    assert_eq!(o.headers["x-served-by"]["a"], 400);
}

#[tokio::test]
async fn bad_input_is_refused_with_a_clear_message() {
    let err = bench_error(&["localhost:8080/x", "-n", "1"]).await;
    assert!(err.contains("expected http:// or https://"), "{err}");
    let err = bench_error(&["http://127.0.0.1:1/", "-H", "no-colon", "-n", "1"]).await;
    assert!(err.contains("expected \"Name: value\""), "{err}");
    let err = bench_error(&["http://127.0.0.1:1/", "-m", "GE T", "-n", "1"]).await;
    assert!(err.contains("invalid method"), "{err}");
    let err = bench_error(&["-n", "1"]).await;
    assert!(err.contains("give a URL"), "{err}");
    let err = bench_error(&["http://127.0.0.1:1/", "-t", "p95{nope} < 1s", "-n", "1"]).await;
    assert!(err.contains("no request named \"nope\""), "{err}");
    let err = parse(&["http://x/", "-t", "p95 < fast"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("threshold \"p95 < fast\""), "{err}");
    let err = parse(&["http://x/", "-d", "10"]).unwrap_err().to_string();
    assert!(err.contains("missing unit"), "{err}");
    // `compare` parses as a sub-command next to the run flags.
    assert!(
        parse(&["compare", "a.json", "b.json"])
            .unwrap()
            .action
            .is_some()
    );
}

#[tokio::test]
async fn the_summary_table_lists_percentiles_and_errors() {
    let up = TestUpstream::respond(|_| {
        http::Response::builder()
            .status(500)
            .body(full(""))
            .unwrap()
    })
    .await;
    let out = bench(&[&up.url(), "-n", "10", "-c", "1"]).await;
    assert!(out.summary.contains("p99.9"), "{}", out.summary);
    assert!(
        out.summary
            .contains("errors: connect 0, timeout 0, transport 0, 4xx 0, 5xx 10"),
        "{}",
        out.summary
    );
    assert!(out.summary.contains("status: 500: 10"), "{}", out.summary);
    assert_eq!(
        out.exit_code, 0,
        "no thresholds: errors alone do not fail the run"
    );
}
