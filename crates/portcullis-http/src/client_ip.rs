//! The client's address, as a request extension shared by the layers that key or filter on it.
//!
//! Whoever accepts the connection knows the peer address (and, behind trusted proxies, the real
//! client's); the security layer's IP rules and the rate limiter's per-IP keys read it from
//! here, so one insertion serves every layer and none of them depends on a server framework.

use std::net::{IpAddr, SocketAddr};

/// The address of the client a request came from, resolved by whoever accepted the connection
/// (the peer address, or the client behind a trusted proxy). Insert it before the layers that
/// read it:
///
/// ```
/// use portcullis_http::ClientIp;
///
/// let peer: std::net::SocketAddr = "192.0.2.7:50412".parse().unwrap();
/// let mut req = http::Request::new(());
/// req.extensions_mut().insert(ClientIp::from(peer));
/// assert_eq!(ClientIp::of(&req), Some("192.0.2.7".parse().unwrap()));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientIp(pub IpAddr);

impl ClientIp {
    /// The client address of `req`, if one was inserted.
    pub fn of<B>(req: &http::Request<B>) -> Option<IpAddr> {
        req.extensions().get::<Self>().map(|c| c.0)
    }
}

impl From<IpAddr> for ClientIp {
    fn from(ip: IpAddr) -> Self {
        Self(ip)
    }
}

impl From<SocketAddr> for ClientIp {
    fn from(addr: SocketAddr) -> Self {
        Self(addr.ip())
    }
}
