//! What the proxy tells the metrics registry: per-request handles (in `Observe`, shared by
//! every connection), the response body that records a request when its last byte is sent, and
//! the cache's counters, encoded at scrape time.

use std::{
    pin::Pin,
    sync::{Arc, atomic::AtomicBool},
    task::{Context, Poll},
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, Version, header, uri::Authority};
use http_body::{Frame, SizeHint};
use pin_project_lite::pin_project;
use portcullis_cache::Cache;
use portcullis_config::LogConfig;
use portcullis_http::{Body, BoxError, ConsumerId, RequestId, headers::X_CACHE};
use portcullis_observe::{
    AccessLog, AccessRecord, AlertBook, Collector, DescriptorEncoder, FinishedSpan, InFlight,
    InFlightGuard, Metrics, RouteMetrics, SpanSink, SpanValue, TRACEPARENT, TraceContext,
    incoming_trace_id, redact_query_also,
};
use prometheus_client::{
    encoding::EncodeMetric,
    metrics::{counter::ConstCounter, gauge::ConstGauge},
};
use std::net::IpAddr;

/// The `route` label of requests no route took (404, 405, refused methods).
pub(crate) const UNMATCHED_ROUTE: &str = "unmatched";

/// Observability state that lives as long as the gateway, across reloads.
#[derive(Debug)]
pub(crate) struct ObserveBase {
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
    /// SLO alerts in force.
    pub(crate) alerts: Arc<AlertBook>,
    /// Rate limiters and the Redis handle in force, for their collector.
    pub(crate) limits: Arc<crate::limit::LimitState>,
    /// The upstreams in force, for their collector.
    pub(crate) upstreams: Arc<crate::upstream_metrics::UpstreamList>,
}

/// Observability state of one configuration.
#[derive(Debug)]
pub(crate) struct Observe {
    pub(crate) base: Arc<ObserveBase>,
    /// The access log, when `[log] access` is on.
    pub(crate) access_log: Option<AccessLog>,
    /// The `[log]` table it was started from (a reload with the same table keeps it).
    pub(crate) log_config: LogConfig,
    /// Add `X-Response-Time` and `Server-Timing` to responses.
    pub(crate) timing_headers: bool,
    /// Query parameters the access log redacts besides the credential-like names (the API
    /// key's `auth.api_key.query`).
    pub(crate) secret_query_params: Box<[String]>,
    /// OTLP span export, when `[otlp]` is configured.
    pub(crate) spans: Option<SpanExport>,
}

/// `[otlp]` at run time: the exporter and the share of new traces it gets.
#[derive(Debug, Clone)]
pub(crate) struct SpanExport {
    pub(crate) sink: SpanSink,
    pub(crate) sample_ratio: f64,
    /// The table it was started from (a reload with the same table keeps it).
    pub(crate) config: portcullis_config::OtlpConfig,
}

impl SpanExport {
    /// Whether `trace` is exported: the caller's `sampled` flag when it sent a trace context,
    /// else a ratio of trace ids (deterministic per trace, as OpenTelemetry's
    /// `TraceIdRatioBased` sampler: every gateway instance decides alike).
    fn samples(&self, trace: &TraceContext) -> bool {
        if trace.parent_span_id().is_some() {
            return trace.sampled();
        }
        let low = trace.trace_id_value() as u64;
        (low as f64) < self.sample_ratio * u64::MAX as f64
    }
}

impl Observe {
    /// Whether responses from upstream should carry their [`UpstreamTiming`].
    pub(crate) fn wants_upstream_timing(&self) -> bool {
        self.access_log.is_some() || self.timing_headers || self.spans.is_some()
    }
}

/// The upstream exchange of a response, carried as a response extension to the access log
/// (only when the access log is on: an extension costs an allocation).
#[derive(Debug, Clone)]
pub(crate) struct UpstreamTiming {
    pub(crate) elapsed: Duration,
    pub(crate) target: Authority,
    /// The trace context sent upstream in `traceparent`.
    pub(crate) trace: Option<TraceContext>,
}

/// What the access log needs from the request, captured only when it is on.
#[derive(Debug)]
struct LogFields {
    log: AccessLog,
    request_id: RequestId,
    client_ip: IpAddr,
    path: LoggedPath,
    version: Version,
    user_agent: Option<HeaderValue>,
    referer: Option<HeaderValue>,
    consumer: Option<Arc<str>>,
}

/// The path and query an access line shows: the request's own (a reference-counted clone, no
/// copy), or a copy with credentials in the query redacted.
#[derive(Debug)]
enum LoggedPath {
    Request(Option<http::uri::PathAndQuery>),
    Redacted(String),
}

impl LoggedPath {
    fn of(uri: &http::Uri, secret_params: &[String]) -> Self {
        let Some(pq) = uri.path_and_query() else {
            return Self::Request(None);
        };
        if pq.query().is_none() {
            return Self::Request(Some(pq.clone()));
        }
        match redact_query_also(pq.as_str(), secret_params) {
            std::borrow::Cow::Borrowed(_) => Self::Request(Some(pq.clone())),
            std::borrow::Cow::Owned(redacted) => Self::Redacted(redacted),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            Self::Request(Some(pq)) => pq.as_str(),
            // A request without a path (an authority-form CONNECT) logs none, as `Uri::path`.
            Self::Request(None) => "",
            Self::Redacted(path) => path,
        }
    }
}

/// What a request's span needs from the request, captured only when spans are exported.
#[derive(Debug)]
struct SpanFields {
    export: SpanExport,
    started: SystemTime,
    path: String,
    client_ip: IpAddr,
    request_id: RequestId,
}

/// One request being measured: from its head's arrival to its response's last byte.
#[derive(Debug)]
pub(crate) struct Measure {
    route: Arc<RouteMetrics>,
    method: Method,
    start: Instant,
    _in_flight: InFlightGuard,
    log: Option<Box<LogFields>>,
    span: Option<Box<SpanFields>>,
    /// The caller's `traceparent`, kept when the access log or a span may need it: their trace
    /// id when the request does not go upstream.
    incoming_trace: Option<HeaderValue>,
    /// The upstream exchange, handed over by the proxy (a response that came through the cache
    /// carries it as an extension instead).
    upstream: Option<UpstreamTiming>,
    /// Whether the route caches: only then is `X-Cache` the gateway's cache result.
    cached_route: bool,
    timing_headers: bool,
}

impl Measure {
    /// Starts measuring `req`; `client_ip` is asked for only when the access log is on.
    pub(crate) fn start<B>(
        observe: &Observe,
        req: &Request<B>,
        request_id: &RequestId,
        client_ip: impl FnOnce() -> IpAddr,
    ) -> Self {
        // Asked once, and only when the access log or a span wants it.
        let wanted = observe.access_log.is_some() || observe.spans.is_some();
        let ip = wanted.then(client_ip).unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let incoming_trace = wanted
            .then(|| req.headers().get(TRACEPARENT).cloned())
            .flatten();
        let span = observe.spans.as_ref().map(|export| {
            Box::new(SpanFields {
                export: export.clone(),
                started: SystemTime::now(),
                path: req.uri().path().to_owned(),
                client_ip: ip,
                request_id: request_id.clone(),
            })
        });
        let log = observe.access_log.as_ref().map(|log| {
            let headers = req.headers();
            Box::new(LogFields {
                log: log.clone(),
                request_id: request_id.clone(),
                client_ip: ip,
                path: LoggedPath::of(req.uri(), &observe.secret_query_params),
                version: req.version(),
                user_agent: headers.get(header::USER_AGENT).cloned(),
                referer: headers.get(header::REFERER).cloned(),
                consumer: req
                    .extensions()
                    .get::<ConsumerId>()
                    .map(|c| Arc::clone(&c.0)),
            })
        });
        Self {
            route: Arc::clone(&observe.base.unmatched),
            method: req.method().clone(),
            start: Instant::now(),
            _in_flight: observe.base.in_flight.enter(),
            log,
            span,
            incoming_trace,
            upstream: None,
            cached_route: false,
            timing_headers: observe.timing_headers,
        }
    }

    /// Counts the request under `route` instead of `unmatched`; `cached` says whether the route
    /// has a cache.
    pub(crate) fn routed(&mut self, route: &Arc<RouteMetrics>, cached: bool) {
        self.route = Arc::clone(route);
        self.cached_route = cached;
    }

    /// Where the proxy puts the upstream exchange's timing (filled only when
    /// [`Observe::wants_upstream_timing`]). Handed over directly rather than as a response
    /// extension: an extension costs two allocations and a hash map per response.
    pub(crate) fn upstream_slot(&mut self) -> &mut Option<UpstreamTiming> {
        &mut self.upstream
    }

    /// Names the authenticated consumer in the access log.
    pub(crate) fn consumer(&mut self, id: &Arc<str>) {
        if let Some(log) = &mut self.log {
            log.consumer = Some(Arc::clone(id));
        }
    }

    /// Wraps `response`'s body so the request is recorded when the body ends (or is dropped,
    /// when the client goes away first).
    pub(crate) fn finish(mut self, mut response: http::Response<Body>) -> http::Response<Body> {
        let upstream = self
            .upstream
            .take()
            .or_else(|| response.extensions().get::<UpstreamTiming>().cloned());
        if self.timing_headers {
            add_timing_headers(&mut response, upstream.as_ref(), self.start.elapsed());
        }
        let status = response.status();
        let seen = (self.log.is_some() || self.span.is_some()).then(|| ResponseSeen {
            cache: self
                .cached_route
                .then(|| response.headers().get(X_CACHE).cloned())
                .flatten(),
            upstream,
        });
        response.map(|inner| {
            Body::new(Metered {
                inner,
                record: Some(Record {
                    measure: self,
                    status,
                    bytes: 0,
                    seen,
                }),
            })
        })
    }
}

/// What the access log needs from the response.
#[derive(Debug)]
struct ResponseSeen {
    cache: Option<HeaderValue>,
    upstream: Option<UpstreamTiming>,
}

/// The pending record of a response being sent.
#[derive(Debug)]
struct Record {
    measure: Measure,
    status: StatusCode,
    bytes: u64,
    seen: Option<ResponseSeen>,
}

impl Record {
    fn done(self) {
        let m = &self.measure;
        let elapsed = m.start.elapsed();
        m.route.record(&m.method, self.status, elapsed, self.bytes);
        if let (Some(fields), Some(seen)) = (&m.log, &self.seen) {
            let target = seen.upstream.as_ref().map(|u| u.target.as_str());
            let trace_id = seen
                .upstream
                .as_ref()
                .and_then(|u| u.trace)
                .map(|t| t.trace_id_value())
                .or_else(|| incoming_trace_id(m.incoming_trace.as_ref()));
            fields.log.log(&AccessRecord {
                trace_id,
                time: SystemTime::now(),
                request_id: fields.request_id.as_str(),
                client_ip: fields.client_ip,
                method: m.method.as_str(),
                path: fields.path.as_str(),
                protocol: version_str(fields.version),
                status: self.status.as_u16(),
                bytes: self.bytes,
                duration_ms: elapsed.as_secs_f64() * 1000.0,
                upstream_ms: seen
                    .upstream
                    .as_ref()
                    .map(|u| u.elapsed.as_secs_f64() * 1000.0),
                target,
                route: m.route.name(),
                cache: text(&seen.cache),
                consumer: fields.consumer.as_deref(),
                user_agent: text(&fields.user_agent),
                referer: text(&fields.referer),
            });
        }
        if let (Some(fields), Some(seen)) = (&m.span, &self.seen) {
            export_span(m, fields, seen, self.status, elapsed);
        }
    }
}

/// Hands the request's span to the exporter, when its trace is sampled. The span ids are the
/// ones sent upstream; a request answered without the upstream gets its own.
fn export_span(
    m: &Measure,
    fields: &SpanFields,
    seen: &ResponseSeen,
    status: StatusCode,
    elapsed: Duration,
) {
    let trace = seen
        .upstream
        .as_ref()
        .and_then(|u| u.trace)
        .unwrap_or_else(|| TraceContext::continue_or_start(m.incoming_trace.as_ref()));
    if !fields.export.samples(&trace) {
        return;
    }
    let route = m.route.name();
    let mut attributes = vec![
        (
            "http.request.method",
            SpanValue::Str(m.method.as_str().to_owned()),
        ),
        ("http.route", SpanValue::Str(route.to_owned())),
        ("url.path", SpanValue::Str(fields.path.clone())),
        (
            "http.response.status_code",
            SpanValue::Int(i64::from(status.as_u16())),
        ),
        (
            "client.address",
            SpanValue::Str(fields.client_ip.to_string()),
        ),
        (
            "portcullis.request_id",
            SpanValue::Str(fields.request_id.as_str().to_owned()),
        ),
    ];
    if let Some(cache) = text(&seen.cache) {
        attributes.push(("portcullis.cache", SpanValue::Str(cache.to_owned())));
    }
    if let Some(up) = &seen.upstream {
        attributes.push(("server.address", SpanValue::Str(up.target.to_string())));
        let ms = i64::try_from(up.elapsed.as_millis()).unwrap_or(i64::MAX);
        attributes.push(("portcullis.upstream_ms", SpanValue::Int(ms)));
    }
    fields.export.sink.record(FinishedSpan {
        trace_id: trace.trace_id_value(),
        span_id: trace.span_id(),
        parent_span_id: trace.parent_span_id(),
        name: format!("{} {route}", m.method),
        start: fields.started,
        end: fields.started + elapsed,
        attributes,
        error: status.is_server_error(),
    });
}

/// `X-Response-Time` (to the response head) and `Server-Timing` with the upstream leg and the
/// cache result, when known.
fn add_timing_headers(
    response: &mut http::Response<Body>,
    upstream: Option<&UpstreamTiming>,
    elapsed: Duration,
) {
    let mut timing = String::new();
    if let Some(up) = upstream {
        timing.push_str(&format!(
            "upstream;dur={:.3}",
            up.elapsed.as_secs_f64() * 1000.0
        ));
    }
    if let Some(cache) = response
        .headers()
        .get(X_CACHE)
        .and_then(|v| v.to_str().ok())
    {
        if !timing.is_empty() {
            timing.push_str(", ");
        }
        timing.push_str(&format!("cache;desc=\"{cache}\""));
    }
    let total = elapsed.as_secs_f64() * 1000.0;
    if !timing.is_empty() {
        timing.push_str(", ");
    }
    timing.push_str(&format!("total;dur={total:.3}"));
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("{total:.3}ms")) {
        headers.insert(X_RESPONSE_TIME, v);
    }
    if let Ok(v) = HeaderValue::from_str(&timing) {
        headers.append(SERVER_TIMING, v);
    }
}

const X_RESPONSE_TIME: http::HeaderName = http::HeaderName::from_static("x-response-time");
const SERVER_TIMING: http::HeaderName = http::HeaderName::from_static("server-timing");

fn text(v: &Option<HeaderValue>) -> Option<&str> {
    v.as_ref().and_then(|v| v.to_str().ok())
}

fn version_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
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
                let redis_hits = s.redis_hits.min(s.hits);
                let redis_stale = s.redis_stale.min(s.stale);
                for (result, tier, n) in [
                    ("hit", "memory", s.hits - redis_hits),
                    ("hit", "redis", redis_hits),
                    ("stale", "memory", s.stale - redis_stale),
                    ("stale", "redis", redis_stale),
                    ("miss", "none", s.misses),
                    ("bypass", "none", s.bypass),
                    ("revalidated", "none", s.revalidated),
                ] {
                    if tier == "redis" && stats.redis.is_none() {
                        continue;
                    }
                    let labels = [
                        ("route", route.as_str()),
                        ("result", result),
                        ("tier", tier),
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
        if let Some(t) = &stats.redis {
            let mut family = encoder.encode_descriptor(
                "portcullis_cache_redis_operations",
                "Redis tier operations by kind and result (reads, writes, invalidation messages, lock waits, subscription gaps)",
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for (op, result, n) in [
                ("read", "ok", t.reads.saturating_sub(t.read_errors)),
                ("read", "error", t.read_errors),
                ("write", "ok", t.writes),
                ("write", "error", t.write_errors),
                ("invalidation_published", "ok", t.invalidations_published),
                ("invalidation_received", "ok", t.invalidations_received),
                ("subscription_gap", "ok", t.subscription_gaps),
                ("lock_wait", "ok", t.lock_waits),
            ] {
                ConstCounter::new(n)
                    .encode(family.encode_family(&[("op", op), ("result", result)])?)?;
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

pin_project! {
    /// A request body that counts its bytes into the route's counter as they pass.
    pub(crate) struct RequestBytes<B> {
        #[pin]
        inner: B,
        counter: portcullis_observe::Counter,
    }
}

impl<B> RequestBytes<B> {
    pub(crate) fn new(inner: B, route: &RouteMetrics) -> Self {
        Self {
            inner,
            counter: route.request_bytes().clone(),
        }
    }
}

impl<B: http_body::Body<Data = Bytes>> http_body::Body for RequestBytes<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            this.counter.inc_by(data.len() as u64);
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
