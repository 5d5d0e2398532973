//! The public listener: accept, optional TLS, HTTP/1.1 and HTTP/2 (h2c prior knowledge or ALPN),
//! and graceful shutdown that drains in-flight requests within a deadline.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::{
    handle::GatewayHandle,
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
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let conn = ConnInfo::new(peer, tls.is_some());
                    let progress = Arc::new(Progress::default());
                    let service = ProxyService::new(handle.clone(), conn)
                        .watched(Arc::clone(&progress));
                    tokio::spawn(serve_connection(
                        stream, peer, tls.clone(), Arc::clone(&builder), service,
                        graceful.watcher(), Watch { progress, period: settings.header_read_timeout },
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
        connections = graceful.count(),
        "stopped accepting; draining in-flight requests"
    );
    let deadline = tokio::time::Instant::now() + settings.drain_timeout;
    // First a grace period in which kept-alive HTTP/1.1 connections are not closed while idle
    // (a client may be sending on one right now) but answered with `Connection: close` (the
    // service does that while draining), so active clients move to a new connection - on a
    // new process after a hand-over - without a failed request. Then hyper's graceful
    // shutdown closes what is still idle and waits for what is in flight.
    if graceful.count() > 0 {
        tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + DRAIN_GRACE)).await;
    }
    tokio::select! {
        () = graceful.shutdown() => info!("drained"),
        () = tokio::time::sleep_until(deadline) => {
            warn!(timeout = ?settings.drain_timeout, "drain timeout reached; closing remaining connections");
        }
    }
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
        .keep_alive(true);
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

/// The watchdog's settings for one connection.
struct Watch {
    progress: Arc<Progress>,
    period: Duration,
}

impl Watch {
    /// Runs `conn` until it ends, or closes it (by dropping it) once a whole period passed
    /// without progress while nothing was in flight.
    async fn run<F, T>(self, conn: F, peer: SocketAddr) -> Option<T>
    where
        F: std::future::Future<Output = T>,
    {
        tokio::pin!(conn);
        let start = tokio::time::Instant::now() + self.period;
        let mut ticker = tokio::time::interval_at(start, self.period);
        let mut last = self.progress.snapshot();
        loop {
            tokio::select! {
                biased;
                done = &mut conn => return Some(done),
                _ = ticker.tick() => {
                    let now = self.progress.snapshot();
                    if now == last && !self.progress.busy() {
                        debug!(%peer, period = ?self.period, "closing connection: no complete request or response progress within header_read_timeout");
                        return None;
                    }
                    last = now;
                }
            }
        }
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    service: ProxyService,
    watcher: hyper_util::server::graceful::Watcher,
    watch: Watch,
) {
    let _ = stream.set_nodelay(true);
    let service = TowerToHyperService::new(service);
    // The wrapper sits where hyper reads and writes plain HTTP: above TLS, when there is TLS.
    let progress = Arc::clone(&watch.progress);
    let result = match tls {
        None => {
            let stream = Counted::new(stream, progress);
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            watch.run(watcher.watch(conn.into_owned()), peer).await
        }
        Some(acceptor) => {
            let tls_stream =
                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
            let stream = Counted::new(tls_stream, progress);
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            watch.run(watcher.watch(conn.into_owned()), peer).await
        }
    };
    if let Some(Err(e)) = result {
        debug!(%peer, error = %e, "connection ended with an error");
    }
}
