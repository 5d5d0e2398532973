//! Scrape-time figures of the upstreams in force: requests in flight, the concurrency limit
//! and its queue, idle pooled connections. Read from the live structures at each scrape, so
//! nothing is counted twice on the request path.

use std::sync::Arc;

use arc_swap::ArcSwap;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, gauge::ConstGauge},
};

use crate::upstream::Upstream;

/// The upstreams in force (swapped on reload; the registry is built once).
pub(crate) type UpstreamList = ArcSwap<Vec<Arc<Upstream>>>;

/// Encodes `portcullis_upstream_in_flight`, `portcullis_upstream_concurrency_limit`,
/// `portcullis_upstream_queue_length` and `portcullis_upstream_idle_connections`.
#[derive(Debug)]
pub(crate) struct UpstreamCollector(pub(crate) Arc<UpstreamList>);

fn gauge(n: usize) -> ConstGauge<i64> {
    ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX))
}

impl Collector for UpstreamCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let upstreams = self.0.load();
        {
            let mut family = encoder.encode_descriptor(
                "portcullis_upstream_in_flight",
                "Requests in flight to the upstream (response bodies included)",
                None,
                MetricType::Gauge,
            )?;
            for u in upstreams.iter() {
                let n: usize = u.targets().map(|(_, in_flight, _)| in_flight).sum();
                gauge(n).encode(family.encode_family(&[("upstream", &*u.name)])?)?;
            }
        }
        let limited = || upstreams.iter().filter_map(|u| Some((u, u.concurrency()?)));
        {
            let mut family = encoder.encode_descriptor(
                "portcullis_upstream_concurrency_limit",
                "The upstream's limit of requests in flight now (moves when adaptive)",
                None,
                MetricType::Gauge,
            )?;
            for (u, limit) in limited() {
                gauge(limit.limit()).encode(family.encode_family(&[("upstream", &*u.name)])?)?;
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "portcullis_upstream_queue_length",
                "Requests waiting for a slot under the upstream's concurrency limit",
                None,
                MetricType::Gauge,
            )?;
            for (u, limit) in limited() {
                gauge(limit.waiting()).encode(family.encode_family(&[("upstream", &*u.name)])?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "portcullis_upstream_idle_connections",
            "Idle keep-alive connections pooled per target",
            None,
            MetricType::Gauge,
        )?;
        for u in upstreams.iter() {
            for target in u.target_list() {
                let labels = [
                    ("upstream", &*u.name),
                    ("target", target.authority.as_str()),
                ];
                gauge(target.pool.idle_count()).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
