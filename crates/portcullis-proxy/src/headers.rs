//! Header rewriting between client and upstream: hop-by-hop removal (RFC 9110 §7.6.1), `Via`,
//! and the forwarded headers, which are believed only from trusted proxies.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue, Version, header};
use ipnet::IpNet;
use portcullis_http::headers::{
    FORWARDED, KEEP_ALIVE, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO, X_REQUEST_ID,
    contains_any,
};

/// Removes hop-by-hop headers: those named in `Connection`, and `Connection`, `Keep-Alive`, `TE`
/// (except `TE: trailers`, which HTTP/2 upstreams such as gRPC need), `Trailer`,
/// `Transfer-Encoding`, `Upgrade` and every `Proxy-*` header. With `upgrade`, the `Upgrade`
/// header and `Connection: upgrade` are kept so the protocol switch reaches the other side.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let mut named = connection_named(headers);
    // One pass over the headers present, instead of a hash lookup for every hop-by-hop name
    // that is usually absent.
    let mut te_trailers = false;
    for (name, value) in headers.iter() {
        if *name == header::TE && value.as_bytes().eq_ignore_ascii_case(b"trailers") {
            te_trailers = true;
        }
        if is_hop_by_hop(name, upgrade) && named.last() != Some(name) {
            named.push(name.clone());
        }
    }
    for name in named {
        headers.remove(name);
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// The fields a request's `Connection` header names, which are hop-by-hop too: none for the
/// usual tokens (`keep-alive` and `upgrade` are handled by name, `close` names no field), and
/// never `X-Request-Id` or `Host`, which the gateway relies on.
pub(crate) fn connection_named(headers: &HeaderMap) -> Vec<HeaderName> {
    let mut named = Vec::new();
    for value in headers.get_all(header::CONNECTION) {
        for token in value.as_bytes().split(|&b| b == b',') {
            let token = token.trim_ascii();
            let usual = [&b"keep-alive"[..], b"close", b"upgrade", b""]
                .iter()
                .any(|t| token.eq_ignore_ascii_case(t));
            if usual {
                continue;
            }
            match HeaderName::from_bytes(token) {
                Ok(name) if name != X_REQUEST_ID && name != header::HOST => named.push(name),
                _ => {}
            }
        }
    }
    named
}

/// Whether `name` is a hop-by-hop field by name alone (RFC 9110 section 7.6.1): `Connection`,
/// `Keep-Alive`, `Trailer`, `Transfer-Encoding`, `TE`, `Proxy-*`, and `Upgrade` unless the
/// message is a protocol upgrade. Fields named in `Connection` are hop-by-hop too.
pub fn is_hop_by_hop(name: &HeaderName, upgrade: bool) -> bool {
    *name == header::CONNECTION
        || *name == KEEP_ALIVE
        || *name == header::TRAILER
        || *name == header::TRANSFER_ENCODING
        || *name == header::TE
        || (*name == header::UPGRADE && !upgrade)
        || name.as_str().starts_with("proxy-")
}

/// Whether a request asks to switch protocols (HTTP/1.1 `Connection: upgrade` + `Upgrade`).
pub fn is_upgrade_request(version: Version, headers: &HeaderMap) -> bool {
    version == Version::HTTP_11
        && contains_any(headers, &[header::UPGRADE])
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Our `Via` entries (`1.1 portcullis`, `2 portcullis`, …), built once.
#[derive(Debug, Clone)]
pub struct Via {
    v10: HeaderValue,
    v11: HeaderValue,
    v2: HeaderValue,
    v3: HeaderValue,
}

impl Via {
    /// `Via` entries with this pseudonym (a token without spaces, as validated in config).
    pub fn new(pseudonym: &str) -> Result<Self, http::header::InvalidHeaderValue> {
        let make = |proto: &str| HeaderValue::from_str(&format!("{proto} {pseudonym}"));
        Ok(Self {
            v10: make("1.0")?,
            v11: make("1.1")?,
            v2: make("2")?,
            v3: make("3")?,
        })
    }

    /// The `Via` value to send on: `existing` (the first field's), then our entry.
    pub(crate) fn after(&self, existing: Option<&HeaderValue>, version: Version) -> HeaderValue {
        let ours = self.entry(version);
        let combined = existing.and_then(|existing| {
            let mut v = Vec::with_capacity(existing.len() + 2 + ours.len());
            v.extend_from_slice(existing.as_bytes());
            v.extend_from_slice(b", ");
            v.extend_from_slice(ours.as_bytes());
            HeaderValue::from_bytes(&v).ok()
        });
        combined.unwrap_or_else(|| ours.clone())
    }

    fn entry(&self, version: Version) -> &HeaderValue {
        match version {
            Version::HTTP_09 | Version::HTTP_10 => &self.v10,
            Version::HTTP_2 => &self.v2,
            Version::HTTP_3 => &self.v3,
            _ => &self.v11,
        }
    }
}

/// Appends `Via: <version> <pseudonym>` (RFC 9110 §7.6.3).
pub fn append_via(headers: &mut HeaderMap, version: Version, via: &Via) {
    let value = via.after(headers.get(header::VIA), version);
    headers.insert(header::VIA, value);
}

/// The set of proxies whose forwarded headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    /// Trusts these networks.
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self { nets }
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// The client's address: the peer, or, when the peer is trusted, the right-most address in
    /// `X-Forwarded-For` that is not itself a trusted proxy.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.contains(peer) {
            return peer;
        }
        let mut client = peer;
        for entry in forwarded_for_entries(headers).rev() {
            match parse_forwarded_ip(entry) {
                Some(ip) if self.contains(ip) => client = ip,
                Some(ip) => return ip,
                None => return client,
            }
        }
        client
    }

    /// Sets `X-Forwarded-For`, `-Proto` and `-Host` for the upstream request. From an untrusted
    /// peer, incoming values (and `Forwarded`) are discarded and replaced by what we saw.
    /// `peer_value` is the peer address as a header value (built once per connection).
    pub fn set_forwarded(
        &self,
        headers: &mut HeaderMap,
        peer: IpAddr,
        peer_value: &HeaderValue,
        https: bool,
        host: Option<&HeaderValue>,
    ) {
        let trusted = self.contains(peer);
        let xff = forwarded_for(trusted, headers, peer, peer_value);
        headers.insert(X_FORWARDED_FOR, xff);
        if !trusted || !headers.contains_key(X_FORWARDED_PROTO) {
            let proto = if https { "https" } else { "http" };
            headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
        }
        if !trusted || !headers.contains_key(X_FORWARDED_HOST) {
            match host {
                Some(h) => {
                    headers.insert(X_FORWARDED_HOST, h.clone());
                }
                None => {
                    headers.remove(X_FORWARDED_HOST);
                }
            }
        }
        if !trusted {
            headers.remove(FORWARDED);
        }
    }
}

/// The `X-Forwarded-For` value to send on: the incoming chain and the peer when the peer is
/// `trusted`, else (or should the chain not make a valid value) the peer alone.
pub(crate) fn forwarded_for(
    trusted: bool,
    headers: &HeaderMap,
    peer: IpAddr,
    peer_value: &HeaderValue,
) -> HeaderValue {
    let chain: Option<String> = trusted
        .then(|| {
            forwarded_for_entries(headers)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .filter(|s| !s.is_empty());
    chain
        .and_then(|chain| HeaderValue::from_str(&format!("{chain}, {}", peer.to_canonical())).ok())
        .unwrap_or_else(|| peer_value.clone())
}

fn forwarded_for_entries(headers: &HeaderMap) -> impl DoubleEndedIterator<Item = &str> {
    headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .into_iter()
}

/// The peer address as an `X-Forwarded-For` value.
pub fn peer_header_value(peer: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&peer.to_canonical().to_string())
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Parses `1.2.3.4`, `1.2.3.4:80`, `::1` or `[::1]:80`.
fn parse_forwarded_ip(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(sock) = entry.parse::<std::net::SocketAddr>() {
        return Some(sock.ip().to_canonical());
    }
    entry
        .strip_prefix('[')
        .and_then(|s| s.split(']').next())
        .and_then(|s| s.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn trusted(nets: &[&str]) -> TrustedProxies {
        TrustedProxies::new(nets.iter().map(|n| n.parse().unwrap()).collect())
    }

    #[test]
    fn hop_by_hop_headers_and_those_named_by_connection_are_removed() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret-hop"),
            ("keep-alive", "timeout=5"),
            ("x-secret-hop", "1"),
            ("te", "gzip"),
            ("trailer", "x"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "keep-alive"),
            ("x-keep", "yes"),
        ]);
        remove_hop_by_hop(&mut h, false);
        let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-keep"]);
    }

    #[test]
    fn te_trailers_survives_and_upgrades_keep_their_headers() {
        let mut h = map(&[
            ("te", "trailers"),
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
        ]);
        remove_hop_by_hop(&mut h, true);
        assert_eq!(h["te"], "trailers");
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
    }

    #[test]
    fn connection_cannot_strip_the_request_id() {
        let mut h = map(&[("connection", "x-request-id"), ("x-request-id", "r1")]);
        remove_hop_by_hop(&mut h, false);
        assert_eq!(h["x-request-id"], "r1");
    }

    #[test]
    fn via_is_appended() {
        let mut h = map(&[("via", "1.1 cdn")]);
        append_via(&mut h, Version::HTTP_2, &Via::new("portcullis").unwrap());
        assert_eq!(h["via"], "1.1 cdn, 2 portcullis");
        let mut fresh = HeaderMap::new();
        append_via(&mut fresh, Version::HTTP_11, &Via::new("edge").unwrap());
        assert_eq!(fresh["via"], "1.1 edge");
    }

    #[test]
    fn untrusted_peers_cannot_spoof_forwarded_headers() {
        let t = trusted(&["10.0.0.0/8"]);
        let mut h = map(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil"),
            ("forwarded", "for=6.6.6.6"),
        ]);
        let peer: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(t.client_ip(peer, &h), peer);
        t.set_forwarded(
            &mut h,
            peer,
            &peer_header_value(peer),
            false,
            Some(&HeaderValue::from_static("shop.example")),
        );
        assert_eq!(h["x-forwarded-for"], "203.0.113.9");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "shop.example");
        assert!(!h.contains_key("forwarded"));
    }

    #[test]
    fn trusted_peers_extend_the_chain_and_reveal_the_client() {
        let t = trusted(&["10.0.0.0/8", "::1/128"]);
        let mut h = map(&[
            ("x-forwarded-for", "198.51.100.7, 10.1.1.1"),
            ("x-forwarded-proto", "https"),
        ]);
        let peer: IpAddr = "10.2.2.2".parse().unwrap();
        assert_eq!(
            t.client_ip(peer, &h),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        t.set_forwarded(
            &mut h,
            peer,
            &peer_header_value(peer),
            false,
            Some(&HeaderValue::from_static("h")),
        );
        assert_eq!(h["x-forwarded-for"], "198.51.100.7, 10.1.1.1, 10.2.2.2");
        assert_eq!(h["x-forwarded-proto"], "https");
    }

    #[test]
    fn client_ip_stops_at_the_first_untrusted_hop_from_the_right() {
        let t = trusted(&["10.0.0.0/8"]);
        // The left-most entry is client-controlled and must not be believed.
        let h = map(&[("x-forwarded-for", "1.1.1.1, 198.51.100.7, 10.0.0.5")]);
        let ip = t.client_ip("10.0.0.1".parse().unwrap(), &h);
        assert_eq!(ip, "198.51.100.7".parse::<IpAddr>().unwrap());
        let h = map(&[("x-forwarded-for", "[2001:db8::1]:443")]);
        let ip = t.client_ip("10.0.0.1".parse().unwrap(), &h);
        assert_eq!(ip, "2001:db8::1".parse::<IpAddr>().unwrap());
    }
}
