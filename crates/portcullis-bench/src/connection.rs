//! Connections to the target: TCP (with `TCP_NODELAY`), TLS when the URL is `https://`, and a
//! hyper client connection speaking HTTP/1.1 or HTTP/2. Each worker owns one connection and
//! reconnects when it breaks, so no pool sits between the generator and the socket.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::{
    body::Incoming,
    client::conn::{http1, http2},
};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::{
    error::BenchError,
    http1_wire::WireConn,
    request::{HttpVersion, Target},
    tls::{self, Verification},
};

/// Where and how to connect; shared by all workers.
pub(crate) struct Endpoint {
    version: HttpVersion,
    addrs: Vec<SocketAddr>,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("version", &self.version)
            .field("addrs", &self.addrs)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Conn::Wire(_) => "Conn::Wire",
            Conn::H1(_) => "Conn::H1",
            Conn::H2(_) => "Conn::H2",
        })
    }
}

/// A live client connection.
pub(crate) enum Conn {
    /// HTTP/1.1 over plain TCP, with the generator's own client.
    Wire(WireConn),
    /// HTTP/1.1.
    H1(http1::SendRequest<Full<Bytes>>),
    /// HTTP/2.
    H2(http2::SendRequest<Full<Bytes>>),
}

impl Endpoint {
    /// Whether requests go through [`crate::http1_wire`] (HTTP/1.1 over plain TCP).
    pub(crate) fn uses_wire(&self) -> bool {
        self.version == HttpVersion::Http1 && self.tls.is_none()
    }

    /// Resolves the target's host once, and prepares TLS.
    pub(crate) async fn resolve(
        target: &Target,
        verification: &Verification,
    ) -> Result<Self, BenchError> {
        let host_port = format!("{}:{}", target.host, target.port);
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(&host_port)
            .await
            .map_err(|e| BenchError::Resolve {
                host: host_port.clone(),
                message: e.to_string(),
            })?
            .collect();
        if addrs.is_empty() {
            return Err(BenchError::Resolve {
                host: host_port,
                message: "no addresses".to_owned(),
            });
        }
        let tls = if target.is_tls() {
            let config = tls::client_config(verification, target.version)?;
            let name = ServerName::try_from(target.host.clone())
                .map_err(|e| BenchError::Tls(format!("server name {:?}: {e}", target.host)))?;
            Some((TlsConnector::from(config), name))
        } else {
            None
        };
        Ok(Self {
            version: target.version,
            addrs,
            tls,
        })
    }

    /// Opens connection number `n` (spreading connections over the resolved addresses).
    pub(crate) async fn connect(&self, n: usize) -> Result<Conn, String> {
        let addr = self.addrs[n % self.addrs.len()];
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None if self.version == HttpVersion::Http1 => Ok(Conn::Wire(WireConn::new(tcp))),
            None => self.handshake(TokioIo::new(tcp)).await,
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
                self.handshake(TokioIo::new(tls)).await
            }
        }
    }

    async fn handshake<T>(&self, io: TokioIo<T>) -> Result<Conn, String>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        match self.version {
            HttpVersion::Http1 => {
                let (sender, conn) = http1::handshake(io)
                    .await
                    .map_err(|e| format!("HTTP/1.1 handshake: {e}"))?;
                tokio::spawn(conn);
                Ok(Conn::H1(sender))
            }
            HttpVersion::Http2 => {
                let (sender, conn) = http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
                tokio::spawn(conn);
                Ok(Conn::H2(sender))
            }
        }
    }
}

impl Conn {
    /// Whether the connection can no longer be used.
    pub(crate) fn is_closed(&mut self) -> bool {
        match self {
            Conn::Wire(w) => w.is_closed(),
            Conn::H1(s) => s.is_closed(),
            Conn::H2(s) => s.is_closed(),
        }
    }

    /// Another handle on the same HTTP/2 connection (`None` for HTTP/1.1).
    pub(crate) fn share(&self) -> Option<Conn> {
        match self {
            Conn::H2(s) => Some(Conn::H2(s.clone())),
            Conn::Wire(_) | Conn::H1(_) => None,
        }
    }

    /// Sends a request (hyper connections) and returns the response head (the body streams
    /// on).
    pub(crate) async fn send(
        &mut self,
        req: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, String> {
        let result = match self {
            Conn::Wire(_) => {
                return Err("internal: a hyper request on a wire connection".to_owned());
            }
            Conn::H1(s) => match s.ready().await {
                Ok(()) => s.send_request(req).await,
                Err(e) => Err(e),
            },
            Conn::H2(s) => match s.ready().await {
                Ok(()) => s.send_request(req).await,
                Err(e) => Err(e),
            },
        };
        result.map_err(|e| crate::exchange::error_chain(&e))
    }
}
