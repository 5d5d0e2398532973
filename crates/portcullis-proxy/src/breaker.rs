//! A circuit breaker with a name: an upstream's, or a route's own. It turns the breaker's
//! verdicts into the gateway's errors, logs and counts its state changes, and takes operators'
//! commands from the admin API.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use portcullis_config::BreakerTable;
use portcullis_observe::Metrics;
use portcullis_resilience::{Breaker, BreakerConfig, BreakerState, Ticket};
use tracing::{info, warn};

use crate::error::ProxyError;

/// Whose breaker it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerScope {
    /// Around a whole upstream (every route to it).
    Upstream,
    /// Around one route.
    Route,
}

impl BreakerScope {
    /// `upstream` or `route`, as in logs and the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Upstream => "upstream",
            Self::Route => "route",
        }
    }
}

/// A breaker, what counts as a failure for it, and whose it is.
#[derive(Debug)]
pub struct NamedBreaker {
    scope: BreakerScope,
    name: Arc<str>,
    breaker: Breaker,
    /// Calls slower than this count as failures.
    slow_call: Option<Duration>,
    metrics: Arc<Metrics>,
    /// The table it was built from: a reload with an equal table keeps this breaker's state.
    pub(crate) table: BreakerTable,
}

impl NamedBreaker {
    /// A closed breaker built from `table` (its state is published as closed at once).
    pub(crate) fn new(
        scope: BreakerScope,
        name: &str,
        table: &BreakerTable,
        metrics: &Arc<Metrics>,
    ) -> Self {
        let this = Self {
            scope,
            name: Arc::from(name),
            breaker: Breaker::new(breaker_config(table)),
            slow_call: table.slow_call.map(|d| d.0),
            metrics: Arc::clone(metrics),
            table: table.clone(),
        };
        this.publish(BreakerState::Closed, false);
        this
    }

    /// Whose breaker it is.
    pub fn scope(&self) -> BreakerScope {
        self.scope
    }

    /// The upstream's or route's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The breaker itself (state, snapshot).
    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// May a request go through now? Open: the 503 that fails fast.
    pub(crate) fn admit(&self) -> Result<Ticket, ProxyError> {
        let before = self.breaker.state();
        let admitted = self.breaker.admit(Instant::now());
        self.changed(before);
        admitted.map_err(|rejected| ProxyError::BreakerOpen {
            scope: self.scope,
            name: Arc::clone(&self.name),
            retry_after: rejected.retry_after,
        })
    }

    /// Gives back a ticket without an outcome: another check refused the request before it
    /// was sent, or the client went away mid-call. A half-open probe slot frees.
    pub(crate) fn release(&self, ticket: Ticket) {
        self.breaker.release(ticket);
    }

    /// Reports a request's outcome: failed (5xx, no response), or slower than `slow_call`.
    pub(crate) fn record(&self, ticket: Ticket, failed: bool, elapsed: Duration) {
        let slow = self.slow_call.is_some_and(|limit| elapsed > limit);
        let before = self.breaker.state();
        self.breaker.record(ticket, failed || slow, Instant::now());
        self.changed(before);
    }

    /// Applies an operator's command: `open`, `close` or `reset`. False for anything else.
    pub fn command(&self, command: &str) -> bool {
        let before = self.breaker.state();
        match command {
            "open" => self.breaker.force_open(Instant::now()),
            "close" => self.breaker.force_closed(),
            "reset" => self.breaker.reset(),
            _ => return false,
        }
        if self.breaker.state() == before {
            // Still an operator action worth a log line.
            info!(scope = self.scope.as_str(), name = %self.name, command, "circuit breaker command");
        }
        self.changed(before);
        true
    }

    /// Logs and counts a state change since `before`.
    fn changed(&self, before: BreakerState) {
        let after = self.breaker.state();
        if after == before {
            return;
        }
        let reason = self
            .breaker
            .last_event()
            .map(|e| e.reason)
            .unwrap_or_default();
        let state = self.publish(after, true);
        let scope = self.scope.as_str();
        match after {
            BreakerState::Open => {
                warn!(scope, name = %self.name, %reason, "circuit breaker open: failing fast")
            }
            _ => info!(scope, name = %self.name, %reason, state, "circuit breaker {state}"),
        }
    }

    /// Sets the state gauge (and counts a transition when `changed`); returns the state's name.
    fn publish(&self, state: BreakerState, changed: bool) -> &'static str {
        let name = match state {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        };
        match self.scope {
            BreakerScope::Upstream => self
                .metrics
                .breaker(&self.name, state.code(), name, changed),
            BreakerScope::Route => {
                self.metrics
                    .route_breaker(&self.name, state.code(), name, changed);
            }
        }
        name
    }
}

/// The breaker's settings from its config table.
fn breaker_config(table: &BreakerTable) -> BreakerConfig {
    BreakerConfig {
        consecutive_failures: table.consecutive_failures,
        failure_rate: table.failure_rate,
        min_requests: table.min_requests,
        window: table.window.0,
        open_for: table.open_for.0,
        max_open_for: table.max_open_for.0,
        half_open_probes: table.half_open_probes.max(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_tables_defaults_are_the_breakers_own() {
        // The config crate states the defaults again (docs and `/admin/config` show them); they
        // must not drift from the resilience crate's.
        assert_eq!(
            breaker_config(&BreakerTable::default()),
            BreakerConfig::default()
        );
    }
}
