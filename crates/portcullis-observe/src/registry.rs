//! The registry and the metric families every gateway has.

use std::sync::Arc;

use prometheus_client::{
    collector::Collector,
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram, info::Info},
    registry::{Registry, Unit},
};

use crate::{
    StatsHistory,
    labels::{MethodLabel, StatusClass},
    series::{InFlight, RouteMetrics, TargetMetrics},
};

/// Upper bounds (seconds) of the latency buckets: 0.5 ms to 30 s, dense where APIs live.
const LATENCY_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// Labels of a client request series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub(crate) route: String,
    pub(crate) method: MethodLabel,
    pub(crate) status: StatusClass,
}

/// Labels of a per-route series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct RouteLabels {
    pub(crate) route: String,
}

/// Labels of an upstream target series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct TargetLabels {
    pub(crate) upstream: String,
    pub(crate) target: String,
}

/// Labels of a per-upstream series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct UpstreamOnly {
    pub(crate) upstream: String,
}

/// Labels of a breaker state change.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct BreakerTransition {
    pub(crate) upstream: String,
    pub(crate) to: String,
}

/// Labels of a route breaker's state change.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct RouteBreakerTransition {
    pub(crate) route: String,
    pub(crate) to: String,
}

/// Labels of an upstream request count: the target and how the exchange ended.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct UpstreamLabels {
    pub(crate) upstream: String,
    pub(crate) target: String,
    /// A status class, or `error` when no response came (connect failure, reset, timeout).
    pub(crate) outcome: &'static str,
}

/// The families that handles record into (shared by every handle).
#[derive(Debug)]
pub(crate) struct Families {
    pub(crate) requests: Family<RequestLabels, Counter>,
    pub(crate) duration: Family<RequestLabels, Histogram, fn() -> Histogram>,
    pub(crate) response_bytes: Family<RouteLabels, Counter>,
    pub(crate) request_bytes: Family<RouteLabels, Counter>,
    pub(crate) upstream_requests: Family<UpstreamLabels, Counter>,
    pub(crate) upstream_duration: Family<TargetLabels, Histogram, fn() -> Histogram>,
    pub(crate) target_healthy: Family<TargetLabels, Gauge>,
    pub(crate) breaker_state: Family<UpstreamOnly, Gauge>,
    pub(crate) breaker_transitions: Family<BreakerTransition, Counter>,
    pub(crate) route_breaker_state: Family<RouteLabels, Gauge>,
    pub(crate) route_breaker_transitions: Family<RouteBreakerTransition, Counter>,
    /// Rolling per-route statistics for the admin API.
    pub(crate) history: Arc<StatsHistory>,
}

/// Builds a [`Metrics`]: hands out handles and takes collectors, then freezes the registry.
#[derive(Debug)]
pub struct MetricsBuilder {
    registry: Registry,
    families: Arc<Families>,
    in_flight: Gauge,
    access_log_dropped: Counter,
}

impl MetricsBuilder {
    /// Adds figures computed at scrape time (cache statistics, pools, the process).
    pub fn register_collector(&mut self, collector: Box<dyn Collector>) {
        self.registry.register_collector(collector);
    }

    /// Freezes the registry. Handles ([`Metrics::route`], [`Metrics::target`]) can still be
    /// made afterwards: their families are registered already.
    pub fn build(self) -> Metrics {
        Metrics {
            registry: self.registry,
            families: self.families,
            in_flight: self.in_flight,
            access_log_dropped: self.access_log_dropped,
        }
    }
}

/// A gateway's metrics, ready to be scraped; hands out recording handles.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    families: Arc<Families>,
    in_flight: Gauge,
    access_log_dropped: Counter,
}

impl Metrics {
    /// A builder with every family of the gateway registered under the `portcullis_` prefix,
    /// plus `portcullis_build_info`.
    pub fn builder() -> MetricsBuilder {
        let mut root = Registry::default();
        let registry = root.sub_registry_with_prefix("portcullis");
        let families = Families {
            requests: Family::default(),
            duration: Family::new_with_constructor(latency_histogram),
            response_bytes: Family::default(),
            request_bytes: Family::default(),
            upstream_requests: Family::default(),
            upstream_duration: Family::new_with_constructor(latency_histogram),
            target_healthy: Family::default(),
            breaker_state: Family::default(),
            breaker_transitions: Family::default(),
            route_breaker_state: Family::default(),
            route_breaker_transitions: Family::default(),
            history: Arc::default(),
        };
        let in_flight = Gauge::default();
        registry.register(
            "requests",
            "Client requests answered, by route, method and status class",
            families.requests.clone(),
        );
        registry.register_with_unit(
            "request_duration",
            "Time from receiving a request's head to sending the last byte of its response",
            Unit::Seconds,
            families.duration.clone(),
        );
        registry.register_with_unit(
            "response_body",
            "Response body bytes sent to clients, by route",
            Unit::Bytes,
            families.response_bytes.clone(),
        );
        registry.register_with_unit(
            "request_body",
            "Request body bytes received from clients, by route",
            Unit::Bytes,
            families.request_bytes.clone(),
        );
        registry.register(
            "requests_in_flight",
            "Client requests received and not yet completely answered",
            in_flight.clone(),
        );
        registry.register(
            "upstream_requests",
            "Requests sent to upstream targets, by outcome (status class, or error)",
            families.upstream_requests.clone(),
        );
        registry.register_with_unit(
            "upstream_response_duration",
            "Time from sending a request upstream to receiving the response head",
            Unit::Seconds,
            families.upstream_duration.clone(),
        );
        let access_log_dropped = Counter::default();
        registry.register(
            "access_log_dropped",
            "Access log lines dropped because the writer could not keep up",
            access_log_dropped.clone(),
        );
        registry.register(
            "breaker_state",
            "Circuit breaker per upstream: 0 closed, 1 open, 2 half-open",
            families.breaker_state.clone(),
        );
        registry.register(
            "breaker_transitions",
            "Circuit breaker state changes, by upstream and new state",
            families.breaker_transitions.clone(),
        );
        registry.register(
            "route_breaker_state",
            "Circuit breaker of a route (routes with their own): 0 closed, 1 open, 2 half-open",
            families.route_breaker_state.clone(),
        );
        registry.register(
            "route_breaker_transitions",
            "Route circuit breaker state changes, by route and new state",
            families.route_breaker_transitions.clone(),
        );
        registry.register(
            "upstream_target_healthy",
            "1 while the target passes its active health checks (always 1 without checks)",
            families.target_healthy.clone(),
        );
        registry.register(
            "build",
            "Portcullis build information",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        MetricsBuilder {
            registry: root,
            families: Arc::new(families),
            in_flight,
            access_log_dropped,
        }
    }

    /// The handle for the route named `name` (`unmatched` for requests no route took). Two
    /// handles for one name record into the same series (a reloaded route keeps counting).
    pub fn route(&self, name: &str) -> Arc<RouteMetrics> {
        Arc::new(RouteMetrics::new(name, Arc::clone(&self.families)))
    }

    /// The handle for `target` (its `host:port`) of `upstream`.
    pub fn target(&self, upstream: &str, target: &str) -> Arc<TargetMetrics> {
        Arc::new(TargetMetrics::new(
            upstream,
            target,
            Arc::clone(&self.families),
        ))
    }

    /// The gauge of requests being served.
    pub fn in_flight(&self) -> InFlight {
        InFlight::new(self.in_flight.clone())
    }

    /// The counter of access-log lines lost because the writer fell behind.
    pub fn access_log_dropped(&self) -> Counter {
        self.access_log_dropped.clone()
    }

    /// Records an upstream's breaker state (0 closed, 1 open, 2 half-open), counting a change
    /// to `state_name` when `changed`.
    pub fn breaker(&self, upstream: &str, state: i64, state_name: &str, changed: bool) {
        let labels = UpstreamOnly {
            upstream: upstream.to_owned(),
        };
        self.families
            .breaker_state
            .get_or_create(&labels)
            .set(state);
        if changed {
            self.families
                .breaker_transitions
                .get_or_create(&BreakerTransition {
                    upstream: upstream.to_owned(),
                    to: state_name.to_owned(),
                })
                .inc();
        }
    }

    /// Records a route breaker's state, as [`Metrics::breaker`] does for an upstream's.
    pub fn route_breaker(&self, route: &str, state: i64, state_name: &str, changed: bool) {
        let labels = RouteLabels {
            route: route.to_owned(),
        };
        self.families
            .route_breaker_state
            .get_or_create(&labels)
            .set(state);
        if changed {
            self.families
                .route_breaker_transitions
                .get_or_create(&RouteBreakerTransition {
                    route: route.to_owned(),
                    to: state_name.to_owned(),
                })
                .inc();
        }
    }

    /// Rolling per-route statistics (1, 5, 15 minute windows).
    pub fn history(&self) -> &Arc<StatsHistory> {
        &self.families.history
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail; an encoder error would be a bug in a collector.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            out.push_str(&format!("# encoding error: {e}\n"));
        }
        out
    }

    /// The `Content-Type` of [`Self::encode`]'s output.
    pub const CONTENT_TYPE: &'static str =
        "application/openmetrics-text; version=1.0.0; charset=utf-8";
}
