//! Active health checks: each target of an upstream with a `health` table is probed with
//! `GET path` every interval (plus up to 10% jitter, so many gateways do not probe in step).
//! `unhealthy` consecutive failures (a refused or reset connection, a timeout, a status not
//! expected) take the target out of its balancer; `healthy` consecutive passes bring it back.
//! Transitions are logged and exported (`portcullis_upstream_target_healthy`).
//!
//! The probes run for as long as the upstream exists: a reload that replaces the upstream stops
//! them (the task holds it weakly), one that keeps it keeps them.

use std::sync::{Arc, Weak};

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::Empty;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use portcullis_config::{HealthConfig, Protocol};
use tracing::{info, warn};

use crate::upstream::Upstream;

/// Starts the probes of `upstream`'s targets, if it has a `health` table and a runtime runs.
pub(crate) fn spawn_checks(upstream: &Arc<Upstream>) {
    let Some(config) = upstream.config.health.clone() else {
        return;
    };
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let mut builder = Client::builder(TokioExecutor::new());
    builder.http2_only(upstream.protocol == Protocol::Http2);
    let client: Client<HttpConnector, Empty<Bytes>> = builder.build(HttpConnector::new());
    for index in 0..upstream.target_list().len() {
        runtime.spawn(probe_forever(
            Arc::downgrade(upstream),
            index,
            config.clone(),
            client.clone(),
        ));
    }
}

async fn probe_forever(
    upstream: Weak<Upstream>,
    index: usize,
    config: HealthConfig,
    client: Client<HttpConnector, Empty<Bytes>>,
) {
    let (mut passes, mut failures) = (0u32, 0u32);
    loop {
        let interval = config.interval.0;
        let jitter = interval.mul_f64(fastrand::f64() * 0.1);
        tokio::time::sleep(interval + jitter).await;
        let Some(up) = upstream.upgrade() else {
            return;
        };
        let target = &up.target_list()[index];
        let authority = target.authority.as_str().to_owned();
        let url = format!("http://{authority}{}", config.path.get_ref());
        let request = Request::get(url.as_str())
            .header(header::HOST, target.host_header.clone())
            .header(header::USER_AGENT, "portcullis-health-check")
            .body(Empty::new());
        let outcome = match request {
            Ok(request) => {
                match tokio::time::timeout(config.timeout.0, client.request(request)).await {
                    Ok(Ok(response)) => passes_status(&config, response.status())
                        .then_some(())
                        .ok_or_else(|| format!("status {}", response.status())),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("no response within {:?}", config.timeout.0)),
                }
            }
            Err(e) => Err(e.to_string()),
        };
        let healthy = up.balancer().is_healthy(index);
        match outcome {
            Ok(()) => {
                failures = 0;
                passes = passes.saturating_add(1);
                if !healthy && passes >= config.healthy {
                    up.balancer().set_healthy(index, true);
                    target.metrics.set_healthy(true);
                    info!(upstream = %up.name, target = %authority, "target healthy again");
                }
            }
            Err(reason) => {
                passes = 0;
                failures = failures.saturating_add(1);
                if healthy && failures >= config.unhealthy {
                    up.balancer().set_healthy(index, false);
                    target.metrics.set_healthy(false);
                    warn!(upstream = %up.name, target = %authority, %reason,
                          "target unhealthy: out of the balancer until it passes again");
                }
            }
        }
    }
}

/// Whether `status` passes: one of `statuses`, or any 2xx or 3xx when none are listed.
fn passes_status(config: &HealthConfig, status: StatusCode) -> bool {
    if config.statuses.is_empty() {
        status.is_success() || status.is_redirection()
    } else {
        config.statuses.contains(&status.as_u16())
    }
}
