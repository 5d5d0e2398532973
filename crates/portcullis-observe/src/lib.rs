//! Portcullis observability: one metrics registry per gateway, and cheap handles into it.
//!
//! [`Metrics`] owns the Prometheus registry (prometheus-client, OpenMetrics text). The hot path
//! never looks a series up by labels: each route gets a [`RouteMetrics`] and each upstream target
//! a [`TargetMetrics`] when the gateway is built, and those create their labelled series once, on
//! first use, then record with atomic adds. Label values are configured names and bounded enums
//! (method, status class), never raw paths, so cardinality stays bounded.
//!
//! Figures computed at scrape time (cache statistics, pools, the process) are [`Collector`]s
//! registered by their owners.
//!
//! ```
//! use portcullis_observe::Metrics;
//! use std::time::Duration;
//!
//! let metrics = Metrics::builder().build();
//! let route = metrics.route("api");
//! route.record(&http::Method::GET, http::StatusCode::OK, Duration::from_millis(3), 512);
//! let text = metrics.encode();
//! assert!(text.contains(r#"portcullis_requests_total{route="api",method="GET",status="2xx"} 1"#));
//! ```

mod access_log;
mod labels;
mod process;
mod registry;
mod series;
mod slo;
mod spans;
mod trace_context;
mod windows;

pub use access_log::{
    AccessFormat, AccessLog, AccessRecord, redact_query, redact_query_also, rfc3339, rfc3339_bytes,
};
pub use labels::{MethodLabel, StatusClass};
pub use process::{ProcessCollector, ProcessStats};
pub use prometheus_client::collector::Collector;
pub use prometheus_client::encoding::DescriptorEncoder;
pub use prometheus_client::metrics::counter::Counter;
pub use registry::{Metrics, MetricsBuilder};
pub use series::{InFlight, InFlightGuard, RouteMetrics, TargetMetrics, UpstreamOutcome};
pub use slo::{Alert, AlertBook, AlertEvent, Objective, RouteSlo};
pub use spans::{FinishedSpan, MAX_BATCH, OtlpSettings, SpanCounts, SpanSink, SpanValue};
pub use trace_context::{TRACEPARENT, TraceContext, incoming_trace_id, trace_id_hex};
pub use windows::{RouteTotals, StatsHistory, TICK, WindowStats};
