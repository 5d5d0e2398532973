//! What the proxy tells the metrics registry: per-request handles (in `Observe`, shared by
//! every connection), the response body that records a request when its last byte is sent, and
//! the cache's counters, encoded at scrape time.

use std::{
    pin::Pin,
    sync::{Arc, atomic::AtomicBool},
    task::{Context, Poll},
    time::Instant,
};

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body::{Frame, SizeHint};
use pin_project_lite::pin_project;
use portcullis_cache::Cache;
use portcullis_http::{Body, BoxError};
use portcullis_observe::{
    Collector, DescriptorEncoder, InFlight, InFlightGuard, Metrics, RouteMetrics,
};
use prometheus_client::{
    encoding::EncodeMetric,
    metrics::{counter::ConstCounter, gauge::ConstGauge},
};

/// The `route` label of requests no route took (404, 405, refused methods).
pub(crate) const UNMATCHED_ROUTE: &str = "unmatched";

/// Observability state shared by every connection.
#[derive(Debug)]
pub(crate) struct Observe {
    /// The registry, for the admin listener.
    pub(crate) metrics: Arc<Metrics>,
    /// Where requests no route took are counted.
    pub(crate) unmatched: Arc<RouteMetrics>,
    /// Requests being served.
    pub(crate) in_flight: InFlight,
    /// When the gateway was built.
    pub(crate) started: Instant,
    /// Set when shutdown begins: readiness turns 503 so load balancers stop sending.
    pub(crate) draining: AtomicBool,
}

/// One request being measured: from its head's arrival to its response's last byte.
#[derive(Debug)]
pub(crate) struct Measure {
    route: Arc<RouteMetrics>,
    method: Method,
    start: Instant,
    _in_flight: InFlightGuard,
}

impl Measure {
    pub(crate) fn start(observe: &Observe, method: &Method) -> Self {
        Self {
            route: Arc::clone(&observe.unmatched),
            method: method.clone(),
            start: Instant::now(),
            _in_flight: observe.in_flight.enter(),
        }
    }

    /// Counts the request under `route` instead of `unmatched`.
    pub(crate) fn routed(&mut self, route: &Arc<RouteMetrics>) {
        self.route = Arc::clone(route);
    }

    /// Wraps `response`'s body so the request is recorded when the body ends (or is dropped,
    /// when the client goes away first).
    pub(crate) fn finish(self, response: http::Response<Body>) -> http::Response<Body> {
        let status = response.status();
        response.map(|inner| {
            Body::new(Metered {
                inner,
                record: Some(Record {
                    measure: self,
                    status,
                    bytes: 0,
                }),
            })
        })
    }
}

/// The pending record of a response being sent.
#[derive(Debug)]
struct Record {
    measure: Measure,
    status: StatusCode,
    bytes: u64,
}

impl Record {
    fn done(self) {
        let m = &self.measure;
        m.route
            .record(&m.method, self.status, m.start.elapsed(), self.bytes);
    }
}

pin_project! {
    /// A response body that records its request at its end.
    struct Metered {
        #[pin]
        inner: Body,
        record: Option<Record>,
    }

    impl PinnedDrop for Metered {
        fn drop(this: Pin<&mut Self>) {
            if let Some(record) = this.project().record.take() {
                record.done();
            }
        }
    }
}

impl http_body::Body for Metered {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(record), Some(data)) = (this.record.as_mut(), frame.data_ref()) {
                    record.bytes += data.len() as u64;
                }
                // hyper stops polling once the body says it has ended.
                if this.inner.is_end_stream()
                    && let Some(record) = this.record.take()
                {
                    record.done();
                }
            }
            Poll::Ready(_) => {
                if let Some(record) = this.record.take() {
                    record.done();
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Exports the cache's counters per route and its memory use at scrape time.
#[derive(Debug)]
pub(crate) struct CacheCollector {
    cache: Cache,
}

impl CacheCollector {
    pub(crate) fn new(cache: Cache) -> Self {
        Self { cache }
    }
}

impl Collector for CacheCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let stats = self.cache.stats();
        {
            let mut family = encoder.encode_descriptor(
                "portcullis_cache_requests",
                "Requests on cached routes by result (hit, miss, stale, bypass, revalidated) and tier",
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for (route, s) in &stats.routes {
                for (result, n) in [
                    ("hit", s.hits),
                    ("miss", s.misses),
                    ("stale", s.stale),
                    ("bypass", s.bypass),
                    ("revalidated", s.revalidated),
                ] {
                    let labels = [
                        ("route", route.as_str()),
                        ("result", result),
                        ("tier", "memory"),
                    ];
                    ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "portcullis_cache_stores",
                "Responses stored in the cache, by route",
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for (route, s) in &stats.routes {
                ConstCounter::new(s.stores).encode(family.encode_family(&[("route", route)])?)?;
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "portcullis_cache_coalesced",
                "Requests that waited for another request's fill instead of going upstream",
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for (route, s) in &stats.routes {
                ConstCounter::new(s.coalesced)
                    .encode(family.encode_family(&[("route", route)])?)?;
            }
        }
        let bytes = ConstGauge::new(stats.memory_bytes);
        bytes.encode(encoder.encode_descriptor(
            "portcullis_cache_memory_bytes",
            "Bytes held by the memory tier (headers, bodies and overhead)",
            None,
            bytes.metric_type(),
        )?)?;
        let entries = ConstGauge::new(stats.memory_entries);
        entries.encode(encoder.encode_descriptor(
            "portcullis_cache_memory_entries",
            "Keys held by the memory tier",
            None,
            entries.metric_type(),
        )?)?;
        Ok(())
    }
}
