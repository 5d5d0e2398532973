//! Real HTTP upstream servers for tests.

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use parking_lot::Mutex as PlMutex;
use tokio::{
    net::TcpListener,
    sync::{Notify, oneshot, watch},
};

/// Response body type of test handlers.
pub type TestBody = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// A request handler: any async function from request to response.
pub type Handler = Arc<
    dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<TestBody>> + Send>>
        + Send
        + Sync,
>;

/// What an upstream saw of one request (recorded before the handler runs).
#[derive(Debug, Clone)]
pub struct Seen {
    /// Method.
    pub method: http::Method,
    /// Path and query as received.
    pub uri: http::Uri,
    /// HTTP version.
    pub version: http::Version,
    /// Headers as received.
    pub headers: http::HeaderMap,
}

/// A running upstream server.
#[derive(Debug)]
pub struct TestUpstream {
    /// Where it listens.
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    closed: watch::Receiver<usize>,
    received: watch::Receiver<usize>,
    requests: Arc<PlMutex<Vec<Seen>>>,
    _stop: oneshot::Sender<()>,
}

impl TestUpstream {
    /// Starts a server (HTTP/1.1 with upgrades, and HTTP/2 prior knowledge) running `handler`.
    pub async fn start(handler: Handler) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("local addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(PlMutex::new(Vec::new()));
        let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
        let (conns, reqs) = (Arc::clone(&connections), Arc::clone(&requests));
        let (closed_tx, closed) = watch::channel(0usize);
        let closed_tx = Arc::new(closed_tx);
        let (received_tx, received) = watch::channel(0usize);
        let received_tx = Arc::new(received_tx);
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
                    _ = &mut stop_rx => return,
                };
                conns.fetch_add(1, Ordering::SeqCst);
                let handler = Arc::clone(&handler);
                let reqs = Arc::clone(&reqs);
                let closed_tx = Arc::clone(&closed_tx);
                let received_tx = Arc::clone(&received_tx);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        reqs.lock().push(Seen {
                            method: req.method().clone(),
                            uri: req.uri().clone(),
                            version: req.version(),
                            headers: req.headers().clone(),
                        });
                        // The handler is called before the request counts as received, so
                        // whatever it registers (a held request's wait) is in place by the time
                        // `wait_requests` returns.
                        let fut = handler(req);
                        received_tx.send_modify(|n| *n += 1);
                        async move { Ok::<_, Infallible>(fut.await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await;
                    closed_tx.send_modify(|n| *n += 1);
                });
            }
        });
        Self {
            addr,
            connections,
            closed,
            received,
            requests,
            _stop: stop_tx,
        }
    }

    /// Starts a server answering every request with `handler`'s (sync) response.
    pub async fn respond(
        f: impl Fn(&Request<Incoming>) -> Response<TestBody> + Send + Sync + 'static,
    ) -> Self {
        let f = Arc::new(f);
        Self::start(Arc::new(move |req| {
            let resp = f(&req);
            Box::pin(async move {
                drop(req);
                resp
            })
        }))
        .await
    }

    /// Starts a server that holds every request until the returned [`Notify`] is notified
    /// (`notify_waiters`), then answers 200 with `body`. For in-flight and timeout tests.
    pub async fn held(body: &'static str) -> (Self, Arc<Notify>) {
        let release = Arc::new(Notify::new());
        let gate = Arc::clone(&release);
        let up = Self::start(Arc::new(move |_req| {
            // Registered now, not at the first poll: a `notify_waiters` right after
            // `wait_requests` must release this request even if its task has not run yet.
            let mut released = Box::pin(Arc::clone(&gate).notified_owned());
            released.as_mut().enable();
            Box::pin(async move {
                released.await;
                Response::new(full(body))
            })
        }))
        .await;
        (up, release)
    }

    /// Waits until at least `n` requests have arrived (their heads, before any response).
    pub async fn wait_requests(&self, n: usize) {
        let mut rx = self.received.clone();
        rx.wait_for(|&got| got >= n)
            .await
            .expect("upstream stopped");
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` connections have been closed (by either side).
    pub async fn wait_closed(&self, n: usize) {
        let mut rx = self.closed.clone();
        rx.wait_for(|&closed| closed >= n)
            .await
            .expect("upstream stopped");
    }

    /// Requests received so far.
    pub fn requests(&self) -> Vec<Seen> {
        self.requests.lock().clone()
    }

    /// Number of requests received so far.
    pub fn request_count(&self) -> usize {
        self.requests.lock().len()
    }
}

/// A body from bytes.
pub fn full(b: impl Into<Bytes>) -> TestBody {
    Full::new(b.into()).map_err(|n| match n {}).boxed_unsync()
}

/// A handler that answers 200 with a JSON description of the request, echoing the body back
/// in the `body` field (as a string). Good for asserting what the upstream received.
pub fn echo() -> Handler {
    Arc::new(|req: Request<Incoming>| {
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let bytes = body
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            let mut headers = serde_json::Map::new();
            for name in parts.headers.keys() {
                let values: Vec<String> = parts
                    .headers
                    .get_all(name)
                    .iter()
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .collect();
                headers.insert(name.as_str().to_owned(), values.join(", ").into());
            }
            let json = serde_json::json!({
                "method": parts.method.as_str(),
                "uri": parts.uri.to_string(),
                "version": format!("{:?}", parts.version),
                "body_len": bytes.len(),
                "body": String::from_utf8_lossy(&bytes),
                "headers": headers,
            })
            .to_string();
            Response::builder()
                .header("content-type", "application/json")
                .body(full(json))
                .expect("valid response")
        })
    })
}
