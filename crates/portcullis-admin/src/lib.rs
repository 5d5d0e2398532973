//! The admin listener: `/metrics`, health probes and the admin API, on its own address.
//!
//! | path | auth | what |
//! |---|---|---|
//! | `GET /health/live` | none | 200 while the process runs |
//! | `GET /health/ready` | none | 200 when serving, 503 once shutdown began (drain) |
//! | `GET /health/status` | none | JSON: version, uptime, memory, in-flight, cache, upstreams |
//! | `GET /metrics` | token if `metrics_require_token` | OpenMetrics text |
//! | `GET /dashboard` | page: none; its data calls: token | the live dashboard (self-contained page) |
//! | `GET /admin/routes`, `/admin/upstreams`, `/admin/cache` | token | inspection (JSON) |
//! | `GET /admin/cache/stats` | token | cache hit rates by tier and route, entries, bytes, Redis tier counters |
//! | `POST /admin/cache/purge` | token | purge by `keys` (URLs), `tags` or `prefix`, optionally `soft`, in every tier and instance |
//! | `POST /admin/cache/warm` | token | fetch URLs into the cache (`{"urls": [...]}`, default `[cache.warm] urls`); a report |
//! | `POST /hooks/cache/purge` | HMAC signature (`[cache.webhook]`) | the purge API for backends, signed, with replay protection |
//! | `POST /admin/reload` | token | re-read the config file and swap it in (JSON report) |
//! | `GET /admin/stats` | token | throughput, errors, latency percentiles over 1/5/15 min; top and slowest routes |
//! | `GET /admin/alerts` | token | SLO alerts firing now |
//! | `GET /admin/breakers` | token | circuit breakers: state, window, recent events |
//! | `POST /admin/breakers/{upstream}/open\|close\|reset` | token | force a breaker open or closed, or reset it |
//! | `POST /admin/breakers/routes/{route}/open\|close\|reset` | token | the same for a route's own breaker |
//! | `GET /admin/config` | token | the running configuration, defaults filled in, secrets redacted |
//! | `GET /admin/openapi.json` | token | the OpenAPI 3.1 description of this API |
//!
//! The token is a bearer token (`Authorization: Bearer T`), compared in constant time. Without
//! a configured token the listener must be on loopback (config validation enforces it) and is
//! open to local clients. Health probes never need the token: load balancers have none.

mod auth;
mod cache;
mod health;
mod inspect;
mod stats;
mod webhook;

use std::{future::Future, net::SocketAddr, sync::Arc};

use axum::{
    Router, middleware,
    routing::{any, get, post},
};
use portcullis_config::AdminConfig;
use portcullis_proxy::{GatewayHandle, ReloadReport, Shared};
use tokio::net::TcpListener;
use tracing::info;

use crate::auth::Token;

pub use webhook::{
    Refusal, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign as sign_webhook, verify as verify_webhook,
};

/// Why the admin listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The address cannot be bound.
    #[error("cannot listen on admin address {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Re-reads the configuration from where it came from and applies it: the report, or the
/// errors (with file, line and key) when the new configuration is refused.
pub type ReloadFn = Arc<dyn Fn() -> Result<ReloadReport, String> + Send + Sync>;

/// State every handler sees.
#[derive(Clone)]
pub(crate) struct AdminState {
    pub(crate) handle: GatewayHandle,
    pub(crate) reload: Option<ReloadFn>,
    /// Webhook signatures accepted recently (replay protection).
    pub(crate) replays: Arc<webhook::ReplayGuard>,
}

impl AdminState {
    /// The gateway's state as of now.
    pub(crate) fn shared(&self) -> Arc<Shared> {
        self.handle.current()
    }
}

/// A bound admin listener.
#[derive(Debug)]
pub struct Admin {
    listener: TcpListener,
    router: Router,
    local_addr: SocketAddr,
}

impl Admin {
    /// Binds `config.listen` for the gateway behind `handle`; `reload` serves
    /// `POST /admin/reload` (without it, that endpoint answers 501).
    pub async fn bind(
        config: &AdminConfig,
        handle: GatewayHandle,
        reload: Option<ReloadFn>,
    ) -> Result<Self, AdminError> {
        let addr = *config.listen.get_ref();
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| AdminError::Bind { addr, source })?;
        Self::adopt(config, handle, reload, listener)
    }

    /// Like [`Admin::bind`], on a listener opened elsewhere (taken over from a previous
    /// process).
    pub fn adopt(
        config: &AdminConfig,
        handle: GatewayHandle,
        reload: Option<ReloadFn>,
        listener: TcpListener,
    ) -> Result<Self, AdminError> {
        let addr = *config.listen.get_ref();
        let local_addr = listener
            .local_addr()
            .map_err(|source| AdminError::Bind { addr, source })?;
        let token = Token::new(config.effective_token());
        Ok(Self {
            listener,
            router: router(
                AdminState {
                    handle,
                    reload,
                    replays: Arc::default(),
                },
                token,
                config.metrics_require_token,
            ),
            local_addr,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A duplicate of the listening socket, to hand over to a new process.
    pub fn listener_fd(&self) -> std::io::Result<std::os::fd::OwnedFd> {
        use std::os::fd::AsFd;
        self.listener.as_fd().try_clone_to_owned()
    }

    /// Serves until `shutdown` resolves.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        info!(address = %self.local_addr, "admin listener on http://{}", self.local_addr);
        if let Err(e) = axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::warn!(error = %e, "admin listener failed");
        }
    }
}

/// The live dashboard: one self-contained page, no external assets (assets/dashboard.html).
const DASHBOARD: &str = include_str!("../assets/dashboard.html");

async fn dashboard() -> impl axum::response::IntoResponse {
    (
        [
            (http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                http::header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self'",
            ),
            (http::header::X_FRAME_OPTIONS, "DENY"),
        ],
        DASHBOARD,
    )
}

/// The OpenAPI document of this API (assets/openapi.json).
const OPENAPI: &str = include_str!("../assets/openapi.json");

async fn openapi() -> impl axum::response::IntoResponse {
    ([(http::header::CONTENT_TYPE, "application/json")], OPENAPI)
}

fn router(state: AdminState, token: Token, metrics_require_token: bool) -> Router {
    // Everything under /admin needs the token, unknown paths included (no probing for routes).
    let admin = Router::new()
        .route("/admin/routes", get(inspect::routes))
        .route("/admin/upstreams", get(inspect::upstreams))
        .route("/admin/cache", get(inspect::cache))
        .route("/admin/cache/stats", get(cache::stats))
        .route("/admin/cache/purge", post(cache::purge))
        .route("/admin/cache/warm", post(cache::warm))
        .route("/admin/reload", post(inspect::reload))
        .route("/admin/stats", get(stats::stats))
        .route("/admin/alerts", get(stats::alerts))
        .route("/admin/breakers", get(inspect::breakers))
        .route(
            "/admin/breakers/{name}/{command}",
            post(inspect::breaker_command),
        )
        .route(
            "/admin/breakers/routes/{name}/{command}",
            post(inspect::route_breaker_command),
        )
        .route("/admin/config", get(inspect::config))
        .route("/admin/openapi.json", get(openapi))
        .route("/admin", any(inspect::not_found))
        .route("/admin/{*rest}", any(inspect::not_found))
        .route_layer(middleware::from_fn_with_state(token.clone(), auth::require));
    let mut metrics = Router::new().route("/metrics", get(health::metrics));
    if metrics_require_token {
        metrics = metrics.route_layer(middleware::from_fn_with_state(token, auth::require));
    }
    Router::new()
        .route("/dashboard", get(dashboard))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/health/status", get(health::status))
        .route("/hooks/cache/purge", post(webhook::purge))
        .merge(metrics)
        .merge(admin)
        .fallback(inspect::not_found)
        .with_state(state)
}
