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

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use tokio::{
        io::{AsyncReadExt as _, AsyncWriteExt as _},
        net::TcpListener,
        sync::mpsc,
    };

    use super::*;

    /// RFC 7515 A.3's P-256 public key.
    fn ec_jwk(kid: &str, alg: Option<&str>) -> Value {
        let mut jwk = json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"});
        if let Some(alg) = alg {
            jwk["alg"] = json!(alg);
        }
        jwk
    }

    /// RFC 7515 A.2's RSA public key.
    fn rsa_jwk(kid: &str, alg: Option<&str>) -> Value {
        let mut jwk = json!({"kty": "RSA", "kid": kid, "e": "AQAB",
            "n": "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ"});
        if let Some(alg) = alg {
            jwk["alg"] = json!(alg);
        }
        jwk
    }

    fn set(keys: &[Value]) -> JwkSet {
        serde_json::from_value(json!({ "keys": keys })).unwrap()
    }

    fn cache(url: &str, max_age: Duration) -> Arc<JwksCache> {
        Arc::new(
            JwksCache::new(
                url.parse().unwrap(),
                None,
                Duration::from_secs(3600),
                max_age,
            )
            .unwrap(),
        )
    }

    /// Seeds `cache` with `keys` as if fetched just now.
    fn seed(cache: &JwksCache, keys: &[Value]) {
        *cache.keys.write() = Arc::new(KeySet {
            keys: keys_of(&set(keys)),
            fetched: Some(Instant::now()),
            generation: 1,
        });
    }

    fn found(lookup: &KeyLookup) -> bool {
        matches!(lookup, KeyLookup::Found(_))
    }

    #[test]
    fn symmetric_and_encryption_keys_are_left_out() {
        let mut enc = rsa_jwk("enc", None);
        enc["use"] = json!("enc");
        let keys = keys_of(&set(&[
            ec_jwk("sig-ec", None),
            rsa_jwk("sig-rsa", None),
            json!({"kty": "oct", "kid": "hmac", "k": "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow"}),
            json!({"kty": "oct", "kid": "hmac-alg", "alg": "HS256", "use": "sig", "k": "c2VjcmV0"}),
            enc,
            // No `kid`: a token cannot name it.
            json!({"kty": "EC", "crv": "P-256", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}),
        ]));
        let mut kids: Vec<&str> = keys.keys().map(String::as_str).collect();
        kids.sort_unstable();
        assert_eq!(kids, ["sig-ec", "sig-rsa"]);

        // Through a lookup too: an HS256 token naming the `oct` key finds nothing to verify.
        let c = cache("http://127.0.0.1:1/jwks", Duration::from_secs(3600));
        seed(&c, &[json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"})]);
        assert!(!found(&c.lookup("hmac", Algorithm::HS256)));
    }

    #[test]
    fn a_jwk_pinned_to_an_algorithm_verifies_only_that_algorithm() {
        let c = cache("http://127.0.0.1:1/jwks", Duration::from_secs(3600));
        seed(
            &c,
            &[
                rsa_jwk("rs256-only", Some("RS256")),
                rsa_jwk("any-rsa", None),
                ec_jwk("es256-only", Some("ES256")),
            ],
        );
        assert!(found(&c.lookup("rs256-only", Algorithm::RS256)));
        for other in [Algorithm::RS384, Algorithm::RS512, Algorithm::PS256] {
            assert!(
                matches!(c.lookup("rs256-only", other), KeyLookup::Unknown),
                "{other:?}: refused at once, no refresh"
            );
            assert!(found(&c.lookup("any-rsa", other)), "{other:?}: unpinned");
        }
        assert!(found(&c.lookup("es256-only", Algorithm::ES256)));
        assert!(matches!(
            c.lookup("es256-only", Algorithm::ES384),
            KeyLookup::Unknown
        ));
    }

    /// A JWK Set server on loopback: answers the n-th request with `bodies[n]` (the last one
    /// after that) and reports each request's number on the channel.
    async fn jwks_server(bodies: Vec<Value>) -> (String, mpsc::UnboundedReceiver<usize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            for n in 0.. {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(k) if k > 0 => head.extend_from_slice(&buf[..k]),
                        _ => break,
                    }
                }
                let body = bodies[n.min(bodies.len() - 1)].to_string();
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = tx.send(n + 1);
            }
        });
        (url, rx)
    }

    #[tokio::test]
    async fn keys_older_than_max_age_are_fetched_again_in_the_background_while_the_old_ones_serve()
    {
        let first = json!({"keys": [ec_jwk("a", None)]});
        let second = json!({"keys": [ec_jwk("a", None), rsa_jwk("b", None)]});
        let (url, mut requests) = jwks_server(vec![first, second]).await;

        // Within max age: no background fetch.
        let fresh = cache(&url, Duration::from_secs(3600));
        fresh.refresh(0, false).await;
        assert_eq!(requests.recv().await, Some(1));
        assert!(found(&fresh.lookup("a", Algorithm::ES256)));
        assert!(!fresh.background.load(Ordering::Acquire));

        // Past max age (zero here): the old key serves and a fetch starts in the background.
        let (url, mut requests) = jwks_server(vec![
            json!({"keys": [ec_jwk("a", None)]}),
            json!({"keys": [ec_jwk("a", None), rsa_jwk("b", None)]}),
        ])
        .await;
        let stale = cache(&url, Duration::ZERO);
        stale.refresh(0, false).await;
        assert_eq!(requests.recv().await, Some(1));
        assert!(
            !found(&stale.lookup("b", Algorithm::RS256)),
            "not fetched yet"
        );
        assert!(found(&stale.lookup("a", Algorithm::ES256)));
        assert!(
            stale.background.load(Ordering::Acquire),
            "a background fetch is under way"
        );
        // Not a `kid` refresh: `min_refresh` (an hour) does not hold it back.
        assert_eq!(requests.recv().await, Some(2));
        // The background fetch holds the fetch lock until it has stored the new set; a refresh
        // from generation 1 waits for it, then finds it moot.
        stale.refresh(1, false).await;
        assert_eq!(stale.keys.read().generation, 2);
        assert!(found(&stale.lookup("b", Algorithm::RS256)));
        assert!(
            requests.try_recv().is_err(),
            "the moot refresh fetched nothing"
        );
    }
}
