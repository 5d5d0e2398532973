//! One span per request, exported to an OpenTelemetry collector over OTLP/HTTP (protobuf).
//!
//! The gateway already carries W3C trace context itself ([`crate::TraceContext`]): the span a
//! request gets here has exactly the trace id and span id sent upstream in `traceparent`, and
//! the caller's span as its parent. So spans are built as finished `SpanData` and handed to
//! `opentelemetry-otlp`'s exporter, without the SDK's tracer: no second id generator, no
//! context to keep in sync.
//!
//! The exporter is driven by a tokio task of our own (a bounded queue, batches of up to
//! [`MAX_BATCH`] spans, sent at least every `flush_interval`), not by the SDK's batch
//! processor: that one runs exports on a plain thread, where the `hyper-client` transport
//! (chosen in shared/STACK.md so that no reqwest comes in) has no runtime. A full queue drops
//! new spans and counts them; the request path never waits for the collector.
//!
//! Built only with the `otel` cargo feature; without it, [`SpanSink::start`] says so.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

/// Largest batch sent in one export request.
pub const MAX_BATCH: usize = 512;

/// Where and how spans are exported (from `[otlp]`).
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpSettings {
    /// The collector's traces URL.
    pub endpoint: String,
    /// `service.name`.
    pub service_name: String,
    /// Headers sent with every export.
    pub headers: Vec<(String, String)>,
    /// Limit on one export request.
    pub timeout: Duration,
    /// Longest wait before queued spans are sent.
    pub flush_interval: Duration,
    /// Spans that may wait.
    pub max_queue: usize,
}

/// A value of a span attribute.
#[derive(Debug, Clone, PartialEq)]
pub enum SpanValue {
    /// Text.
    Str(String),
    /// A number.
    Int(i64),
}

/// A request's span, finished.
#[derive(Debug, Clone, PartialEq)]
pub struct FinishedSpan {
    /// Trace id (as in `traceparent`).
    pub trace_id: u128,
    /// This hop's span id (the parent id the upstream saw).
    pub span_id: u64,
    /// The caller's span, when it sent a `traceparent`.
    pub parent_span_id: Option<u64>,
    /// `METHOD route`.
    pub name: String,
    /// When the request head arrived.
    pub start: SystemTime,
    /// When the response's last byte went out.
    pub end: SystemTime,
    /// Attributes (OpenTelemetry HTTP semantic conventions where one fits).
    pub attributes: Vec<(&'static str, SpanValue)>,
    /// The request failed (a 5xx).
    pub error: bool,
}

/// Counts of the exporter, for metrics.
#[derive(Debug, Default)]
pub struct SpanCounts {
    /// Spans sent to the collector (accepted or not).
    pub exported: AtomicU64,
    /// Spans dropped: queue full, or the export failed.
    pub dropped: AtomicU64,
}

/// The running exporter: hand it finished spans.
#[derive(Debug, Clone)]
pub struct SpanSink {
    #[cfg(feature = "otel")]
    tx: tokio::sync::mpsc::Sender<FinishedSpan>,
    counts: Arc<SpanCounts>,
}

impl SpanSink {
    /// Starts the exporter task (on the current tokio runtime).
    #[cfg(feature = "otel")]
    pub fn start(settings: &OtlpSettings) -> Result<Self, String> {
        let exporter = otel::exporter(settings)?;
        let (tx, rx) = tokio::sync::mpsc::channel(settings.max_queue.max(1));
        let counts = Arc::new(SpanCounts::default());
        tokio::spawn(otel::export_loop(
            exporter,
            rx,
            settings.flush_interval,
            Arc::clone(&counts),
        ));
        Ok(Self { tx, counts })
    }

    /// Without the `otel` feature there is no exporter.
    #[cfg(not(feature = "otel"))]
    pub fn start(_settings: &OtlpSettings) -> Result<Self, String> {
        Err(
            "this build has no OTLP export: build portcullis with the `otel` cargo feature \
             (on by default)"
                .into(),
        )
    }

    /// Queues `span`; drops it (and counts it) when the queue is full.
    pub fn record(&self, span: FinishedSpan) {
        #[cfg(feature = "otel")]
        if self.tx.try_send(span).is_err() {
            self.counts.dropped.fetch_add(1, Ordering::Relaxed);
        }
        #[cfg(not(feature = "otel"))]
        {
            drop(span);
            self.counts.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Exported and dropped counts.
    pub fn counts(&self) -> &SpanCounts {
        &self.counts
    }
}

#[cfg(feature = "otel")]
mod otel {
    use std::{borrow::Cow, sync::Arc, sync::atomic::Ordering, time::Duration};

    use opentelemetry::{
        InstrumentationScope, KeyValue,
        trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState},
    };
    use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
    use opentelemetry_sdk::{
        Resource,
        trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks},
    };
    use tokio::sync::mpsc::Receiver;

    use super::{FinishedSpan, MAX_BATCH, OtlpSettings, SpanCounts, SpanValue};

    /// The OTLP/HTTP protobuf exporter for `settings`, with its resource set.
    pub(super) fn exporter(
        settings: &OtlpSettings,
    ) -> Result<opentelemetry_otlp::SpanExporter, String> {
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(settings.endpoint.clone())
            .with_timeout(settings.timeout)
            .with_headers(settings.headers.iter().cloned().collect())
            .build()
            .map_err(|e| format!("OTLP exporter: {e}"))?;
        exporter.set_resource(
            &Resource::builder_empty()
                .with_service_name(settings.service_name.clone())
                .build(),
        );
        Ok(exporter)
    }

    /// Sends batches until every [`super::SpanSink`] is gone.
    pub(super) async fn export_loop(
        exporter: opentelemetry_otlp::SpanExporter,
        mut rx: Receiver<FinishedSpan>,
        flush_interval: Duration,
        counts: Arc<SpanCounts>,
    ) {
        let scope = InstrumentationScope::builder("portcullis")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while let Some(first) = rx.recv().await {
            batch.push(span_data(first, &scope));
            let flush_at = tokio::time::Instant::now() + flush_interval;
            while batch.len() < MAX_BATCH {
                match tokio::time::timeout_at(flush_at, rx.recv()).await {
                    Ok(Some(span)) => batch.push(span_data(span, &scope)),
                    Ok(None) | Err(_) => break,
                }
            }
            let n = batch.len() as u64;
            match exporter.export(std::mem::take(&mut batch)).await {
                Ok(()) => counts.exported.fetch_add(n, Ordering::Relaxed),
                Err(e) => {
                    tracing::warn!(error = %e, spans = n, "OTLP export failed; spans dropped");
                    counts.dropped.fetch_add(n, Ordering::Relaxed)
                }
            };
        }
    }

    fn span_data(span: FinishedSpan, scope: &InstrumentationScope) -> SpanData {
        let attributes = span
            .attributes
            .into_iter()
            .map(|(key, value)| match value {
                SpanValue::Str(s) => KeyValue::new(key, s),
                SpanValue::Int(i) => KeyValue::new(key, i),
            })
            .collect();
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(span.trace_id),
                SpanId::from(span.span_id),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: span.parent_span_id.map_or(SpanId::INVALID, SpanId::from),
            parent_span_is_remote: span.parent_span_id.is_some(),
            span_kind: SpanKind::Server,
            name: Cow::Owned(span.name),
            start_time: span.start,
            end_time: span.end,
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: if span.error {
                Status::error("")
            } else {
                Status::Unset
            },
            instrumentation_scope: scope.clone(),
        }
    }
}
