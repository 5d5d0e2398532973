//! A validated run: everything the engine needs, built once from flags or a scenario file, so
//! the hot path never looks at raw input.

use std::time::Duration;

use http::HeaderName;

use crate::{
    profile::Profile,
    request::{HttpVersion, RequestKind, Target},
    template::Variables,
    threshold::Threshold,
    tls::Verification,
};

/// How load is generated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model {
    /// Fixed users, each sending its next request when the previous one is done (wrk, hey,
    /// oha). The profile's level is the number of users.
    Closed,
    /// Requests arrive at a scheduled rate whatever the responses do (wrk2, Vegeta, k6's
    /// arrival-rate executors). Latency counts from the intended send time, so a stalled
    /// server cannot hide the requests it delayed (coordinated omission). The profile's
    /// level is requests per second.
    Open,
}

impl Model {
    /// `open` or `closed`.
    pub fn label(self) -> &'static str {
        match self {
            Model::Closed => "closed",
            Model::Open => "open",
        }
    }
}

/// A pause between a user's requests (closed model), drawn uniformly from `min..=max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThinkTime {
    /// Shortest pause.
    pub min: Duration,
    /// Longest pause.
    pub max: Duration,
}

impl ThinkTime {
    /// Draws one pause.
    pub fn draw(&self, rng: &mut fastrand::Rng) -> Duration {
        if self.max <= self.min {
            return self.min;
        }
        let span = (self.max - self.min).as_micros() as u64;
        self.min + Duration::from_micros(rng.u64(0..=span))
    }
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Scenario name or URL.
    pub name: String,
    /// The origin.
    pub target: Target,
    /// Open or closed model.
    pub model: Model,
    /// Level over time (requests per second or users).
    pub profile: Profile,
    /// Open model: the most requests in flight at once. Closed model: ignored (the users).
    pub connections: usize,
    /// HTTP/2: requests in flight per connection; users (or `connections`) share connections
    /// in groups of this size. 1 for HTTP/1.1.
    pub streams: usize,
    /// Stop after this many requests, if set.
    pub max_requests: Option<u64>,
    /// Per-request timeout (from the actual send to the end of the body).
    pub timeout: Duration,
    /// Pause after each request (closed model).
    pub think_time: Option<ThinkTime>,
    /// The request kinds (weighted).
    pub kinds: Vec<RequestKind>,
    /// Per stage of `profile`, in order: the weights of `kinds` (same order) while that stage
    /// runs, or `None` for the kinds' own weights. Empty when no stage names a mix of its own.
    pub stage_weights: Vec<Option<Vec<u32>>>,
    /// Variables for templates.
    pub variables: Variables,
    /// Thresholds, each possibly scoped to a kind.
    pub thresholds: Vec<Threshold>,
    /// Response headers whose values are counted (`x-cache` always is).
    pub count_headers: Vec<HeaderName>,
    /// TLS verification.
    pub verification: Verification,
    /// Draw the live progress line (only on a terminal).
    pub progress: bool,
}

impl Plan {
    /// Checks what types alone cannot: thresholds name existing kinds, the model fits.
    pub fn validate(&self) -> Result<(), String> {
        for t in &self.thresholds {
            if let Some(scope) = &t.scope
                && !self.kinds.iter().any(|k| &*k.name == scope)
            {
                let names: Vec<&str> = self.kinds.iter().map(|k| &*k.name).collect();
                return Err(format!(
                    "threshold {:?}: no request named {scope:?} (requests: {})",
                    t.text,
                    names.join(", ")
                ));
            }
        }
        self.validate_stage_weights()?;
        if self.model == Model::Open && self.think_time.is_some() {
            return Err("think time applies to users (closed model), not to a rate".to_owned());
        }
        if self.streams == 0 {
            return Err("streams must be at least 1".to_owned());
        }
        if self.streams > 1 && self.target.version != HttpVersion::Http2 {
            return Err("several streams per connection need HTTP/2 (--http2)".to_owned());
        }
        if self.connections == 0 {
            return Err("connections must be at least 1".to_owned());
        }
        if self.timeout.is_zero() {
            return Err("timeout must be above zero".to_owned());
        }
        if self.max_requests == Some(0) {
            return Err("the request count must be at least 1".to_owned());
        }
        Ok(())
    }

    /// Stage mixes fit the stages and the kinds, give each stage something to send, and leave
    /// no kind out of every stage.
    fn validate_stage_weights(&self) -> Result<(), String> {
        if self.stage_weights.is_empty() {
            return Ok(());
        }
        if self.stage_weights.len() != self.profile.stage_count() {
            return Err(format!(
                "{} stage mixes for {} stages",
                self.stage_weights.len(),
                self.profile.stage_count()
            ));
        }
        for (i, weights) in self.stage_weights.iter().enumerate() {
            let Some(weights) = weights else { continue };
            if weights.len() != self.kinds.len() {
                return Err(format!(
                    "stage {}: {} weights for {} requests",
                    i + 1,
                    weights.len(),
                    self.kinds.len()
                ));
            }
            if weights.iter().all(|&w| w == 0) {
                return Err(format!(
                    "stage {}: the mix gives no request a weight above 0",
                    i + 1
                ));
            }
        }
        for (k, kind) in self.kinds.iter().enumerate() {
            let used = self
                .stage_weights
                .iter()
                .any(|w| w.as_ref().map_or(kind.weight > 0, |w| w[k] > 0));
            if !used {
                return Err(format!(
                    "request {:?} has weight 0 in every stage's mix",
                    kind.name
                ));
            }
        }
        Ok(())
    }

    /// TCP connections at most: one per worker, or one per group of `streams` workers.
    pub fn connection_count(&self) -> usize {
        self.workers().div_ceil(self.streams.max(1))
    }

    /// Workers to spawn: one per user at the peak (closed), or one per request in flight
    /// (open).
    pub fn workers(&self) -> usize {
        match self.model {
            Model::Closed => (self.profile.peak().ceil() as usize).max(1),
            Model::Open => self.connections,
        }
    }
}
