//! Rate limiting: GCRA (the default: smooth, with bursts) and sliding-window limits, several
//! per route, keyed by client IP, API key, consumer, tier, a header or nothing (global), with a
//! cost per method.
//!
//! Two backends decide: this process ([`RateLimiter::local`]), or Redis
//! ([`RateLimiter::shared`]), where one atomic script per decision, timed by Redis' clock, makes
//! limits exact across every gateway instance. When Redis fails or misses its time budget, the
//! decision falls back to local limits, each instance enforcing its share
//! ([`Policy::instances`]), and returns to Redis by itself. A refused request never consumes
//! quota, so a client that keeps hammering gets through as soon as its limit allows.
//!
//! ```
//! use std::time::Duration;
//! use portcullis_limit::{Caller, KeyPart, Limit, Policy, Quota, Rate, RateLimiter};
//!
//! let limiter = RateLimiter::local(Policy {
//!     scope: "api".into(),
//!     limits: vec![Limit {
//!         name: "per-ip".into(),
//!         quota: Quota::gcra(Rate::new(2, Duration::from_secs(60))),
//!         key: vec![KeyPart::ClientIp],
//!     }],
//!     ..Policy::default()
//! });
//! let req = http::Request::new(());
//! let ip = "192.0.2.1".parse().unwrap();
//! let decide = || {
//!     let pending = limiter.prepare(&req, Caller::of(&req, ip)).unwrap();
//!     limiter.decide_local(&pending).unwrap()
//! };
//! assert!(decide().verdict.allowed);
//! assert!(decide().verdict.allowed);
//! assert!(!decide().verdict.allowed);
//! ```
//!
//! Outside the gateway, [`RateLimitLayer`] puts a limiter in front of any tower service (an axum
//! app, a hyper service): 429 with `Retry-After` when refused, the `RateLimit-*` headers on what
//! it lets through. The client address comes from the [`ClientIp`] request extension
//! (`cargo run -p portcullis-limit --example axum_rate_limit`).

mod headers;
mod key;
mod layer;
mod lease;
mod limiter;
mod local;
mod quota;
mod redis_script;

pub use headers::{
    RATELIMIT, RATELIMIT_LIMIT, RATELIMIT_POLICY, RATELIMIT_REMAINING, RATELIMIT_RESET,
};
pub use key::{Caller, KeyPart};
pub use layer::{RateLimitLayer, RateLimitService};
pub use limiter::{Backend, Cost, Decision, Limit, LimitStats, Pending, Policy, RateLimiter};
pub use local::Verdict;
pub use portcullis_http::ClientIp;
pub use quota::{Algorithm, Outcome, Quota, Rate};
