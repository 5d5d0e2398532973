//! Handles the hot path records through: per route, per upstream target, and the in-flight
//! gauge. Each labelled series is created once, on first use, and cached in the handle.

use std::{sync::Arc, sync::OnceLock, time::Duration};

use http::{Method, StatusCode};
use prometheus_client::metrics::{counter::Counter, gauge::Gauge, histogram::Histogram};

use crate::{
    RouteTotals,
    labels::{MethodLabel, StatusClass},
    registry::{Families, RequestLabels, RouteLabels, TargetLabels, UpstreamLabels},
};

/// One (route, method, status class) series pair.
#[derive(Debug)]
struct RequestSeries {
    count: Counter,
    duration: Histogram,
}

/// Records the requests of one route.
#[derive(Debug)]
pub struct RouteMetrics {
    name: String,
    families: Arc<Families>,
    series: [[OnceLock<RequestSeries>; StatusClass::COUNT]; MethodLabel::COUNT],
    bytes: Counter,
    request_bytes: Counter,
    totals: Arc<RouteTotals>,
}

impl RouteMetrics {
    pub(crate) fn new(name: &str, families: Arc<Families>) -> Self {
        let labels = RouteLabels {
            route: name.to_owned(),
        };
        let bytes = families.response_bytes.get_or_create_owned(&labels);
        let request_bytes = families.request_bytes.get_or_create_owned(&labels);
        Self {
            name: name.to_owned(),
            totals: families.history.totals(name),
            families,
            series: Default::default(),
            bytes,
            request_bytes,
        }
    }

    /// The counter of request body bytes received on this route.
    pub fn request_bytes(&self) -> &Counter {
        &self.request_bytes
    }

    /// The route's name, as in its labels.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Records one answered request: its method and status, the time from its head arriving to
    /// its last byte leaving, and the response body bytes sent.
    pub fn record(&self, method: &Method, status: StatusCode, elapsed: Duration, body_bytes: u64) {
        let method = MethodLabel::of(method);
        let status = StatusClass::of(status);
        let series = self.series[method.index()][status.index()].get_or_init(|| {
            let labels = RequestLabels {
                route: self.name.clone(),
                method,
                status,
            };
            RequestSeries {
                count: self.families.requests.get_or_create_owned(&labels),
                duration: self.families.duration.get_or_create_owned(&labels),
            }
        });
        series.count.inc();
        series.duration.observe(elapsed.as_secs_f64());
        self.totals
            .record(elapsed, status == StatusClass::ServerError);
        if body_bytes > 0 {
            self.bytes.inc_by(body_bytes);
        }
    }
}

/// How an upstream exchange ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamOutcome {
    /// A response head with a status in this class.
    Status(StatusClass),
    /// No response: connect failure, reset, timeout.
    Error,
}

impl UpstreamOutcome {
    const COUNT: usize = StatusClass::COUNT + 1;

    fn index(self) -> usize {
        match self {
            Self::Status(class) => class.index(),
            Self::Error => StatusClass::COUNT,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Status(class) => class.as_str(),
            Self::Error => "error",
        }
    }
}

/// Records the requests sent to one upstream target.
#[derive(Debug)]
pub struct TargetMetrics {
    upstream: String,
    target: String,
    families: Arc<Families>,
    outcomes: [OnceLock<Counter>; UpstreamOutcome::COUNT],
    duration: Histogram,
    healthy: Gauge,
}

impl TargetMetrics {
    pub(crate) fn new(upstream: &str, target: &str, families: Arc<Families>) -> Self {
        let labels = TargetLabels {
            upstream: upstream.to_owned(),
            target: target.to_owned(),
        };
        let duration = families.upstream_duration.get_or_create_owned(&labels);
        let healthy = families.target_healthy.get_or_create_owned(&labels);
        healthy.set(1);
        Self {
            upstream: upstream.to_owned(),
            target: target.to_owned(),
            families,
            outcomes: Default::default(),
            duration,
            healthy,
        }
    }

    /// Records the target's health as seen by active checks.
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.set(i64::from(healthy));
    }

    /// Records one exchange: how it ended and, for a response, the time to its head.
    pub fn record(&self, outcome: UpstreamOutcome, elapsed: Duration) {
        let counter = self.outcomes[outcome.index()].get_or_init(|| {
            self.families
                .upstream_requests
                .get_or_create_owned(&UpstreamLabels {
                    upstream: self.upstream.clone(),
                    target: self.target.clone(),
                    outcome: outcome.as_str(),
                })
        });
        counter.inc();
        if let UpstreamOutcome::Status(_) = outcome {
            self.duration.observe(elapsed.as_secs_f64());
        }
    }
}

/// The gauge of requests being served; [`InFlight::enter`] counts one until its guard drops.
#[derive(Debug, Clone)]
pub struct InFlight(Gauge);

impl InFlight {
    pub(crate) fn new(gauge: Gauge) -> Self {
        Self(gauge)
    }

    /// Counts a request in flight until the guard drops.
    pub fn enter(&self) -> InFlightGuard {
        self.0.inc();
        InFlightGuard(self.0.clone())
    }

    /// Requests in flight now.
    pub fn get(&self) -> i64 {
        self.0.get()
    }
}

/// Keeps one request counted in flight.
#[derive(Debug)]
pub struct InFlightGuard(Gauge);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
