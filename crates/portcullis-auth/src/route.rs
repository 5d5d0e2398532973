//! A route's security: which credentials it needs, who may use it, and what a granted request
//! carries upstream.

use std::{fmt, sync::Arc};

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, Uri, header};
use portcullis_http::headers::contains_any;

use crate::{
    X_CONSUMER_ID, X_CONSUMER_TIER,
    api_key::KeyFrom,
    body_limit::declared_too_large,
    bots::BotRules,
    consumer::{Authenticator, BuildError, Consumer},
    cors::{Cors, CorsOptions, is_preflight},
    headers::{SecurityHeaderOptions, SecurityHeaders},
    ip::IpRules,
    jwt::{JwtVerifier, Verified},
    rejection::Rejection,
    transform::{HeaderTransform, HeaderTransformOptions, TemplateVars},
};

/// Which credentials a route requires.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AuthMode {
    /// None: every request passes (client-sent consumer headers are still removed).
    #[default]
    None,
    /// A known consumer's API key.
    ApiKey,
    /// A valid JWT bearer token.
    Jwt,
    /// Any configured credential kind.
    Any,
}

/// Who may use a route once authenticated: a consumer listed by name, or whose tier or one of
/// whose groups is listed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acl {
    /// Consumer ids allowed.
    pub consumers: Vec<Arc<str>>,
    /// Tiers allowed.
    pub tiers: Vec<Arc<str>>,
    /// Groups allowed.
    pub groups: Vec<Arc<str>>,
}

impl Acl {
    /// Whether `consumer` may pass.
    pub fn allows(&self, consumer: &Consumer) -> bool {
        self.consumers.contains(&consumer.id.0)
            || consumer
                .tier
                .as_ref()
                .is_some_and(|t| self.tiers.contains(&t.0))
            || consumer.groups.iter().any(|g| self.groups.contains(g))
    }
}

/// A route's security settings (plain data).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteAuth {
    /// Credentials required.
    pub mode: AuthMode,
    /// Who may pass once authenticated.
    pub acl: Option<Acl>,
}

/// A route's edge rules (plain data): client addresses, bots, CORS and response headers.
#[derive(Debug, Clone, Default)]
pub struct EdgeOptions {
    /// Client address allow/deny lists (on the trusted-proxy-resolved client IP).
    pub ip: IpRules,
    /// `User-Agent` rules.
    pub bots: BotRules,
    /// CORS, if the route answers cross-origin requests.
    pub cors: Option<CorsOptions>,
    /// Security headers added to responses.
    pub headers: SecurityHeaderOptions,
    /// The largest request body accepted, in bytes (413 beyond).
    pub max_body: Option<u64>,
    /// The longest request target (path and query) accepted, in bytes (414 beyond).
    pub max_url_length: Option<usize>,
    /// The most request headers accepted (431 beyond).
    pub max_header_count: Option<usize>,
    /// Request header transform (applied after [`Grant::apply`]).
    pub request_headers: HeaderTransformOptions,
    /// Response header transform.
    pub response_headers: HeaderTransformOptions,
}

/// [`EdgeOptions`], built.
#[derive(Debug)]
struct Edge {
    ip: IpRules,
    bots: BotRules,
    cors: Option<Cors>,
    headers: SecurityHeaders,
    max_body: Option<u64>,
    max_url_length: Option<usize>,
    max_header_count: Option<usize>,
    request_headers: HeaderTransform,
    response_headers: HeaderTransform,
}

/// The security of one route, built once and asked on every request.
pub struct RouteSecurity {
    auth: Option<Arc<Authenticator>>,
    route: RouteAuth,
    /// `None` when the route has no edge rules (the common, allocation-free case).
    edge: Option<Box<Edge>>,
}

impl fmt::Debug for RouteSecurity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteSecurity")
            .field("mode", &self.route.mode)
            .field("acl", &self.route.acl)
            .field("edge", &self.edge)
            .finish_non_exhaustive()
    }
}

impl Default for RouteSecurity {
    fn default() -> Self {
        Self::none()
    }
}

impl RouteSecurity {
    /// A route that needs no credentials.
    pub fn none() -> Self {
        Self {
            auth: None,
            route: RouteAuth::default(),
            edge: None,
        }
    }

    /// A route checked by `auth` as `route` says.
    pub fn new(auth: Arc<Authenticator>, route: RouteAuth) -> Self {
        Self {
            auth: Some(auth),
            route,
            edge: None,
        }
    }

    /// Adds IP rules, bot rules, CORS and security headers.
    pub fn with_edge(mut self, edge: &EdgeOptions) -> Result<Self, BuildError> {
        let cors = edge
            .cors
            .as_ref()
            .map(Cors::new)
            .transpose()
            .map_err(BuildError)?;
        let headers = SecurityHeaders::new(&edge.headers).map_err(BuildError)?;
        let request_headers = HeaderTransform::new(&edge.request_headers).map_err(BuildError)?;
        let response_headers = HeaderTransform::new(&edge.response_headers).map_err(BuildError)?;
        let empty = edge.ip.is_empty()
            && edge.bots.is_empty()
            && cors.is_none()
            && headers.is_empty()
            && edge.max_body.is_none()
            && edge.max_url_length.is_none()
            && edge.max_header_count.is_none()
            && request_headers.is_empty()
            && response_headers.is_empty();
        self.edge = (!empty).then(|| {
            Box::new(Edge {
                ip: edge.ip.clone(),
                bots: edge.bots.clone(),
                cors,
                headers,
                max_body: edge.max_body,
                max_url_length: edge.max_url_length,
                max_header_count: edge.max_header_count,
                request_headers,
                response_headers,
            })
        });
        Ok(self)
    }

    /// Adds the route's CORS and security headers to a response the gateway made itself from a
    /// [`Rejection`] (a preflight's 204 already has its CORS headers).
    pub fn decorate_answer<B>(&self, request_headers: &HeaderMap, response: &mut Response<B>) {
        let Some(edge) = &self.edge else { return };
        let headers = response.headers_mut();
        if let Some(cors) = &edge.cors
            && !headers.contains_key(header::ACCESS_CONTROL_ALLOW_METHODS)
        {
            cors.decorate(cors.response_origin(request_headers).as_ref(), headers);
        }
        edge.headers.apply(headers);
    }

    /// Whether the route transforms request or response headers (callers can skip building
    /// [`TemplateVars`] otherwise).
    pub fn has_transforms(&self) -> bool {
        self.edge
            .as_ref()
            .is_some_and(|e| !e.request_headers.is_empty() || !e.response_headers.is_empty())
    }

    /// Applies the route's request header transform (after [`Grant::apply`], so
    /// `$consumer_id` is known and client copies of consumer headers are already gone).
    pub fn transform_request<B>(&self, req: &mut Request<B>, vars: &TemplateVars<'_>) {
        if let Some(edge) = &self.edge {
            edge.request_headers.apply(req.headers_mut(), vars);
        }
    }

    /// Applies the route's response header transform.
    pub fn transform_response<B>(&self, response: &mut Response<B>, vars: &TemplateVars<'_>) {
        if let Some(edge) = &self.edge {
            edge.response_headers.apply(response.headers_mut(), vars);
        }
    }

    /// Whether the route answers CORS (preflights included).
    pub fn has_cors(&self) -> bool {
        self.edge.as_ref().is_some_and(|e| e.cors.is_some())
    }

    /// The largest request body the route accepts: wrap the body in a
    /// [`LimitedBody`](crate::LimitedBody) with it (`Content-Length` is judged by
    /// [`check`](Self::check)).
    pub fn body_limit(&self) -> Option<u64> {
        self.edge.as_ref().and_then(|e| e.max_body)
    }

    /// Adds the route's CORS and security headers to a response (a cache hit, the upstream's
    /// response, or an error) for the request `decoration` came from.
    pub fn decorate<B>(&self, decoration: &Decoration, response: &mut Response<B>) {
        let Some(edge) = &self.edge else { return };
        let headers = response.headers_mut();
        if let Some(cors) = &edge.cors {
            cors.decorate(decoration.origin.as_ref(), headers);
        }
        edge.headers.apply(headers);
    }

    /// The route's mode.
    pub fn mode(&self) -> AuthMode {
        self.route.mode
    }

    /// Decides on `req` without changing it: a [`Grant`] to apply before forwarding, or the
    /// rejection to answer with. Allocation-free for routes without auth.
    ///
    /// A JWT naming a `kid` the cached JWK Set lacks gives a pending grant
    /// ([`Grant::is_pending`]) when a refresh is allowed: settle it with [`Grant::settle`]
    /// before serving anything.
    ///
    /// Order: URL length (414) and header count (431) limits, IP rules (`client_ip` is asked
    /// only when the route has some), bot rules, a
    /// declared `Content-Length` over the body limit (413), CORS preflight (answered here: a [`Rejection`] whose response is the 204), then credentials
    /// and the ACL.
    pub fn check<B>(
        &self,
        req: &Request<B>,
        client_ip: impl FnOnce() -> IpAddr,
    ) -> Result<Grant, Rejection> {
        let mut origin = None;
        if let Some(edge) = &self.edge {
            if edge.max_url_length.is_some_and(|max| {
                req.uri()
                    .path_and_query()
                    .is_some_and(|pq| pq.as_str().len() > max)
            }) {
                return Err(Rejection::URI_TOO_LONG);
            }
            if edge
                .max_header_count
                .is_some_and(|max| req.headers().len() > max)
            {
                return Err(Rejection::TOO_MANY_HEADERS);
            }
            if !edge.ip.is_empty() && !edge.ip.allows(client_ip()) {
                return Err(Rejection::IP_DENIED);
            }
            if !edge.bots.is_empty()
                && !edge.bots.allows(
                    req.headers()
                        .get(header::USER_AGENT)
                        .map(HeaderValue::as_bytes),
                )
            {
                return Err(Rejection::BOT_DENIED);
            }
            if let Some(limit) = edge.max_body
                && declared_too_large(req.headers(), limit)
            {
                return Err(Rejection::TOO_LARGE);
            }
            if let Some(cors) = &edge.cors {
                if is_preflight(req) {
                    return Err(match cors.preflight(req) {
                        Ok(headers) => Rejection::preflight(headers),
                        Err(()) => Rejection::PREFLIGHT_DENIED,
                    });
                }
                origin = cors.response_origin(req.headers());
            }
        }
        let mut grant = self.decide(req.headers(), req.uri(), true)?;
        grant.origin = origin;
        Ok(grant)
    }

    fn decide(
        &self,
        headers: &HeaderMap,
        uri: &Uri,
        may_refresh: bool,
    ) -> Result<Grant, Rejection> {
        let mode = self.route.mode;
        let auth = match (mode, &self.auth) {
            (AuthMode::None, _) => return Ok(Grant::default()),
            (_, Some(auth)) => auth,
            (_, None) => return Err(Rejection::MISSING),
        };
        let key = match mode {
            AuthMode::ApiKey | AuthMode::Any => auth.options.api_key.find(headers, uri),
            _ => None,
        };
        let token = match (mode, &auth.jwt) {
            (AuthMode::Jwt | AuthMode::Any, Some(_)) if key.is_none() => {
                JwtVerifier::token(headers)
            }
            _ => None,
        };
        let (consumer, from, claim_headers) = if let Some((key, from)) = key {
            match auth.by_api_key(&key) {
                Some(c) => (Arc::clone(c), Some(from), Vec::new()),
                None => return Err(Rejection::INVALID),
            }
        } else if let (Some(token), Some(jwt)) = (token, &auth.jwt) {
            let claims = match jwt.verify(token)? {
                Verified::Claims(claims) => claims,
                Verified::NeedKeys(generation) if may_refresh => {
                    return Ok(Grant {
                        consumer: None,
                        pending: Some(generation),
                        origin: None,
                    });
                }
                Verified::NeedKeys(_) => return Err(Rejection::INVALID_TOKEN),
            };
            let consumer = jwt.consumer(&claims, |name| auth.consumer(name).cloned())?;
            (consumer, None, jwt.claim_headers(&claims))
        } else if mode == AuthMode::ApiKey || auth.jwt.is_none() {
            return Err(Rejection::MISSING);
        } else {
            return Err(Rejection::MISSING_TOKEN);
        };
        if let Some(acl) = &self.route.acl
            && !acl.allows(&consumer)
        {
            return Err(Rejection::FORBIDDEN);
        }
        Ok(Grant {
            consumer: Some(Box::new(Granted {
                consumer,
                auth: Arc::clone(auth),
                key_from: from,
                claim_headers,
            })),
            pending: None,
            origin: None,
        })
    }

    /// Fetches the JWK Set again (at most once per `jwks_min_refresh`, one fetch at a time),
    /// then decides again; a `kid` still unknown is refused.
    async fn refresh_and_decide(
        &self,
        generation: u64,
        headers: &HeaderMap,
        uri: &Uri,
    ) -> Result<Grant, Rejection> {
        if let Some(jwks) = self
            .auth
            .as_ref()
            .and_then(|a| a.jwt.as_ref())
            .and_then(|j| j.jwks.as_ref())
        {
            // Boxed: the fetch (TLS and all) is rare and should not size every caller's future.
            Box::pin(jwks.refresh(generation, false)).await;
        }
        self.decide(headers, uri, false)
    }
}

/// The consumer of a granted request and what it carries upstream.
#[derive(Debug)]
struct Granted {
    consumer: Arc<Consumer>,
    auth: Arc<Authenticator>,
    /// Where the API key was found (to remove it).
    key_from: Option<KeyFrom>,
    /// Headers from the token's claims.
    claim_headers: Vec<(HeaderName, HeaderValue)>,
}

/// What a granted request carries upstream; see [`Grant::apply`].
#[derive(Debug, Default)]
pub struct Grant {
    consumer: Option<Box<Granted>>,
    /// The JWK Set generation seen, when the decision waits for a refresh.
    pending: Option<u64>,
    /// The `Access-Control-Allow-Origin` for the response, when the origin is allowed.
    origin: Option<HeaderValue>,
}

/// What [`RouteSecurity::decorate`] needs to know of the request.
#[derive(Debug, Clone, Default)]
pub struct Decoration {
    origin: Option<HeaderValue>,
}

impl Grant {
    /// The authenticated consumer, if the route authenticates.
    pub fn consumer(&self) -> Option<&Arc<Consumer>> {
        self.consumer.as_ref().map(|g| &g.consumer)
    }

    /// Whether the decision waits for a JWK Set refresh ([`settle`](Self::settle)).
    pub fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// The final decision: a pending grant refreshes the route's JWK Set and decides again;
    /// any other is returned as it is.
    /// Takes the request's headers and URI (not the request, whose body need not be `Sync`).
    pub async fn settle(
        self,
        security: &RouteSecurity,
        headers: &HeaderMap,
        uri: &Uri,
    ) -> Result<Grant, Rejection> {
        match self.pending {
            None => Ok(self),
            Some(generation) => {
                let mut grant = security
                    .refresh_and_decide(generation, headers, uri)
                    .await?;
                grant.origin = self.origin;
                Ok(grant)
            }
        }
    }

    /// What the response needs of the request (for a response served without
    /// [`apply`](Self::apply), such as a cache hit).
    pub fn decoration(&self) -> Decoration {
        Decoration {
            origin: self.origin.clone(),
        }
    }

    /// Changes `req` for upstream: removes client-sent `X-Consumer-Id`/`X-Consumer-Tier`
    /// (always) and copies of the claim headers, removes the API key (unless forwarded),
    /// inserts the consumer extensions and, if configured, the consumer and claim headers.
    pub fn apply<B>(self, req: &mut Request<B>) -> Decoration {
        let decoration = Decoration {
            origin: self.origin,
        };
        let headers = req.headers_mut();
        // Looked for first: they are almost never there, and a removal is a hash lookup.
        if contains_any(headers, &[X_CONSUMER_ID, X_CONSUMER_TIER]) {
            headers.remove(X_CONSUMER_ID);
            headers.remove(X_CONSUMER_TIER);
        }
        let Some(granted) = self.consumer else {
            return decoration;
        };
        let Granted {
            consumer,
            auth,
            key_from,
            claim_headers,
        } = *granted;
        if let Some(jwt) = &auth.jwt {
            for (_, name) in &jwt.options.claims_to_headers {
                headers.remove(name);
            }
        }
        for (name, value) in claim_headers {
            headers.insert(name, value);
        }
        if auth.options.forward_consumer_headers {
            headers.insert(X_CONSUMER_ID, consumer.id_header.clone());
            if let Some(tier) = &consumer.tier_header {
                headers.insert(X_CONSUMER_TIER, tier.clone());
            }
        }
        if let Some(from) = key_from {
            let (mut uri, headers) = (std::mem::take(req.uri_mut()), req.headers_mut());
            auth.options.api_key.remove(from, headers, &mut uri);
            *req.uri_mut() = uri;
        }
        let extensions = req.extensions_mut();
        extensions.insert(consumer.id.clone());
        if let Some(tier) = &consumer.tier {
            extensions.insert(tier.clone());
        }
        decoration
    }
}

#[cfg(test)]
mod tests {
    use http::StatusCode;

    use super::*;
    use crate::{ApiKeyOptions, AuthOptions, ConsumerSpec, hash_key};

    fn ip() -> IpAddr {
        IpAddr::from([127, 0, 0, 1])
    }

    fn auth(forward_headers: bool) -> Arc<Authenticator> {
        let spec = |name: &str, tier: &str, groups: &[&str], key: &str| ConsumerSpec {
            name: name.into(),
            tier: Some(tier.into()),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            api_key_hashes: vec![hash_key(key.as_bytes())],
        };
        Arc::new(
            Authenticator::new(
                vec![
                    spec("acme", "premium", &["partners"], "key-acme"),
                    spec("bob", "free", &[], "key-bob"),
                ],
                AuthOptions {
                    api_key: ApiKeyOptions {
                        query: Some("apikey".into()),
                        ..ApiKeyOptions::default()
                    },
                    forward_consumer_headers: forward_headers,
                    jwt: None,
                },
            )
            .unwrap(),
        )
    }

    fn request(key_header: Option<&str>, uri: &str) -> Request<()> {
        let mut b = Request::builder()
            .uri(uri)
            .header("x-consumer-id", "spoofed")
            .header("x-consumer-tier", "premium");
        if let Some(k) = key_header {
            b = b.header("x-api-key", k);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn routes_without_auth_only_strip_consumer_headers() {
        let mut req = request(None, "/");
        RouteSecurity::none()
            .check(&req, ip)
            .unwrap()
            .apply(&mut req);
        assert!(req.headers().get("x-consumer-id").is_none());
        assert!(req.headers().get("x-consumer-tier").is_none());
        assert!(
            req.extensions()
                .get::<portcullis_http::ConsumerId>()
                .is_none()
        );
    }

    #[test]
    fn api_keys_authenticate_and_are_removed() {
        let route = RouteSecurity::new(
            auth(true),
            RouteAuth {
                mode: AuthMode::ApiKey,
                acl: None,
            },
        );
        let mut req = request(Some("key-acme"), "/x?apikey=ignored&a=1");
        let _ = route.check(&req, ip).unwrap().apply(&mut req);
        assert_eq!(req.headers()["x-consumer-id"], "acme");
        assert_eq!(req.headers()["x-consumer-tier"], "premium");
        assert!(req.headers().get("x-api-key").is_none());
        assert_eq!(
            req.uri(),
            "/x?apikey=ignored&a=1",
            "the header key was used"
        );
        let tier = req.extensions().get::<portcullis_http::ConsumerTier>();
        assert_eq!(tier.map(|t| &*t.0), Some("premium"));

        let mut req = request(None, "/x?a=1&apikey=key-bob");
        let _ = route.check(&req, ip).unwrap().apply(&mut req);
        assert_eq!(req.headers()["x-consumer-id"], "bob");
        assert_eq!(req.uri(), "/x?a=1");

        let missing = route.check(&request(None, "/"), ip).unwrap_err();
        let unknown = route.check(&request(Some("nope"), "/"), ip).unwrap_err();
        assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn consumer_headers_are_not_forwarded_unless_configured() {
        let route = RouteSecurity::new(
            auth(false),
            RouteAuth {
                mode: AuthMode::Any,
                acl: None,
            },
        );
        let mut req = request(Some("key-acme"), "/");
        let _ = route.check(&req, ip).unwrap().apply(&mut req);
        assert!(req.headers().get("x-consumer-id").is_none());
        assert_eq!(
            &*req
                .extensions()
                .get::<portcullis_http::ConsumerId>()
                .unwrap()
                .0,
            "acme"
        );
    }

    #[test]
    fn acls_allow_by_name_tier_or_group() {
        let acl = |consumers: &[&str], tiers: &[&str], groups: &[&str]| {
            let v = |s: &[&str]| s.iter().map(|x| Arc::from(*x)).collect();
            RouteSecurity::new(
                auth(false),
                RouteAuth {
                    mode: AuthMode::ApiKey,
                    acl: Some(Acl {
                        consumers: v(consumers),
                        tiers: v(tiers),
                        groups: v(groups),
                    }),
                },
            )
        };
        let acme = request(Some("key-acme"), "/");
        let bob = request(Some("key-bob"), "/");
        let by_group = acl(&[], &[], &["partners"]);
        assert!(by_group.check(&acme, ip).is_ok());
        assert_eq!(
            by_group.check(&bob, ip).unwrap_err().status(),
            StatusCode::FORBIDDEN
        );
        assert!(acl(&[], &["free"], &[]).check(&bob, ip).is_ok());
        assert!(acl(&["bob"], &[], &[]).check(&bob, ip).is_ok());
        assert!(acl(&["bob"], &[], &[]).check(&acme, ip).is_err());
    }

    #[test]
    fn debug_output_holds_no_key_material() {
        let a = auth(false);
        let text = format!(
            "{a:?} {:?}",
            RouteSecurity::new(a.clone(), RouteAuth::default())
        );
        assert!(!text.contains("key-acme"), "{text}");
        let hash = crate::hash_key_hex(b"key-acme");
        assert!(!text.contains(&hash), "{text}");
    }
}
