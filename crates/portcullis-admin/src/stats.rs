//! `GET /admin/stats`: how the gateway is doing over the last 1, 5 and 15 minutes, overall and
//! per route, with the busiest and the slowest routes of the last 5 minutes.

use std::time::{Duration, Instant};

use axum::{Json, extract::State};
use portcullis_observe::WindowStats;
use serde_json::{Value, json};

use crate::AdminState;

const WINDOWS: [(&str, Duration); 3] = [
    ("1m", Duration::from_secs(60)),
    ("5m", Duration::from_secs(300)),
    ("15m", Duration::from_secs(900)),
];
/// How many routes the top and slowest lists show.
const TOP: usize = 5;

pub(crate) async fn stats(State(state): State<AdminState>) -> Json<Value> {
    let shared = state.shared();
    let history = shared.metrics().history();
    let now = Instant::now();
    let mut overall = serde_json::Map::new();
    let mut per_route: std::collections::BTreeMap<String, serde_json::Map<String, Value>> =
        std::collections::BTreeMap::new();
    let mut five: Vec<(String, WindowStats)> = Vec::new();
    for (label, span) in WINDOWS {
        let (all, routes) = history.window(now, span);
        overall.insert(label.to_owned(), json!(all));
        for (name, stats) in &routes {
            per_route
                .entry(name.clone())
                .or_default()
                .insert(label.to_owned(), json!(stats));
        }
        if label == "5m" {
            five = routes;
        }
    }
    let mut busiest: Vec<&(String, WindowStats)> =
        five.iter().filter(|(_, s)| s.requests > 0).collect();
    busiest.sort_by_key(|(_, s)| std::cmp::Reverse(s.requests));
    let mut slowest = busiest.clone();
    slowest.sort_by(|a, b| {
        b.1.p95_ms
            .partial_cmp(&a.1.p95_ms)
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let list = |v: &[&(String, WindowStats)]| -> Vec<Value> {
        v.iter()
            .take(TOP)
            .map(|(name, s)| json!({ "route": name, "requests": s.requests, "rps": s.rps, "p95_ms": s.p95_ms, "error_rate": s.error_rate }))
            .collect()
    };
    Json(json!({
        "uptime_seconds": shared.uptime().as_secs_f64(),
        "in_flight": shared.in_flight(),
        "overall": overall,
        "routes": per_route,
        "top_routes": list(&busiest),
        "slowest_routes": list(&slowest),
    }))
}

pub(crate) async fn alerts(State(state): State<AdminState>) -> Json<Value> {
    Json(json!({ "alerts": state.shared().alerts() }))
}
