//! Integration tests of the data plane over real sockets: real upstream servers, the real
//! gateway, real clients. One binary (modules below) to keep link time down.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod access_log;
mod balancing;
mod body_limit;
mod breaker;
mod cache;
mod cache_redis;
mod cache_warm;
mod correlation;
mod deadlines;
mod edge;
mod edge_headers;
mod errors;
mod fallback;
mod health;
mod http2_tls;
mod jwt;
mod limits;
#[cfg(feature = "otel")]
mod otlp;
mod proxying;
mod rate_limit;
mod reload;
mod retries;
mod routing;
mod security;
mod streaming;
mod upgrade;
mod upstream_wire;
mod versioning;
mod watchdog;

use http::StatusCode;
use portcullis_test_support::{TestUpstream, full};

/// A target that answers every request with `status`.
pub(crate) async fn answering(status: StatusCode) -> TestUpstream {
    TestUpstream::respond(move |_| {
        let mut resp = http::Response::new(full("x"));
        *resp.status_mut() = status;
        resp
    })
    .await
}

/// A local port nothing listens on (bound, then released), so connecting is refused.
pub(crate) async fn refused_port() -> u16 {
    tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A config with one upstream over `targets` and one catch-all route, plus `extra` route keys.
pub(crate) fn single_route(
    targets: &[&TestUpstream],
    upstream_extra: &str,
    route_extra: &str,
) -> String {
    let targets: Vec<String> = targets
        .iter()
        .map(|t| format!("{{ url = \"{}\" }}", t.url()))
        .collect();
    format!(
        "[[upstreams]]\nname = \"up\"\ntargets = [{}]\n{upstream_extra}\n\n[[routes]]\nname = \"all\"\nupstream = \"up\"\n{route_extra}\n",
        targets.join(", ")
    )
}

pub(crate) fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}
