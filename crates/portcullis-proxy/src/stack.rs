//! Lowering the validated config into the running gateway: upstreams, routes, router, listener.
//!
//! This is the one place that reads config for the data plane; the hot path only sees the types
//! built here. Later layers (cache, limits, resilience, auth) are assembled here per route, in
//! the order of the request path described in docs/ARCHITECTURE.md.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, atomic::AtomicBool},
    time::Instant,
};

use http::Method;
use portcullis_cache::{Cache, KeyParts, QueryIgnore, RoutePolicy};
use portcullis_config::{
    AccessLogFormat, CacheConfig, Config, RouteConfig, parse_cidr, parse_header_name, parse_host,
    parse_path, parse_path_prefix,
};
use portcullis_observe::{
    AccessFormat, AccessLog, AlertBook, Metrics, Objective, ProcessCollector, RouteSlo,
};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::{
    breaker::{BreakerScope, NamedBreaker},
    fallback::Fallback,
    handle::GatewayHandle,
    headers::{TrustedProxies, Via},
    metrics::{CacheCollector, Observe, ObserveBase, SpanExport, UNMATCHED_ROUTE},
    route::{Route, canonical_prefix},
    router::{Matcher, Router},
    server::{self, ListenerSettings},
    service::Shared,
    tls,
    upstream::Upstream,
};

/// Why the gateway could not be built or bound.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A config value the validator accepted could not be lowered (a bug if it happens).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// TLS certificate or key problems.
    #[error("TLS: {0}")]
    Tls(String),
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A gateway built from config, not yet listening.
pub struct Gateway {
    handle: GatewayHandle,
    evaluate_every: std::time::Duration,
    listen: SocketAddr,
    tls: Option<TlsAcceptor>,
    settings: ListenerSettings,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("listen", &self.listen)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Builds upstreams and routes from a validated config.
    pub fn from_config(config: &Config) -> Result<Self, BuildError> {
        let cache = Cache::new(cache_config(&config.cache));
        let alerts = Arc::new(AlertBook::default());
        let limits = Arc::new(crate::limit::LimitState::default());
        let mut builder = Metrics::builder();
        builder.register_collector(Box::new(ProcessCollector));
        builder.register_collector(Box::new(CacheCollector::new(cache.clone())));
        builder.register_collector(Box::new(Arc::clone(&alerts)));
        builder.register_collector(Box::new(crate::limit::LimitCollector(Arc::clone(&limits))));
        let upstreams = Arc::<crate::upstream_metrics::UpstreamList>::default();
        builder.register_collector(Box::new(crate::upstream_metrics::UpstreamCollector(
            Arc::clone(&upstreams),
        )));
        let metrics = Arc::new(builder.build());
        let base = Arc::new(ObserveBase {
            alerts,
            unmatched: metrics.route(UNMATCHED_ROUTE),
            in_flight: metrics.in_flight(),
            metrics,
            started: Instant::now(),
            draining: AtomicBool::new(false),
            limits,
            upstreams,
        });
        let shared = build_shared(config, cache, base, None)?;
        let s = &config.server;
        let tls = s
            .tls
            .as_ref()
            .map(|t| tls::acceptor(t.cert.get_ref(), t.key.get_ref(), s.http2))
            .transpose()
            .map_err(BuildError::Tls)?;
        Ok(Self {
            handle: GatewayHandle::new(shared, config),
            evaluate_every: config
                .alerts
                .evaluate_every
                .0
                .max(std::time::Duration::from_millis(100)),
            listen: s.listen,
            tls,
            settings: ListenerSettings {
                http2: s.http2,
                header_read_timeout: s.header_read_timeout.0,
                max_header_bytes: usize::try_from(s.max_header_bytes.get_ref().0)
                    .unwrap_or(usize::MAX),
                drain_timeout: s.drain_timeout.0,
            },
        })
    }

    /// Opens the listener.
    pub async fn bind(self) -> Result<BoundGateway, BuildError> {
        let listener = TcpListener::bind(self.listen)
            .await
            .map_err(|source| BuildError::Bind {
                addr: self.listen,
                source,
            })?;
        self.listen_on(listener)
    }

    /// Serves on a listener opened elsewhere (taken over from a previous process).
    pub fn adopt(self, listener: std::net::TcpListener) -> Result<BoundGateway, BuildError> {
        let addr = self.listen;
        let bind_error = |source| BuildError::Bind { addr, source };
        listener.set_nonblocking(true).map_err(bind_error)?;
        let listener = TcpListener::from_std(listener).map_err(bind_error)?;
        self.listen_on(listener)
    }

    fn listen_on(self, listener: TcpListener) -> Result<BoundGateway, BuildError> {
        let local_addr = listener.local_addr().map_err(|source| BuildError::Bind {
            addr: self.listen,
            source,
        })?;
        Ok(BoundGateway {
            gateway: self,
            listener,
            local_addr,
        })
    }

    /// The shared routing state as of now, for embedding the proxy service in another server.
    pub fn shared(&self) -> Arc<Shared> {
        self.handle.current()
    }

    /// The handle that reloads the gateway and reads its current state.
    pub fn handle(&self) -> GatewayHandle {
        self.handle.clone()
    }
}

/// Builds the swappable state from `config`. `cache` and `base` live across reloads;
/// `previous` (on reload) lends its upstreams (and their pools) whose config is unchanged, its
/// cache statistics per route name, and its access log when `[log]` is unchanged.
pub(crate) fn build_shared(
    config: &Config,
    cache: Cache,
    base: Arc<ObserveBase>,
    previous: Option<&Shared>,
) -> Result<Shared, BuildError> {
    let metrics = &base.metrics;
    let upstreams: HashMap<&str, Arc<Upstream>> = config
        .upstreams
        .iter()
        .map(|u| {
            let name = u.name.get_ref().as_str();
            let reused = previous
                .and_then(|p| p.upstreams.iter().find(|old| old.config == *u))
                .cloned();
            match reused {
                Some(up) => Ok((name, up)),
                None => {
                    let up =
                        Arc::new(Upstream::from_config(u, metrics).map_err(BuildError::Config)?);
                    crate::health::spawn_checks(&up);
                    Ok((name, up))
                }
            }
        })
        .collect::<Result<_, _>>()?;
    let redis = crate::limit::redis_handle(
        config,
        previous.and_then(|p| Some((p.config.redis.as_ref()?, p.redis.as_ref()?))),
    )?;
    let mut limiters = Vec::new();
    let auth = crate::security::authenticator(config, previous.map(|p| &*p.auth))?;
    let mut routes = Vec::with_capacity(config.routes.len());
    let mut cached = Vec::new();
    let mut slos = Vec::new();
    for r in &config.routes {
        let upstream = upstreams
            .get(r.upstream.get_ref().as_str())
            .cloned()
            .ok_or_else(|| {
                BuildError::Config(format!("unknown upstream {:?}", r.upstream.get_ref()))
            })?;
        let m = &r.matcher;
        let matcher = Matcher {
            host: m
                .host
                .as_ref()
                .map(|h| parse_host(h.get_ref()))
                .transpose()
                .map_err(BuildError::Config)?,
            path: match (&m.path, &m.path_prefix) {
                (Some(p), _) => Some(parse_path(p.get_ref()).map_err(BuildError::Config)?),
                (None, Some(p)) => {
                    Some(parse_path_prefix(p.get_ref()).map_err(BuildError::Config)?)
                }
                (None, None) => None,
            },
            methods: m
                .methods
                .iter()
                .map(|s| {
                    Method::from_bytes(s.get_ref().to_ascii_uppercase().as_bytes())
                        .map_err(|e| BuildError::Config(e.to_string()))
                })
                .collect::<Result<_, _>>()?,
        };
        let name = r.name.get_ref();
        let mut policy = route_cache_policy(config, r)?;
        if let Some(policy) = &mut policy {
            // Counters continue across reloads for a route of the same name.
            if let Some(old) = previous
                .and_then(|p| p.routes.iter().find(|old| *old.name == **name))
                .and_then(|old| old.cache.as_ref())
            {
                policy.stats = Arc::clone(&old.stats);
            }
        }
        let policy = policy.map(Arc::new);
        if let Some(p) = policy.as_ref().filter(|p| p.enabled) {
            cached.push(Arc::clone(p));
        }
        if let Some(slo) = &r.slo {
            slos.push(route_slo(name, slo.get_ref()));
        }
        let limit = crate::limit::route_limit(
            config,
            r,
            redis.as_ref(),
            previous
                .and_then(|p| p.routes.iter().find(|old| *old.name == **name))
                .and_then(|old| old.limit.as_deref()),
        )?;
        if let Some(l) = &limit {
            limiters.push((Arc::from(name.as_str()), Arc::clone(&l.limiter)));
        }
        let versions = crate::version::route_versions(r, &upstreams, &upstream)?;
        // A breaker keeps its state across a reload that leaves its table alone.
        let breaker = r.breaker.as_ref().map(|table| {
            previous
                .and_then(|p| p.routes.iter().find(|old| *old.name == **name))
                .and_then(|old| old.breaker.as_ref())
                .filter(|old| old.table == *table)
                .cloned()
                .unwrap_or_else(|| {
                    Arc::new(NamedBreaker::new(BreakerScope::Route, name, table, metrics))
                })
        });
        let fallback = r
            .fallback
            .as_ref()
            .map(|f| Fallback::from_config(f.get_ref()))
            .transpose()
            .map_err(BuildError::Config)?;
        let route = Route {
            name: Arc::from(name.as_str()),
            timeout: r.timeout.map_or(upstream.timeout, |t| t.0),
            deadline: r.deadline.as_ref().map(|d| d.get_ref().0),
            breaker,
            fallback,
            upstream,
            preserve_host: r.preserve_host,
            strip_prefix: r
                .strip_prefix
                .as_ref()
                .map(|p| canonical_prefix(p.get_ref())),
            add_prefix: r.add_prefix.as_ref().map(|p| canonical_prefix(p.get_ref())),
            cache: policy,
            metrics: metrics.route(name),
            limit,
            security: crate::security::route_security(config, &auth, r)?,
            versions,
        };
        routes.push((matcher, Arc::new(route)));
    }
    let shared_tier = redis.as_ref().filter(|_| {
        *config.cache.redis.get_ref() && config.routes.iter().any(|r| r.cache.is_some())
    });
    cache.attach_redis(shared_tier, config.cache.redis_compress_min.0);
    cache.set_routes(cached);
    base.limits.limiters.store(Arc::new(limiters));
    base.limits.redis.store(redis.clone().map(Arc::new));
    let mut upstream_list: Vec<Arc<Upstream>> = upstreams.values().cloned().collect();
    upstream_list.sort_by(|a, b| a.name.cmp(&b.name));
    base.upstreams.store(Arc::new(upstream_list.clone()));
    let s = &config.server;
    let trusted = s
        .trusted_proxies
        .iter()
        .map(|p| parse_cidr(p.get_ref()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(BuildError::Config)?;
    let via = Via::new(&s.via).map_err(|e| BuildError::Config(e.to_string()))?;
    let access_log = match previous {
        Some(p) if p.observe.log_config == config.log => p.observe.access_log.clone(),
        _ => access_log(config, metrics)?,
    };
    let spans = match (previous, &config.otlp) {
        (_, None) => None,
        (Some(p), Some(otlp))
            if p.observe
                .spans
                .as_ref()
                .is_some_and(|s| s.config == *otlp.get_ref()) =>
        {
            p.observe.spans.clone()
        }
        (_, Some(otlp)) => Some(span_export(otlp.get_ref())?),
    };
    let observe = Observe {
        spans,
        base,
        access_log,
        log_config: config.log.clone(),
        timing_headers: s.timing_headers,
        secret_query_params: config
            .auth
            .api_key
            .query
            .iter()
            .map(|q| q.get_ref().clone())
            .collect(),
    };
    let route_list: Vec<Arc<Route>> = routes.iter().map(|(_, r)| Arc::clone(r)).collect();
    Ok(Shared {
        router: Router::new(routes),
        trusted: TrustedProxies::new(trusted),
        via,
        cache,
        observe,
        routes: route_list,
        config: Arc::new(config.clone()),
        upstreams: upstream_list,
        request_id_header: parse_header_name(s.request_id_header.get_ref())
            .map_err(BuildError::Config)?,
        trace_context: s.trace_context,
        slos,
        max_in_flight: s.max_in_flight,
        redis,
        auth,
    })
}

/// A route's objectives for the evaluator.
fn route_slo(route: &str, slo: &portcullis_config::SloConfig) -> RouteSlo {
    let ms = |d: portcullis_config::Duration| d.0.as_secs_f64() * 1000.0;
    let mut objectives = Vec::new();
    objectives.extend(slo.p95.map(|d| Objective::P95Ms(ms(d))));
    objectives.extend(slo.p99.map(|d| Objective::P99Ms(ms(d))));
    objectives.extend(slo.error_rate.map(Objective::ErrorRate));
    RouteSlo {
        route: route.to_owned(),
        objectives,
        window: slo.window.0,
        min_requests: slo.min_requests,
    }
}

/// Starts the access log's writer when `[log] access` is on.
/// Starts the OTLP exporter of `[otlp]` (on the current tokio runtime).
fn span_export(otlp: &portcullis_config::OtlpConfig) -> Result<SpanExport, BuildError> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(BuildError::Config(
            "[otlp]: the gateway must be built inside a tokio runtime to export spans".into(),
        ));
    }
    let settings = portcullis_observe::OtlpSettings {
        endpoint: otlp.endpoint.clone(),
        service_name: otlp.service_name.clone(),
        headers: otlp
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.expose().to_owned()))
            .collect(),
        timeout: otlp.timeout.0,
        flush_interval: otlp.flush_interval.0,
        max_queue: otlp.max_queue,
    };
    let sink = portcullis_observe::SpanSink::start(&settings)
        .map_err(|e| BuildError::Config(format!("[otlp]: {e}")))?;
    Ok(SpanExport {
        sink,
        sample_ratio: otlp.sample_ratio,
        config: otlp.clone(),
    })
}

fn access_log(config: &Config, metrics: &Metrics) -> Result<Option<AccessLog>, BuildError> {
    let format = match config.log.access {
        AccessLogFormat::Off => return Ok(None),
        AccessLogFormat::Json => AccessFormat::Json,
        AccessLogFormat::Combined => AccessFormat::Combined,
    };
    let file = config
        .log
        .access_file
        .as_ref()
        .map(|f| f.get_ref().as_path());
    AccessLog::start(format, file, metrics.access_log_dropped())
        .map(Some)
        .map_err(|e| BuildError::Config(format!("cannot open the access log: {e}")))
}

/// The cache's settings from `[cache]`.
fn cache_config(c: &CacheConfig) -> portcullis_cache::CacheConfig {
    portcullis_cache::CacheConfig {
        memory_max: c.memory_max.get_ref().0,
        max_object_size: c.max_object_size.get_ref().0,
        lock_timeout: c.lock_timeout.0,
        hit_for_miss: c.hit_for_miss.0,
        error_backoff: c.error_backoff.0,
        keep_stale: c.keep_stale.0,
        refresh_concurrency: c.refresh_concurrency.max(1),
        ..portcullis_cache::CacheConfig::default()
    }
}

/// The cache policy of route `r`, with `[cache]` defaults filled in; `None` when the route has
/// no `cache` table.
fn route_cache_policy(config: &Config, r: &RouteConfig) -> Result<Option<RoutePolicy>, BuildError> {
    let any_cached = config.routes.iter().any(|r| r.cache.is_some());
    if !any_cached && r.invalidate_tags_on_write.is_empty() {
        return Ok(None);
    }
    // Routes without a `cache` table get a disabled policy: their writes still invalidate.
    let rc = r.cache.clone().unwrap_or_default();
    let defaults = &config.cache;
    let header = |name: &str| parse_header_name(name).map_err(BuildError::Config);
    let mut policy = RoutePolicy::new(r.name.get_ref());
    policy.enabled = r.cache.is_some();
    policy.ttl = rc.ttl.or(defaults.default_ttl).map(|t| t.0);
    policy.ttl_override = rc.ttl_override;
    policy.refresh_ahead = *rc
        .refresh_ahead
        .as_ref()
        .unwrap_or(&defaults.refresh_ahead)
        .get_ref();
    policy.stale_while_revalidate = rc
        .stale_while_revalidate
        .unwrap_or(defaults.stale_while_revalidate)
        .0;
    policy.stale_if_error = rc.stale_if_error.unwrap_or(defaults.stale_if_error).0;
    policy.per_consumer = rc.per_consumer;
    policy.etag = rc.etag;
    policy.graphql = rc.graphql;
    policy.compress = rc.compress.then(|| {
        let default = portcullis_cache::compress::Compression::default();
        portcullis_cache::compress::Compression {
            min_size: defaults.compress_min_size.0,
            content_types: defaults
                .compress_types
                .as_ref()
                .map_or(default.content_types, |t| {
                    t.iter().map(|t| t.to_ascii_lowercase()).collect()
                }),
        }
    });
    policy.key = KeyParts {
        ignore_query: QueryIgnore::new(&rc.ignore_query),
        headers: rc
            .key_headers
            .iter()
            .map(|h| header(h.get_ref()))
            .collect::<Result<_, _>>()?,
        cookies: rc.key_cookies.clone(),
    };
    if r.versioning.is_some() {
        // The resolved API version (see crate::version): v1 and v2 never share an entry.
        policy.key.headers.push(crate::version::VERSION_KEY);
    }
    policy.bypass_cookies = rc
        .bypass_cookies
        .clone()
        .unwrap_or_else(|| defaults.bypass_cookies.clone());
    policy.tags = rc.tags.iter().map(|t| Arc::from(t.as_str())).collect();
    policy.invalidate_tags_on_write = r
        .invalidate_tags_on_write
        .iter()
        .map(|t| Arc::from(t.as_str()))
        .collect();
    policy.tag_header = Some(header(defaults.tag_header.get_ref())?);
    Ok(Some(policy))
}

/// A gateway with an open listener.
#[derive(Debug)]
pub struct BoundGateway {
    gateway: Gateway,
    listener: TcpListener,
    local_addr: SocketAddr,
}

impl BoundGateway {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The handle that reloads the gateway and reads its current state (for the admin
    /// listener and reload triggers).
    pub fn handle(&self) -> GatewayHandle {
        self.gateway.handle.clone()
    }

    /// A duplicate of the listening socket, to hand over to a new process.
    pub fn listener_fd(&self) -> std::io::Result<std::os::fd::OwnedFd> {
        use std::os::fd::AsFd;
        self.listener.as_fd().try_clone_to_owned()
    }

    /// Whether the listener speaks TLS.
    pub fn is_tls(&self) -> bool {
        self.gateway.tls.is_some()
    }

    /// Serves until `shutdown` resolves, then stops accepting and drains in-flight requests for
    /// at most `server.drain_timeout`.
    pub async fn serve(self, shutdown: impl std::future::Future<Output = ()>) {
        let g = self.gateway;
        // Snapshots for the rolling statistics of the admin API.
        let history = Arc::clone(g.handle.current().metrics().history());
        let ticker = tokio::spawn(async move {
            let mut every = tokio::time::interval(portcullis_observe::TICK);
            loop {
                every.tick().await;
                history.tick(std::time::Instant::now());
            }
        });
        let evaluator = tokio::spawn(crate::alerts::evaluate_forever(
            g.handle.clone(),
            g.evaluate_every,
        ));
        let warming = g
            .handle
            .current()
            .config()
            .cache
            .warm
            .clone()
            .filter(|w| w.on_start && !w.urls.is_empty())
            .map(|w| {
                let handle = g.handle.clone();
                tokio::spawn(async move {
                    let urls: Vec<String> = w.urls.iter().map(|u| u.get_ref().clone()).collect();
                    crate::warm(&handle, &urls, *w.concurrency.get_ref())
                        .await
                        .log("start-up");
                })
            });
        let handle = g.handle.clone();
        server::serve(self.listener, g.tls, g.handle, g.settings, shutdown).await;
        // The access log's writer thread dies with the process: write out what is queued.
        if let Some(log) = handle.current().observe.access_log.clone() {
            let flushed =
                tokio::task::spawn_blocking(move || log.flush(std::time::Duration::from_secs(2)))
                    .await;
            if !matches!(flushed, Ok(true)) {
                tracing::warn!("the access log could not be flushed within 2 s at shutdown");
            }
        }
        ticker.abort();
        evaluator.abort();
        if let Some(w) = warming {
            w.abort();
        }
    }
}
