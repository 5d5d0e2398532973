//! The cache's admin endpoints: purges (`POST /admin/cache/purge`) and statistics by tier
//! and route (`GET /admin/cache/stats`).

use axum::{
    Json,
    body::Bytes,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use portcullis_cache::{Purge, Purged, key::normalize_url};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{AdminState, inspect::json_error};

/// The body of a purge request. `keys` (or `urls`) are absolute URLs; `prefix` (or
/// `prefixes`) URL prefixes; `tags` surrogate keys. `soft` marks entries stale instead of
/// deleting them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PurgeRequest {
    #[serde(default, alias = "urls")]
    keys: Vec<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    prefixes: Vec<String>,
    #[serde(default)]
    soft: bool,
}

impl PurgeRequest {
    /// The purge to run, or what is wrong with the request.
    pub(crate) fn into_purge(self) -> Result<Purge, String> {
        let mut urls = Vec::with_capacity(self.keys.len());
        for k in &self.keys {
            urls.push(
                normalize_url(k)
                    .ok_or_else(|| format!("keys: {k:?} is not an absolute http(s) URL"))?,
            );
        }
        let mut prefixes = self.prefixes;
        prefixes.extend(self.prefix);
        for p in &mut prefixes {
            // The scheme and host are normalized like keys; the rest is matched as given.
            let Some((scheme, rest)) = p.split_once("://") else {
                return Err(format!("prefix: {p:?} must start with http:// or https://"));
            };
            if !matches!(scheme, "http" | "https") || rest.is_empty() {
                return Err(format!("prefix: {p:?} must start with http:// or https://"));
            }
            let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = host.split(':').next().unwrap_or("").to_ascii_lowercase();
            *p = format!("{scheme}://{host}{path}");
        }
        let purge = Purge {
            urls,
            tags: self.tags,
            prefixes,
            soft: self.soft,
        };
        if purge.is_empty() {
            return Err("name at least one of keys, tags or prefix".into());
        }
        Ok(purge)
    }
}

/// The answer to a purge: 200 with counts, or 503 when the Redis tier could not be purged or
/// told (this instance's memory was purged all the same).
pub(crate) fn purged_response(purged: &Purged) -> Response {
    let ok = purged.error.is_none() && purged.propagated;
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "purged": { "memory": purged.memory, "redis": purged.redis },
            "propagated": purged.propagated,
            "error": purged.error,
        })),
    )
        .into_response()
}

pub(crate) async fn purge(State(state): State<AdminState>, body: Bytes) -> Response {
    purge_from_body(state.shared().cache(), &body, "the admin API").await
}

/// Parses a purge request body, runs the purge and answers with its counts (or 400); `via`
/// names the caller in the log line.
pub(crate) async fn purge_from_body(
    cache: &portcullis_cache::Cache,
    body: &[u8],
    via: &'static str,
) -> Response {
    let request: PurgeRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, &format!("invalid JSON: {e}")),
    };
    let purge = match request.into_purge() {
        Ok(p) => p,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, &e),
    };
    let purged = cache.purge(&purge).await;
    tracing::info!(
        keys = purge.urls.len(),
        tags = purge.tags.len(),
        prefixes = purge.prefixes.len(),
        soft = purge.soft,
        memory = purged.memory,
        redis = ?purged.redis,
        via,
        "cache purged"
    );
    purged_response(&purged)
}

/// Hit rates per tier and route, entries and bytes.
pub(crate) fn stats_json(cache: &portcullis_cache::Cache) -> Value {
    let stats = cache.stats();
    let route = |name: &str, s: &portcullis_cache::StatsSnapshot| {
        let (memory, redis) = s.tier_ratios();
        json!({
            "route": name,
            "hits": s.hits,
            "misses": s.misses,
            "stale": s.stale,
            "revalidated": s.revalidated,
            "bypass": s.bypass,
            "stores": s.stores,
            "not_stored": s.not_stored,
            "coalesced": s.coalesced,
            "invalidations": s.invalidations,
            "redis_hits": s.redis_hits,
            "hit_ratio": s.hit_ratio(),
            "hit_ratio_memory": memory,
            "hit_ratio_redis": redis,
        })
    };
    let routes: Vec<Value> = stats.routes.iter().map(|(n, s)| route(n, s)).collect();
    json!({
        "total": route("*", &stats.total),
        "routes": routes,
        "memory": { "entries": stats.memory_entries, "bytes": stats.memory_bytes },
        "redis": stats.redis,
    })
}

pub(crate) async fn stats(State(state): State<AdminState>) -> Json<Value> {
    Json(stats_json(state.shared().cache()))
}

/// The body of a warming request: URLs (default: `[cache.warm] urls`) and how many at once
/// (default: `[cache.warm] concurrency`, else 4).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WarmRequest {
    #[serde(default)]
    urls: Option<Vec<String>>,
    #[serde(default)]
    concurrency: Option<usize>,
}

pub(crate) async fn warm(State(state): State<AdminState>, body: Bytes) -> Response {
    let request: WarmRequest = if body.is_empty() {
        WarmRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => return json_error(StatusCode::BAD_REQUEST, &format!("invalid JSON: {e}")),
        }
    };
    let shared = state.shared();
    let configured = shared.config().cache.warm.as_ref();
    let urls = match request.urls {
        Some(urls) => urls,
        None => configured
            .map(|w| w.urls.iter().map(|u| u.get_ref().clone()).collect())
            .unwrap_or_default(),
    };
    if urls.is_empty() {
        return json_error(
            StatusCode::BAD_REQUEST,
            "no URLs: give \"urls\" or configure [cache.warm] urls",
        );
    }
    let concurrency = request
        .concurrency
        .or(configured.map(|w| *w.concurrency.get_ref()))
        .unwrap_or(4)
        .clamp(1, 256);
    let report = portcullis_proxy::warm(&state.handle, &urls, concurrency).await;
    report.log("the admin API");
    Json(report).into_response()
}
