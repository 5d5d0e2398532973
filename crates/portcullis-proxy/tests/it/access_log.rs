//! The access log: one line per request with the fields operators need, credentials redacted.

use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::Full;
use portcullis_test_support::{Client, TestGateway, TestUpstream, echo};

use crate::json;

/// Reads the log until it has `n` lines (the writer thread flushes when its queue runs dry).
async fn lines(path: &std::path::Path, n: usize) -> Vec<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        if lines.len() >= n {
            return lines.iter().map(|l| json(l.as_bytes())).collect();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {n} lines: {text}",
            lines.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A config with the access log in `format` to `path`, followed by `rest`.
fn logged(format: &str, path: &std::path::Path, rest: &str) -> String {
    format!(
        "[log]\naccess = \"{format}\"\naccess_file = \"{}\"\n\n{rest}",
        path.display()
    )
}

#[tokio::test]
async fn json_lines_describe_each_request_without_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let up = TestUpstream::start(echo()).await;
    let config = format!(
        "[log]\naccess = \"json\"\naccess_file = \"{}\"\n\n\
         [[upstreams]]\nname = \"up\"\ntargets = [{{ url = \"{}\" }}]\n\n\
         [[routes]]\nname = \"api\"\nmatch = {{ path_prefix = \"/api\" }}\nupstream = \"up\"\n\
         cache = {{ ttl = \"60s\", ttl_override = true }}\n",
        path.display(),
        up.url()
    );
    let gw = TestGateway::start(&config).await;
    let client = Client::http1();
    let req = Request::get(gw.url("/api/items?api_key=s3cr3t&page=2"))
        .header("user-agent", "test-agent/1")
        .header("x-request-id", "access-log-1")
        .body(Full::default())
        .unwrap();
    let first = client.send(req).await;
    assert_eq!(first.status(), StatusCode::OK);
    let hit = client
        .get(&gw.url("/api/items?api_key=s3cr3t&page=2"))
        .await;
    assert_eq!(hit.headers()["x-cache"], "HIT");
    let missing = client.get(&gw.url("/elsewhere")).await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    let lines = lines(&path, 3).await;
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        !text.contains("s3cr3t"),
        "a credential reached the log: {text}"
    );

    let miss = &lines[0];
    assert_eq!(miss["request_id"], "access-log-1");
    assert_eq!(miss["method"], "GET");
    assert_eq!(miss["path"], "/api/items?api_key=[redacted]&page=2");
    assert_eq!(miss["protocol"], "HTTP/1.1");
    assert_eq!(miss["status"], 200);
    assert_eq!(miss["route"], "api");
    assert_eq!(miss["cache"], "MISS");
    assert_eq!(miss["client_ip"], "127.0.0.1");
    assert_eq!(miss["user_agent"], "test-agent/1");
    assert_eq!(miss["bytes"], first.body().len());
    assert!(miss["duration_ms"].as_f64().unwrap() > 0.0);

    let hit_line = &lines[1];
    assert_eq!(hit_line["cache"], "HIT");
    assert!(
        hit_line["upstream_ms"].is_null(),
        "a hit has no upstream leg"
    );
    assert_eq!(
        hit_line["request_id"],
        hit.headers()["x-request-id"].to_str().unwrap()
    );

    let unmatched = &lines[2];
    assert_eq!(unmatched["status"], 404);
    assert_eq!(unmatched["route"], "unmatched");
}

#[tokio::test]
async fn upstream_time_and_target_are_logged_for_proxied_requests() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let up = TestUpstream::start(echo()).await;
    let config = logged("combined", &path, &crate::single_route(&[&up], "", ""));
    let gw = TestGateway::start(&config).await;
    let resp = Client::http1().get(&gw.url("/x")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let line = loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if let Some(line) = text.lines().next() {
            break line.to_owned();
        }
        assert!(tokio::time::Instant::now() < deadline, "no line");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let rid = resp.headers()["x-request-id"].to_str().unwrap();
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    assert!(line.contains("\"GET /x HTTP/1.1\" 200 "), "{line}");
    assert!(
        line.contains(&format!("rid={rid} route=all cache=- dur=")),
        "{line}"
    );
    assert!(!line.ends_with("up=-"), "the upstream leg is timed: {line}");
}

#[tokio::test]
async fn bearer_tokens_api_key_headers_and_the_configured_key_parameter_never_reach_the_log() {
    const SECRET: &str = "jwt-secret-for-the-access-log-test-0123456789";
    const KEY_HEADER: &str = "header-key-7f3a9c";
    const KEY_QUERY: &str = "query-key-b41e02";
    const WRONG_KEY: &str = "wrong-key-55d1aa";
    const BAD_TOKEN: &str = "bad-token-9e8d7c";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let up = TestUpstream::start(echo()).await;
    // `access` matches none of the credential-like patterns: only the configuration says it
    // carries a key.
    let config = format!(
        "[log]\naccess = \"json\"\naccess_file = \"{}\"\n\n\
         [auth]\napi_key = {{ query = \"access\" }}\n\n\
         [auth.jwt]\nalgorithms = [\"HS256\"]\nsecret = \"{SECRET}\"\n\n\
         [[upstreams]]\nname = \"up\"\ntargets = [{{ url = \"{}\" }}]\n\n\
         [[routes]]\nname = \"api\"\nupstream = \"up\"\nauth = \"any\"\n\n\
         [[consumers]]\nname = \"acme\"\napi_keys = [\"{}\", \"{}\"]\n",
        path.display(),
        up.url(),
        portcullis_auth::hash_key_hex(KEY_HEADER.as_bytes()),
        portcullis_auth::hash_key_hex(KEY_QUERY.as_bytes()),
    );
    let gw = TestGateway::start(&config).await;
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"sub": "svc", "exp": jsonwebtoken::get_current_timestamp() + 300}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let signature = token.rsplit('.').next().unwrap().to_owned();
    let client = Client::http1();
    let send = |path: &str, header: Option<(&str, String)>| {
        let mut req = Request::get(gw.url(path)).header("user-agent", "log-test");
        if let Some((name, value)) = header {
            req = req.header(name, value);
        }
        client.send(req.body(Full::default()).unwrap())
    };
    let cases = [
        (
            send("/t", Some(("authorization", format!("Bearer {token}")))).await,
            StatusCode::OK,
        ),
        (
            send("/t", Some(("x-api-key", KEY_HEADER.to_owned()))).await,
            StatusCode::OK,
        ),
        (
            send(&format!("/t?page=1&access={KEY_QUERY}"), None).await,
            StatusCode::OK,
        ),
        (
            send(&format!("/t?access={WRONG_KEY}"), None).await,
            StatusCode::UNAUTHORIZED,
        ),
        (
            send("/t", Some(("authorization", format!("Bearer {BAD_TOKEN}")))).await,
            StatusCode::UNAUTHORIZED,
        ),
    ];
    for (i, (resp, status)) in cases.iter().enumerate() {
        assert_eq!(resp.status(), *status, "request {i}");
    }

    let lines = lines(&path, cases.len()).await;
    let text = std::fs::read_to_string(&path).unwrap();
    for secret in [
        token.as_str(),
        signature.as_str(),
        SECRET,
        KEY_HEADER,
        KEY_QUERY,
        WRONG_KEY,
        BAD_TOKEN,
    ] {
        assert!(!text.contains(secret), "{secret:?} reached the log: {text}");
    }
    let mut paths: Vec<&str> = lines.iter().map(|l| l["path"].as_str().unwrap()).collect();
    paths.sort_unstable();
    assert_eq!(
        paths,
        [
            "/t",
            "/t",
            "/t",
            "/t?access=[redacted]",
            "/t?page=1&access=[redacted]"
        ]
    );
    let mut consumers: Vec<&str> = lines
        .iter()
        .filter_map(|l| l["consumer"].as_str())
        .collect();
    consumers.sort_unstable();
    assert_eq!(
        consumers,
        ["acme", "acme", "svc"],
        "the log still says who it was"
    );
}

#[tokio::test]
async fn every_line_is_written_by_the_time_shutdown_completes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let up = TestUpstream::start(echo()).await;
    let config = logged("json", &path, &crate::single_route(&[&up], "", ""));
    let mut gw = TestGateway::start(&config).await;
    let client = Client::http1();
    for _ in 0..20 {
        assert_eq!(client.get(&gw.url("/x")).await.status(), StatusCode::OK);
    }
    drop(client);
    gw.begin_shutdown().await.unwrap();
    // No waiting: shutdown flushed the writer.
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 20, "{text}");
}

#[tokio::test]
async fn lines_carry_the_trace_id_sent_upstream_or_else_the_callers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let up = TestUpstream::start(echo()).await;
    let routes = crate::single_route(&[&up], "", "match = { path_prefix = \"/api\" }");
    let config = logged("json", &path, &routes);
    let gw = TestGateway::start(&config).await;
    let client = Client::http1();
    let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    for target in ["/api/x", "/nowhere"] {
        let req = Request::get(gw.url(target))
            .header("traceparent", caller)
            .body(Full::default())
            .unwrap();
        client.send(req).await;
    }
    let plain = client.get(&gw.url("/api/y")).await;
    assert_eq!(plain.status(), StatusCode::OK);

    let lines = lines(&path, 3).await;
    // Proxied: the trace continued upstream; answered by the gateway (404): the caller's.
    for line in &lines[..2] {
        assert_eq!(
            line["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736",
            "{line}"
        );
    }
    // No caller trace: the one the gateway started and sent upstream, 32 hex digits.
    let started = lines[2]["trace_id"].as_str().unwrap();
    assert_eq!(started.len(), 32, "{started}");
    assert!(started.bytes().all(|b| b.is_ascii_hexdigit()), "{started}");
    assert_ne!(started, "4bf92f3577b34da6a3ce929d0e0e4736");
}
