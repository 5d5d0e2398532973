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

/// One gauge family labelled by upstream: `values` gives each upstream's name and figure.
fn per_upstream<'a>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    values: impl Iterator<Item = (&'a str, usize)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (upstream, n) in values {
        gauge(n).encode(family.encode_family(&[("upstream", upstream)])?)?;
    }
    Ok(())
}

impl Collector for UpstreamCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let upstreams = self.0.load();
        per_upstream(
            &mut encoder,
            "portcullis_upstream_in_flight",
            "Requests in flight to the upstream (response bodies included)",
            upstreams.iter().map(|u| {
                let n: usize = u.targets().map(|(_, in_flight, _)| in_flight).sum();
                (&*u.name, n)
            }),
        )?;
        let limited = || {
            upstreams
                .iter()
                .filter_map(|u| Some((&*u.name, u.concurrency()?)))
        };
        per_upstream(
            &mut encoder,
            "portcullis_upstream_concurrency_limit",
            "The upstream's limit of requests in flight now (moves when adaptive)",
            limited().map(|(name, limit)| (name, limit.limit())),
        )?;
        per_upstream(
            &mut encoder,
            "portcullis_upstream_queue_length",
            "Requests waiting for a slot under the upstream's concurrency limit",
            limited().map(|(name, limit)| (name, limit.waiting())),
        )?;
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
