//! SLO evaluation while serving, and alert notifications.
//!
//! Every `alerts.evaluate_every`, the routes' objectives (built per configuration, so a reload
//! changes them) are judged against the rolling statistics; what fires or resolves is logged and,
//! with `alerts.webhook`, POSTed as JSON. A webhook that fails is retried with exponential
//! back-off (1, 2, 4, 8, 16 s) and then given up with a warning; notifications never hold up
//! the evaluation or the data path.

use std::{
    collections::HashMap,
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use portcullis_observe::{AlertEvent, WindowStats};
use tracing::{info, warn};

use crate::GatewayHandle;

/// Attempts per notification before giving up.
const ATTEMPTS: u32 = 5;

/// Judges the objectives every `every` until the task is dropped.
pub(crate) async fn evaluate_forever(handle: GatewayHandle, every: Duration) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let shared = handle.current();
        let history = shared.metrics().history();
        let now = Instant::now();
        // One window computation per distinct window length.
        let mut windows: HashMap<Duration, Vec<(String, WindowStats)>> = HashMap::new();
        let events = shared.observe.base.alerts.evaluate(
            &shared.slos,
            |route, window| {
                let routes = windows
                    .entry(window)
                    .or_insert_with(|| history.window(now, window).1);
                routes
                    .iter()
                    .find(|(name, _)| name == route)
                    .map(|(_, s)| s.clone())
            },
            SystemTime::now(),
        );
        let webhook = shared
            .config()
            .alerts
            .webhook
            .as_ref()
            .map(|w| w.get_ref().clone());
        for event in events {
            let a = &event.alert;
            match event.status {
                "firing" => {
                    warn!(route = %a.route, objective = a.objective, target = a.target, value = a.value,
                                  "SLO alert firing")
                }
                _ => info!(route = %a.route, objective = a.objective, "SLO alert resolved"),
            }
            if let Some(url) = &webhook {
                tokio::spawn(notify(client.clone(), url.clone(), event));
            }
        }
    }
}

/// POSTs `event` to `url`, retrying with back-off.
async fn notify(
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    url: String,
    event: AlertEvent,
) {
    let body = Bytes::from(serde_json::to_vec(&event).unwrap_or_default());
    let mut delay = Duration::from_secs(1);
    for attempt in 1..=ATTEMPTS {
        let request = http::Request::post(url.as_str())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body.clone()));
        let Ok(request) = request else {
            warn!(url, "alert webhook URL is not a valid request target");
            return;
        };
        match tokio::time::timeout(Duration::from_secs(10), client.request(request)).await {
            Ok(Ok(response)) if response.status().is_success() => return,
            Ok(Ok(response)) => {
                warn!(url, status = %response.status(), attempt, "alert webhook refused the notification");
            }
            Ok(Err(e)) => warn!(url, error = %e, attempt, "alert webhook unreachable"),
            Err(_) => warn!(url, attempt, "alert webhook timed out"),
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
    }
    warn!(url, route = %event.alert.route, "giving up on an alert notification");
}
