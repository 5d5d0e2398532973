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
use portcullis_observe::{AccessFormat, AccessLog, Metrics, MetricsBuilder, ProcessCollector};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::{
    headers::{TrustedProxies, Via},
    metrics::{CacheCollector, Observe, UNMATCHED_ROUTE},
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
    shared: Arc<Shared>,
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
        let mut metrics = Metrics::builder();
        let upstreams: HashMap<&str, Arc<Upstream>> = config
            .upstreams
            .iter()
            .map(|u| {
                Upstream::from_config(u, &metrics)
                    .map(|up| (u.name.get_ref().as_str(), Arc::new(up)))
                    .map_err(BuildError::Config)
            })
            .collect::<Result<_, _>>()?;
        let cache = Cache::new(cache_config(&config.cache));
        let mut routes = Vec::with_capacity(config.routes.len());
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
            let route = Route {
                name: Arc::from(r.name.get_ref().as_str()),
                timeout: r.timeout.map_or(upstream.timeout, |t| t.0),
                upstream,
                preserve_host: r.preserve_host,
                strip_prefix: r
                    .strip_prefix
                    .as_ref()
                    .map(|p| canonical_prefix(p.get_ref())),
                add_prefix: r.add_prefix.as_ref().map(|p| canonical_prefix(p.get_ref())),
                cache: route_cache_policy(&cache, config, r)?,
                metrics: metrics.route(r.name.get_ref()),
            };
            routes.push((matcher, Arc::new(route)));
        }
        let s = &config.server;
        let trusted = s
            .trusted_proxies
            .iter()
            .map(|p| parse_cidr(p.get_ref()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(BuildError::Config)?;
        let via = Via::new(&s.via).map_err(|e| BuildError::Config(e.to_string()))?;
        let tls = s
            .tls
            .as_ref()
            .map(|t| tls::acceptor(t.cert.get_ref(), t.key.get_ref(), s.http2))
            .transpose()
            .map_err(BuildError::Tls)?;
        let access_log = access_log(config, &metrics)?;
        let unmatched = metrics.route(UNMATCHED_ROUTE);
        let in_flight = metrics.in_flight();
        metrics.register_collector(Box::new(ProcessCollector));
        metrics.register_collector(Box::new(CacheCollector::new(cache.clone())));
        let observe = Observe {
            metrics: Arc::new(metrics.build()),
            unmatched,
            in_flight,
            started: Instant::now(),
            draining: AtomicBool::new(false),
            access_log,
            timing_headers: config.server.timing_headers,
        };
        let mut upstream_list: Vec<Arc<Upstream>> = upstreams.values().cloned().collect();
        upstream_list.sort_by(|a, b| a.name.cmp(&b.name));
        let route_list: Vec<Arc<Route>> = routes.iter().map(|(_, r)| Arc::clone(r)).collect();
        Ok(Self {
            shared: Arc::new(Shared {
                router: Router::new(routes),
                trusted: TrustedProxies::new(trusted),
                via,
                cache,
                observe,
                routes: route_list,
                upstreams: upstream_list,
                request_id_header: parse_header_name(s.request_id_header.get_ref())
                    .map_err(BuildError::Config)?,
                trace_context: s.trace_context,
            }),
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

    /// The shared routing state, for embedding the proxy service in another server.
    pub fn shared(&self) -> Arc<Shared> {
        Arc::clone(&self.shared)
    }
}

/// Starts the access log's writer when `[log] access` is on.
fn access_log(config: &Config, metrics: &MetricsBuilder) -> Result<Option<AccessLog>, BuildError> {
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
        ..portcullis_cache::CacheConfig::default()
    }
}

/// The cache policy of route `r`, with `[cache]` defaults filled in; `None` when the route has
/// no `cache` table.
fn route_cache_policy(
    cache: &Cache,
    config: &Config,
    r: &RouteConfig,
) -> Result<Option<Arc<RoutePolicy>>, BuildError> {
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
    Ok(Some(if policy.enabled {
        cache.register(policy)
    } else {
        Arc::new(policy)
    }))
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

    /// The shared state (routes, cache, metrics), for the admin listener.
    pub fn shared(&self) -> Arc<Shared> {
        Arc::clone(&self.gateway.shared)
    }

    /// Whether the listener speaks TLS.
    pub fn is_tls(&self) -> bool {
        self.gateway.tls.is_some()
    }

    /// Serves until `shutdown` resolves, then stops accepting and drains in-flight requests for
    /// at most `server.drain_timeout`.
    pub async fn serve(self, shutdown: impl std::future::Future<Output = ()>) {
        let g = self.gateway;
        server::serve(self.listener, g.tls, g.shared, g.settings, shutdown).await;
    }
}
