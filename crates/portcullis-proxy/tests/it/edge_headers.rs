//! Headers the gateway adds to a route's responses: the security headers' defaults and
//! `Permissions-Policy`, and response transforms on every answer of the route, the gateway's
//! own refusals and errors included.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use portcullis_test_support::{Client, TestGateway, TestUpstream, echo, full};

use crate::{json, refused_port};

async fn get(client: &Client, url: &str, headers: &[(&str, &str)]) -> Response<Bytes> {
    let mut req = Request::get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    client.send(req.body(Full::default()).unwrap()).await
}

#[tokio::test]
async fn permissions_policy_and_a_default_x_frame_options_deny_are_added_when_the_upstream_sends_none()
 {
    let up = TestUpstream::respond(|req| {
        let mut resp = Response::new(full("x"));
        // `/framed` answers with its own X-Frame-Options; other paths send none.
        if req.uri().path() == "/framed" {
            resp.headers_mut()
                .insert("x-frame-options", "SAMEORIGIN".parse().unwrap());
        }
        resp
    })
    .await;
    let config = format!(
        "[security_headers]\npermissions_policy = \"geolocation=(), camera=()\"\n\n{}",
        crate::single_route(&[&up], "", "")
    );
    let gw = TestGateway::start(&config).await;
    let client = Client::http1();
    let plain = get(&client, &gw.url("/plain"), &[]).await;
    assert_eq!(plain.status(), StatusCode::OK);
    assert_eq!(plain.headers()["x-frame-options"], "DENY");
    assert_eq!(
        plain.headers()["permissions-policy"],
        "geolocation=(), camera=()"
    );
    assert_eq!(plain.headers().get_all("x-frame-options").iter().count(), 1);
    let framed = get(&client, &gw.url("/framed"), &[]).await;
    assert_eq!(framed.headers()["x-frame-options"], "SAMEORIGIN");
    assert_eq!(
        framed.headers().get_all("x-frame-options").iter().count(),
        1,
        "the upstream's value is kept, not doubled"
    );

    // Without any security header table, nothing is added.
    let bare = TestGateway::start(&crate::single_route(&[&up], "", "")).await;
    let resp = get(&client, &bare.url("/plain"), &[]).await;
    assert!(resp.headers().get("x-frame-options").is_none());
    assert!(resp.headers().get("permissions-policy").is_none());
}

#[tokio::test]
async fn response_transforms_and_security_headers_go_on_the_gateways_own_answers() {
    let up = TestUpstream::start(echo()).await;
    let dead = refused_port().await;
    let transform = "response_headers = { add = { \"X-Served-By\" = \"portcullis/$route\", \
                     \"X-Caller\" = \"$consumer_id\" }, remove = [\"X-Internal\"] }";
    let config = format!(
        "[security_headers]\npermissions_policy = \"camera=()\"\n\n\
         [request_limits]\nmax_body_size = 8\nmax_url_length = 64\nmax_header_count = 8\n\n\
         [[upstreams]]\nname = \"up\"\ntargets = [{{ url = \"{}\" }}]\n\n\
         [[upstreams]]\nname = \"dead\"\ntargets = [{{ url = \"http://127.0.0.1:{dead}\" }}]\n\n\
         [[routes]]\nname = \"api\"\nmatch = {{ path_prefix = \"/api\" }}\nupstream = \"up\"\n\
         auth = \"api_key\"\nacl = {{ consumers = [\"acme\"] }}\nrate_limit = {{ rate = \"1/min\" }}\n\
         versioning = {{ from = [\"header\"], versions = {{ \"1\" = {{}} }} }}\n{transform}\n\n\
         [[routes]]\nname = \"dead\"\nmatch = {{ path_prefix = \"/dead\" }}\nupstream = \"dead\"\n{transform}\n\n\
         [[consumers]]\nname = \"acme\"\napi_keys = [\"{}\"]\n\n\
         [[consumers]]\nname = \"bob\"\napi_keys = [\"{}\"]\n",
        up.url(),
        portcullis_auth::hash_key_hex(b"key-acme"),
        portcullis_auth::hash_key_hex(b"key-bob"),
    );
    let gw = TestGateway::start(&config).await;
    let client = Client::http1();
    let acme = ("x-api-key", "key-acme");
    let v1 = ("accept-version", "1");
    let many: Vec<(String, String)> = (0..9).map(|i| (format!("x-h{i}"), "1".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (&**k, &**v)).collect();
    let big_body = Request::post(gw.url("/api/upload"))
        .header("x-api-key", "key-acme")
        .header("accept-version", "1")
        .body(Full::new(Bytes::from_static(b"0123456789")))
        .unwrap();

    let cases = [
        (
            "no key",
            get(&client, &gw.url("/api/a"), &[v1]).await,
            StatusCode::UNAUTHORIZED,
            "",
        ),
        (
            "acl",
            get(&client, &gw.url("/api/a"), &[("x-api-key", "key-bob"), v1]).await,
            StatusCode::FORBIDDEN,
            "",
        ),
        (
            "no version",
            get(&client, &gw.url("/api/a"), &[acme]).await,
            StatusCode::BAD_REQUEST,
            "acme",
        ),
        (
            "body",
            client.send(big_body).await,
            StatusCode::PAYLOAD_TOO_LARGE,
            "",
        ),
        (
            "url",
            get(
                &client,
                &gw.url(&format!("/api/{}", "u".repeat(64))),
                &[acme, v1],
            )
            .await,
            StatusCode::URI_TOO_LONG,
            "",
        ),
        (
            "headers",
            get(&client, &gw.url("/api/a"), &many).await,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "",
        ),
        (
            "allowed",
            get(&client, &gw.url("/api/a"), &[acme, v1]).await,
            StatusCode::OK,
            "acme",
        ),
        (
            "rate limit",
            get(&client, &gw.url("/api/a"), &[acme, v1]).await,
            StatusCode::TOO_MANY_REQUESTS,
            "acme",
        ),
    ];
    for (case, resp, status, caller) in &cases {
        assert_eq!(resp.status(), *status, "{case}");
        let h = resp.headers();
        assert_eq!(h["x-served-by"], "portcullis/api", "{case}");
        assert_eq!(h["x-caller"], *caller, "{case}");
        assert_eq!(h["permissions-policy"], "camera=()", "{case}");
        assert_eq!(h["x-frame-options"], "DENY", "{case}");
        if *status != StatusCode::OK {
            assert_eq!(json(resp.body())["status"], status.as_u16(), "{case}");
        }
    }
    assert_eq!(
        up.request_count(),
        1,
        "only the allowed request went upstream"
    );

    let bad_gateway = get(&client, &gw.url("/dead"), &[]).await;
    assert_eq!(bad_gateway.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(bad_gateway.headers()["x-served-by"], "portcullis/dead");
    assert_eq!(bad_gateway.headers()["x-frame-options"], "DENY");
}
