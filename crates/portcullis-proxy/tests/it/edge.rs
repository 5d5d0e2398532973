//! Edge rules through the running gateway: IP allow/deny lists on the trusted-proxy-resolved
//! client address (a spoofed `X-Forwarded-For` changes nothing), CORS preflights and simple
//! requests, security headers, and bot rules. Real upstreams on loopback.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use portcullis_test_support::{Client, RawConn, TestGateway, TestUpstream, echo, full};

use crate::{json, single_route};

async fn send(
    client: &Client,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
) -> Response<Bytes> {
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    client.send(req.body(Full::default()).unwrap()).await
}

async fn get(client: &Client, url: &str, headers: &[(&str, &str)]) -> Response<Bytes> {
    send(client, "GET", url, headers).await
}

fn assert_403(resp: &Response<Bytes>, message: &str) {
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let body = json(resp.body());
    assert_eq!(body["status"], 403);
    assert_eq!(body["error"], message);
}

/// `[server]` with `trusted` as `trusted_proxies`, then `rest`.
fn with_server(trusted: &str, rest: &str) -> String {
    format!("[server]\nlisten = \"127.0.0.1:0\"\ntrusted_proxies = [{trusted}]\n\n{rest}")
}

#[tokio::test]
async fn a_spoofed_x_forwarded_for_from_an_untrusted_peer_does_not_change_the_ip_decision() {
    let up = TestUpstream::start(echo()).await;
    let route = single_route(&[&up], "", "ip_rules = { allow = [\"203.0.113.0/24\"] }");
    let client = Client::http1();
    let spoofed = [("x-forwarded-for", "203.0.113.5")];

    // No trusted proxies: the peer (127.0.0.1) is the client, whatever the header says.
    let untrusted = TestGateway::start(&with_server("", &route)).await;
    assert_403(
        &get(&client, &untrusted.url("/"), &spoofed).await,
        "client address not allowed",
    );
    assert_403(
        &get(&client, &untrusted.url("/"), &[]).await,
        "client address not allowed",
    );

    // The same header from a trusted proxy is believed.
    let trusted = TestGateway::start(&with_server("\"127.0.0.1\"", &route)).await;
    let resp = get(&client, &trusted.url("/"), &spoofed).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(up.request_count(), 1);

    // And a deny list cannot be dodged by claiming another address.
    let deny = single_route(&[&up], "", "ip_rules = { deny = [\"127.0.0.0/8\"] }");
    let gw = TestGateway::start(&with_server("", &deny)).await;
    assert_403(
        &get(
            &client,
            &gw.url("/"),
            &[("x-forwarded-for", "198.51.100.1")],
        )
        .await,
        "client address not allowed",
    );
    assert_eq!(up.request_count(), 1);
}

#[tokio::test]
async fn global_and_route_ip_rules_combine_for_ipv4_and_ipv6() {
    let up = TestUpstream::start(echo()).await;
    let config = with_server(
        "\"127.0.0.1\"",
        &format!(
            "[ip_rules]\ndeny = [\"203.0.113.66\", \"2001:db8:bad::/48\"]\n\n{}",
            single_route(
                &[&up],
                "",
                "ip_rules = { allow = [\"203.0.113.0/24\", \"2001:db8::/32\"] }"
            )
        ),
    );
    let gw = TestGateway::start(&config).await;
    let client = Client::http1();
    let from = |ip: &'static str| [("x-forwarded-for", ip)];
    for (ip, ok) in [
        ("203.0.113.5", true),
        ("203.0.113.66", false),
        ("198.51.100.1", false),
        ("2001:db8::1", true),
        ("2001:db8:bad::1", false),
        ("2001:db9::1", false),
    ] {
        let resp = get(&client, &gw.url("/"), &from(ip)).await;
        let expected = if ok {
            StatusCode::OK
        } else {
            StatusCode::FORBIDDEN
        };
        assert_eq!(resp.status(), expected, "{ip}");
    }
}

#[tokio::test]
async fn a_routes_allow_list_replaces_the_global_one_and_the_global_deny_list_still_applies() {
    let up = TestUpstream::start(echo()).await;
    let config = with_server(
        "\"127.0.0.1\"",
        &format!(
            "[ip_rules]\nallow = [\"10.0.0.0/8\"]\ndeny = [\"203.0.113.66\"]\n\n\
             [[upstreams]]\nname = \"up\"\ntargets = [{{ url = \"{}\" }}]\n\n\
             [[routes]]\nname = \"partners\"\nmatch = {{ path_prefix = \"/partners\" }}\nupstream = \"up\"\n\
             ip_rules = {{ allow = [\"203.0.113.0/24\"] }}\n\n\
             [[routes]]\nname = \"internal\"\nupstream = \"up\"\n",
            up.url()
        ),
    );
    let gw = TestGateway::start(&config).await;
    let client = Client::http1();
    for (ip, path, ok) in [
        ("203.0.113.5", "/partners", true),
        ("10.1.2.3", "/partners", false),
        ("203.0.113.66", "/partners", false),
        ("10.1.2.3", "/internal", true),
        ("203.0.113.5", "/internal", false),
    ] {
        let resp = get(&client, &gw.url(path), &[("x-forwarded-for", ip)]).await;
        if ok {
            assert_eq!(resp.status(), StatusCode::OK, "{ip} on {path}");
        } else {
            assert_403(&resp, "client address not allowed");
        }
    }
    assert_eq!(up.request_count(), 2);
}

#[tokio::test]
async fn cors_preflights_are_answered_at_the_gateway_and_simple_requests_get_their_headers() {
    let up = TestUpstream::start(echo()).await;
    let config = format!(
        "{}\n[[consumers]]\nname = \"c\"\napi_keys = [\"{}\"]\n",
        single_route(
            &[&up],
            "",
            "match = { methods = [\"GET\", \"PUT\"] }\nauth = \"api_key\"\n\
             cors = { origins = [\"https://app.example.com\", \"https://*.example.org\"], methods = [\"GET\", \"PUT\"], \
             headers = [\"Content-Type\", \"X-API-Key\"], expose_headers = [\"X-Request-Id\"], credentials = true, max_age = \"10m\" }"
        ),
        portcullis_auth::hash_key_hex(b"k")
    );
    let gw = TestGateway::start(&config).await;
    let client = Client::http1();

    // A preflight needs no credentials, and the route's method list does not refuse OPTIONS.
    let pre = send(
        &client,
        "OPTIONS",
        &gw.url("/things/1"),
        &[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "PUT"),
            ("access-control-request-headers", "content-type, x-api-key"),
        ],
    )
    .await;
    assert_eq!(pre.status(), StatusCode::NO_CONTENT);
    let h = pre.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(h["access-control-allow-methods"], "GET, PUT");
    assert_eq!(h["access-control-allow-headers"], "content-type, x-api-key");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["access-control-max-age"], "600");
    assert!(h["vary"].to_str().unwrap().contains("Origin"));
    assert!(pre.body().is_empty());

    let refused = send(
        &client,
        "OPTIONS",
        &gw.url("/things/1"),
        &[
            ("origin", "https://evil.example"),
            ("access-control-request-method", "PUT"),
        ],
    )
    .await;
    assert_403(&refused, "CORS preflight not allowed");
    let wrong_method = send(
        &client,
        "OPTIONS",
        &gw.url("/things/1"),
        &[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "DELETE"),
        ],
    )
    .await;
    assert_eq!(
        wrong_method.status(),
        StatusCode::METHOD_NOT_ALLOWED,
        "no route takes DELETE"
    );
    assert_eq!(up.request_count(), 0, "preflights never reach the upstream");

    // Actual requests: allowed origins get the headers, others only `Vary`.
    let ok = get(
        &client,
        &gw.url("/things/1"),
        &[("origin", "https://a.b.example.org"), ("x-api-key", "k")],
    )
    .await;
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://a.b.example.org"
    );
    assert_eq!(ok.headers()["access-control-allow-credentials"], "true");
    assert_eq!(
        ok.headers()["access-control-expose-headers"],
        "X-Request-Id"
    );
    assert!(ok.headers()["vary"].to_str().unwrap().contains("Origin"));
    // A refusal from an allowed origin is readable by the page.
    let unauthorized = get(
        &client,
        &gw.url("/things/1"),
        &[("origin", "https://app.example.com")],
    )
    .await;
    assert_eq!(unauthorized.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        unauthorized.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(json(unauthorized.body())["status"], 401);
    let other = get(
        &client,
        &gw.url("/things/1"),
        &[("origin", "https://evil.example"), ("x-api-key", "k")],
    )
    .await;
    assert_eq!(other.status(), StatusCode::OK);
    assert!(other.headers().get("access-control-allow-origin").is_none());
    assert!(other.headers()["vary"].to_str().unwrap().contains("Origin"));
}

#[tokio::test]
async fn security_headers_have_defaults_per_route_overrides_and_hide_the_server() {
    let up = TestUpstream::respond(|_| {
        let mut resp = Response::new(full("x"));
        let h = resp.headers_mut();
        h.insert("server", "Apache/2.4.1".parse().unwrap());
        h.insert("x-powered-by", "PHP/5.6".parse().unwrap());
        h.insert("x-frame-options", "SAMEORIGIN".parse().unwrap());
        resp
    })
    .await;
    let config = format!(
        "[security_headers]\nremove_server_headers = true\ncontent_security_policy = \"default-src 'none'\"\n\n\
         [[upstreams]]\nname = \"up\"\ntargets = [{{ url = \"{}\" }}]\n\n\
         [[routes]]\nname = \"default\"\nmatch = {{ path_prefix = \"/a\" }}\nupstream = \"up\"\n\n\
         [[routes]]\nname = \"relaxed\"\nmatch = {{ path_prefix = \"/b\" }}\nupstream = \"up\"\n\
         security_headers = {{ hsts = \"\", referrer_policy = \"no-referrer\" }}\n",
        up.url()
    );
    let gw = TestGateway::start(&config).await;
    let client = Client::http1();
    let a = get(&client, &gw.url("/a"), &[]).await;
    let h = a.headers();
    assert_eq!(
        h["strict-transport-security"],
        "max-age=31536000; includeSubDomains"
    );
    assert_eq!(
        h["x-frame-options"], "SAMEORIGIN",
        "the upstream's own value wins"
    );
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "strict-origin-when-cross-origin");
    assert_eq!(h["content-security-policy"], "default-src 'none'");
    assert!(h.get("server").is_none());
    assert!(h.get("x-powered-by").is_none());
    let b = get(&client, &gw.url("/b"), &[]).await;
    assert!(b.headers().get("strict-transport-security").is_none());
    assert_eq!(b.headers()["referrer-policy"], "no-referrer");
    // Errors the gateway answers itself carry them too.
    let missing = TestGateway::start(&config.replace(&up.url(), "http://127.0.0.1:1")).await;
    let err = get(&client, &missing.url("/a"), &[]).await;
    assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(err.headers()["x-content-type-options"], "nosniff");
}

#[tokio::test]
async fn bot_rules_refuse_known_scanners_and_listed_agents_with_403() {
    let up = TestUpstream::start(echo()).await;
    let config = format!(
        "[bot_rules]\ndeny = [\"EvilBot\"]\nallow = [\"evilbot-verified\"]\ndeny_empty = true\n\n{}",
        single_route(&[&up], "", "")
    );
    let gw = TestGateway::start(&config).await;
    let client = Client::http1();
    for (ua, ok) in [
        ("sqlmap/1.7.2#stable (https://sqlmap.org)", false),
        (
            "Mozilla/5.0 (compatible; Nmap Scripting Engine; https://nmap.org/book/nse.html)",
            false,
        ),
        ("evilbot/2.0", false),
        ("EvilBot-Verified/1.0", true),
        ("curl/8.5.0", true),
        ("", false),
    ] {
        let resp = get(&client, &gw.url("/"), &[("user-agent", ua)]).await;
        if ok {
            assert_eq!(resp.status(), StatusCode::OK, "{ua:?}");
        } else {
            assert_403(&resp, "user agent not allowed");
        }
    }
    assert_eq!(up.request_count(), 2);
}

#[tokio::test]
async fn a_body_one_byte_over_the_limit_gets_413_with_and_without_content_length() {
    let up = TestUpstream::start(echo()).await;
    let config = format!(
        "[request_limits]\nmax_body_size = 16\n\n{}",
        single_route(&[&up], "", "")
    );
    let gw = TestGateway::start(&config).await;
    let client = Client::http1();
    let post = |body: &'static str| {
        Request::post(gw.url("/upload"))
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap()
    };
    // With Content-Length: judged before the body is read; the upstream never sees it.
    let at = client.send(post("0123456789abcdef")).await;
    assert_eq!(at.status(), StatusCode::OK);
    assert_eq!(json(at.body())["body_len"], 16);
    let over = client.send(post("0123456789abcdefX")).await;
    assert_eq!(over.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(json(over.body())["error"], "request body too large");
    assert_eq!(up.request_count(), 1);

    // Without Content-Length (chunked): counted as it streams.
    let chunked = |chunks: &[&str]| {
        let mut text = String::from(
            "POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        );
        for c in chunks {
            text.push_str(&format!("{:x}\r\n{c}\r\n", c.len()));
        }
        text.push_str("0\r\n\r\n");
        text
    };
    let mut conn = RawConn::connect(gw.addr).await;
    conn.send(chunked(&["0123456789", "abcdef"]).as_bytes())
        .await;
    let (head, body) = conn.read_response().await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(json(&body)["body_len"], 16);
    let mut conn = RawConn::connect(gw.addr).await;
    conn.send(chunked(&["0123456789", "abcdefX"]).as_bytes())
        .await;
    let (head, body) = conn.read_response().await;
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert_eq!(json(&body)["status"], 413);
}

#[tokio::test]
async fn header_transforms_remove_rename_and_add_with_templates_both_ways() {
    let up = TestUpstream::respond(|_| {
        let mut resp = Response::new(full("x"));
        resp.headers_mut()
            .insert("x-internal", "secret-topology".parse().unwrap());
        resp.headers_mut()
            .insert("cache-control", "public, max-age=60".parse().unwrap());
        resp
    })
    .await;
    let config = format!(
        "{}\n[[consumers]]\nname = \"acme\"\napi_keys = [\"{}\"]\n",
        single_route(
            &[&up],
            "",
            "auth = \"api_key\"\ncache = {}\n\
             request_headers = { add = { \"X-Service\" = \"orders\", \"X-Caller\" = \"$consumer_id via $route\" }, \
             remove = [\"Cookie\"], rename = { \"X-Old\" = \"X-New\" } }\n\
             response_headers = { add = { \"X-Served-By\" = \"portcullis/$upstream\", \"X-Req\" = \"$request_id\" }, \
             remove = [\"X-Internal\"] }"
        ),
        portcullis_auth::hash_key_hex(b"k")
    );
    let gw = TestGateway::start(&config).await;
    let client = Client::http1();
    let headers = [
        ("x-api-key", "k"),
        ("cookie", "session=1"),
        ("x-old", "v"),
        ("x-service", "client-claims"),
        ("x-request-id", "rid-7"),
    ];
    let miss = get(&client, &gw.url("/t"), &headers).await;
    assert_eq!(miss.status(), StatusCode::OK);
    let seen = &up.requests()[0].headers;
    assert!(seen.get("cookie").is_none());
    assert!(seen.get("x-old").is_none());
    assert_eq!(seen["x-new"], "v");
    assert_eq!(seen["x-service"], "orders");
    assert_eq!(seen["x-caller"], "acme via all");
    for resp in [miss, get(&client, &gw.url("/t"), &headers).await] {
        assert_eq!(resp.headers()["x-served-by"], "portcullis/up");
        assert_eq!(resp.headers()["x-req"], "rid-7");
        assert!(resp.headers().get("x-internal").is_none());
    }
    assert_eq!(up.request_count(), 1, "the second was a cache hit");
}

#[tokio::test]
async fn long_urls_get_414_and_too_many_headers_431() {
    let up = TestUpstream::start(echo()).await;
    let config = format!(
        "[request_limits]\nmax_url_length = 32\nmax_header_count = 4\n\n{}",
        single_route(&[&up], "", "")
    );
    let gw = TestGateway::start(&config).await;
    let client = Client::http1();
    // "/" + 31 bytes = 32: at the limit (the client adds Host: 1 header).
    let at = format!("/{}", "a".repeat(31));
    assert_eq!(
        get(&client, &gw.url(&at), &[]).await.status(),
        StatusCode::OK
    );
    let over = get(&client, &gw.url(&format!("{at}?")), &[]).await;
    assert_eq!(over.status(), StatusCode::URI_TOO_LONG);
    assert_eq!(json(over.body())["error"], "request URI too long");
    let few = [("a", "1"), ("b", "1"), ("c", "1")];
    assert_eq!(
        get(&client, &gw.url("/"), &few).await.status(),
        StatusCode::OK
    );
    let many = [("a", "1"), ("b", "1"), ("c", "1"), ("d", "1")];
    let resp = get(&client, &gw.url("/"), &many).await;
    assert_eq!(resp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(json(resp.body())["status"], 431);
    assert_eq!(up.request_count(), 2);
}

#[tokio::test]
async fn the_request_limits_414_and_431_keep_the_connection_open() {
    let up = TestUpstream::start(echo()).await;
    let config = format!(
        "[request_limits]\nmax_url_length = 32\nmax_header_count = 4\n\n{}",
        single_route(&[&up], "", "")
    );
    let gw = TestGateway::start(&config).await;
    let mut conn = RawConn::connect(gw.addr).await;
    let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(40));
    let many = "GET / HTTP/1.1\r\nHost: x\r\na: 1\r\nb: 1\r\nc: 1\r\nd: 1\r\n\r\n";
    let fine = "GET /ok HTTP/1.1\r\nHost: x\r\n\r\n";
    for (request, status) in [(long.as_str(), "414"), (many, "431"), (fine, "200")] {
        conn.send(request.as_bytes()).await;
        let (head, _) = conn.read_response().await;
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status}")),
            "same connection: {head}"
        );
        assert!(
            !head.to_ascii_lowercase().contains("connection: close"),
            "{head}"
        );
    }
    assert_eq!(up.request_count(), 1);
}

#[tokio::test]
async fn a_route_can_turn_the_global_cors_and_bot_rules_off_or_replace_them() {
    let up = TestUpstream::start(echo()).await;
    let config = format!(
        "[cors]\norigins = [\"https://app.example.com\"]\n\n[bot_rules]\ndeny = [\"EvilBot\"]\n\n\
         [[upstreams]]\nname = \"up\"\ntargets = [{{ url = \"{}\" }}]\n\n\
         [[routes]]\nname = \"global\"\nmatch = {{ path_prefix = \"/global\" }}\nupstream = \"up\"\n\n\
         [[routes]]\nname = \"no-cors\"\nmatch = {{ path_prefix = \"/no-cors\" }}\nupstream = \"up\"\ncors = false\n\n\
         [[routes]]\nname = \"no-bots\"\nmatch = {{ path_prefix = \"/no-bots\" }}\nupstream = \"up\"\nbot_rules = false\n\n\
         [[routes]]\nname = \"own-bots\"\nmatch = {{ path_prefix = \"/own-bots\" }}\nupstream = \"up\"\n\
         bot_rules = {{ default_list = false, deny = [\"curl\"] }}\n",
        up.url()
    );
    let gw = TestGateway::start(&config).await;
    let client = Client::http1();
    let origin = ("origin", "https://app.example.com");
    let preflight = [origin, ("access-control-request-method", "GET")];

    // The global CORS answers preflights and decorates responses...
    let resp = send(&client, "OPTIONS", &gw.url("/global/x"), &preflight).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let resp = get(&client, &gw.url("/global/x"), &[origin]).await;
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    // ...but not on the route that turned it off: the preflight goes upstream as it is.
    let resp = send(&client, "OPTIONS", &gw.url("/no-cors/x"), &preflight).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(json(resp.body())["method"], "OPTIONS");
    let resp = get(&client, &gw.url("/no-cors/x"), &[origin]).await;
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    assert!(resp.headers().get("vary").is_none());

    let ua = |agent: &'static str| [("user-agent", agent)];
    for (path, agent, allowed) in [
        ("/global/x", "EvilBot/1.0", false),
        ("/global/x", "sqlmap/1.7", false),
        ("/global/x", "curl/8.5.0", true),
        ("/no-bots/x", "EvilBot/1.0", true),
        ("/no-bots/x", "sqlmap/1.7", true),
        ("/own-bots/x", "EvilBot/1.0", true),
        ("/own-bots/x", "sqlmap/1.7", true),
        ("/own-bots/x", "curl/8.5.0", false),
    ] {
        let resp = get(&client, &gw.url(path), &ua(agent)).await;
        if allowed {
            assert_eq!(resp.status(), StatusCode::OK, "{path} {agent}");
        } else {
            assert_403(&resp, "user agent not allowed");
        }
    }
}
