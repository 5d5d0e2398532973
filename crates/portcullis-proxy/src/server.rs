//! The public listener: accept, optional TLS, HTTP/1.1 and HTTP/2 (h2c prior knowledge or ALPN),
//! and graceful shutdown that drains in-flight requests within a deadline.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::{
    client_writes::Batched,
    connections::{Connections, Registration, Supervised},
    handle::GatewayHandle,
    hangup::HangUp,
    round_flush,
    service::{ConnInfo, ProxyService},
    watchdog::{Counted, Progress},
};

/// How long a client may take to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connection settings of the listener.
#[derive(Debug, Clone)]
pub(crate) struct ListenerSettings {
    pub(crate) http2: bool,
    pub(crate) header_read_timeout: Duration,
    pub(crate) max_header_bytes: usize,
    pub(crate) drain_timeout: Duration,
}

/// Accepts connections until `shutdown` resolves, then drains.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    handle: GatewayHandle,
    settings: ListenerSettings,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let builder = Arc::new(connection_builder(&settings));
    let connections = Arc::new(Connections::default());
    let sweeper = tokio::spawn(Arc::clone(&connections).sweep_every(settings.header_read_timeout));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let conn = ConnInfo::new(peer, tls.is_some());
                    let progress = Arc::new(Progress::default());
                    let service = ProxyService::new(handle.clone(), conn)
                        .watched(Arc::clone(&progress));
                    let registration = connections.register(Arc::clone(&progress));
                    tokio::spawn(serve_connection(
                        stream, peer, tls.clone(), Arc::clone(&builder), service,
                        progress, registration,
                    ));
                }
                Err(e) => {
                    // Usually EMFILE: back off briefly instead of spinning on the error.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    handle.current().set_draining();
    info!(
        connections = connections.count(),
        "stopped accepting; draining in-flight requests"
    );
    let deadline = tokio::time::Instant::now() + settings.drain_timeout;
    // First a grace period in which kept-alive HTTP/1.1 connections are not closed while idle
    // (a client may be sending on one right now) but answered with `Connection: close` (the
    // service does that while draining), so active clients move to a new connection - on a
    // new process after a hand-over - without a failed request. Then hyper's graceful
    // shutdown closes what is still idle and waits for what is in flight.
    if connections.count() > 0 {
        tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + DRAIN_GRACE)).await;
    }
    connections.shut_down_gracefully();
    tokio::select! {
        () = connections.drained() => info!("drained"),
        () = tokio::time::sleep_until(deadline) => {
            warn!(timeout = ?settings.drain_timeout, "drain timeout reached; closing remaining connections");
        }
    }
    sweeper.abort();
}

/// How long draining answers requests with `Connection: close` before closing idle
/// connections.
const DRAIN_GRACE: Duration = Duration::from_secs(1);

fn connection_builder(settings: &ListenerSettings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        // No hyper timer for HTTP/1: its per-request header timer is replaced by the
        // per-connection watchdog (watchdog.rs).
        .max_buf_size(settings.max_header_bytes)
        .keep_alive(true)
        // No read after each request head to see the client hang up, which allocated a new
        // read buffer per request: the connection's supervisor watches the socket instead
        // (hangup.rs).
        .half_close(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX));
    if settings.http2 {
        builder
    } else {
        builder.http1_only()
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    service: ProxyService,
    progress: Arc<Progress>,
    registration: Registration,
) {
    let _ = stream.set_nodelay(true);
    let hang_up = HangUp::watch(&stream);
    let conn = Conn {
        builder: &builder,
        service,
        progress,
        registration,
        peer,
        hang_up,
    };
    match tls {
        // On one CPU, responses go out at the end of the event loop's round (round_flush.rs).
        None => match round_flush::queue() {
            Some(queue) => conn.serve(Batched::new(stream, queue)).await,
            None => conn.serve(stream).await,
        },
        Some(acceptor) => {
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls_stream)) => conn.serve(tls_stream).await,
                Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => debug!(%peer, "TLS handshake timed out"),
            }
        }
    }
}

/// One accepted connection, ready to speak HTTP once its stream is (after TLS, with TLS).
struct Conn<'a> {
    builder: &'a auto::Builder<TokioExecutor>,
    service: ProxyService,
    progress: Arc<Progress>,
    registration: Registration,
    peer: SocketAddr,
    hang_up: Option<HangUp>,
}

impl Conn<'_> {
    /// Serves HTTP on `stream` under the listener's supervision until it ends.
    async fn serve<S>(self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        // The wrapper sits where hyper reads and writes plain HTTP: above TLS, when there is TLS.
        let stream = Counted::new(stream, Arc::clone(&self.progress));
        let conn = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(stream), self.service);
        let result = Supervised::new(
            conn.into_owned(),
            self.progress,
            self.registration,
            |c| c.graceful_shutdown(),
            self.peer,
            self.hang_up,
        )
        .await;
        if let Some(Err(e)) = result {
            debug!(peer = %self.peer, error = %e, "connection ended with an error");
        }
    }
}
