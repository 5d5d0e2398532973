//! Edge security through the running gateway: API keys and consumers, consumer headers, route
//! ACLs, and auth before the cache. Real upstreams on loopback, real clients.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use portcullis_test_support::{Client, TestGateway, TestUpstream, echo};

use crate::{json, single_route};

/// `portcullis hash-key key-acme` and `... key-bob`.
fn hash(key: &str) -> String {
    portcullis_auth::hash_key_hex(key.as_bytes())
}

/// One upstream, one catch-all route with `route_extra`, two consumers, and `auth_extra` in
/// `[auth]`.
fn config(up: &TestUpstream, route_extra: &str, auth_extra: &str) -> String {
    format!(
        "{}\n[auth]\n{auth_extra}\n\n\
         [[consumers]]\nname = \"acme\"\ntier = \"premium\"\ngroups = [\"partners\"]\napi_keys = [\"{}\"]\n\n\
         [[consumers]]\nname = \"bob\"\ntier = \"free\"\napi_keys = [\"{}\"]\n",
        single_route(&[up], "", route_extra),
        hash("key-acme"),
        hash("key-bob"),
    )
}

async fn get(client: &Client, url: &str, headers: &[(&str, &str)]) -> Response<Bytes> {
    let mut req = Request::get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    client.send(req.body(Full::default()).unwrap()).await
}

fn assert_json_error(resp: &Response<Bytes>, status: StatusCode) -> serde_json::Value {
    assert_eq!(resp.status(), status);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body = json(resp.body());
    assert_eq!(body["status"], status.as_u16());
    assert_eq!(
        body["request_id"],
        resp.headers()["x-request-id"].to_str().unwrap()
    );
    body
}

#[tokio::test]
async fn missing_and_unknown_api_keys_get_401_json_and_never_reach_the_upstream() {
    let up = TestUpstream::start(echo()).await;
    let gw = TestGateway::start(&config(&up, "auth = \"api_key\"", "")).await;
    let client = Client::http1();

    let missing = get(&client, &gw.url("/x"), &[]).await;
    assert_json_error(&missing, StatusCode::UNAUTHORIZED);
    assert!(missing.headers().contains_key("www-authenticate"));

    let unknown = get(&client, &gw.url("/x"), &[("x-api-key", "key-mallory")]).await;
    let body = assert_json_error(&unknown, StatusCode::UNAUTHORIZED);
    assert!(
        !body.to_string().contains("key-mallory"),
        "the key is never echoed: {body}"
    );
    // A key that differs from a real one in the last byte gets exactly the same answer.
    let near = get(&client, &gw.url("/x"), &[("x-api-key", "key-acmf")]).await;
    let near_body = assert_json_error(&near, StatusCode::UNAUTHORIZED);
    assert_eq!(near_body["error"], body["error"]);
    assert_eq!(up.request_count(), 0);
}

#[tokio::test]
async fn a_valid_key_reaches_the_upstream_without_the_key_and_with_the_consumer_headers() {
    let up = TestUpstream::start(echo()).await;
    let gw = TestGateway::start(&config(
        &up,
        "auth = \"api_key\"",
        "forward_consumer_headers = true\napi_key = { query = \"api_key\" }",
    ))
    .await;
    let client = Client::http1();
    let by_header = get(
        &client,
        &gw.url("/h"),
        &[
            ("x-api-key", "key-acme"),
            ("x-consumer-id", "admin"),
            ("x-consumer-tier", "unlimited"),
        ],
    )
    .await;
    assert_eq!(by_header.status(), StatusCode::OK);
    let by_query = get(&client, &gw.url("/q?a=1&api_key=key-bob&b=2"), &[]).await;
    assert_eq!(by_query.status(), StatusCode::OK);

    let seen = up.requests();
    assert_eq!(seen.len(), 2);
    let h = &seen[0].headers;
    assert_eq!(h["x-consumer-id"], "acme", "the client's copy was replaced");
    assert_eq!(h["x-consumer-tier"], "premium");
    assert_eq!(h.get_all("x-consumer-id").iter().count(), 1);
    assert!(h.get("x-api-key").is_none(), "the key is removed");
    assert_eq!(seen[1].headers["x-consumer-id"], "bob");
    assert_eq!(seen[1].headers["x-consumer-tier"], "free");
    assert_eq!(seen[1].uri, "/q?a=1&b=2", "the query key is removed");
}

#[tokio::test]
async fn keys_are_forwarded_when_configured_and_consumer_headers_only_when_asked() {
    let up = TestUpstream::start(echo()).await;
    let gw = TestGateway::start(&config(
        &up,
        "auth = \"any\"",
        "api_key = { header = \"Authorization-Key\", forward = true }",
    ))
    .await;
    let client = Client::http1();
    let resp = get(
        &client,
        &gw.url("/x"),
        &[
            ("authorization-key", "key-acme"),
            ("x-consumer-id", "admin"),
        ],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    // The default header name is no longer read.
    let other = get(&client, &gw.url("/x"), &[("x-api-key", "key-acme")]).await;
    assert_eq!(other.status(), StatusCode::UNAUTHORIZED);
    let seen = &up.requests()[0].headers;
    assert_eq!(seen["authorization-key"], "key-acme");
    assert!(
        seen.get("x-consumer-id").is_none(),
        "not forwarded, and the client's copy is gone"
    );
}

#[tokio::test]
async fn client_sent_consumer_headers_are_stripped_on_routes_without_auth() {
    let up = TestUpstream::start(echo()).await;
    let gw = TestGateway::start(&single_route(&[&up], "", "")).await;
    let resp = get(
        &Client::http1(),
        &gw.url("/open"),
        &[("x-consumer-id", "admin"), ("x-consumer-tier", "premium")],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let seen = &up.requests()[0].headers;
    assert!(seen.get("x-consumer-id").is_none());
    assert!(seen.get("x-consumer-tier").is_none());
}

#[tokio::test]
async fn acls_admit_listed_consumers_tiers_and_groups_and_refuse_others_with_403() {
    let up = TestUpstream::start(echo()).await;
    let gw = TestGateway::start(&config(
        &up,
        "auth = \"api_key\"\nacl = { groups = [\"partners\"] }",
        "",
    ))
    .await;
    let client = Client::http1();
    let acme = get(&client, &gw.url("/x"), &[("x-api-key", "key-acme")]).await;
    assert_eq!(acme.status(), StatusCode::OK);
    let bob = get(&client, &gw.url("/x"), &[("x-api-key", "key-bob")]).await;
    assert_json_error(&bob, StatusCode::FORBIDDEN);
    assert_eq!(up.request_count(), 1);

    let by_tier = TestGateway::start(&config(
        &up,
        "auth = \"api_key\"\nacl = { tiers = [\"free\"], consumers = [\"acme\"] }",
        "",
    ))
    .await;
    for key in ["key-acme", "key-bob"] {
        let resp = get(&client, &by_tier.url("/x"), &[("x-api-key", key)]).await;
        assert_eq!(resp.status(), StatusCode::OK, "{key}");
    }
}

#[tokio::test]
async fn cached_responses_are_not_served_to_unauthenticated_requests() {
    let up = TestUpstream::respond(|_| {
        let mut resp = Response::new(portcullis_test_support::full("secret data"));
        resp.headers_mut()
            .insert("cache-control", "public, max-age=300".parse().unwrap());
        resp
    })
    .await;
    let gw = TestGateway::start(&config(&up, "auth = \"api_key\"\ncache = {}", "")).await;
    let client = Client::http1();
    let first = get(&client, &gw.url("/data"), &[("x-api-key", "key-acme")]).await;
    assert_eq!(first.status(), StatusCode::OK);
    let hit = get(&client, &gw.url("/data"), &[("x-api-key", "key-bob")]).await;
    assert_eq!(hit.headers()["x-cache"], "HIT");
    let anonymous = get(&client, &gw.url("/data"), &[]).await;
    assert_json_error(&anonymous, StatusCode::UNAUTHORIZED);
    assert!(!String::from_utf8_lossy(anonymous.body()).contains("secret data"));
    assert_eq!(up.request_count(), 1);
}

#[tokio::test]
async fn consumers_from_a_separate_file_authenticate_and_a_bad_reload_keeps_them() {
    let up = TestUpstream::start(echo()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("consumers.toml");
    let consumer = |name: &str, key: &str| {
        format!(
            "[[consumers]]\nname = \"{name}\"\napi_keys = [\"{}\"]\n",
            hash(key)
        )
    };
    std::fs::write(&file, consumer("carol", "key-carol")).unwrap();
    let config = format!(
        "{}\n[auth]\nforward_consumer_headers = true\nconsumers_file = \"{}\"\n",
        single_route(&[&up], "", "auth = \"api_key\""),
        file.display()
    );
    let gw = TestGateway::start(&config).await;
    let client = Client::http1();
    let with_key = |key: &'static str| [("x-api-key", key)];
    let resp = get(&client, &gw.url("/"), &with_key("key-carol")).await;
    assert_eq!(json(resp.body())["headers"]["x-consumer-id"], "carol");

    // The file changes: dave replaces carol.
    std::fs::write(&file, consumer("dave", "key-dave")).unwrap();
    gw.reload(&config).unwrap();
    let resp = get(&client, &gw.url("/"), &with_key("key-dave")).await;
    assert_eq!(json(resp.body())["headers"]["x-consumer-id"], "dave");
    let resp = get(&client, &gw.url("/"), &with_key("key-carol")).await;
    assert_json_error(&resp, StatusCode::UNAUTHORIZED);

    // A broken file is refused with its name, line and key; dave keeps working.
    std::fs::write(
        &file,
        "[[consumers]]\nname = \"erin\"\napi_keys = [\"plain-key\"]\n",
    )
    .unwrap();
    let refused = gw.reload(&config).unwrap_err();
    assert!(
        refused.contains("consumers.toml:3") && refused.contains("consumers[0].api_keys[0]"),
        "{refused}"
    );
    assert!(
        !refused.contains("plain-key"),
        "the value is not echoed: {refused}"
    );
    let resp = get(&client, &gw.url("/"), &with_key("key-dave")).await;
    assert_eq!(resp.status(), StatusCode::OK);
}
