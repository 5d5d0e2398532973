//! Read-only views of the running gateway for operators: routes, upstreams, cache.

use axum::{
    Json,
    extract::State,
    response::{IntoResponse, Response},
};
use http::{HeaderValue, StatusCode, header};
use portcullis_http::ErrorBody;
use portcullis_proxy::Shared;
use serde_json::{Value, json};

use crate::AdminState;

/// The contract's JSON error body, for the admin listener's own refusals.
pub(crate) fn json_error(status: StatusCode, message: &str) -> Response {
    let body = ErrorBody {
        status,
        message,
        request_id: None,
    }
    .to_json();
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

pub(crate) async fn not_found() -> Response {
    json_error(StatusCode::NOT_FOUND, "no such admin endpoint")
}

pub(crate) async fn routes(State(state): State<AdminState>) -> Json<Value> {
    let routes: Vec<Value> = state
        .shared()
        .routes()
        .iter()
        .map(|r| {
            json!({
                "name": &*r.name,
                "upstream": &*r.upstream.name,
                "cached": r.cache.as_ref().is_some_and(|p| p.enabled),
                "timeout_ms": u64::try_from(r.timeout.as_millis()).unwrap_or(u64::MAX),
                "strip_prefix": r.strip_prefix,
                "add_prefix": r.add_prefix,
                "preserve_host": r.preserve_host,
            })
        })
        .collect();
    Json(json!({ "routes": routes }))
}

pub(crate) fn upstreams_json(shared: &Shared) -> Value {
    let upstreams: Vec<Value> = shared
        .upstreams()
        .iter()
        .map(|u| {
            let targets: Vec<Value> = u
                .targets()
                .map(|(target, in_flight, healthy)| {
                    json!({ "target": target, "in_flight": in_flight, "healthy": healthy })
                })
                .collect();
            json!({ "name": &*u.name, "targets": targets })
        })
        .collect();
    Value::Array(upstreams)
}

pub(crate) async fn upstreams(State(state): State<AdminState>) -> Json<Value> {
    Json(json!({ "upstreams": upstreams_json(&state.shared()) }))
}

pub(crate) fn cache_json(shared: &Shared) -> Value {
    let stats = shared.cache().stats();
    let routes: Vec<Value> = stats
        .routes
        .iter()
        .map(|(name, s)| {
            json!({
                "route": name,
                "hits": s.hits,
                "misses": s.misses,
                "stale": s.stale,
                "bypass": s.bypass,
                "revalidated": s.revalidated,
                "stores": s.stores,
                "hit_ratio": s.hit_ratio(),
            })
        })
        .collect();
    json!({
        "memory_bytes": stats.memory_bytes,
        "memory_entries": stats.memory_entries,
        "hit_ratio": stats.total.hit_ratio(),
        "routes": routes,
    })
}

pub(crate) async fn cache(State(state): State<AdminState>) -> Json<Value> {
    Json(cache_json(&state.shared()))
}

pub(crate) async fn reload(State(state): State<AdminState>) -> Response {
    let Some(reload) = state.reload.clone() else {
        return json_error(
            StatusCode::NOT_IMPLEMENTED,
            "this gateway was not started from a config file",
        );
    };
    match tokio::task::spawn_blocking(move || reload()).await {
        Ok(Ok(report)) => Json(json!({
            "status": "reloaded",
            "routes": report.routes,
            "upstreams": report.upstreams,
            "upstreams_kept": report.upstreams_kept,
            "needs_restart": report.needs_restart,
        }))
        .into_response(),
        Ok(Err(errors)) => json_error(StatusCode::UNPROCESSABLE_ENTITY, &errors),
        Err(_) => json_error(StatusCode::INTERNAL_SERVER_ERROR, "reload task failed"),
    }
}

pub(crate) async fn config(State(state): State<AdminState>) -> Response {
    match serde_json::to_value(state.shared().config()) {
        Ok(v) => Json(v).into_response(),
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

pub(crate) async fn breakers(State(state): State<AdminState>) -> Json<Value> {
    let now = std::time::Instant::now();
    let shared = state.shared();
    let upstreams = shared.upstreams().iter().filter_map(|u| u.breaker());
    let routes = shared.routes().iter().filter_map(|r| r.breaker.as_deref());
    let breakers: Vec<Value> = upstreams
        .chain(routes)
        .map(|b| json!({ b.scope().as_str(): b.name(), "breaker": b.breaker().snapshot(now) }))
        .collect();
    Json(json!({ "breakers": breakers }))
}

/// `POST /admin/breakers/{upstream}/{command}`.
pub(crate) async fn breaker_command(
    State(state): State<AdminState>,
    axum::extract::Path((name, command)): axum::extract::Path<(String, String)>,
) -> Response {
    let shared = state.shared();
    let Some(upstream) = shared.upstreams().iter().find(|u| *u.name == *name) else {
        return json_error(StatusCode::NOT_FOUND, "no such upstream");
    };
    let Some(breaker) = upstream.breaker() else {
        return json_error(StatusCode::NOT_FOUND, "this upstream has no breaker");
    };
    command_breaker(breaker, &command)
}

/// `POST /admin/breakers/routes/{route}/{command}`: a route's own breaker.
pub(crate) async fn route_breaker_command(
    State(state): State<AdminState>,
    axum::extract::Path((name, command)): axum::extract::Path<(String, String)>,
) -> Response {
    let shared = state.shared();
    let Some(route) = shared.routes().iter().find(|r| *r.name == *name) else {
        return json_error(StatusCode::NOT_FOUND, "no such route");
    };
    let Some(breaker) = route.breaker.as_deref() else {
        return json_error(
            StatusCode::NOT_FOUND,
            "this route has no breaker of its own",
        );
    };
    command_breaker(breaker, &command)
}

fn command_breaker(breaker: &portcullis_proxy::NamedBreaker, command: &str) -> Response {
    if !breaker.command(command) {
        return json_error(
            StatusCode::NOT_FOUND,
            "command must be open, close or reset",
        );
    }
    let now = std::time::Instant::now();
    Json(json!({ breaker.scope().as_str(): breaker.name(), "breaker": breaker.breaker().snapshot(now) }))
        .into_response()
}
