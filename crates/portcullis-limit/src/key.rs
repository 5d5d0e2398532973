//! What identifies the caller for a limit: client IP, API key, consumer, tier, a header, or a
//! combination; no parts at all makes the limit global to its scope.

use std::net::IpAddr;

use http::HeaderName;
use portcullis_http::{ConsumerId, ConsumerTier};

/// Who is asking: the client IP and, once authenticated, the consumer and its tier.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// The client IP, resolved with the trusted-proxy rules.
    pub ip: IpAddr,
    /// The authenticated consumer's id.
    pub consumer: Option<&'a str>,
    /// The authenticated consumer's tier.
    pub tier: Option<&'a str>,
}

impl<'a> Caller<'a> {
    /// The caller of a request an auth layer already annotated with the [`ConsumerId`] and
    /// [`ConsumerTier`] extensions.
    pub fn of<B>(req: &'a http::Request<B>, ip: IpAddr) -> Self {
        Self {
            ip,
            consumer: req.extensions().get::<ConsumerId>().map(|c| &*c.0),
            tier: req.extensions().get::<ConsumerTier>().map(|t| &*t.0),
        }
    }
}
use xxhash_rust::xxh3::xxh3_128;

/// One part of a limit's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPart {
    /// The client IP, as resolved with the gateway's trusted-proxy rules.
    ClientIp,
    /// The API key sent in this header (hashed; never stored or logged); the client IP when
    /// absent.
    ApiKey(HeaderName),
    /// The authenticated consumer id; without one, the API key header, then the client IP.
    Consumer(HeaderName),
    /// The consumer's tier (everyone of a tier shares the limit); `anonymous` when absent.
    Tier,
    /// The value of a request header; the client IP when absent.
    Header(HeaderName),
}

/// Hashes the request's identity under `parts` into a 128-bit digest.
pub(crate) fn identity<B>(parts: &[KeyPart], req: &http::Request<B>, caller: &Caller<'_>) -> u128 {
    let client_ip = caller.ip;
    if let [KeyPart::ClientIp] = parts {
        // The default key, on every request of a limited route: the same bytes as the general
        // path below, laid out directly.
        return ip_identity(client_ip);
    }
    let mut key = KeyBytes::default();
    for part in parts {
        match part {
            KeyPart::ClientIp => ip(&mut key, client_ip),
            KeyPart::ApiKey(name) | KeyPart::Header(name) => match req.headers().get(name) {
                Some(v) => key.tagged(b'h', v.as_bytes()),
                None => ip(&mut key, client_ip),
            },
            KeyPart::Consumer(api_key) => {
                if let Some(id) = caller.consumer {
                    key.tagged(b'c', id.as_bytes());
                } else if let Some(v) = req.headers().get(api_key) {
                    key.tagged(b'h', v.as_bytes());
                } else {
                    ip(&mut key, client_ip);
                }
            }
            KeyPart::Tier => {
                let tier = caller.tier.unwrap_or("anonymous");
                key.tagged(b't', tier.as_bytes());
            }
        }
    }
    xxh3_128(key.as_slice())
}

/// The bytes an identity hashes, on the stack unless unusually long (one-shot hashing of a
/// small buffer costs a fraction of a streaming hasher's set-up).
struct KeyBytes {
    inline: [u8; 128],
    len: usize,
    heap: Vec<u8>,
}

impl Default for KeyBytes {
    fn default() -> Self {
        Self {
            inline: [0; 128],
            len: 0,
            heap: Vec::new(),
        }
    }
}

impl KeyBytes {
    fn push(&mut self, bytes: &[u8]) {
        if self.heap.is_empty() && self.len + bytes.len() <= self.inline.len() {
            self.inline[self.len..self.len + bytes.len()].copy_from_slice(bytes);
            self.len += bytes.len();
        } else {
            if self.heap.is_empty() {
                self.heap.extend_from_slice(&self.inline[..self.len]);
            }
            self.heap.extend_from_slice(bytes);
        }
    }

    /// Tag and length first, so ("ab", "c") and ("a", "bc") never hash alike.
    fn tagged(&mut self, tag: u8, bytes: &[u8]) {
        self.push(&[tag]);
        self.push(&(bytes.len() as u64).to_le_bytes());
        self.push(bytes);
    }

    fn as_slice(&self) -> &[u8] {
        if self.heap.is_empty() {
            &self.inline[..self.len]
        } else {
            &self.heap
        }
    }
}

/// `identity` of a key made of the client IP alone: the bytes `ip` pushes, hashed without
/// going through `KeyBytes`.
fn ip_identity(ip: IpAddr) -> u128 {
    let (bytes, len) = ip_bytes(ip);
    xxh3_128(&bytes[..len])
}

fn ip(key: &mut KeyBytes, ip: IpAddr) {
    let (bytes, len) = ip_bytes(ip);
    key.push(&bytes[..len]);
}

/// The client IP as `KeyBytes::tagged` lays a part out (tag `4` or `6`, length, octets), on
/// the stack. IPv4-mapped IPv6 addresses are the same client as their IPv4 form.
fn ip_bytes(ip: IpAddr) -> ([u8; 1 + 8 + 16], usize) {
    let mut bytes = [0u8; 1 + 8 + 16];
    let (tag, octets): (u8, &[u8]) = match ip.to_canonical() {
        IpAddr::V4(v4) => (b'4', &v4.octets()),
        IpAddr::V6(v6) => (b'6', &v6.octets()),
    };
    bytes[0] = tag;
    bytes[1..9].copy_from_slice(&(octets.len() as u64).to_le_bytes());
    bytes[9..9 + octets.len()].copy_from_slice(octets);
    (bytes, 9 + octets.len())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn parts(headers: &[(&str, &str)]) -> http::Request<()> {
        let mut b = http::Request::builder();
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).expect("request")
    }

    #[test]
    fn missing_values_fall_back_to_the_client_ip() {
        let ip1: IpAddr = "10.0.0.1".parse().expect("ip");
        let ip2: IpAddr = "10.0.0.2".parse().expect("ip");
        let key = [KeyPart::ApiKey(HeaderName::from_static("x-api-key"))];
        let none = parts(&[]);
        assert_ne!(
            identity(&key, &none, &Caller::of(&none, ip1)),
            identity(&key, &none, &Caller::of(&none, ip2))
        );
        let with = parts(&[("x-api-key", "k1")]);
        assert_eq!(
            identity(&key, &with, &Caller::of(&with, ip1)),
            identity(&key, &with, &Caller::of(&with, ip2))
        );
    }

    #[test]
    fn the_consumer_wins_over_the_api_key() {
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        let key = [KeyPart::Consumer(HeaderName::from_static("x-api-key"))];
        let mut a = parts(&[("x-api-key", "k1")]);
        let b = parts(&[("x-api-key", "k2")]);
        assert_ne!(
            identity(&key, &a, &Caller::of(&a, ip)),
            identity(&key, &b, &Caller::of(&b, ip))
        );
        a.extensions_mut().insert(ConsumerId(Arc::from("acme")));
        let mut b = b;
        b.extensions_mut().insert(ConsumerId(Arc::from("acme")));
        assert_eq!(
            identity(&key, &a, &Caller::of(&a, ip)),
            identity(&key, &b, &Caller::of(&b, ip))
        );
    }

    #[test]
    fn long_values_hash_like_short_ones_do() {
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        let key = [KeyPart::Header(HeaderName::from_static("x-t"))];
        let long = "k".repeat(500);
        let a = parts(&[("x-t", &long)]);
        let b = parts(&[("x-t", &long)]);
        let c = parts(&[("x-t", &"k".repeat(499))]);
        assert_eq!(
            identity(&key, &a, &Caller::of(&a, ip)),
            identity(&key, &b, &Caller::of(&b, ip))
        );
        assert_ne!(
            identity(&key, &a, &Caller::of(&a, ip)),
            identity(&key, &c, &Caller::of(&c, ip))
        );
    }

    #[test]
    fn the_client_ip_alone_hashes_as_the_general_path_does() {
        // Redis keys carry the identity: the shortcut must not change them.
        let p = parts(&[]);
        for ip in ["192.0.2.7", "2001:db8::1", "::ffff:192.0.2.7"] {
            let ip: IpAddr = ip.parse().expect("ip");
            let mut general = KeyBytes::default();
            match ip.to_canonical() {
                IpAddr::V4(v4) => general.tagged(b'4', &v4.octets()),
                IpAddr::V6(v6) => general.tagged(b'6', &v6.octets()),
            }
            assert_eq!(
                identity(&[KeyPart::ClientIp], &p, &Caller::of(&p, ip)),
                xxh3_128(general.as_slice()),
                "{ip}"
            );
        }
    }

    #[test]
    fn mapped_ipv4_is_the_same_client() {
        let key = [KeyPart::ClientIp];
        let p = parts(&[]);
        let v4: IpAddr = "192.0.2.7".parse().expect("ip");
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().expect("ip");
        assert_eq!(
            identity(&key, &p, &Caller::of(&p, v4)),
            identity(&key, &p, &Caller::of(&p, mapped))
        );
    }
}
