//! Consumers and the authenticator that finds them by credential.

use std::{collections::HashMap, fmt, sync::Arc};

use http::HeaderValue;
use portcullis_http::{ConsumerId, ConsumerTier};
use subtle::ConstantTimeEq;

use crate::{
    api_key::{ApiKeyOptions, hash_key},
    jwt::{JwtOptions, JwtVerifier},
};

/// A consumer as configured (plain data; see [`Authenticator::new`]).
#[derive(Clone, PartialEq, Eq)]
pub struct ConsumerSpec {
    /// The consumer's id.
    pub name: String,
    /// Its tier (plan), if any.
    pub tier: Option<String>,
    /// Groups, for ACLs.
    pub groups: Vec<String>,
    /// SHA-256 hashes of its API keys ([`hash_key`]).
    pub api_key_hashes: Vec<[u8; 32]>,
}

impl fmt::Debug for ConsumerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsumerSpec")
            .field("name", &self.name)
            .field("tier", &self.tier)
            .field("groups", &self.groups)
            .field("api_keys", &self.api_key_hashes.len())
            .finish()
    }
}

/// Options shared by every route.
#[derive(Debug, Clone, Default)]
pub struct AuthOptions {
    /// Where API keys are read from.
    pub api_key: ApiKeyOptions,
    /// Send `X-Consumer-Id`/`X-Consumer-Tier` upstream for authenticated requests.
    pub forward_consumer_headers: bool,
    /// JWT bearer tokens (absent: `AuthMode::Jwt` refuses every request).
    pub jwt: Option<JwtOptions>,
}

/// An authenticated consumer, built once: the extensions and header values it adds to a
/// request are cheap clones.
#[derive(Debug)]
pub struct Consumer {
    /// Its id, as the request extension.
    pub id: ConsumerId,
    /// Its tier, as the request extension.
    pub tier: Option<ConsumerTier>,
    /// Its groups.
    pub groups: Box<[Arc<str>]>,
    pub(crate) id_header: HeaderValue,
    pub(crate) tier_header: Option<HeaderValue>,
}

impl Consumer {
    /// Builds a consumer from its id, tier and groups (for credentials other than API keys,
    /// e.g. a token's claims).
    pub fn new(id: &str, tier: Option<&str>, groups: Vec<Arc<str>>) -> Result<Self, BuildError> {
        let header = |what: &str, v: &str| {
            HeaderValue::from_str(v)
                .map_err(|_| BuildError(format!("{what} {v:?} is not a valid header value")))
        };
        Ok(Self {
            id_header: header("consumer", id)?,
            tier_header: tier.map(|t| header("tier", t)).transpose()?,
            id: ConsumerId(Arc::from(id)),
            tier: tier.map(|t| ConsumerTier(Arc::from(t))),
            groups: groups.into_boxed_slice(),
        })
    }
}

/// Why an [`Authenticator`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildError(pub String);

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BuildError {}

/// The consumers and how credentials find them; shared by every route.
pub struct Authenticator {
    /// Consumers by the SHA-256 of their API keys.
    by_key_hash: HashMap<[u8; 32], Arc<Consumer>>,
    /// Consumers by name (for ACLs and token claims).
    by_name: HashMap<Arc<str>, Arc<Consumer>>,
    pub(crate) options: AuthOptions,
    pub(crate) jwt: Option<JwtVerifier>,
}

impl fmt::Debug for Authenticator {
    /// Counts only: key hashes never appear in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("consumers", &self.by_name.len())
            .field("api_keys", &self.by_key_hash.len())
            .field("options", &self.options)
            .finish()
    }
}

impl Authenticator {
    /// Builds the consumer table. Names and key hashes must be unique.
    pub fn new(consumers: Vec<ConsumerSpec>, options: AuthOptions) -> Result<Self, BuildError> {
        let mut by_key_hash = HashMap::new();
        let mut by_name = HashMap::new();
        for spec in consumers {
            let groups = spec.groups.iter().map(|g| Arc::from(g.as_str())).collect();
            let consumer = Arc::new(Consumer::new(&spec.name, spec.tier.as_deref(), groups)?);
            if by_name
                .insert(Arc::clone(&consumer.id.0), Arc::clone(&consumer))
                .is_some()
            {
                return Err(BuildError(format!("duplicate consumer {:?}", spec.name)));
            }
            for hash in spec.api_key_hashes {
                if by_key_hash.insert(hash, Arc::clone(&consumer)).is_some() {
                    return Err(BuildError(format!(
                        "an API key of consumer {:?} belongs to another consumer too",
                        spec.name
                    )));
                }
            }
        }
        let jwt = options.jwt.clone().map(JwtVerifier::new).transpose()?;
        Ok(Self {
            by_key_hash,
            by_name,
            options,
            jwt,
        })
    }

    /// Takes over `previous`'s cached JWK Set when the JWK Set URL and CA are the same, so a
    /// configuration reload does not fetch the keys again.
    pub fn keep_jwks_of(&mut self, previous: &Authenticator) {
        if let (Some(jwt), Some(old)) = (&mut self.jwt, &previous.jwt)
            && let (Some(next), Some(cached)) = (&mut jwt.jwks, &old.jwks)
        {
            *next = cached.successor(Arc::clone(next));
        }
    }

    /// The consumer named `name`.
    pub fn consumer(&self, name: &str) -> Option<&Arc<Consumer>> {
        self.by_name.get(name)
    }

    /// Whether any consumer has an API key.
    pub fn has_api_keys(&self) -> bool {
        !self.by_key_hash.is_empty()
    }

    /// The consumer owning API key `key`.
    ///
    /// The key is hashed first and looked up by its hash, so the lookup's timing depends on
    /// the hash (which tells an attacker nothing usable about any stored key), never on how
    /// much of a real key was guessed; the stored hash is then compared in constant time.
    pub fn by_api_key(&self, key: &[u8]) -> Option<&Arc<Consumer>> {
        let hash = hash_key(key);
        let (stored, consumer) = self.by_key_hash.get_key_value(&hash)?;
        bool::from(stored.ct_eq(&hash)).then_some(consumer)
    }
}
