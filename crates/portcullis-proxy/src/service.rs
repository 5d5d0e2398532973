//! The proxy as a `tower::Service`: route, pick a target, rewrite, forward, stream back.
//!
//! Errors never escape as `Err`: each becomes the contract's JSON response here, with the
//! request id, so every layer above sees a plain `Response`.

use std::{
    borrow::Cow,
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use arc_swap::Guard;
use bytes::Bytes;
use http::{
    HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header,
    uri::{Authority, PathAndQuery, Scheme},
};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use portcullis_auth::{Decoration, LimitedBody, Overflow, ResolvedVersion, TemplateVars};
use portcullis_config::Protocol;
use portcullis_http::{
    Body, BoxError, ConsumerId, RequestId, body,
    headers::{X_REQUEST_ID, first_value},
};
use portcullis_observe::{Metrics, StatusClass, TRACEPARENT, TraceContext, UpstreamOutcome};
use portcullis_resilience::Ticket;
use tower::retry::budget::Budget as _;
use tracing::{debug, warn};

use portcullis_cache::{Cache, Fetch, RequestTarget, RoutePolicy, serve::is_write};

use portcullis_limit::{Caller, Decision};

use crate::{
    balance::InFlight,
    body::{GuardedBody, UpstreamBody},
    breaker::NamedBreaker,
    error::ProxyError,
    handle::GatewayHandle,
    headers::{TrustedProxies, Via, append_via, is_upgrade_request, remove_hop_by_hop},
    limit::RouteLimit,
    metrics::{Measure, Observe, RequestBytes, UpstreamTiming},
    path,
    pool::SendError,
    route::Route,
    router::{Lookup, Router},
    upstream::Upstream,
    upstream_head::HeadRewrite,
    watchdog::Progress,
};

/// What the proxy knows of the connection a request came on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The peer's address (a client or a proxy in front of us).
    pub peer: SocketAddr,
    /// Whether the connection is TLS.
    pub https: bool,
    /// The peer's IP as a header value, built once per connection.
    peer_value: HeaderValue,
}

impl ConnInfo {
    /// Describes a connection from `peer`.
    pub fn new(peer: SocketAddr, https: bool) -> Self {
        Self {
            peer,
            https,
            peer_value: crate::headers::peer_header_value(peer.ip()),
        }
    }
}

/// State shared by every connection: routes, trusted proxies, the `Via` name, the cache.
#[derive(Debug)]
pub struct Shared {
    pub(crate) router: Router<Arc<Route>>,
    pub(crate) trusted: TrustedProxies,
    pub(crate) via: Via,
    pub(crate) cache: Cache,
    pub(crate) observe: Observe,
    /// The request id header (`server.request_id_header`).
    pub(crate) request_id_header: HeaderName,
    /// Send `traceparent` upstream (`server.trace_context`).
    pub(crate) trace_context: bool,
    /// Routes' objectives.
    pub(crate) slos: Vec<portcullis_observe::RouteSlo>,
    /// `server.max_in_flight` (0: no limit).
    pub(crate) max_in_flight: u64,
    /// Every route, in config order (for inspection).
    pub(crate) routes: Vec<Arc<Route>>,
    /// The configuration this state was built from (for inspection).
    pub(crate) config: Arc<portcullis_config::Config>,
    /// Every upstream, by name (for inspection).
    pub(crate) upstreams: Vec<Arc<crate::Upstream>>,
    /// The Redis handle, when `[redis]` is configured.
    pub(crate) redis: Option<portcullis_redis::Redis>,
    /// Consumers and credentials (kept for the next reload's JWK Set cache).
    pub(crate) auth: Arc<portcullis_auth::Authenticator>,
}

impl Shared {
    /// The response cache (for stats and purges).
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// The metrics registry (for the admin listener's `/metrics`).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.observe.base.metrics
    }

    /// Requests being served now.
    pub fn in_flight(&self) -> i64 {
        self.observe.base.in_flight.get()
    }

    /// Time since the gateway was built.
    pub fn uptime(&self) -> std::time::Duration {
        self.observe.base.started.elapsed()
    }

    /// Whether shutdown has begun (readiness is then 503).
    pub fn is_draining(&self) -> bool {
        self.observe
            .base
            .draining
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Marks the gateway as draining: called when shutdown begins.
    pub fn set_draining(&self) {
        self.observe
            .base
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// The configuration in force (validated, defaults filled in).
    pub fn config(&self) -> &portcullis_config::Config {
        &self.config
    }

    /// Why the gateway is not ready, beyond draining: required upstreams without a healthy
    /// target.
    pub fn unready_reasons(&self) -> Vec<String> {
        self.upstreams
            .iter()
            .filter(|u| u.required_and_down())
            .map(|u| format!("upstream {:?} has no healthy target", &*u.name))
            .collect()
    }

    /// Why the gateway serves in a degraded mode while still ready: Redis unavailable (the
    /// cache keeps to memory, limits fall back to local shares). Every instance shares the
    /// same Redis, so this never takes an instance out of a load balancer.
    pub fn degraded_reasons(&self) -> Vec<String> {
        match &self.redis {
            Some(r) if !r.health().is_up() => vec![format!(
                "redis {} is {}; using local fallbacks",
                r.describe(),
                r.health().state().as_str()
            )],
            _ => Vec::new(),
        }
    }

    /// The Redis servers (without credentials) and the breaker's state, when configured.
    pub fn redis_status(&self) -> Option<(&str, &'static str)> {
        self.redis
            .as_ref()
            .map(|r| (r.describe(), r.health().state().as_str()))
    }

    /// SLO alerts firing now.
    pub fn alerts(&self) -> Vec<portcullis_observe::Alert> {
        self.observe.base.alerts.active()
    }

    /// Every route, in config order.
    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }

    /// Every upstream, sorted by name.
    pub fn upstreams(&self) -> &[Arc<crate::Upstream>] {
        &self.upstreams
    }
}

/// The proxy service for one connection.
#[derive(Debug, Clone)]
pub struct ProxyService {
    handle: GatewayHandle,
    conn: ConnInfo,
    progress: Option<Arc<Progress>>,
}

impl ProxyService {
    /// A service for requests arriving on `conn`; each request uses the gateway's state as of
    /// its start.
    pub fn new(handle: GatewayHandle, conn: ConnInfo) -> Self {
        Self {
            handle,
            conn,
            progress: None,
        }
    }

    /// Reports each request to the connection's slow-client watchdog.
    pub(crate) fn watched(mut self, progress: Arc<Progress>) -> Self {
        self.progress = Some(progress);
        self
    }
}

/// The future of one request's response: boxed, so every service's future has one type.
pub(crate) type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

impl<B> tower::Service<Request<B>> for ProxyService
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        self.serve(req)
    }
}

/// hyper calls the service itself, by reference: hyper-util's tower adapter would clone the
/// service (its `Arc`s) for each request, wrap the call in a `Oneshot` and copy it once more.
impl hyper::service::Service<Request<hyper::body::Incoming>> for ProxyService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn call(&self, req: Request<hyper::body::Incoming>) -> Self::Future {
        self.serve(req)
    }
}

impl ProxyService {
    /// Answers `req`: routing, and answering from the cache, here and now; forwarding in the
    /// returned future.
    fn serve<B>(&self, req: Request<B>) -> ResponseFuture
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        if let Some(progress) = &self.progress {
            progress.request();
        }
        let shared = self.handle.load();
        let request_id = first_value(req.headers(), &shared.request_id_header)
            .and_then(RequestId::from_header)
            .unwrap_or_else(RequestId::generate);
        // While draining, HTTP/1 clients are told to reconnect (to a new process, after a
        // hand-over) rather than have their idle connection closed under them.
        let close = req.version() < Version::HTTP_2 && shared.is_draining();
        let mut measure = Measure::start(&shared.observe, &req, &request_id, || {
            shared.trusted.client_ip(self.conn.peer.ip(), req.headers())
        });
        // Routing, and answering from the cache, happen here, synchronously: a hit or a
        // routing error never builds (or copies) the forwarding future.
        let routed = if shared.max_in_flight > 0
            && u64::try_from(shared.observe.base.in_flight.get()).unwrap_or(0)
                > shared.max_in_flight
        {
            // Load shedding: refuse at once rather than queue up and collapse.
            Routed::Error(ProxyError::Overloaded(
                "gateway at its limit of requests in flight",
            ))
        } else {
            route(&shared, &self.conn, &req, &request_id, &mut measure)
        };
        let next = match routed {
            Routed::Answer(response) => Ok(response),
            Routed::Error(e) => Err(e),
            Routed::Forward(route, wants_upgrade, normalized, grant, limiting, version) => {
                let mut overflow = Overflow::default();
                let mut req = req.map(|body| {
                    let (body, o) = LimitedBody::new(body, route.security.body_limit());
                    overflow = o;
                    RequestBytes::new(body, &route.metrics)
                });
                crate::version::mark(&route, version, &mut req);
                let (pending, mut decoration) = if grant.is_pending() {
                    (Some(grant), Decoration::default())
                } else {
                    let decoration = grant.apply(&mut req);
                    (None, decoration)
                };
                if let Some(path) = normalized {
                    req.extensions_mut().insert(path);
                }
                if let Some(deadline) = route.deadline {
                    req.extensions_mut()
                        .insert(RequestDeadline(Instant::now() + deadline));
                }
                let (shared, conn) = (Guard::into_inner(shared), self.conn.clone());
                let busy = self.progress.as_ref().map(Progress::in_flight);
                return Box::pin(async move {
                    let _busy = busy;
                    let mut consumer = None;
                    let mut allowed_by = None;
                    let settled = match pending {
                        None => Ok(None),
                        // Boxed for the same reason as the limit's decision below.
                        Some(grant) => {
                            Box::pin(settle(&route, grant, &mut req, &mut measure)).await
                        }
                    };
                    let result = match settled {
                        Ok(settled) => {
                            decoration = settled.unwrap_or(decoration);
                            if route.security.has_transforms() {
                                // Known now, for the transforms of whatever answers (a 429 too).
                                consumer = req.extensions().get::<ConsumerId>().cloned();
                            }
                            // Boxed, and only when deferred: its future (a Redis round trip)
                            // would otherwise make every request's future larger to copy.
                            let limited = match limiting {
                                Limiting::None => LimitOutcome::Go(None),
                                Limiting::Decided(d) => LimitOutcome::Go(Some(d)),
                                Limiting::Deferred(hit_after) => {
                                    Box::pin(decide_limit(
                                        &shared,
                                        &conn,
                                        &route,
                                        &mut req,
                                        &request_id,
                                        hit_after,
                                    ))
                                    .await
                                }
                            };
                            match limited {
                                LimitOutcome::Refused(response) | LimitOutcome::Hit(response) => {
                                    Ok(response)
                                }
                                LimitOutcome::Go(decision) => {
                                    allowed_by = decision;
                                    if route.security.has_transforms() {
                                        let vars =
                                            template_vars(&route, &request_id, consumer.as_ref());
                                        route.security.transform_request(&mut req, &vars);
                                    }
                                    if let Some(policy) =
                                        through_cache(&route, wants_upgrade, req.method())
                                    {
                                        // Boxed so the (large) cache future is not part of
                                        // every request's future.
                                        Ok(Box::pin(forward_cached(
                                            &shared,
                                            &conn,
                                            &route,
                                            policy,
                                            req,
                                            &request_id,
                                        ))
                                        .await)
                                    } else {
                                        // Awaited here, not inside a helper: each level of
                                        // future is copied whole as it is built.
                                        let (parts, body) = req.into_parts();
                                        send_upstream(
                                            &shared,
                                            &conn,
                                            &route,
                                            parts,
                                            body,
                                            &request_id,
                                            wants_upgrade,
                                        )
                                        .await
                                        .map(
                                            |(response, timing)| {
                                                *measure.upstream_slot() = timing;
                                                response
                                            },
                                        )
                                    }
                                }
                            }
                        }
                        Err(e) => Err(e),
                    };
                    // A body cut off at the limit answers 413, whatever became of the request.
                    let result = match overflow.rejection() {
                        Some(too_large) => Err(ProxyError::Denied(too_large)),
                        None => result,
                    };
                    let mut response = finish(result, &request_id, &shared.request_id_header);
                    if let Some(fallback) = &route.fallback {
                        response = fallback.replace(response, &shared.request_id_header);
                    }
                    // The limit's headers on whatever answers an allowed request, errors too.
                    if let (Some(limit), Some(decision)) = (&route.limit, &allowed_by) {
                        limit.annotate(decision, response.headers_mut());
                    }
                    route.security.decorate(&decoration, &mut response);
                    crate::version::decorate(&route, version, response.headers_mut());
                    if route.security.has_transforms() {
                        let vars = template_vars(&route, &request_id, consumer.as_ref());
                        route.security.transform_response(&mut response, &vars);
                    }
                    Ok(measure.finish(close_if(close, response)))
                });
            }
        };
        let response = finish(next, &request_id, &shared.request_id_header);
        Box::pin(std::future::ready(Ok(
            measure.finish(close_if(close, response))
        )))
    }
}

/// What a route's header templates may name.
fn template_vars<'a>(
    route: &'a Route,
    request_id: &'a RequestId,
    consumer: Option<&'a ConsumerId>,
) -> TemplateVars<'a> {
    TemplateVars {
        request_id: request_id.as_str(),
        consumer_id: consumer.map(|c| &*c.0),
        upstream: &route.upstream.name,
        route: &route.name,
    }
}

/// Decides a request whose JWT waits for a JWK Set refresh, then applies the grant.
async fn settle<B>(
    route: &Route,
    grant: portcullis_auth::Grant,
    req: &mut Request<B>,
    measure: &mut Measure,
) -> Result<Option<Decoration>, ProxyError> {
    let grant = grant
        .settle(&route.security, req.headers(), req.uri())
        .await
        .map_err(ProxyError::Denied)?;
    if let Some(consumer) = grant.consumer() {
        measure.consumer(&consumer.id.0);
    }
    Ok(Some(grant.apply(req)))
}

/// The error body for failures, and the request id on every response.
fn finish(
    result: Result<Response<Body>, ProxyError>,
    request_id: &RequestId,
    header: &HeaderName,
) -> Response<Body> {
    let mut response = match result {
        Ok(response) => response,
        Err(e) => e.into_response(request_id),
    };
    let headers = response.headers_mut();
    if header != X_REQUEST_ID {
        // The error body's renderer names the default header.
        headers.remove(X_REQUEST_ID);
    }
    headers.insert(header.clone(), request_id.to_header_value());
    response
}

/// Adds `Connection: close` when `close` (hyper then closes the connection after it), except
/// to a protocol switch.
fn close_if(close: bool, mut response: Response<Body>) -> Response<Body> {
    if close && response.status() != StatusCode::SWITCHING_PROTOCOLS {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// What routing decided.
enum Routed {
    /// Answered already (a fresh cache hit).
    Answer(Response<Body>),
    /// Refused (no route, method, CONNECT).
    Error(ProxyError),
    /// Goes on to `forward` with this route; whether it asks for a protocol upgrade; the
    /// normalized path when normalization changed it; what the route's security lets through.
    /// The rate limit's state. The API version.
    Forward(
        Arc<Route>,
        bool,
        Option<NormalizedPath>,
        portcullis_auth::Grant,
        Limiting,
        Option<ResolvedVersion>,
    ),
}

/// Where a forwarded request stands with its route's rate limit.
enum Limiting {
    /// No limit applies (none configured, or exempt).
    None,
    /// Allowed already (decided locally); its headers go on the response.
    Decided(Decision),
    /// Decided in the request's future: on Redis, or once a pending credential is settled (the
    /// consumer, hence the key and tier, is known only then). `true` when a cache hit may answer
    /// after an allowing decision (cache hits count).
    Deferred(bool),
}

/// What the deferred rate-limit decision says.
enum LimitOutcome {
    /// Refused: the 429.
    Refused(Response<Body>),
    /// Allowed, and the cache answered.
    Hit(Response<Body>),
    /// Allowed (or not limited): forward, adding the decision's headers.
    Go(Option<Decision>),
}

/// Decides a deferred rate limit (`hit_after`: a cache hit may answer an allowed request). The
/// request carries its consumer extensions by now.
async fn decide_limit<B>(
    shared: &Shared,
    conn: &ConnInfo,
    route: &Route,
    req: &mut Request<B>,
    request_id: &RequestId,
    hit_after: bool,
) -> LimitOutcome {
    let Some(limit) = &route.limit else {
        return LimitOutcome::Go(None);
    };
    let ip = shared.trusted.client_ip(conn.peer.ip(), req.headers());
    let Some(pending) = limit.limiter.prepare(req, Caller::of(req, ip)) else {
        return LimitOutcome::Go(None);
    };
    let Some(decision) = limit.limiter.decide(&pending).await else {
        return LimitOutcome::Go(None);
    };
    if !decision.verdict.allowed {
        return LimitOutcome::Refused(refusal(limit, &decision, request_id));
    }
    if hit_after
        && let Some(mut hit) = fresh_hit(
            shared,
            conn,
            route,
            &*req,
            request_host(req.uri(), req.headers()),
            routed_path_in(req.extensions(), req.uri()),
            None,
        )
    {
        limit.annotate(&decision, hit.headers_mut());
        return LimitOutcome::Hit(hit);
    }
    LimitOutcome::Go(Some(decision))
}

/// The 429 of a refused request, with its rate-limit headers.
fn refusal(limit: &RouteLimit, decision: &Decision, request_id: &RequestId) -> Response<Body> {
    let mut response = ProxyError::RateLimited.into_response(request_id);
    limit.annotate(decision, response.headers_mut());
    response
}

/// A fresh cache hit for `req` on `route`, if the route caches and has one. `version`: the API
/// version of a request not yet marked with it (see `crate::version::mark`).
fn fresh_hit<B>(
    shared: &Shared,
    conn: &ConnInfo,
    route: &Route,
    req: &Request<B>,
    host: Option<&str>,
    path: &str,
    version: Option<ResolvedVersion>,
) -> Option<Response<Body>> {
    let policy = route.cache.as_ref()?;
    let target = RequestTarget {
        scheme: scheme(conn),
        host: host.unwrap_or(""),
        path,
    };
    let headers = crate::version::keyed_headers(route, version, req.headers());
    shared
        .cache
        .serve_fresh(policy, target, req.method(), req.uri(), &headers)
}

/// The request's path after dot-segment removal, carried as a request extension only when it
/// differs from the URI's path (rare), so the hot path normalizes once and allocates nothing.
#[derive(Debug, Clone)]
struct NormalizedPath(String);

/// When the route's `deadline` runs out for this request.
#[derive(Debug, Clone, Copy)]
struct RequestDeadline(Instant);

/// The normalized path of a request routed by `route`: the extension if normalization changed
/// the path, else the URI's own path.
fn routed_path(parts: &http::request::Parts) -> &str {
    routed_path_in(&parts.extensions, &parts.uri)
}

/// [`routed_path`] from a request's extensions and URI (for a whole `Request`).
fn routed_path_in<'a>(extensions: &'a http::Extensions, uri: &'a Uri) -> &'a str {
    extensions
        .get::<NormalizedPath>()
        .map_or(uri.path(), |p| p.0.as_str())
}

fn route<B>(
    shared: &Shared,
    conn: &ConnInfo,
    req: &Request<B>,
    request_id: &RequestId,
    measure: &mut Measure,
) -> Routed {
    if req.method() == Method::CONNECT {
        return Routed::Error(ProxyError::MethodNotAllowed(Vec::new()));
    }
    let wants_upgrade = is_upgrade_request(req.version(), req.headers());
    let path = path::normalize(req.uri().path());
    let host = request_host(req.uri(), req.headers());
    let mut lookup = shared.router.lookup(host, &path, req.method());
    // A CORS preflight goes to the route of the method it asks about, when that route answers
    // CORS itself (otherwise it is routed as any OPTIONS request, e.g. to an upstream that
    // handles CORS).
    if let Some(asked) = portcullis_auth::routing_method(req)
        && let Lookup::Found(r) = shared.router.lookup(host, &path, &asked)
        && r.security.has_cors()
    {
        lookup = Lookup::Found(r);
    }
    let route = match lookup {
        Lookup::Found(route) => route,
        Lookup::MethodNotAllowed(allow) => {
            return Routed::Error(ProxyError::MethodNotAllowed(allow));
        }
        Lookup::NotFound => return Routed::Error(ProxyError::NoRoute),
    };
    measure.routed(&route.metrics, route.cache.is_some());
    // Before the cache: a cached response never bypasses authentication.
    let client_ip = || shared.trusted.client_ip(conn.peer.ip(), req.headers());
    let grant = match route.security.check(req, client_ip) {
        Ok(grant) => grant,
        Err(rejection) => {
            // Rendered here so it carries the route's CORS and security headers: a browser app
            // can then read a 401/403 instead of seeing an opaque CORS failure.
            let response = rejection.into_response(Some(request_id));
            return own_answer(route, req.headers(), request_id, None, response);
        }
    };
    if let Some(consumer) = grant.consumer() {
        measure.consumer(&consumer.id.0);
    }
    // The API version, after credentials and before the limit and the cache: 400 if unknown.
    let version = match crate::version::resolve(route, req, &path) {
        Ok(version) => version,
        Err(rejection) => {
            let response = rejection.into_response(Some(request_id));
            let consumer = grant.consumer().map(|c| &c.id);
            return own_answer(route, req.headers(), request_id, consumer, response);
        }
    };
    // A hit answered here carries the route's security headers and response transforms.
    let answer_hit = |mut hit: Response<Body>| {
        route.security.decorate(&grant.decoration(), &mut hit);
        crate::version::decorate(route, version, hit.headers_mut());
        if route.security.has_transforms() {
            let consumer = grant.consumer().map(|c| c.id.clone());
            let vars = template_vars(route, request_id, consumer.as_ref());
            route.security.transform_response(&mut hit, &vars);
        }
        Routed::Answer(hit)
    };
    let cached = route.cache.is_some() && !wants_upgrade && !grant.is_pending();
    let limit = route.limit.as_ref();
    // Hits that do not count are answered before the limit is consulted.
    if cached
        && limit.is_none_or(|l| !l.count_cache_hits)
        && let Some(hit) = fresh_hit(shared, conn, route, req, host, &path, version)
    {
        return answer_hit(hit);
    }
    let mut limiting = Limiting::None;
    if let Some(l) = limit {
        if l.limiter.is_shared() || grant.is_pending() {
            limiting = Limiting::Deferred(cached && l.count_cache_hits);
        } else {
            let consumer = grant.consumer();
            let caller = Caller {
                ip: client_ip(),
                consumer: consumer.map(|c| &*c.id.0),
                tier: consumer.and_then(|c| c.tier.as_ref()).map(|t| &*t.0),
            };
            if let Some(pending) = l.limiter.prepare(req, caller)
                && let Some(decision) = l.limiter.decide_local(&pending)
            {
                if !decision.verdict.allowed {
                    let mut response = refusal(l, &decision, request_id);
                    crate::version::decorate(route, version, response.headers_mut());
                    let consumer = grant.consumer().map(|c| &c.id);
                    return own_answer(route, req.headers(), request_id, consumer, response);
                }
                if cached
                    && l.count_cache_hits
                    && let Some(mut hit) = fresh_hit(shared, conn, route, req, host, &path, version)
                {
                    l.annotate(&decision, hit.headers_mut());
                    return answer_hit(hit);
                }
                limiting = Limiting::Decided(decision);
            }
        }
    }
    let normalized = match path {
        Cow::Owned(p) => Some(NormalizedPath(p)),
        Cow::Borrowed(_) => None,
    };
    Routed::Forward(
        Arc::clone(route),
        wants_upgrade,
        normalized,
        grant,
        limiting,
        version,
    )
}

/// A response the gateway made itself on `route` (a refusal, an unknown version, a 429): the
/// route's CORS and security headers and its response transforms, as on every other response
/// of the route.
fn own_answer(
    route: &Route,
    request_headers: &http::HeaderMap,
    request_id: &RequestId,
    consumer: Option<&ConsumerId>,
    mut response: Response<Body>,
) -> Routed {
    route
        .security
        .decorate_answer(request_headers, &mut response);
    if route.security.has_transforms() {
        let vars = template_vars(route, request_id, consumer);
        route.security.transform_response(&mut response, &vars);
    }
    Routed::Answer(response)
}

fn scheme(conn: &ConnInfo) -> &'static str {
    if conn.https { "https" } else { "http" }
}

/// The route's cache policy when a routed request goes through the cache (which sees writes
/// too, to invalidate); `None` when it goes straight upstream.
fn through_cache<'r>(
    route: &'r Route,
    wants_upgrade: bool,
    method: &Method,
) -> Option<&'r Arc<RoutePolicy>> {
    route
        .cache
        .as_ref()
        .filter(|policy| !wants_upgrade && (policy.enabled || is_write(method)))
}

/// Forwards a routed request through the route's cache, under `policy` ([`through_cache`]).
async fn forward_cached<B>(
    shared: &Arc<Shared>,
    conn: &ConnInfo,
    route: &Arc<Route>,
    policy: &Arc<RoutePolicy>,
    req: Request<B>,
    request_id: &RequestId,
) -> Response<Body>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let (mut parts, body) = req.into_parts();
    let host = request_host(&parts.uri, &parts.headers)
        .unwrap_or("")
        .to_owned();
    let normalized = parts.extensions.get::<NormalizedPath>().cloned();
    let version = parts.extensions.get::<ResolvedVersion>().copied();
    let deadline = parts.extensions.get::<RequestDeadline>().copied();
    let path = routed_path(&parts).to_owned();
    parts.extensions.insert(request_id.clone());
    let req = Request::from_parts(parts, body::boxed(body));
    let fetch = UpstreamFetch {
        shared: Arc::clone(shared),
        conn: conn.clone(),
        route: Arc::clone(route),
        request_id: request_id.clone(),
        normalized,
        version,
        deadline,
    };
    let target = RequestTarget {
        scheme: scheme(conn),
        host: &host,
        path: &path,
    };
    shared.cache.serve(policy, target, req, fetch).await
}

/// The cache's way to the origin: the rest of the proxy path for one route.
#[derive(Debug, Clone)]
struct UpstreamFetch {
    shared: Arc<Shared>,
    conn: ConnInfo,
    route: Arc<Route>,
    request_id: RequestId,
    /// Carried into every request the cache sends (refreshes are built afresh).
    normalized: Option<NormalizedPath>,
    /// The API version, carried likewise.
    version: Option<ResolvedVersion>,
    /// The request's deadline, carried likewise (a background refresh started for the request
    /// keeps it too).
    deadline: Option<RequestDeadline>,
}

impl Fetch for UpstreamFetch {
    fn fetch(&self, req: Request<Body>) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>> {
        let this = self.clone();
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            if let Some(path) = &this.normalized {
                parts.extensions.insert(path.clone());
            }
            if let Some(version) = this.version {
                parts.extensions.insert(version);
            }
            if let Some(deadline) = this.deadline {
                parts.extensions.insert(deadline);
            }
            let id = &this.request_id;
            match send_upstream(
                &this.shared,
                &this.conn,
                &this.route,
                parts,
                body,
                id,
                false,
            )
            .await
            {
                // Through the cache the timing rides on the response, to the request that
                // asked for it (or nowhere, for a background refresh).
                Ok((mut response, timing)) => {
                    if let Some(timing) = timing {
                        response.extensions_mut().insert(timing);
                    }
                    response
                }
                Err(e) => e.into_response(id),
            }
        })
    }
}

/// Rewrites the request for `route`'s upstream, sends it, and streams the response back.
async fn send_upstream<B>(
    shared: &Shared,
    conn: &ConnInfo,
    route: &Route,
    mut parts: http::request::Parts,
    body: B,
    request_id: &RequestId,
    wants_upgrade: bool,
) -> Result<(Response<Body>, Option<UpstreamTiming>), ProxyError>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let version = parts.extensions.remove::<ResolvedVersion>();
    if let Some(v) = version {
        crate::version::strip(route, v, &mut parts);
    }
    let (upstream, timeout) = route.target_for(version);
    // Routing normalized the path already; reuse it rather than scanning again.
    let path = match parts.extensions.remove::<NormalizedPath>() {
        Some(NormalizedPath(p)) => Cow::Owned(p),
        None => Cow::Borrowed(parts.uri.path()),
    };
    let client_ip = shared.trusted.client_ip(conn.peer.ip(), &parts.headers);
    let deadline = parts.extensions.remove::<RequestDeadline>().map(|d| d.0);
    let past_deadline = || ProxyError::Deadline {
        upstream: Arc::clone(&upstream.name),
    };
    let mut permit = match deadline {
        None => upstream.admit().await?,
        Some(at) => tokio::time::timeout_at(at.into(), upstream.admit())
            .await
            .map_err(|_| past_deadline())??,
    };
    let Some((mut target, mut guard)) = upstream.pick(&parts.headers, client_ip) else {
        return Err(ProxyError::NoHealthyTarget {
            upstream: Arc::clone(&upstream.name),
        });
    };
    // Retries: idempotent requests without a body only, so nothing needs buffering and a
    // repeat is safe; every request fills the retry budget.
    if let Some(r) = &upstream.retry {
        r.budget.deposit();
    }
    let retry = upstream
        .retry
        .as_ref()
        .filter(|_| !wants_upgrade && is_idempotent(&parts.method) && body.is_end_stream());

    let client_upgrade = if wants_upgrade {
        parts.extensions.remove::<OnUpgrade>()
    } else {
        None
    };
    let original_host = first_value(&parts.headers, &header::HOST)
        .cloned()
        .or_else(|| {
            parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });

    let uri = upstream_uri(
        &parts.uri,
        &path,
        route,
        version,
        upstream.protocol,
        &target.authority,
    )?;
    // A retry keeps the client's own headers: their values are shared with the request hyper
    // parsed, so the copy is a reference count each.
    // Boxed: only with retries configured, and it would otherwise add its size to every
    // request's future (which is copied as it is built).
    let replay = retry.map(|_| {
        Box::new(Replay {
            method: parts.method.clone(),
            client_headers: parts.headers.clone(),
            original_uri: parts.uri.clone(),
            // Kept only when normalization changed it (else it is the URI's).
            path: match &path {
                Cow::Owned(p) => Some(p.clone()),
                Cow::Borrowed(_) => None,
            },
            api_version: version,
        })
    });
    drop(path);
    parts.uri = uri;
    let trace = shared
        .trace_context
        .then(|| TraceContext::continue_or_start(first_value(&parts.headers, &TRACEPARENT)));
    // The head is rewritten as it is sent: straight into the inline client's buffer, or in
    // the header map for hyper's client (see upstream_head.rs).
    let head = HeadRewrite {
        trusted: &shared.trusted,
        via: &shared.via,
        request_id_header: &shared.request_id_header,
        peer: conn.peer.ip(),
        peer_value: &conn.peer_value,
        https: conn.https,
        client_version: parts.version,
        original_host,
        request_id,
        trace,
        preserve_host: route.preserve_host,
        protocol: upstream.protocol,
    };
    let upgrade = client_upgrade.is_some();
    parts.version = head.upstream_version();
    // Asked last, so every path from here reports the outcome (a half-open probe slot is
    // never lost). The route's breaker first; its ticket goes back if the upstream's refuses.
    let breakers = Tickets::admit(route, upstream)?;
    let mut upstream_req = Request::from_parts(parts, body::boxed(body));
    let mut attempt = 1;
    // One reading of the clock per try, for every consumer of its latency.
    let (sent, took) = loop {
        let sent_at = Instant::now();
        // Each try gets the per-try timeout, or what is left of the deadline if less.
        let try_timeout = match deadline {
            None => timeout,
            Some(at) => {
                let left = at.saturating_duration_since(sent_at);
                if left.is_zero() {
                    return Err(past_deadline());
                }
                timeout.min(left)
            }
        };
        let target_head = head.for_target(&target.host_header, upgrade);
        let sent = upstream
            .deadlines
            .timeout(
                sent_at + try_timeout,
                target.pool.send(upstream_req, &target_head),
            )
            .await;
        let outcome = match &sent {
            Ok(Ok((response, _))) => UpstreamOutcome::Status(StatusClass::of(response.status())),
            _ => UpstreamOutcome::Error,
        };
        let took = sent_at.elapsed();
        target.metrics.record(outcome, took);
        upstream.observe_outcome(
            guard.index(),
            !matches!(outcome, UpstreamOutcome::Status(c) if c != StatusClass::ServerError),
        );
        if let (Some(r), Some(replay)) = (retry, &replay) {
            let retryable = match &sent {
                Ok(Ok((response, _))) => r.config.statuses.contains(&response.status().as_u16()),
                _ => true,
            };
            if retryable
                && attempt < r.config.attempts
                && r.budget.withdraw()
                && let Some((next, next_guard)) =
                    upstream.pick_other(&replay.client_headers, client_ip, guard.index())
            {
                // Full jitter: anywhere up to backoff * 2^(attempt - 1).
                let cap = r
                    .config
                    .backoff
                    .0
                    .saturating_mul(1 << (attempt - 1).min(16));
                let pause = cap.mul_f64(fastrand::f64());
                if deadline.is_some_and(|at| Instant::now() + pause >= at) {
                    // No time left for another try: this outcome stands.
                    break (sent, took);
                }
                drop(sent);
                tokio::time::sleep(pause).await;
                debug!(request_id = %request_id, route = %route.name, from = %target.authority,
                       to = %next.authority, attempt = attempt + 1, "retrying");
                attempt += 1;
                target = next;
                guard = next_guard;
                upstream_req = match replay.request_for(target, route, &head) {
                    Ok(request) => request,
                    Err(e) => {
                        breakers.record(true, sent_at.elapsed());
                        return Err(e);
                    }
                };
                continue;
            }
        }
        break (sent, took);
    };
    let failed = !matches!(&sent, Ok(Ok((r, _))) if !r.status().is_server_error());
    breakers.record(failed, took);
    if let Some(p) = &mut permit {
        // The adaptive limit learns from the last try's latency to the head.
        p.record(took, failed);
    }
    let authority = &target.authority;
    let (mut response, lease) = match sent {
        Ok(Ok(exchange)) => exchange,
        Ok(Err(e)) => {
            let err = classify(&e, &upstream.name);
            warn!(request_id = %request_id, route = %route.name, target = %authority,
                  error = %e, "upstream request failed: {err}");
            return Err(err);
        }
        Err(_) if deadline.is_some_and(|at| Instant::now() >= at) => {
            warn!(request_id = %request_id, route = %route.name, target = %authority,
                  attempts = attempt, "upstream did not answer within the route's deadline");
            return Err(past_deadline());
        }
        Err(_) => {
            warn!(request_id = %request_id, route = %route.name, target = %authority,
                  timeout = ?timeout, "upstream timed out");
            return Err(ProxyError::Timeout {
                upstream: Arc::clone(&upstream.name),
            });
        }
    };

    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            warn!(request_id = %request_id, target = %authority, "upstream switched protocols unasked");
            return Err(ProxyError::Upstream {
                upstream: Arc::clone(&upstream.name),
            });
        };
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        tokio::spawn(tunnel(client_upgrade, upstream_upgrade, guard));
        let (mut parts, _) = response.into_parts();
        remove_hop_by_hop(&mut parts.headers, true);
        append_via(&mut parts.headers, parts.version, &shared.via);
        return Ok((Response::from_parts(parts, body::empty()), None));
    }

    let (mut parts, incoming) = response.into_parts();
    let timing = shared
        .observe
        .wants_upstream_timing()
        .then(|| UpstreamTiming {
            elapsed: took,
            target: authority.clone(),
            trace,
        });
    // The inline client never puts hop-by-hop fields in the map; hyper's client passes them on.
    if let UpstreamBody::Left(_) = &incoming {
        remove_hop_by_hop(&mut parts.headers, false);
    }
    append_via(&mut parts.headers, parts.version, &shared.via);
    let response = Response::from_parts(
        parts,
        body::boxed(GuardedBody::new(
            incoming,
            guard,
            lease,
            permit,
            upstream.config.pool.stream_idle_timeout.0,
        )),
    );
    Ok((response, timing))
}

/// The tickets of the route's and the upstream's breakers for one request. Dropped without
/// [`Tickets::record`] (refused before sending, past the deadline, or the client went away and
/// the request's future with it), they are released: a half-open probe slot is never lost.
struct Tickets<'a> {
    /// The route's breaker and ticket, then the upstream's, for those configured.
    held: [Option<(&'a NamedBreaker, Ticket)>; 2],
}

impl<'a> Tickets<'a> {
    /// Asks the route's breaker, then the upstream's; a refusal by the upstream's gives the
    /// route's ticket back (by the drop).
    fn admit(route: &'a Route, upstream: &'a Upstream) -> Result<Self, ProxyError> {
        let mut tickets = Self { held: [None, None] };
        let breakers = [route.breaker.as_deref(), upstream.breaker()];
        for (slot, breaker) in tickets.held.iter_mut().zip(breakers) {
            if let Some(b) = breaker {
                *slot = Some((b, b.admit()?));
            }
        }
        Ok(tickets)
    }

    /// Reports the outcome to both.
    fn record(mut self, failed: bool, elapsed: Duration) {
        for (b, ticket) in self.held.iter_mut().filter_map(Option::take) {
            b.record(ticket, failed, elapsed);
        }
    }
}

impl Drop for Tickets<'_> {
    fn drop(&mut self) {
        for (b, ticket) in self.held.iter_mut().filter_map(Option::take) {
            b.release(ticket);
        }
    }
}

/// What a retry needs to send the request again, to another target.
struct Replay {
    method: Method,
    /// The client's headers.
    client_headers: http::HeaderMap,
    original_uri: Uri,
    /// The normalized path, when it differs from `original_uri`'s.
    path: Option<String>,
    /// The API version (its path rewrite).
    api_version: Option<ResolvedVersion>,
}

impl Replay {
    /// The request for `target`, with an empty body and the client's headers (rewritten as it
    /// is sent).
    fn request_for(
        &self,
        target: &crate::upstream::Target,
        route: &Route,
        head: &HeadRewrite<'_>,
    ) -> Result<Request<Body>, ProxyError> {
        let uri = upstream_uri(
            &self.original_uri,
            self.path.as_deref().unwrap_or(self.original_uri.path()),
            route,
            self.api_version,
            head.protocol,
            &target.authority,
        )?;
        let mut request = Request::new(body::empty());
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = uri;
        *request.version_mut() = head.upstream_version();
        *request.headers_mut() = self.client_headers.clone();
        Ok(request)
    }
}

/// Methods a retry may repeat (RFC 9110 idempotent methods).
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// The request target sent upstream: origin-form (`/path?query`) for HTTP/1.1, absolute for
/// HTTP/2 (which carries scheme and authority as pseudo-headers). When neither normalization nor
/// the route changed the path, the client's path-and-query is reused without copying.
fn upstream_uri(
    original: &Uri,
    normalized: &str,
    route: &Route,
    version: Option<ResolvedVersion>,
    protocol: Protocol,
    authority: &Authority,
) -> Result<Uri, ProxyError> {
    let rewritten = route.rewrite_path_for(normalized, version);
    let unchanged = rewritten.as_ref() == original.path();
    let path_and_query = match (unchanged, original.path_and_query(), original.query()) {
        (true, Some(pq), _) => pq.clone(),
        (_, _, Some(q)) => {
            PathAndQuery::try_from(format!("{rewritten}?{q}")).map_err(bad_target)?
        }
        (_, _, None) => PathAndQuery::try_from(rewritten.as_ref()).map_err(bad_target)?,
    };
    let mut parts = http::uri::Parts::default();
    parts.path_and_query = Some(path_and_query);
    if protocol == Protocol::Http2 {
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(authority.clone());
    }
    Uri::from_parts(parts).map_err(bad_target)
}

fn bad_target<E>(_: E) -> ProxyError {
    ProxyError::BadRequest("request target cannot be forwarded")
}

/// The host the request is for, without port: the URI's authority (HTTP/2, absolute-form)
/// or the `Host` header.
fn request_host<'a>(uri: &'a Uri, headers: &'a http::HeaderMap) -> Option<&'a str> {
    if let Some(host) = uri.host() {
        return Some(host.trim_start_matches('[').trim_end_matches(']'));
    }
    let host = first_value(headers, &header::HOST)?.to_str().ok()?;
    if let Some(v6) = host.strip_prefix('[') {
        return v6.split(']').next();
    }
    Some(match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    })
}

fn classify(e: &SendError, upstream: &Arc<str>) -> ProxyError {
    let upstream = Arc::clone(upstream);
    match e {
        SendError::ConnectTimeout => ProxyError::Timeout { upstream },
        SendError::Connect(_) => ProxyError::Connect { upstream },
        SendError::Http(_) | SendError::H1(_) => ProxyError::Upstream { upstream },
    }
}

/// Copies bytes both ways between an upgraded client and upstream connection until either
/// side closes. The in-flight guard lives as long as the tunnel.
async fn tunnel(client: OnUpgrade, upstream: OnUpgrade, guard: InFlight) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            debug!(error = %e, "upgrade did not complete");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        debug!(error = %e, "upgraded connection ended with an error");
    }
    drop(guard);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_of(r: &Request<()>) -> Option<&str> {
        request_host(r.uri(), r.headers())
    }

    #[test]
    fn host_is_taken_without_port() {
        let r = Request::builder()
            .header("host", "Example.com:8080")
            .body(())
            .unwrap();
        assert_eq!(host_of(&r), Some("Example.com"));
        let r = Request::builder()
            .header("host", "[::1]:8080")
            .body(())
            .unwrap();
        assert_eq!(host_of(&r), Some("::1"));
        let r = Request::builder()
            .uri("http://h2.example/x")
            .header("host", "other")
            .body(())
            .unwrap();
        assert_eq!(host_of(&r), Some("h2.example"));
        let r = Request::builder().body(()).unwrap();
        assert_eq!(host_of(&r), None);
    }
}
