//! One exchange on the wire: a request out, a whole response in, and the failure kind when
//! it goes wrong. Connects (or reconnects) the worker's connection first, or checks out the
//! HTTP/2 connection its group shares. Recording and timing stay with the caller
//! ([`crate::engine`]).

use bytes::{Bytes, BytesMut};
use http::HeaderName;
use http_body_util::BodyExt;

use crate::{
    connection::{Conn, Endpoint},
    recorder::Failure,
};

/// The outcome of one exchange, before it is recorded.
pub(crate) struct Response {
    pub(crate) status: http::StatusCode,
    pub(crate) headers: http::HeaderMap,
    pub(crate) bytes: u64,
    pub(crate) body: Option<Bytes>,
}

/// A request ready to go out.
// Lives on the stack for one exchange; boxing the large variant would allocate per request.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Outgoing<'a> {
    /// Encoded bytes for [`crate::http1_wire`].
    Wire(&'a [u8]),
    /// A request for hyper.
    Hyper(http::Request<http_body_util::Full<Bytes>>),
}

/// What one exchange needs besides the request.
pub(crate) struct Exchange<'a> {
    pub(crate) endpoint: &'a Endpoint,
    pub(crate) index: usize,
    pub(crate) head_only: bool,
    pub(crate) wanted: &'a [HeaderName],
    pub(crate) keep_body: bool,
    pub(crate) h2_slots: &'a [tokio::sync::Mutex<Option<Conn>>],
    pub(crate) streams: usize,
}

impl Exchange<'_> {
    /// Sends `request` on the worker's connection (or its group's HTTP/2 connection),
    /// connecting first when needed, and reads the whole response.
    pub(crate) async fn send(
        &self,
        conn: &mut Option<Conn>,
        request: Outgoing<'_>,
    ) -> Result<Response, (Failure, String)> {
        let connect = |n: usize| async move {
            self.endpoint
                .connect(n)
                .await
                .map_err(|e| (Failure::Connect, e))
        };
        let mut shared_conn;
        let live: &mut Conn = if self.h2_slots.is_empty() {
            if conn.as_mut().is_none_or(Conn::is_closed) {
                *conn = Some(connect(self.index).await?);
            }
            conn.as_mut()
                .ok_or_else(|| (Failure::Connect, "no connection".to_owned()))?
        } else {
            let group = self.index / self.streams.max(1);
            let slot = self
                .h2_slots
                .get(group)
                .ok_or_else(|| (Failure::Connect, "internal: no connection slot".to_owned()))?;
            // tokio's async mutex on purpose: one worker of the group (re)connects while the
            // others wait for that connection instead of opening their own.
            let mut guard = slot.lock().await;
            if guard.as_mut().is_none_or(Conn::is_closed) {
                *guard = Some(connect(group).await?);
            }
            shared_conn = guard.as_ref().and_then(Conn::share).ok_or_else(|| {
                (
                    Failure::Connect,
                    "internal: not an HTTP/2 connection".to_owned(),
                )
            })?;
            drop(guard);
            &mut shared_conn
        };
        let transport = |e: String| (Failure::Transport, e);
        match (live, request) {
            (Conn::Wire(wire), Outgoing::Wire(bytes)) => {
                let r = wire
                    .exchange(bytes, self.head_only, self.wanted, self.keep_body)
                    .await
                    .map_err(transport)?;
                Ok(Response {
                    status: r.status,
                    headers: r.headers,
                    bytes: r.bytes,
                    body: r.body,
                })
            }
            (live, Outgoing::Hyper(req)) => {
                let resp = live.send(req).await.map_err(transport)?;
                let (parts, mut body) = resp.into_parts();
                let mut bytes = 0u64;
                let mut kept = self.keep_body.then(BytesMut::new);
                while let Some(frame) = body.frame().await {
                    let frame = frame.map_err(|e| transport(error_chain(&e)))?;
                    if let Some(data) = frame.data_ref() {
                        bytes += data.len() as u64;
                        if let Some(buf) = kept.as_mut() {
                            buf.extend_from_slice(data);
                        }
                    }
                }
                Ok(Response {
                    status: parts.status,
                    headers: parts.headers,
                    bytes,
                    body: kept.map(BytesMut::freeze),
                })
            }
            _ => Err((
                Failure::Transport,
                "internal: request and connection kinds differ".to_owned(),
            )),
        }
    }
}

/// An error and its sources, `: `-separated (hyper's top-level messages are terse).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
