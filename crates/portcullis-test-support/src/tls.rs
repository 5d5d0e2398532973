//! TLS for tests: a self-signed certificate written to PEM files, and a client that reports
//! the negotiated ALPN protocol.

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use bytes::Bytes;
use http::{Request, Response, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::{ClientConfig, RootCertStore, pki_types::ServerName};
use rustls_pki_types::CertificateDer;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// A self-signed certificate for `localhost`, as PEM files in a temporary directory.
#[derive(Debug)]
pub struct SelfSigned {
    _dir: tempfile::TempDir,
    /// Certificate PEM file.
    pub cert_path: PathBuf,
    /// Private key PEM file.
    pub key_path: PathBuf,
    der: CertificateDer<'static>,
}

impl SelfSigned {
    /// Generates a fresh certificate and key.
    pub fn generate() -> Self {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("rcgen");
        let dir = tempfile::tempdir().expect("tempdir");
        let cert_path = dir.path().join("cert.pem");
        let key_path = dir.path().join("key.pem");
        std::fs::write(&cert_path, ck.cert.pem()).expect("write cert");
        std::fs::write(&key_path, ck.signing_key.serialize_pem()).expect("write key");
        Self {
            _dir: dir,
            cert_path,
            key_path,
            der: ck.cert.der().clone(),
        }
    }
}

/// `GET path` over TLS offering `alpn`; returns the negotiated protocol and the response.
pub async fn tls_get(
    addr: SocketAddr,
    cert: &SelfSigned,
    alpn: &[&[u8]],
    path: &str,
) -> (Option<Vec<u8>>, Response<Bytes>) {
    let mut roots = RootCertStore::empty();
    roots.add(cert.der.clone()).expect("add root");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("TLS handshake");
    let negotiated = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    let io = TokioIo::new(tls);
    let uri = format!("https://localhost:{}{path}", addr.port());
    let resp = if negotiated.as_deref() == Some(b"h2") {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .expect("h2 handshake");
        tokio::spawn(conn);
        let req = Request::get(uri)
            .version(Version::HTTP_2)
            .body(Empty::<Bytes>::new())
            .expect("request");
        send.send_request(req).await.expect("response")
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .expect("h1 handshake");
        tokio::spawn(conn);
        let req = Request::get(path)
            .header("host", "localhost")
            .body(Empty::<Bytes>::new())
            .expect("request");
        send.send_request(req).await.expect("response")
    };
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    (negotiated, Response::from_parts(parts, bytes))
}
