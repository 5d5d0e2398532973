//! A JWK Set fetched over HTTP(S) and cached: keys by `kid`, refreshed when older than its
//! max age (in the background) or when a token names an unknown `kid` (at most once per
//! `min_refresh`, one fetch at a time). A new configuration with the same URL and CA takes the
//! cached keys over ([`JwksCache::successor`]), so a reload does not fetch again.

use std::{
    collections::HashMap,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use jsonwebtoken::{
    Algorithm, DecodingKey,
    jwk::{AlgorithmParameters, JwkSet, PublicKeyUse},
};
use parking_lot::{Mutex, RwLock};
use tokio::net::TcpStream;
use tracing::{debug, warn};

use crate::consumer::BuildError;

/// How long one fetch may take, connection included.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest JWK Set accepted.
const MAX_BODY: usize = 1 << 20;

/// The keys of one fetch.
#[derive(Default)]
struct KeySet {
    /// Key and, when the JWK pins one, its algorithm.
    keys: HashMap<String, (Arc<DecodingKey>, Option<Algorithm>)>,
    fetched: Option<Instant>,
    /// Bumped by every successful fetch.
    generation: u64,
}

/// What the cache knows of a `kid`.
pub(crate) enum KeyLookup {
    /// The key.
    Found(Arc<DecodingKey>),
    /// Unknown; a refresh is allowed: the generation seen.
    Refresh(u64),
    /// Unknown, or pinned to another algorithm, and no refresh is allowed now.
    Unknown,
}

/// The cached JWK Set of one URL.
pub(crate) struct JwksCache {
    url: Uri,
    /// The PEM of `jwks_ca_file`, to tell whether a successor trusts the same CAs.
    ca_pem: Option<Vec<u8>>,
    /// TLS settings trusting only `ca_pem`'s certificates; `None`: the system's roots.
    tls: Option<Arc<rustls::ClientConfig>>,
    min_refresh: Duration,
    max_age: Duration,
    keys: RwLock<Arc<KeySet>>,
    last_attempt: Mutex<Option<Instant>>,
    fetching: tokio::sync::Mutex<()>,
    background: AtomicBool,
}

impl JwksCache {
    pub(crate) fn new(
        url: Uri,
        ca_pem: Option<Vec<u8>>,
        min_refresh: Duration,
        max_age: Duration,
    ) -> Result<Self, BuildError> {
        let tls = ca_pem.as_deref().map(tls_config_with_ca).transpose()?;
        Ok(Self {
            url,
            ca_pem,
            tls,
            min_refresh,
            max_age,
            keys: RwLock::new(Arc::default()),
            last_attempt: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
            background: AtomicBool::new(false),
        })
    }

    /// The cache a new configuration (`next`, not used yet) should use: `self` when nothing
    /// that matters changed, `next` seeded with `self`'s keys and last attempt when only the
    /// timings changed, `next` as it is when the URL or the CAs differ.
    pub(crate) fn successor(self: &Arc<Self>, next: Arc<Self>) -> Arc<Self> {
        if next.url != self.url || next.ca_pem != self.ca_pem {
            return next;
        }
        if next.min_refresh == self.min_refresh && next.max_age == self.max_age {
            return Arc::clone(self);
        }
        *next.keys.write() = Arc::clone(&self.keys.read());
        *next.last_attempt.lock() = *self.last_attempt.lock();
        next
    }

    /// The key for `kid`, for a token signed with `alg`.
    pub(crate) fn lookup(self: &Arc<Self>, kid: &str, alg: Algorithm) -> KeyLookup {
        let set = Arc::clone(&self.keys.read());
        if let Some((key, pinned)) = set.keys.get(kid) {
            if pinned.is_some_and(|p| p != alg) {
                return KeyLookup::Unknown;
            }
            if set.fetched.is_some_and(|t| t.elapsed() > self.max_age) {
                self.refresh_in_background(set.generation);
            }
            return KeyLookup::Found(Arc::clone(key));
        }
        if self.refresh_allowed() {
            KeyLookup::Refresh(set.generation)
        } else {
            KeyLookup::Unknown
        }
    }

    fn refresh_allowed(&self) -> bool {
        self.last_attempt
            .lock()
            .is_none_or(|t| t.elapsed() >= self.min_refresh)
    }

    fn refresh_in_background(self: &Arc<Self>, seen: u64) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.background.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = Arc::clone(self);
        runtime.spawn(async move {
            this.refresh(seen, true).await;
            this.background.store(false, Ordering::Release);
        });
    }

    /// Fetches the set again unless another fetch since generation `seen` made it moot, or
    /// the last attempt was too recent (`forced` ignores that: max-age refreshes).
    pub(crate) async fn refresh(&self, seen: u64, forced: bool) {
        let _one_at_a_time = self.fetching.lock().await;
        if self.keys.read().generation != seen || (!forced && !self.refresh_allowed()) {
            return;
        }
        *self.last_attempt.lock() = Some(Instant::now());
        match tokio::time::timeout(FETCH_TIMEOUT, fetch(&self.url, self.tls.as_ref())).await {
            Ok(Ok(set)) => {
                let keys = keys_of(&set);
                debug!(url = %self.url, keys = keys.len(), "JWK Set fetched");
                *self.keys.write() = Arc::new(KeySet {
                    keys,
                    fetched: Some(Instant::now()),
                    generation: seen + 1,
                });
            }
            Ok(Err(e)) => warn!(url = %self.url, error = %e, "JWK Set fetch failed"),
            Err(_) => warn!(url = %self.url, "JWK Set fetch timed out"),
        }
    }
}

/// The usable signature keys of a set, by `kid`: symmetric (`oct`) keys and keys marked for
/// encryption are left out.
fn keys_of(set: &JwkSet) -> HashMap<String, (Arc<DecodingKey>, Option<Algorithm>)> {
    set.keys
        .iter()
        .filter(|jwk| !matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)))
        .filter(|jwk| !matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)))
        .filter_map(|jwk| {
            let kid = jwk.common.key_id.clone()?;
            let key = DecodingKey::from_jwk(jwk).ok()?;
            let pinned = match jwk.common.key_algorithm {
                Some(a) => Some(Algorithm::try_from(a).ok()?),
                None => None,
            };
            Some((kid, (Arc::new(key), pinned)))
        })
        .collect()
}

/// GETs `url` and parses the body as a JWK Set.
async fn fetch(url: &Uri, tls: Option<&Arc<rustls::ClientConfig>>) -> Result<JwkSet, String> {
    let host = url.host().ok_or("no host")?;
    let https = url.scheme_str() == Some("https");
    let port = url.port_u16().unwrap_or(if https { 443 } else { 80 });
    let bare_host = host.trim_start_matches('[').trim_end_matches(']');
    let tcp = TcpStream::connect((bare_host, port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let body = if https {
        let name = rustls_pki_types::ServerName::try_from(bare_host.to_owned())
            .map_err(|e| format!("server name: {e}"))?;
        let config = match tls {
            Some(config) => Arc::clone(config),
            None => tls_config()?,
        };
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        get(TokioIo::new(tls), url).await?
    } else {
        get(TokioIo::new(tcp), url).await?
    };
    serde_json::from_slice(&body).map_err(|e| format!("not a JWK Set: {e}"))
}

/// One HTTP/1.1 GET on a fresh connection.
async fn get<IO>(io: IO, url: &Uri) -> Result<Bytes, String>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let conn = tokio::spawn(conn);
    let authority = url.authority().map_or("", |a| a.as_str());
    let path = url.path_and_query().map_or("/", |p| p.as_str());
    let req = Request::get(path)
        .header(header::HOST, authority)
        .header(header::ACCEPT, "application/json, application/jwk-set+json")
        .header(header::USER_AGENT, "portcullis")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("request: {e}"))?;
    let response = sender
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))?;
    if response.status() != StatusCode::OK {
        return Err(format!("status {}", response.status()));
    }
    let body = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    conn.abort();
    Ok(body)
}

/// TLS client settings trusting only the CA certificates in `pem` (`jwks_ca_file`).
fn tls_config_with_ca(pem: &[u8]) -> Result<Arc<rustls::ClientConfig>, BuildError> {
    use rustls_pki_types::{CertificateDer, pem::PemObject as _};
    let bad = |e: String| BuildError(format!("jwks_ca_file: {e}"));
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        roots
            .add(cert.map_err(|e| bad(e.to_string()))?)
            .map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no certificate in the file".into()));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The TLS client settings for `https://` JWK Set URLs: the system's roots, built once.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            if roots.is_empty() {
                return Err("no system root certificates".to_owned());
            }
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Ok(Arc::new(config))
        })
        .clone()
}
