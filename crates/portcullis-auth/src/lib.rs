//! Edge security for Portcullis: consumers and tiers, API keys, JWT bearer tokens (static keys
//! or a JWK Set URL), route ACLs, IP rules, bot rules, CORS, security headers, the request
//! body size limit, request/response header transforms, and API versions.
//!
//! The crate takes plain Rust config ([`ConsumerSpec`], [`AuthOptions`], [`RouteAuth`]), so an
//! embedding app never needs `portcullis-config`. Every decision is synchronous: the gateway
//! asks it before a cached response may be served, so a cache hit never bypasses auth.
//!
//! The decision is split in two so the caller can decide while it still borrows the request
//! (routing, the cache lookup) and change the request only once it forwards it:
//!
//! 1. [`RouteSecurity::check`] reads the request and returns a [`Grant`] or a [`Rejection`]
//!    (401/403 as the contract's JSON error body);
//! 2. [`Grant::apply`] changes the request for upstream: it removes client-sent
//!    `X-Consumer-Id`/`X-Consumer-Tier` (always, on every route), removes the API key unless
//!    configured otherwise, inserts the [`ConsumerId`]/[`ConsumerTier`] extensions and, if
//!    configured, the consumer headers.
//!
//! ```
//! use std::sync::Arc;
//! use portcullis_auth::{AuthMode, AuthOptions, Authenticator, ConsumerSpec, RouteAuth, RouteSecurity};
//!
//! let key_hash = portcullis_auth::hash_key(b"s3cret-key");
//! let auth = Arc::new(Authenticator::new(
//!     vec![ConsumerSpec {
//!         name: "acme".into(),
//!         tier: Some("premium".into()),
//!         groups: vec![],
//!         api_key_hashes: vec![key_hash],
//!     }],
//!     AuthOptions::default(),
//! ).unwrap());
//! let route = RouteSecurity::new(auth, RouteAuth { mode: AuthMode::ApiKey, acl: None });
//!
//! let mut req = http::Request::builder().header("x-api-key", "s3cret-key").body(()).unwrap();
//! let client_ip = || std::net::IpAddr::from([127, 0, 0, 1]);
//! let grant = route.check(&req, client_ip).unwrap();
//! grant.apply(&mut req);
//! assert_eq!(&*req.extensions().get::<portcullis_http::ConsumerId>().unwrap().0, "acme");
//! assert!(req.headers().get("x-api-key").is_none(), "the key is not forwarded");
//!
//! let anonymous = http::Request::new(());
//! assert_eq!(route.check(&anonymous, client_ip).unwrap_err().status(), http::StatusCode::UNAUTHORIZED);
//! ```
//!
//! Outside the gateway, [`SecurityLayer`] runs these steps around any tower service (an axum
//! app, a hyper service): it answers refusals and preflights itself, applies the grant, calls
//! the service and adds the route's CORS and security headers to its response. The client
//! address for IP rules comes from the [`ClientIp`] request extension
//! (`cargo run -p portcullis-auth --example axum_security`).

mod api_key;
mod body_limit;
mod bots;
mod consumer;
mod cors;
mod headers;
mod ip;
mod jwks;
mod jwt;
mod layer;
mod rejection;
mod route;
mod transform;
mod version;

pub use api_key::{ApiKeyOptions, hash_key, hash_key_hex};
pub use body_limit::{BodyTooLarge, LimitedBody, Overflow};
pub use bots::{BotRules, DEFAULT_BAD_BOTS};
pub use consumer::{AuthOptions, Authenticator, BuildError, Consumer, ConsumerSpec};
pub use cors::{CorsOptions, is_preflight, routing_method};
pub use headers::SecurityHeaderOptions;
pub use ip::IpRules;
pub use jwt::{Algorithm, JwtOptions};
pub use layer::{SecurityLayer, SecurityService};
pub use portcullis_http::{ClientIp, ConsumerId, ConsumerTier};
pub use rejection::Rejection;
pub use route::{Acl, AuthMode, Decoration, EdgeOptions, Grant, RouteAuth, RouteSecurity};
pub use transform::{HeaderTransformOptions, TemplateVars};
pub use version::{
    ApiVersionOptions, ApiVersionSource, ApiVersionSpec, ApiVersions, DEPRECATION, ResolvedVersion,
    SUNSET,
};

/// Header carrying the authenticated consumer's id upstream (when forwarding is on); removed
/// from every client request.
pub const X_CONSUMER_ID: http::HeaderName = http::HeaderName::from_static("x-consumer-id");
/// Header carrying the authenticated consumer's tier upstream (when forwarding is on); removed
/// from every client request.
pub const X_CONSUMER_TIER: http::HeaderName = http::HeaderName::from_static("x-consumer-tier");
