//! The admin listener against a real gateway: metrics read back with the reference OpenMetrics
//! parser after known traffic, token checks, health probes through a drain.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{io::Write, process::Stdio, time::Duration};

use http::{Request, StatusCode};
use http_body_util::Full;
use portcullis_test_support::{Client, TestGateway, TestUpstream, echo};
use serde_json::Value;

const TOKEN: &str = "test-admin-token-0123456789";

/// Parses OpenMetrics text with `scripts/parse-openmetrics.py` (Python's prometheus_client).
fn parse_openmetrics(text: &str) -> Vec<Value> {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/parse-openmetrics.py"
    );
    let mut child = std::process::Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs (scripts/test installs prometheus_client)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the reference parser rejected /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap()
}

/// The value of the sample `name` whose labels include all of `labels`.
fn sample(families: &[Value], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    families
        .iter()
        .flat_map(|f| f["samples"].as_array().unwrap())
        .find(|s| {
            s["name"] == name
                && labels
                    .iter()
                    .all(|(k, v)| s["labels"][k].as_str() == Some(v))
        })
        .and_then(|s| s["value"].as_f64())
}

fn config(up: &TestUpstream, admin_extra: &str) -> String {
    format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n{admin_extra}\n\
         [[upstreams]]\nname = \"backend\"\ntargets = [{{ url = \"{}\" }}]\n\n\
         [[routes]]\nname = \"api\"\nmatch = {{ path_prefix = \"/api\" }}\nupstream = \"backend\"\n\n\
         [[routes]]\nname = \"cached\"\nmatch = {{ path_prefix = \"/cached\" }}\nupstream = \"backend\"\n\
         cache = {{ ttl = \"60s\", ttl_override = true }}\n",
        up.url()
    )
}

async fn get_with(client: &Client, url: &str, token: Option<&str>) -> http::Response<bytes::Bytes> {
    let mut req = Request::get(url);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    client.send(req.body(Full::default()).unwrap()).await
}

#[tokio::test]
async fn metrics_after_known_traffic_parse_with_the_reference_parser() {
    let up = TestUpstream::start(echo()).await;
    let gw = TestGateway::start(&config(&up, "")).await;
    let client = Client::http1();
    for _ in 0..3 {
        assert_eq!(client.get(&gw.url("/api/x")).await.status(), StatusCode::OK);
    }
    let post = Request::post(gw.url("/api/x"))
        .body(Full::from("hello"))
        .unwrap();
    assert_eq!(client.send(post).await.status(), StatusCode::OK);
    let x_cache: Vec<String> = {
        let mut v = Vec::new();
        for _ in 0..2 {
            let r = client.get(&gw.url("/cached/y")).await;
            v.push(r.headers()["x-cache"].to_str().unwrap().to_owned());
        }
        v
    };
    assert_eq!(x_cache, ["MISS", "HIT"]);
    assert_eq!(
        client.get(&gw.url("/nowhere")).await.status(),
        StatusCode::NOT_FOUND
    );

    let resp = client.get(&gw.admin_url("/metrics")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = String::from_utf8(resp.body().to_vec()).unwrap();
    let families = parse_openmetrics(&text);

    let requests = |route: &str, method: &str, status: &str| {
        sample(
            &families,
            "portcullis_requests_total",
            &[("route", route), ("method", method), ("status", status)],
        )
    };
    assert_eq!(requests("api", "GET", "2xx"), Some(3.0));
    assert_eq!(requests("api", "POST", "2xx"), Some(1.0));
    assert_eq!(requests("cached", "GET", "2xx"), Some(2.0));
    assert_eq!(requests("unmatched", "GET", "4xx"), Some(1.0));
    assert_eq!(
        sample(
            &families,
            "portcullis_request_duration_seconds_count",
            &[("route", "api"), ("method", "GET"), ("status", "2xx")]
        ),
        Some(3.0)
    );
    let target = up.addr.to_string();
    // 4 on /api and the one cache miss; the hit never reached the upstream.
    assert_eq!(
        sample(
            &families,
            "portcullis_upstream_requests_total",
            &[
                ("upstream", "backend"),
                ("target", &target),
                ("outcome", "2xx")
            ]
        ),
        Some(5.0)
    );
    assert_eq!(up.request_count(), 5);
    let cache = |result: &str, tier: &str| {
        sample(
            &families,
            "portcullis_cache_requests_total",
            &[("route", "cached"), ("result", result), ("tier", tier)],
        )
    };
    assert_eq!(cache("hit", "memory"), Some(1.0));
    assert_eq!(cache("miss", "none"), Some(1.0));
    assert_eq!(
        cache("hit", "redis"),
        None,
        "no redis tier, no redis series"
    );
    assert!(
        sample(
            &families,
            "portcullis_response_body_bytes_total",
            &[("route", "api")]
        )
        .is_some_and(|b| b > 0.0)
    );
    assert_eq!(
        sample(
            &families,
            "portcullis_request_body_bytes_total",
            &[("route", "api")]
        ),
        Some(5.0),
        "the POST's body, \"hello\""
    );
    // The admin request itself is not a proxied request; nothing is in flight now.
    assert_eq!(
        sample(&families, "portcullis_requests_in_flight", &[]),
        Some(0.0)
    );
    assert!(sample(&families, "process_resident_memory_bytes", &[]).is_some_and(|v| v > 0.0));
    assert!(sample(&families, "process_cpu_seconds_total", &[]).is_some());
    assert_eq!(
        sample(
            &families,
            "portcullis_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    // Bounded cardinality: no raw path appears as a label value anywhere.
    assert!(
        !text.contains("/api/x") && !text.contains("/nowhere"),
        "{text}"
    );
}

#[tokio::test]
async fn the_admin_api_needs_the_token_and_probes_do_not() {
    let up = TestUpstream::start(echo()).await;
    let gw = TestGateway::start(&config(&up, "")).await;
    let client = Client::http1();
    let routes = gw.admin_url("/admin/routes");

    let none = get_with(&client, &routes, None).await;
    assert_eq!(none.status(), StatusCode::UNAUTHORIZED);
    assert!(none.headers().contains_key("www-authenticate"));
    let body: Value = serde_json::from_slice(none.body()).unwrap();
    assert_eq!(body["status"], 401);
    assert_eq!(
        get_with(&client, &routes, Some("test-admin-token-012345678X"))
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get_with(&client, &routes, Some("test-admin-token"))
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    // Unknown admin paths are behind the token too.
    assert_eq!(
        get_with(&client, &gw.admin_url("/admin/nope"), None)
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get_with(&client, &gw.admin_url("/admin/nope"), Some(TOKEN))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );

    let ok = get_with(&client, &routes, Some(TOKEN)).await;
    assert_eq!(ok.status(), StatusCode::OK);
    let body: Value = serde_json::from_slice(ok.body()).unwrap();
    let names: Vec<&str> = body["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["api", "cached"]);
    let ups = get_with(&client, &gw.admin_url("/admin/upstreams"), Some(TOKEN)).await;
    let body: Value = serde_json::from_slice(ups.body()).unwrap();
    assert_eq!(body["upstreams"][0]["name"], "backend");
    assert_eq!(
        body["upstreams"][0]["targets"][0]["target"],
        up.addr.to_string()
    );

    for probe in [
        "/health/live",
        "/health/ready",
        "/health/status",
        "/metrics",
    ] {
        let r = client.get(&gw.admin_url(probe)).await;
        assert_eq!(r.status(), StatusCode::OK, "{probe}");
    }
    let status: Value =
        serde_json::from_slice(client.get(&gw.admin_url("/health/status")).await.body()).unwrap();
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert!(status["memory"]["resident_bytes"].as_u64().unwrap() > 0);
    assert_eq!(status["upstreams"][0]["name"], "backend");

    // The admin listener never serves proxied routes, and the public one never the admin API.
    assert_eq!(
        client.get(&gw.admin_url("/api/x")).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(up.request_count(), 0);
}

#[tokio::test]
async fn metrics_can_require_the_token() {
    let up = TestUpstream::start(echo()).await;
    let gw = TestGateway::start(&config(&up, "metrics_require_token = true")).await;
    let client = Client::http1();
    let metrics = gw.admin_url("/metrics");
    assert_eq!(
        get_with(&client, &metrics, None).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get_with(&client, &metrics, Some(TOKEN)).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        client.get(&gw.admin_url("/health/ready")).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn readiness_turns_503_while_draining_and_liveness_stays_200() {
    let (up, release) = TestUpstream::held("done").await;
    let mut gw = TestGateway::start(&config(&up, "")).await;
    let client = Client::http1();
    let in_flight = {
        let client = client.clone();
        let url = gw.url("/api/slow");
        tokio::spawn(async move { client.get(&url).await })
    };
    up.wait_requests(1).await;
    let ready = gw.admin_url("/health/ready");
    let live = gw.admin_url("/health/live");
    assert_eq!(client.get(&ready).await.status(), StatusCode::OK);
    let drained = gw.begin_shutdown();
    // Draining starts when the server task sees the shutdown signal: wait for it (bounded).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let draining = loop {
        let r = client.get(&ready).await;
        if r.status() == StatusCode::SERVICE_UNAVAILABLE {
            break r;
        }
        assert!(tokio::time::Instant::now() < deadline, "never draining");
        tokio::task::yield_now().await;
    };
    let body: Value = serde_json::from_slice(draining.body()).unwrap();
    assert_eq!(body["status"], "draining");
    assert_eq!(client.get(&live).await.status(), StatusCode::OK);
    release.notify_waiters();
    let resp = in_flight.await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    drained.await.unwrap();
}

#[tokio::test]
async fn stats_windows_and_the_config_view() {
    let up = TestUpstream::start(echo()).await;
    let config = format!(
        "{}\n[[upstreams]]\nname = \"gone\"\ntargets = [{{ url = \"http://127.0.0.1:9\" }}]\n\n\
         [[routes]]\nname = \"broken\"\nmatch = {{ path_prefix = \"/broken\" }}\nupstream = \"gone\"\n",
        config(&up, "")
    );
    let gw = TestGateway::start(&config).await;
    let client = Client::http1();
    for _ in 0..4 {
        client.get(&gw.url("/api/a")).await;
    }
    assert_eq!(
        client.get(&gw.url("/broken/x")).await.status(),
        StatusCode::BAD_GATEWAY
    );

    let resp = get_with(&client, &gw.admin_url("/admin/stats"), Some(TOKEN)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let stats: Value = serde_json::from_slice(resp.body()).unwrap();
    for window in ["1m", "5m", "15m"] {
        assert_eq!(stats["overall"][window]["requests"], 5, "{stats}");
        assert_eq!(stats["overall"][window]["errors"], 1, "{stats}");
    }
    assert_eq!(stats["routes"]["api"]["1m"]["requests"], 4);
    assert!(stats["routes"]["api"]["1m"]["p99_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(stats["routes"]["broken"]["5m"]["error_rate"], 1.0);
    assert_eq!(stats["top_routes"][0]["route"], "api");
    assert_eq!(
        get_with(&client, &gw.admin_url("/admin/stats"), None)
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );

    let resp = get_with(&client, &gw.admin_url("/admin/config"), Some(TOKEN)).await;
    let text = String::from_utf8(resp.body().to_vec()).unwrap();
    assert!(!text.contains(TOKEN), "the token leaked: {text}");
    let view: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(view["admin"]["token"], "<redacted>");
    assert_eq!(view["upstreams"][0]["name"], "backend");
    assert_eq!(view["routes"][1]["cache"]["ttl"], "60s");
    assert_eq!(view["server"]["request_id_header"], "x-request-id");
}

#[tokio::test]
async fn the_openapi_document_describes_every_endpoint_served() {
    let up = TestUpstream::start(echo()).await;
    let gw = TestGateway::start(&config(&up, "")).await;
    let client = Client::http1();
    let resp = get_with(&client, &gw.admin_url("/admin/openapi.json"), Some(TOKEN)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let doc: Value = serde_json::from_slice(resp.body()).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    for (path, item) in paths {
        if path.contains('{') {
            continue; // templated: covered by their own tests
        }
        for (method, _) in item.as_object().unwrap() {
            let mut req = Request::builder()
                .method(method.to_uppercase().as_str())
                .uri(gw.admin_url(path))
                .header("authorization", format!("Bearer {TOKEN}"));
            if method == "post" {
                req = req.header("content-length", "0");
            }
            let status = client
                .send(req.body(Full::default()).unwrap())
                .await
                .status();
            // Every documented endpoint exists (reload answers 501 on an in-process gateway).
            assert_ne!(status, StatusCode::NOT_FOUND, "{method} {path}");
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        }
    }
    assert!(paths.len() >= 11);
}

/// Metric names (`portcullis_*`, `process_*`) used in an expression text.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for start in ["portcullis_", "process_"] {
        for (i, _) in text.match_indices(start) {
            let name: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // Histogram series resolve to their family.
            let family = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(&name);
            names.insert(family.to_owned());
        }
    }
    names
}

#[tokio::test]
async fn every_metric_in_the_alert_rules_and_the_dashboard_exists() {
    let up = TestUpstream::start(echo()).await;
    // Redis, so its series exist.
    let redis = portcullis_test_support::RedisServer::start();
    // A breaker, so its state series exists.
    let gw = TestGateway::start(&format!(
        "[redis]\nurl = \"{}\"\n\n{}",
        redis.url(),
        config(&up, "").replace("targets = [{ url", "breaker = {}\ntargets = [{ url")
    ))
    .await;
    let client = Client::http1();
    client.get(&gw.url("/api/a")).await;
    client.get(&gw.url("/cached/a")).await;
    let text =
        String::from_utf8(client.get(&gw.admin_url("/metrics")).await.body().to_vec()).unwrap();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy");
    let mut used =
        metric_names(&std::fs::read_to_string(format!("{root}/prometheus/alerts.yml")).unwrap());
    used.extend(metric_names(
        &std::fs::read_to_string(format!("{root}/grafana/portcullis-dashboard.json")).unwrap(),
    ));
    assert!(used.len() >= 10, "{used:?}");
    for name in &used {
        // A sample, or at least the family's TYPE line (families without series yet, such as
        // breaker states on a gateway without breakers, are still declared).
        let declared = format!("# TYPE {name} ");
        assert!(
            text.lines()
                .any(|l| l.starts_with(name.as_str()) || l.starts_with(&declared)),
            "{name} is used in deploy/ but not exported"
        );
    }
}

#[tokio::test]
async fn a_missed_objective_fires_an_alert_and_notifies_the_webhook() {
    use std::sync::Arc;
    // A slow upstream (20 ms) against a 1 ms p95 objective.
    let slow = TestUpstream::start(Arc::new(|_req| {
        Box::pin(async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            http::Response::new(portcullis_test_support::full("slow"))
        })
    }))
    .await;
    let received = Arc::new(parking_lot::Mutex::new(Vec::<Value>::new()));
    let sink = {
        let received = Arc::clone(&received);
        TestUpstream::start(Arc::new(
            move |req: http::Request<hyper::body::Incoming>| {
                let received = Arc::clone(&received);
                Box::pin(async move {
                    let body = http_body_util::BodyExt::collect(req.into_body())
                        .await
                        .unwrap()
                        .to_bytes();
                    received.lock().push(serde_json::from_slice(&body).unwrap());
                    http::Response::new(portcullis_test_support::full(""))
                })
            },
        ))
        .await
    };
    let config = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n\n\
         [alerts]\nevaluate_every = \"100ms\"\nwebhook = \"{}/hook\"\n\n\
         [[upstreams]]\nname = \"slow\"\ntargets = [{{ url = \"{}\" }}]\n\n\
         [[routes]]\nname = \"checkout\"\nupstream = \"slow\"\n\
         slo = {{ p95 = \"1ms\", error_rate = 0.5, window = \"1m\", min_requests = 3 }}\n",
        sink.url(),
        slow.url()
    );
    let gw = TestGateway::start(&config).await;
    let client = Client::http1();
    for _ in 0..5 {
        assert_eq!(client.get(&gw.url("/pay")).await.status(), StatusCode::OK);
    }
    sink.wait_requests(1).await;
    let event = received.lock()[0].clone();
    assert_eq!(event["status"], "firing");
    assert_eq!(event["route"], "checkout");
    assert_eq!(event["objective"], "p95");
    assert!(event["value"].as_f64().unwrap() > 1.0);
    assert_eq!(sink.requests()[0].uri.path(), "/hook");

    let resp = get_with(&client, &gw.admin_url("/admin/alerts"), Some(TOKEN)).await;
    let alerts: Value = serde_json::from_slice(resp.body()).unwrap();
    assert_eq!(alerts["alerts"].as_array().unwrap().len(), 1, "{alerts}");
    assert_eq!(alerts["alerts"][0]["objective"], "p95");
    let metrics =
        String::from_utf8(client.get(&gw.admin_url("/metrics")).await.body().to_vec()).unwrap();
    assert!(
        metrics.contains(r#"portcullis_slo_alerts_firing{route="checkout",objective="p95"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"portcullis_slo_error_budget_burn_rate{route="checkout"} 0"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn readiness_fails_while_a_required_upstream_has_no_healthy_target() {
    // A target whose health endpoint always fails.
    let sick = TestUpstream::respond(|_| {
        let mut r = http::Response::new(portcullis_test_support::full("no"));
        *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        r
    })
    .await;
    let config = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [[upstreams]]\nname = \"db-api\"\ntargets = [{{ url = \"{}\" }}]\n\
         health = {{ path = \"/health\", interval = \"50ms\", unhealthy = 2, required = true }}\n\n\
         [[routes]]\nname = \"all\"\nupstream = \"db-api\"\n",
        sick.url()
    );
    let gw = TestGateway::start(&config).await;
    let client = Client::http1();
    assert_eq!(
        client.get(&gw.admin_url("/health/ready")).await.status(),
        StatusCode::OK,
        "healthy until the checks say otherwise"
    );
    sick.wait_requests(3).await;
    let ready = client.get(&gw.admin_url("/health/ready")).await;
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = serde_json::from_slice(ready.body()).unwrap();
    assert_eq!(body["status"], "unready");
    assert!(
        body["reasons"][0].as_str().unwrap().contains("db-api"),
        "{body}"
    );
    assert_eq!(
        client.get(&gw.admin_url("/health/live")).await.status(),
        StatusCode::OK
    );
    let metrics =
        String::from_utf8(client.get(&gw.admin_url("/metrics")).await.body().to_vec()).unwrap();
    let target = sick.addr.to_string();
    assert!(
        metrics.contains(&format!(
            "portcullis_upstream_target_healthy{{upstream=\"db-api\",target=\"{target}\"}} 0"
        )),
        "{metrics}"
    );
}

#[tokio::test]
async fn operators_force_and_reset_a_breaker_through_the_admin_api() {
    let up = TestUpstream::start(echo()).await;
    let config = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n\n\
         [[upstreams]]\nname = \"backend\"\ntargets = [{{ url = \"{}\" }}]\nbreaker = {{}}\n\n\
         [[routes]]\nname = \"api\"\nupstream = \"backend\"\n",
        up.url()
    );
    let gw = TestGateway::start(&config).await;
    let client = Client::http1();
    let post = |path: &str| {
        Request::post(gw.admin_url(path))
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(Full::default())
            .unwrap()
    };
    let opened = client.send(post("/admin/breakers/backend/open")).await;
    assert_eq!(opened.status(), StatusCode::OK);
    let body: Value = serde_json::from_slice(opened.body()).unwrap();
    assert_eq!(body["breaker"]["state"], "open");
    assert_eq!(body["breaker"]["forced"], true);
    let refused = client.get(&gw.url("/x")).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(
        up.request_count(),
        0,
        "an open breaker sends nothing upstream"
    );

    let list = get_with(&client, &gw.admin_url("/admin/breakers"), Some(TOKEN)).await;
    let list: Value = serde_json::from_slice(list.body()).unwrap();
    assert_eq!(list["breakers"][0]["upstream"], "backend");
    assert_eq!(
        list["breakers"][0]["breaker"]["events"][0]["reason"],
        "forced open"
    );

    assert_eq!(
        client
            .send(post("/admin/breakers/backend/reset"))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(client.get(&gw.url("/x")).await.status(), StatusCode::OK);
    assert_eq!(
        client
            .send(post("/admin/breakers/backend/explode"))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        client
            .send(post("/admin/breakers/nobody/open"))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    let metrics =
        String::from_utf8(client.get(&gw.admin_url("/metrics")).await.body().to_vec()).unwrap();
    assert!(
        metrics.contains(r#"portcullis_breaker_state{upstream="backend"} 0"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"portcullis_breaker_transitions_total{upstream="backend",to="open"} 1"#),
        "{metrics}"
    );
}
