//! The report of a run: the JSON schema (`--json FILE`, read back by `compare`), the input of
//! the final table and of the HTML page.
//!
//! Stability: `schema` names the version (`portcullis-bench/1`). Within a version fields are
//! only added, never renamed or removed, and readers ignore fields they do not know. Latencies
//! are milliseconds (floating point, microsecond resolution), rates are fractions (0.01 = 1%),
//! throughput is requests per second.

use std::{collections::BTreeMap, path::Path};

use serde::{Deserialize, Serialize};

use crate::error::BenchError;

/// The schema version written in every report.
pub const SCHEMA: &str = "portcullis-bench/1";

/// A whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Always [`SCHEMA`] for this version.
    pub schema: String,
    /// The scenario name, or the URL in quick mode.
    pub name: String,
    /// `scheme://host:port` of the target.
    pub target: String,
    /// `open` (arrival rate) or `closed` (fixed users).
    pub model: String,
    /// `1.1` or `2`.
    pub http_version: String,
    /// Connections at most (one per user or request in flight, or per group of HTTP/2
    /// streams).
    pub connections: usize,
    /// Start, in milliseconds since the Unix epoch.
    pub started_unix_ms: u64,
    /// Wall time from the first request to the last response, in seconds.
    pub duration_s: f64,
    /// All requests together.
    pub overall: Stats,
    /// One entry per request kind, in the scenario's order.
    pub requests: Vec<Stats>,
    /// Open model: requests that started more than 10 ms after their intended send time
    /// because every connection was busy (their latency includes that wait). Many of them
    /// mean the server fell behind, or `-c` is too low for the rate.
    #[serde(default)]
    pub behind_schedule: u64,
    /// Per-interval aggregates (one second each, coarsened on long runs).
    pub timeline: Vec<Sample>,
    /// Threshold results, in the order given.
    pub thresholds: Vec<ThresholdResult>,
    /// Whether every threshold passed (true without thresholds).
    pub passed: bool,
}

/// Measurements of one request kind, or of all of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// The kind's name (`all` for the overall entry).
    pub name: String,
    /// Requests attempted and finished (responses, timeouts and failures).
    pub requests: u64,
    /// Requests that got a response (any status).
    pub responses: u64,
    /// Finished requests per second over the run.
    pub rps: f64,
    /// `errors.total / requests` (0 without requests).
    pub error_rate: f64,
    /// Errors by kind.
    pub errors: ErrorCounts,
    /// Responses by status code.
    pub status: BTreeMap<u16, u64>,
    /// Latency distribution, in milliseconds.
    pub latency_ms: Latency,
    /// Response body bytes received.
    pub bytes_received: u64,
    /// Counted response headers: header name → value → responses.
    /// `(absent)` counts responses without the header, `(other)` values past the first 32.
    pub headers: BTreeMap<String, BTreeMap<String, u64>>,
    /// Share of responses whose `X-Cache` contains `HIT` (absent without any `X-Cache`).
    pub cache_hit_rate: Option<f64>,
    /// Check results.
    pub checks: Vec<CheckStats>,
    /// The first message seen of each failure kind (`connect`, `timeout`, `transport`).
    #[serde(default)]
    pub error_examples: BTreeMap<String, String>,
}

/// Errors by kind. A request counts once, in the first kind that applies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorCounts {
    /// Connection could not be opened (refused, unreachable, TLS or HTTP handshake).
    pub connect: u64,
    /// No complete response within the timeout.
    pub timeout: u64,
    /// The exchange broke after connecting (reset, malformed response).
    pub transport: u64,
    /// Responses with a 4xx status.
    pub status_4xx: u64,
    /// Responses with a 5xx status.
    pub status_5xx: u64,
}

impl ErrorCounts {
    /// All errors.
    pub fn total(&self) -> u64 {
        self.connect + self.timeout + self.transport + self.status_4xx + self.status_5xx
    }

    /// Adds another count.
    pub fn add(&mut self, other: &ErrorCounts) {
        self.connect += other.connect;
        self.timeout += other.timeout;
        self.transport += other.transport;
        self.status_4xx += other.status_4xx;
        self.status_5xx += other.status_5xx;
    }
}

/// A latency distribution, in milliseconds. Responses and timeouts are measured; connection
/// failures are not. In the open model the clock starts at the intended send time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Fastest.
    pub min: f64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Slowest.
    pub max: f64,
}

/// One check's results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckStats {
    /// The check, as text (`status == 200`).
    pub check: String,
    /// Responses that passed.
    pub passed: u64,
    /// Responses that failed.
    pub failed: u64,
}

/// One interval of the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Interval start, seconds from the start of the run.
    pub t_s: f64,
    /// Interval length in seconds.
    pub span_s: f64,
    /// The planned level over the interval: mean rate (open model) or users (closed).
    pub target: f64,
    /// Requests finished in the interval.
    pub requests: u64,
    /// Errors in the interval.
    pub errors: u64,
    /// Median latency (ms).
    pub p50_ms: f64,
    /// 90th percentile (ms).
    pub p90_ms: f64,
    /// 99th percentile (ms).
    pub p99_ms: f64,
    /// Slowest (ms).
    pub max_ms: f64,
}

/// One threshold's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThresholdResult {
    /// The expression as written (`p95{login} < 300ms`).
    pub expression: String,
    /// The measured value in the threshold's unit (ms, fraction, req/s), absent when there
    /// was nothing to measure.
    pub actual: Option<f64>,
    /// Whether it held.
    pub passed: bool,
}

/// `x` rounded to `decimals` places, so reports hold short decimals that read well and
/// survive a JSON round trip exactly.
pub(crate) fn round(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (x * scale).round() / scale
}

impl Report {
    /// Writes the report as pretty JSON.
    pub fn write_json(&self, path: &Path) -> Result<(), BenchError> {
        let text = serde_json::to_string_pretty(self).map_err(|e| BenchError::Report {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        std::fs::write(path, text + "\n").map_err(|error| BenchError::Io {
            path: path.to_owned(),
            error,
        })
    }

    /// Reads a report written by [`Report::write_json`], checking the schema version.
    pub fn read_json(path: &Path) -> Result<Self, BenchError> {
        let text = std::fs::read_to_string(path).map_err(|error| BenchError::Io {
            path: path.to_owned(),
            error,
        })?;
        let report: Report = serde_json::from_str(&text).map_err(|e| BenchError::Report {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        if report.schema != SCHEMA {
            return Err(BenchError::Report {
                path: path.to_owned(),
                message: format!("schema {:?}, expected {SCHEMA:?}", report.schema),
            });
        }
        Ok(report)
    }
}
