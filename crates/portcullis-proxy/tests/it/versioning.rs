//! API versioning through the running gateway: the version from a header, a media type
//! parameter, a query parameter or the path; per-version upstreams and path prefixes; the
//! default; `Deprecation`/`Sunset`/`Link` on deprecated versions; 400 for unknown versions; and
//! a cache that never serves one version's response for another. Real upstreams on loopback.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use portcullis_test_support::{Client, TestGateway, TestUpstream, echo, full};

use crate::json;

/// An upstream answering every request with `body` (cacheable for a minute).
async fn answering(body: &'static str) -> TestUpstream {
    TestUpstream::respond(move |_| {
        Response::builder()
            .header("cache-control", "max-age=60")
            .body(full(body))
            .unwrap()
    })
    .await
}

async fn get(client: &Client, url: &str, headers: &[(&str, &str)]) -> Response<Bytes> {
    let mut req = Request::get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    client.send(req.body(Full::default()).unwrap()).await
}

fn upstream(name: &str, up: &TestUpstream) -> String {
    format!(
        "[[upstreams]]\nname = \"{name}\"\ntargets = [{{ url = \"{}\" }}]\n",
        up.url()
    )
}

fn text(resp: &Response<Bytes>) -> &str {
    std::str::from_utf8(resp.body()).unwrap()
}

#[tokio::test]
async fn a_header_version_picks_its_upstream_and_deprecated_versions_say_so() {
    let (v1, v2) = (answering("one").await, answering("two").await);
    let config = format!(
        "{}{}\n[[routes]]\nname = \"orders\"\nupstream = \"v2\"\n\n\
         [routes.versioning]\ndefault = \"2\"\n\n\
         [routes.versioning.versions.1]\nupstream = \"v1\"\ndeprecated = \"2025-06-30\"\n\
         sunset = \"2026-01-01\"\nlink = \"https://docs.example.com/orders/v1\"\n\n\
         [routes.versioning.versions.2]\n",
        upstream("v1", &v1),
        upstream("v2", &v2)
    );
    let gw = TestGateway::start(&config).await;
    let client = Client::http1();

    let old = get(&client, &gw.url("/orders"), &[("accept-version", "1")]).await;
    assert_eq!(old.status(), StatusCode::OK);
    assert_eq!(text(&old), "one");
    assert_eq!(old.headers()["deprecation"], "@1751241600");
    assert_eq!(old.headers()["sunset"], "Thu, 01 Jan 2026 00:00:00 GMT");
    assert_eq!(
        old.headers()["link"],
        "<https://docs.example.com/orders/v1>; rel=\"deprecation\""
    );
    assert_eq!(old.headers()["vary"], "accept-version");
    assert_eq!(
        v1.requests()[0].headers["accept-version"],
        "1",
        "kept without strip"
    );
    assert!(
        v1.requests()[0]
            .headers
            .get("x-portcullis-api-version")
            .is_none()
    );

    for headers in [&[("accept-version", "2")][..], &[]] {
        let current = get(&client, &gw.url("/orders"), headers).await;
        assert_eq!(text(&current), "two", "{headers:?}");
        assert!(current.headers().get("deprecation").is_none());
        assert!(current.headers().get("sunset").is_none());
        assert!(current.headers().get("link").is_none());
    }

    let unknown = get(&client, &gw.url("/orders"), &[("accept-version", "3")]).await;
    assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);
    let body = json(unknown.body());
    assert_eq!(body["error"], "unknown API version");
    assert_eq!(body["status"], 400);
    assert_eq!(
        body["request_id"],
        unknown.headers()["x-request-id"].to_str().unwrap()
    );
    assert_eq!((v1.request_count(), v2.request_count()), (1, 2));
}

#[tokio::test]
async fn cached_responses_of_two_versions_are_never_mixed() {
    let (v1, v2) = (answering("one").await, answering("two").await);
    let config = format!(
        "{}{}\n[[routes]]\nname = \"orders\"\nupstream = \"v2\"\ncache = {{ ttl = \"1m\" }}\n\
         versioning = {{ from = [\"header\", \"query\"], default = \"2\", versions = {{ \"1\" = {{ upstream = \"v1\" }}, \"2\" = {{}} }} }}\n",
        upstream("v1", &v1),
        upstream("v2", &v2)
    );
    let gw = TestGateway::start(&config).await;
    let client = Client::http1();
    let cases: [(&str, &[(&str, &str)], &str); 6] = [
        ("/orders", &[("accept-version", "1")], "one"),
        ("/orders", &[("accept-version", "2")], "two"),
        ("/orders", &[], "two"),
        ("/orders", &[("accept-version", "1")], "one"),
        ("/orders", &[("x-portcullis-api-version", "1")], "two"),
        ("/orders?version=1", &[], "one"),
    ];
    for (i, (path, headers, body)) in cases.iter().enumerate() {
        let resp = get(&client, &gw.url(path), headers).await;
        assert_eq!(resp.status(), StatusCode::OK, "case {i}");
        assert_eq!(text(&resp), *body, "case {i}: {headers:?}");
    }
    // One fill per version and URL: v1 for /orders and /orders?version=1, v2 once.
    assert_eq!((v1.request_count(), v2.request_count()), (2, 1));
    let again = get(&client, &gw.url("/orders"), &[("accept-version", "1")]).await;
    assert_eq!(again.headers()["x-cache"], "HIT");
    assert_eq!(text(&again), "one");
    let bad = get(&client, &gw.url("/orders?version=9"), &[]).await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn media_type_and_query_versions_are_stripped_and_rewritten_when_configured() {
    let up = TestUpstream::start(echo()).await;
    let config = format!(
        "{}\n[[routes]]\nname = \"api\"\nmatch = {{ path_prefix = \"/api\" }}\nupstream = \"up\"\nstrip_prefix = \"/api\"\n\
         versioning = {{ from = [\"media_type\", \"query\"], query = \"api-version\", strip = true, versions = {{ \"1\" = {{ add_prefix = \"/legacy\" }}, \"2\" = {{ add_prefix = \"/v2\" }} }} }}\n",
        upstream("up", &up)
    );
    let gw = TestGateway::start(&config).await;
    let client = Client::http1();

    let accept = [("accept", "application/vnd.example+json; version=2")];
    let resp = get(&client, &gw.url("/api/users?a=1"), &accept).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["vary"], "accept");
    let seen = json(resp.body());
    assert_eq!(seen["uri"], "/v2/users?a=1");
    assert_eq!(
        seen["headers"]["accept"], "application/vnd.example+json; version=2",
        "a media type parameter stays"
    );

    let resp = get(&client, &gw.url("/api/users?a=1&api-version=1&b=2"), &[]).await;
    assert_eq!(json(resp.body())["uri"], "/legacy/users?a=1&b=2");

    // Neither source names one and there is no default.
    let resp = get(&client, &gw.url("/api/users"), &[]).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json(resp.body())["error"], "API version required");
    assert_eq!(up.request_count(), 2);
}

#[tokio::test]
async fn path_versions_pick_the_upstream_and_lose_their_segment_with_strip() {
    let (v1, v2) = (
        TestUpstream::start(echo()).await,
        TestUpstream::start(echo()).await,
    );
    let config = format!(
        "{}{}\n[[routes]]\nname = \"all\"\nupstream = \"v2\"\n\
         versioning = {{ from = [\"path\", \"header\"], header = \"X-Api-Version\", default = \"2\", strip = true, versions = {{ \"1\" = {{ upstream = \"v1\" }}, \"2\" = {{}} }} }}\n",
        upstream("v1", &v1),
        upstream("v2", &v2)
    );
    let gw = TestGateway::start(&config).await;
    let client = Client::http1();
    let uri = |resp: &Response<Bytes>| json(resp.body())["uri"].as_str().unwrap().to_owned();

    let resp = get(&client, &gw.url("/v1/users/7?x=1"), &[]).await;
    assert_eq!(uri(&resp), "/users/7?x=1");
    assert_eq!(v1.request_count(), 1);
    let resp = get(&client, &gw.url("/v2"), &[]).await;
    assert_eq!(uri(&resp), "/");
    // Not a version segment: the header, then the default, decide.
    let resp = get(&client, &gw.url("/videos/1"), &[("x-api-version", "1")]).await;
    assert_eq!(uri(&resp), "/videos/1");
    assert!(
        json(resp.body())["headers"].get("x-api-version").is_none(),
        "stripped"
    );
    assert_eq!(v1.request_count(), 2);
    let resp = get(&client, &gw.url("/videos/1"), &[]).await;
    assert_eq!(uri(&resp), "/videos/1");
    assert_eq!(v2.request_count(), 2);

    let resp = get(&client, &gw.url("/v3/users"), &[]).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json(resp.body())["error"], "unknown API version");
    assert_eq!((v1.request_count(), v2.request_count()), (2, 2));
}
