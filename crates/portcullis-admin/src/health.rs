//! Health probes and the metrics endpoint.
//!
//! `/health/live` answers 200 while the process can answer at all. `/health/ready` answers 200
//! while the gateway takes traffic and 503 once shutdown began, so a load balancer stops
//! sending during the drain, and while a required upstream has no healthy target. Redis being
//! unavailable leaves it ready but `degraded` (200, with reasons): every instance shares the
//! same Redis, and each keeps serving with local fallbacks. `/health/status` is the JSON
//! summary for people and dashboards.

use axum::{
    Json,
    extract::State,
    response::{IntoResponse, Response},
};
use http::{StatusCode, header};
use portcullis_observe::{Metrics, ProcessStats};
use serde_json::{Value, json};

use crate::{AdminState, inspect};

pub(crate) async fn live() -> Json<Value> {
    Json(json!({ "status": "live" }))
}

pub(crate) async fn ready(State(state): State<AdminState>) -> Response {
    let shared = state.shared();
    if shared.is_draining() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "draining" })),
        )
            .into_response();
    }
    let reasons = shared.unready_reasons();
    let degraded = shared.degraded_reasons();
    if reasons.is_empty() && degraded.is_empty() {
        Json(json!({ "status": "ready" })).into_response()
    } else if reasons.is_empty() {
        Json(json!({ "status": "degraded", "reasons": degraded })).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unready", "reasons": reasons })),
        )
            .into_response()
    }
}

pub(crate) async fn status(State(state): State<AdminState>) -> Json<Value> {
    let shared = &state.shared();
    let process = ProcessStats::read();
    Json(json!({
        "status": if shared.is_draining() { "draining" } else { "ready" },
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": shared.uptime().as_secs_f64(),
        "in_flight": shared.in_flight(),
        "memory": {
            "resident_bytes": process.as_ref().map(|p| p.resident_bytes),
            "cache_bytes": shared.cache().stats().memory_bytes,
        },
        "cache": inspect::cache_json(shared),
        "upstreams": inspect::upstreams_json(shared),
        "redis": shared.redis_status().map(|(servers, state)| json!({
            "servers": servers,
            "state": state,
        })),
        "degraded": shared.degraded_reasons(),
    }))
}

pub(crate) async fn metrics(State(state): State<AdminState>) -> Response {
    let text = state.shared().metrics().encode();
    ([(header::CONTENT_TYPE, Metrics::CONTENT_TYPE)], text).into_response()
}
