//! The handle's metrics: breaker state, command latency and outcomes by operation.

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{counter::Counter, family::Family, gauge::ConstGauge, histogram::Histogram},
    registry::Unit,
};

use crate::{HealthState, Redis};

/// Upper bounds (seconds): 100 µs to 250 ms, where a healthy Redis on a LAN lives.
const BUCKETS: [f64; 10] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.25,
];

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OpLabels {
    op: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    op: &'static str,
    result: &'static str,
}

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

#[derive(Debug)]
pub(crate) struct RedisMetrics {
    latency: Family<OpLabels, Histogram, fn() -> Histogram>,
    outcomes: Family<OutcomeLabels, Counter>,
}

impl Default for RedisMetrics {
    fn default() -> Self {
        Self {
            latency: Family::new_with_constructor(histogram),
            outcomes: Family::default(),
        }
    }
}

impl RedisMetrics {
    pub(crate) fn observe(&self, op: &'static str, elapsed: std::time::Duration, ok: bool) {
        self.latency
            .get_or_create(&OpLabels { op })
            .observe(elapsed.as_secs_f64());
        let result = if ok { "ok" } else { "error" };
        self.outcomes
            .get_or_create(&OutcomeLabels { op, result })
            .inc();
    }

    pub(crate) fn skipped(&self, op: &'static str) {
        self.outcomes
            .get_or_create(&OutcomeLabels {
                op,
                result: "skipped",
            })
            .inc();
    }
}

/// Encodes a [`Redis`] handle's metrics into the gateway's registry.
#[derive(Debug)]
pub struct RedisCollector {
    redis: Redis,
}

impl RedisCollector {
    pub(crate) fn new(redis: Redis) -> Self {
        Self { redis }
    }
}

impl Collector for RedisCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let up = ConstGauge::new(i64::from(self.redis.health().state() == HealthState::Up));
        up.encode(encoder.encode_descriptor(
            "portcullis_redis_up",
            "1 while Redis answers; 0 while the gateway uses its local fallbacks",
            None,
            up.metric_type(),
        )?)?;
        let m = &self.redis.inner.metrics;
        m.latency.encode(encoder.encode_descriptor(
            "portcullis_redis_command_duration",
            "Time for one Redis call, network included, by operation",
            Some(&Unit::Seconds),
            m.latency.metric_type(),
        )?)?;
        m.outcomes.encode(encoder.encode_descriptor(
            "portcullis_redis_commands",
            "Redis calls by operation and result (ok, error, skipped while the breaker is open)",
            None,
            m.outcomes.metric_type(),
        )?)?;
        Ok(())
    }
}
