//! Resilience for the gateway's proxy and for any tower service: a circuit breaker, a
//! concurrency limit with a bounded wait queue (fixed or adaptive), a deadline and load
//! shedding, each also a tower layer.
//!
//! - [`Breaker`]: closed, open, half-open; trips on consecutive failures or a failure rate.
//!   Hand-written (shared/STACK.md row 12): the crates are dormant or young, and the gateway
//!   needs per-upstream shared state, manual control from the admin API, events, and metrics.
//! - [`ConcurrencyLimit`]: calls at once, a bounded FIFO queue with a timeout, and an optional
//!   adaptive limit (AIMD on latency, see [`AdaptiveConfig`]); the proxy takes its permits
//!   directly and carries them with the response body.
//! - The layers, over `Request<B>` → `Response<portcullis_http::Body>`:
//!   [`BreakerLayer`] (503 + `Retry-After` while open), [`ConcurrencyLimitLayer`] (503 +
//!   `Retry-After: 1` when overloaded), [`DeadlineLayer`] (504 without a response head in time)
//!   and [`LoadShedLayer`] (503 + `Retry-After: 1` beyond a cap). Their refusals are
//!   [`Refusal`]s, rendered as the gateway's JSON error by [`Refusal::into_response`].
//!
//! `cargo run -p portcullis-resilience --example axum_resilience` puts all four in front of an
//! axum app and shows each refusal.
//!
//! Time-dependent logic takes the time as a parameter ([`Breaker::admit`]) or runs on tokio's
//! clock (the layers, the queue timeout), so tests drive it with paused time.

mod adaptive;
mod breaker;
mod concurrency;
mod layer;
mod refusal;

pub use adaptive::AdaptiveConfig;
pub use breaker::{
    Breaker, BreakerConfig, BreakerEvent, BreakerSnapshot, BreakerState, Rejected, Ticket,
};
pub use concurrency::{ConcurrencyConfig, ConcurrencyLimit, Overloaded, Permit};
pub use layer::{
    BreakerFuture, BreakerLayer, BreakerService, ConcurrencyLimitLayer, ConcurrencyLimitService,
    DeadlineFuture, DeadlineLayer, DeadlineService, LoadShedFuture, LoadShedLayer, LoadShedService,
};
pub use refusal::Refusal;
