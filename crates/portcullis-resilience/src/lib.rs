//! Resilience building blocks that do not need the proxy: the circuit breaker.
//!
//! Hand-written (shared/STACK.md row 12): the crates are dormant or young, and the gateway
//! needs per-upstream shared state, manual control from the admin API, events, and metrics.

mod breaker;

pub use breaker::{
    Breaker, BreakerConfig, BreakerEvent, BreakerSnapshot, BreakerState, Rejected, Ticket,
};
