//! Clients for tests: a pooled hyper client (HTTP/1.1 or HTTP/2 prior knowledge) and raw TCP.

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{self, connect::HttpConnector},
    rt::TokioExecutor,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// A pooled HTTP client.
#[derive(Debug, Clone)]
pub struct Client {
    inner: legacy::Client<HttpConnector, Full<Bytes>>,
}

impl Client {
    /// HTTP/1.1 with keep-alive.
    pub fn http1() -> Self {
        Self {
            inner: legacy::Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// HTTP/2 with prior knowledge (h2c).
    pub fn http2() -> Self {
        Self {
            inner: legacy::Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build_http(),
        }
    }

    /// Sends `req` and collects the response body.
    pub async fn send(&self, req: Request<Full<Bytes>>) -> Response<Bytes> {
        let resp = self
            .inner
            .request(req)
            .await
            .expect("request reaches the gateway");
        let (parts, body) = resp.into_parts();
        let bytes = body.collect().await.expect("response body").to_bytes();
        Response::from_parts(parts, bytes)
    }

    /// `GET url`.
    pub async fn get(&self, url: &str) -> Response<Bytes> {
        self.send(
            Request::get(url)
                .body(Full::default())
                .expect("valid request"),
        )
        .await
    }
}

/// A raw TCP connection, for requests a well-behaved client would not send.
#[derive(Debug)]
pub struct RawConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawConn {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> Self {
        Self {
            stream: TcpStream::connect(addr).await.expect("connect"),
            buf: Vec::new(),
        }
    }

    /// Writes `bytes`.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Reads until `needle` appears (or the peer closes, or 10 s pass), returning everything
    /// read up to and including it, and keeping the rest buffered.
    pub async fn read_until(&mut self, needle: &[u8]) -> Vec<u8> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(pos) = find(&self.buf, needle) {
                let rest = self.buf.split_off(pos + needle.len());
                return std::mem::replace(&mut self.buf, rest);
            }
            let mut chunk = [0u8; 8192];
            let read = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await;
            match read {
                Ok(Ok(n)) if n > 0 => self.buf.extend_from_slice(&chunk[..n]),
                _ => return std::mem::take(&mut self.buf),
            }
        }
    }

    /// Reads a response head (through the blank line) as text.
    pub async fn read_head(&mut self) -> String {
        String::from_utf8_lossy(&self.read_until(b"\r\n\r\n").await).into_owned()
    }

    /// Reads a response head and the body its `Content-Length` announces (empty without one).
    pub async fn read_response(&mut self) -> (String, Vec<u8>) {
        let head = self.read_head().await;
        let len = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(0);
        let body = self.read_exact(len).await;
        (head, body)
    }

    /// Reads exactly `n` more bytes (fewer if the peer closes first).
    pub async fn read_exact(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            let mut chunk = [0u8; 8192];
            match tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut chunk)).await
            {
                Ok(Ok(k)) if k > 0 => self.buf.extend_from_slice(&chunk[..k]),
                _ => break,
            }
        }
        let rest = self.buf.split_off(n.min(self.buf.len()));
        std::mem::replace(&mut self.buf, rest)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
