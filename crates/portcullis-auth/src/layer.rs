//! A route's edge security as a tower layer, for any service that speaks `Request<Body>` →
//! `Response<Body>` (an axum router, a hyper service), without the gateway.
//!
//! The gateway asks [`RouteSecurity`] itself, before its cache answers; this layer runs the
//! same steps around an inner service: [`check`](RouteSecurity::check), settle a grant that
//! waits for a JWK Set refresh, [`apply`](crate::Grant::apply) it, call the inner service,
//! then add the route's CORS and security headers and its response transforms.

use std::{
    fmt,
    future::Future,
    net::{IpAddr, Ipv4Addr},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::{HeaderMap, Request, Response};
use portcullis_http::{Body, ClientIp, ConsumerId, RequestId, body};
use tower::{Layer, Service};

use crate::{LimitedBody, Rejection, RouteSecurity, TemplateVars};

/// Puts a [`RouteSecurity`] in front of a service.
///
/// What the service does with a request:
///
/// 1. It takes the client address from the [`ClientIp`] request extension (insert it where
///    connections are accepted; behind proxies, insert the resolved client). It is read only
///    when the route has IP rules; **a route with IP rules refuses (403) a request without
///    it**, rather than guess an address an allow or deny list could misjudge.
/// 2. A refused request is answered here with the contract's JSON error (`401` with
///    `WWW-Authenticate`, `403`, `413`, `414`, `431`), and an allowed CORS preflight with its
///    `204`; either carries the route's CORS and security headers. The inner service is not
///    called.
/// 3. A granted request loses client-sent `X-Consumer-Id`/`X-Consumer-Tier` and (unless
///    configured otherwise) its API key, gains the [`ConsumerId`] and
///    [`ConsumerTier`](crate::ConsumerTier) extensions, and goes through the request header
///    transform; a body limit wraps its body (a body cut off at the limit answers `413`).
/// 4. The inner service's response gets the route's CORS and security headers and the response
///    header transform. Inner errors are passed through untouched.
///
/// The [`RequestId`] extension, when present, names the request in error bodies and
/// `$request_id` templates.
///
/// ```
/// use std::sync::Arc;
/// use portcullis_auth::{AuthMode, AuthOptions, Authenticator, ConsumerSpec, RouteAuth, RouteSecurity, SecurityLayer};
///
/// let auth = Arc::new(Authenticator::new(
///     vec![ConsumerSpec {
///         name: "acme".into(),
///         tier: Some("premium".into()),
///         groups: vec![],
///         api_key_hashes: vec![portcullis_auth::hash_key(b"s3cret-key")],
///     }],
///     AuthOptions::default(),
/// ).unwrap());
/// let security = RouteSecurity::new(auth, RouteAuth { mode: AuthMode::ApiKey, acl: None });
/// let layer = SecurityLayer::new(security).with_route_name("orders");
/// # let _ = layer;
/// ```
#[derive(Debug, Clone)]
pub struct SecurityLayer {
    security: Arc<RouteSecurity>,
    names: Names,
}

/// What `$route` and `$upstream` say in header templates.
#[derive(Debug, Clone)]
struct Names {
    route: Arc<str>,
    upstream: Arc<str>,
}

impl SecurityLayer {
    /// A layer enforcing `security` (a [`RouteSecurity`] or an `Arc` of one, to share it).
    pub fn new(security: impl Into<Arc<RouteSecurity>>) -> Self {
        Self {
            security: security.into(),
            names: Names {
                route: Arc::from(""),
                upstream: Arc::from(""),
            },
        }
    }

    /// The name `$route` stands for in header transforms (empty by default).
    #[must_use]
    pub fn with_route_name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.names.route = name.into();
        self
    }

    /// The name `$upstream` stands for in header transforms (empty by default).
    #[must_use]
    pub fn with_upstream_name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.names.upstream = name.into();
        self
    }
}

impl<S> Layer<S> for SecurityLayer {
    type Service = SecurityService<S>;

    fn layer(&self, inner: S) -> SecurityService<S> {
        SecurityService {
            inner,
            security: Arc::clone(&self.security),
            names: self.names.clone(),
        }
    }
}

/// The service [`SecurityLayer`] builds.
#[derive(Clone)]
pub struct SecurityService<S> {
    inner: S,
    security: Arc<RouteSecurity>,
    names: Names,
}

impl<S> fmt::Debug for SecurityService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecurityService")
            .field("security", &self.security)
            .finish_non_exhaustive()
    }
}

impl<S> Service<Request<Body>> for SecurityService<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        // The service that was polled ready handles this request; a clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        // Boxed outside the async block: naming the inner future's type inside it trips the
        // compiler's higher-ranked `Send` check on `Box<dyn Error>` (rust-lang/rust#102211).
        let call = move |req| -> BoxFuture<S::Error> { Box::pin(inner.call(req)) };
        let (security, names) = (Arc::clone(&self.security), self.names.clone());
        Box::pin(guard(security, names, call, req))
    }
}

/// The future of a layered service (and of the inner call it wraps).
type BoxFuture<E> = Pin<Box<dyn Future<Output = Result<Response<Body>, E>> + Send>>;

/// Checks `req`, calls `inner` with it when granted, and decorates whatever answers.
async fn guard<E>(
    security: Arc<RouteSecurity>,
    names: Names,
    call: impl FnOnce(Request<Body>) -> BoxFuture<E>,
    mut req: Request<Body>,
) -> Result<Response<Body>, E> {
    let request_id = req.extensions().get::<RequestId>().cloned();
    let answer = |rejection: Rejection, headers: &HeaderMap| {
        let mut response = rejection.into_response(request_id.as_ref());
        security.decorate_answer(headers, &mut response);
        transform_response(&security, &names, request_id.as_ref(), None, &mut response);
        response
    };
    let mut ip_missing = false;
    let checked = security.check(&req, || {
        ClientIp::of(&req).unwrap_or_else(|| {
            ip_missing = true;
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        })
    });
    let grant = match checked {
        // Fail closed: without the client's address, IP rules cannot be judged.
        Ok(_) if ip_missing => return Ok(answer(Rejection::IP_DENIED, req.headers())),
        Ok(grant) => grant,
        Err(rejection) => return Ok(answer(rejection, req.headers())),
    };
    let grant = match grant.settle(&security, req.headers(), req.uri()).await {
        Ok(grant) => grant,
        Err(rejection) => return Ok(answer(rejection, req.headers())),
    };
    let decoration = grant.apply(&mut req);
    let consumer = if security.has_transforms() {
        let consumer = req.extensions().get::<ConsumerId>().cloned();
        let vars = template_vars(&names, request_id.as_ref(), consumer.as_ref());
        security.transform_request(&mut req, &vars);
        consumer
    } else {
        None
    };
    let (req, overflow) = match security.body_limit() {
        Some(limit) => {
            let (parts, body) = req.into_parts();
            let (limited, overflow) = LimitedBody::new(body, Some(limit));
            (Request::from_parts(parts, body::boxed(limited)), overflow)
        }
        None => (req, crate::Overflow::default()),
    };
    let mut response = call(req).await?;
    // A body cut off at the limit answers 413, whatever the inner service made of it.
    if let Some(too_large) = overflow.rejection() {
        response = too_large.into_response(request_id.as_ref());
    }
    security.decorate(&decoration, &mut response);
    transform_response(
        &security,
        &names,
        request_id.as_ref(),
        consumer.as_ref(),
        &mut response,
    );
    Ok(response)
}

fn template_vars<'a>(
    names: &'a Names,
    request_id: Option<&'a RequestId>,
    consumer: Option<&'a ConsumerId>,
) -> TemplateVars<'a> {
    TemplateVars {
        request_id: request_id.map_or("", RequestId::as_str),
        consumer_id: consumer.map(|c| &*c.0),
        upstream: &names.upstream,
        route: &names.route,
    }
}

fn transform_response(
    security: &RouteSecurity,
    names: &Names,
    request_id: Option<&RequestId>,
    consumer: Option<&ConsumerId>,
    response: &mut Response<Body>,
) {
    if security.has_transforms() {
        let vars = template_vars(names, request_id, consumer);
        security.transform_response(response, &vars);
    }
}
