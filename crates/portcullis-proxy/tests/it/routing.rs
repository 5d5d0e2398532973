//! Routing through the running gateway: precedence, hosts, methods, 404/405 JSON.

use http::{Request, StatusCode};
use http_body_util::Full;
use portcullis_test_support::{Client, TestGateway, TestUpstream, full};

use crate::json;

/// An upstream that answers with its own name, so tests see which route was taken.
async fn named(name: &'static str) -> TestUpstream {
    TestUpstream::respond(move |_| http::Response::new(full(name))).await
}

#[tokio::test]
async fn the_most_specific_route_wins() {
    let names = ["root", "api", "project", "archived", "host", "wild", "post"];
    let mut ups = Vec::new();
    for n in names {
        ups.push(named(n).await);
    }
    let up = |i: usize| {
        format!(
            "[[upstreams]]\nname = \"{}\"\ntargets = [{{ url = \"{}\" }}]\n",
            names[i],
            ups[i].url()
        )
    };
    let route = |name: &str, m: &str| {
        format!("[[routes]]\nname = \"{name}\"\nupstream = \"{name}\"\nmatch = {{ {m} }}\n")
    };
    let mut config = String::new();
    for i in 0..names.len() {
        config.push_str(&up(i));
    }
    // Deliberately listed from least to most specific.
    config.push_str(&route("root", "path_prefix = \"/\""));
    config.push_str(&route("api", "path_prefix = \"/api\""));
    config.push_str(&route("project", "path = \"/api/projects/{id}\""));
    config.push_str(&route("archived", "path = \"/api/projects/archived\""));
    config.push_str(&route("wild", "host = \"*.example.com\""));
    config.push_str(&route(
        "host",
        "host = \"admin.example.com\", path_prefix = \"/\"",
    ));
    config.push_str(&route(
        "post",
        "path_prefix = \"/api\", methods = [\"POST\"]",
    ));
    let gw = TestGateway::start(&config).await;
    let client = Client::http1();
    let cases = [
        ("GET", "other.test", "/", "root"),
        ("GET", "other.test", "/apiary", "root"),
        ("GET", "other.test", "/api/x", "api"),
        ("POST", "other.test", "/api/x", "post"),
        ("GET", "other.test", "/api/projects/42", "project"),
        ("GET", "other.test", "/api/projects/archived", "archived"),
        ("GET", "www.example.com", "/api/x", "wild"),
        ("GET", "admin.example.com", "/api/x", "host"),
    ];
    for (method, host, path, want) in cases {
        let req = Request::builder()
            .method(method)
            .uri(gw.url(path))
            .header("host", host)
            .body(Full::default())
            .unwrap();
        let resp = client.send(req).await;
        assert_eq!(resp.body(), want.as_bytes(), "{method} {host}{path}");
    }
}

#[tokio::test]
async fn unmatched_requests_get_404_json_and_wrong_methods_405() {
    let up = named("up").await;
    let config = format!(
        "[[upstreams]]\nname = \"up\"\ntargets = [{{ url = \"{}\" }}]\n\n\
         [[routes]]\nname = \"items\"\nupstream = \"up\"\nmatch = {{ path_prefix = \"/items\", methods = [\"GET\"] }}\n",
        up.url()
    );
    let gw = TestGateway::start(&config).await;
    let client = Client::http1();
    let resp = client.get(&gw.url("/nothing-here")).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body = json(resp.body());
    assert_eq!(body["status"], 404);
    assert_eq!(
        body["request_id"],
        resp.headers()["x-request-id"].to_str().unwrap()
    );
    assert!(body["error"].as_str().unwrap().contains("no route"));

    let resp = client
        .send(
            Request::delete(gw.url("/items/1"))
                .body(Full::default())
                .unwrap(),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(resp.headers()["allow"], "GET, HEAD");
    assert_eq!(json(resp.body())["status"], 405);
    assert_eq!(up.request_count(), 0);
}
