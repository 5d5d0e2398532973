//! Connection pools to upstream targets, on hyper's client connections.
//!
//! Why not hyper-util's legacy `Client`: per request it races a lazily built connect future
//! against the pool checkout, hashes a pool key, rewrites the URI form, and spawns a task that
//! returns the connection once the response body ends. In a proxy that was about a third of the
//! user-space CPU per request (BENCHMARKS.md). Here an HTTP/1.1 checkout pops an idle sender
//! (newest first), and the response body hands the sender back when it ends, with no extra task.
//! HTTP/2 keeps one multiplexed connection per target. hyper-util also has no cap on
//! connections (hyper#3785); this is where the resilience work will add one with a wait queue.

use std::{
    io,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use http::{Request, Response};
use hyper::{
    body::Incoming,
    client::conn::{http1, http2},
};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use parking_lot::Mutex;
use portcullis_config::Protocol;
use portcullis_http::Body;
use tokio::net::TcpStream;
use tracing::debug;

use crate::{
    body::UpstreamBody,
    h1_client::{self, H1Body, H1Conn},
    upstream_head::TargetHead,
};

/// Pool settings shared by the targets of one upstream.
#[derive(Debug, Clone)]
pub(crate) struct PoolSettings {
    pub(crate) protocol: Protocol,
    pub(crate) connect_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_idle: usize,
}

/// Why a request could not be exchanged with a target.
#[derive(Debug)]
pub(crate) enum SendError {
    /// TCP connect failed (refused, unreachable, DNS).
    Connect(io::Error),
    /// TCP connect took longer than `connect_timeout`.
    ConnectTimeout,
    /// The HTTP exchange failed (handshake, reset, malformed response).
    Http(hyper::Error),
    /// The exchange on an inline HTTP/1.1 connection failed ([`crate::h1_client`]).
    H1(h1_client::Error),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Connect(e) => write!(f, "connect: {e}"),
            Self::ConnectTimeout => f.write_str("connect timed out"),
            Self::H1(e) => write!(f, "{e}"),
            Self::Http(e) => {
                write!(f, "{e}")?;
                let mut source = std::error::Error::source(e);
                while let Some(s) = source {
                    write!(f, ": {s}")?;
                    source = s.source();
                }
                Ok(())
            }
        }
    }
}

struct Idle {
    sender: http1::SendRequest<Body>,
    since: Instant,
}

/// An idle connection of the inline client ([`crate::h1_client`]).
struct H1Idle {
    conn: H1Conn,
    since: Instant,
}

/// The connections to one target.
pub(crate) struct TargetPool {
    addr: String,
    settings: PoolSettings,
    idle: Mutex<Vec<Idle>>,
    /// Idle connections of the inline client, for bodyless idempotent requests; `idle` holds
    /// hyper's, for the rest. `max_idle` bounds the two together.
    h1_idle: Mutex<Vec<H1Idle>>,
    h2_live: Mutex<Option<http2::SendRequest<Body>>>,
    h2_connecting: tokio::sync::Mutex<()>,
    reaper_started: AtomicBool,
}

impl std::fmt::Debug for TargetPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetPool")
            .field("addr", &self.addr)
            .field("idle", &self.idle_count())
            .finish_non_exhaustive()
    }
}

/// An HTTP/1.1 connection lent to one request; return it with [`Lease::release`] once the
/// response body has ended, or drop it to close the connection.
pub(crate) struct Lease {
    pool: Arc<TargetPool>,
    sender: http1::SendRequest<Body>,
}

impl Lease {
    /// Puts the connection back into the idle list.
    pub(crate) fn release(self) {
        self.pool.put_idle(self.sender);
    }
}

impl TargetPool {
    /// Idle HTTP/1.1 connections kept for reuse now.
    pub(crate) fn idle_count(&self) -> usize {
        self.idle.lock().len() + self.h1_idle.lock().len()
    }

    /// A pool for the target at `addr` (`host:port`).
    pub(crate) fn new(addr: String, settings: PoolSettings) -> Arc<Self> {
        Arc::new(Self {
            addr,
            settings,
            idle: Mutex::new(Vec::new()),
            h1_idle: Mutex::new(Vec::new()),
            h2_live: Mutex::new(None),
            h2_connecting: tokio::sync::Mutex::new(()),
            reaper_started: AtomicBool::new(false),
        })
    }

    /// Sends `req` (origin-form URI for HTTP/1.1, absolute for HTTP/2, the client's headers,
    /// which `head` rewrites on the way) and returns the response head, with the lease of the
    /// hyper HTTP/1.1 connection it came on. Bodyless idempotent HTTP/1.1 requests go through
    /// the inline client, whose body returns its connection itself.
    pub(crate) async fn send(
        self: &Arc<Self>,
        mut req: Request<Body>,
        head: &TargetHead<'_>,
    ) -> Result<(Response<UpstreamBody>, Option<Lease>), SendError> {
        let hyper_body = |r: Response<Incoming>| r.map(UpstreamBody::Left);
        match self.settings.protocol {
            Protocol::Http1
                if !head.upgrade
                    && http_body::Body::is_end_stream(req.body())
                    && h1_client::eligible(req.method()) =>
            {
                let (parts, _) = req.into_parts();
                Ok((
                    self.send_inline(&parts, head)
                        .await?
                        .map(UpstreamBody::Right),
                    None,
                ))
            }
            // hyper's paths are boxed: their futures are several times the inline client's,
            // and every request's future (which is copied as it is built) would carry them.
            Protocol::Http1 => {
                head.apply(req.headers_mut());
                let (resp, lease) = Box::pin(self.send_h1(req)).await?;
                Ok((hyper_body(resp), lease))
            }
            Protocol::Http2 => {
                head.apply(req.headers_mut());
                let resp = Box::pin(async {
                    let mut sender = self.h2_sender().await?;
                    sender.ready().await.map_err(SendError::Http)?;
                    sender.send_request(req).await.map_err(SendError::Http)
                })
                .await?;
                Ok((hyper_body(resp), None))
            }
        }
    }

    /// Sends a bodyless idempotent request on an idle inline connection, or a new one. A
    /// pooled connection that fails before any of a response arrives was most likely closed
    /// by the upstream as the request went out; the request goes again on another.
    async fn send_inline(
        self: &Arc<Self>,
        parts: &http::request::Parts,
        head: &TargetHead<'_>,
    ) -> Result<Response<H1Body>, SendError> {
        loop {
            let (mut conn, reused) = match self.take_h1() {
                Some(conn) => (conn, true),
                None => {
                    self.close_idle_hyper();
                    let io = Box::pin(self.connect_tcp()).await?;
                    self.ensure_reaper();
                    (H1Conn::new(io), false)
                }
            };
            // Let the other requests ready in this round of the event loop get this far
            // first, so their writes reach the upstream together (see BENCHMARKS.md), unless
            // the connection's writes wait for the round's end by themselves.
            if !conn.sends_at_round_end() {
                tokio::task::yield_now().await;
            }
            match conn.exchange(parts, head).await {
                Ok(head) => return Ok(head.into_response(conn, Arc::clone(self))),
                Err(e) if reused && e.unanswered() => {
                    debug!(target = %self.addr, error = %e, "pooled connection closed; retrying on another");
                }
                Err(e) => return Err(SendError::H1(e)),
            }
        }
    }

    /// Before a new inline connection: closes an idle connection of hyper's, if any, so the
    /// two kinds together stay within `pool.max_in_flight` (a connection is opened only when
    /// none of either kind is idle).
    fn close_idle_hyper(&self) {
        drop(self.idle.lock().pop());
    }

    /// Before a new hyper connection: closes an idle inline connection, if any (see
    /// [`Self::close_idle_hyper`]).
    fn close_idle_inline(&self) {
        drop(self.h1_idle.lock().pop());
    }

    fn take_h1(&self) -> Option<H1Conn> {
        let mut idle = self.h1_idle.lock();
        while let Some(entry) = idle.pop() {
            if entry.since.elapsed() < self.settings.idle_timeout {
                return Some(entry.conn);
            }
        }
        None
    }

    /// Takes back an inline connection whose response has ended.
    pub(crate) fn put_h1(&self, conn: H1Conn) {
        let mut idle = self.h1_idle.lock();
        if idle.len() < self.settings.max_idle
            && idle.len() + self.idle.lock().len() < self.settings.max_idle
        {
            idle.push(H1Idle {
                conn,
                since: Instant::now(),
            });
        }
    }

    async fn send_h1(
        self: &Arc<Self>,
        mut req: Request<Body>,
    ) -> Result<(Response<Incoming>, Option<Lease>), SendError> {
        loop {
            let (mut sender, reused) = match self.take_idle() {
                Some(sender) => (sender, true),
                None => {
                    self.close_idle_inline();
                    (self.connect_h1().await?, false)
                }
            };
            if let Err(e) = sender.ready().await {
                if reused {
                    continue;
                }
                return Err(SendError::Http(e));
            }
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    let lease = Lease {
                        pool: Arc::clone(self),
                        sender,
                    };
                    return Ok((resp, Some(lease)));
                }
                Err(mut e) => match e.take_message() {
                    // A pooled connection the upstream closed just now: the request was not
                    // written, so it is safe to send it on another connection.
                    Some(unsent) if reused => {
                        debug!(target = %self.addr, "pooled connection closed; retrying on another");
                        req = unsent;
                    }
                    _ => return Err(SendError::Http(e.into_error())),
                },
            }
        }
    }

    fn take_idle(&self) -> Option<http1::SendRequest<Body>> {
        let mut idle = self.idle.lock();
        while let Some(entry) = idle.pop() {
            if !entry.sender.is_closed() && entry.since.elapsed() < self.settings.idle_timeout {
                return Some(entry.sender);
            }
        }
        None
    }

    fn put_idle(&self, sender: http1::SendRequest<Body>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock();
        if idle.len() < self.settings.max_idle {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    async fn connect(&self) -> Result<TokioIo<TcpStream>, SendError> {
        self.connect_tcp().await.map(TokioIo::new)
    }

    async fn connect_tcp(&self) -> Result<TcpStream, SendError> {
        let stream = tokio::time::timeout(
            self.settings.connect_timeout,
            TcpStream::connect(self.addr.as_str()),
        )
        .await
        .map_err(|_| SendError::ConnectTimeout)?
        .map_err(SendError::Connect)?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    async fn connect_h1(self: &Arc<Self>) -> Result<http1::SendRequest<Body>, SendError> {
        let io = self.connect().await?;
        let (sender, conn) = http1::handshake(io).await.map_err(SendError::Http)?;
        let addr = self.addr.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                debug!(target = %addr, error = %e, "upstream connection ended with an error");
            }
        });
        self.ensure_reaper();
        Ok(sender)
    }

    async fn h2_sender(&self) -> Result<http2::SendRequest<Body>, SendError> {
        if let Some(s) = self.h2_live.lock().as_ref().filter(|s| !s.is_closed()) {
            return Ok(s.clone());
        }
        // One connect at a time, so a burst of first requests shares one connection.
        let _connecting = self.h2_connecting.lock().await;
        if let Some(s) = self.h2_live.lock().as_ref().filter(|s| !s.is_closed()) {
            return Ok(s.clone());
        }
        let io = self.connect().await?;
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(io)
            .await
            .map_err(SendError::Http)?;
        let addr = self.addr.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(target = %addr, error = %e, "upstream h2 connection ended with an error");
            }
        });
        *self.h2_live.lock() = Some(sender.clone());
        Ok(sender)
    }

    /// Starts, once, a task that closes idle connections older than `idle_timeout` (checked
    /// every half timeout, so one lives at most 1.5 × `idle_timeout`). It ends with the pool.
    fn ensure_reaper(self: &Arc<Self>) {
        if self.reaper_started.swap(true, Ordering::Relaxed) {
            return;
        }
        let pool = Arc::downgrade(self);
        let period = (self.settings.idle_timeout / 2).max(Duration::from_millis(10));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(pool) = pool.upgrade() else { return };
                let timeout = pool.settings.idle_timeout;
                pool.idle
                    .lock()
                    .retain(|i| !i.sender.is_closed() && i.since.elapsed() < timeout);
                pool.h1_idle.lock().retain(|i| i.since.elapsed() < timeout);
            }
        });
    }
}
