//! Noticing a client that hangs up while its request waits on the upstream, so the request is
//! cancelled (its upstream connection closed, its slot freed) rather than run to its timeout.
//!
//! hyper's HTTP/1 server does this itself unless told to allow half-closed connections: after
//! each request head it reads once more, to see an end of stream. But the request it has just
//! parsed still holds slices of its read buffer then, so that read cannot reuse the buffer and
//! allocates a new 8 KiB one, for every request: about 1,100 instructions of a proxied
//! request and 800 of a cache hit (callgrind), 3% of a hit's CPU (BENCHMARKS.md, session 10).
//! So hyper is told to allow half-closed connections (`half_close(true)`, no such read), and
//! the connection's supervisor (`connections.rs`) watches the socket instead, while a request
//! is in flight: through a second descriptor of the same socket, registered with the runtime
//! on its own (when the connection's first request goes upstream), whose readiness says when
//! the client has shut its side (`EPOLLRDHUP`) without a read, so nothing is taken from
//! hyper's stream and no system call is made per request. The descriptor costs a `dup` and a
//! `close` per connection, and its registration an `epoll_ctl` each way.
//!
//! A hang-up is seen while a request waits for its response head, as before; while a response
//! body streams, it is seen at the next write, which fails.

use std::{future::Future, io, pin::Pin, task::Context, task::Poll};

use tokio::io::Interest;
use tokio::net::TcpStream;

/// Resolves once the client of one connection has shut its side (or the socket failed).
pub(crate) struct HangUp {
    state: State,
}

enum State {
    /// The second descriptor, not yet registered with the runtime: a connection whose requests
    /// are all answered at once (cache hits) never registers it, so the runtime is not told
    /// about each of its requests twice.
    Unwatched(std::net::TcpStream),
    Watching(Pin<Box<dyn Future<Output = ()> + Send>>),
    /// The descriptor could not be registered: hang-ups are seen at the next write only.
    Failed,
}

impl std::fmt::Debug for HangUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HangUp").finish_non_exhaustive()
    }
}

impl HangUp {
    /// Watches `stream`'s socket through a second descriptor; `None` if one cannot be had
    /// (out of descriptors), and then hang-ups are seen at the next write only.
    pub(crate) fn watch(stream: &TcpStream) -> Option<Self> {
        use std::os::fd::AsFd as _;
        let fd = stream.as_fd().try_clone_to_owned().ok()?;
        // The same open socket: already non-blocking.
        Some(Self {
            state: State::Unwatched(std::net::TcpStream::from(fd)),
        })
    }

    /// Ready once the client has hung up; otherwise registers `cx` to be woken when it does.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let State::Unwatched(_) = self.state {
            self.state = match std::mem::replace(&mut self.state, State::Failed) {
                State::Unwatched(fd) => TcpStream::from_std(fd).map_or(State::Failed, |watch| {
                    State::Watching(Box::pin(closed(watch)))
                }),
                other => other,
            };
        }
        match &mut self.state {
            State::Watching(watch) => watch.as_mut().poll(cx),
            State::Unwatched(_) | State::Failed => Poll::Pending,
        }
    }
}

/// Waits until the socket's read side is closed by the peer. Readiness that only says bytes
/// arrived (the next request, which hyper reads from its own descriptor) is cleared without a
/// read: `try_io` with an operation that reports it would block.
async fn closed(watch: TcpStream) {
    loop {
        match watch.ready(Interest::READABLE).await {
            Ok(ready) if ready.is_read_closed() || ready.is_error() => return,
            Ok(_) => {
                let _ = watch.try_io(Interest::READABLE, || {
                    Err::<(), _>(io::Error::from(io::ErrorKind::WouldBlock))
                });
            }
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use tokio::io::AsyncWriteExt as _;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        (client.unwrap(), accepted.unwrap().0)
    }

    async fn poll_once(h: &mut HangUp) -> Poll<()> {
        std::future::poll_fn(|cx| Poll::Ready(h.poll(cx))).await
    }

    #[tokio::test]
    async fn bytes_from_the_client_are_no_hang_up_and_are_left_for_the_server() {
        let (mut client, server) = pair().await;
        let mut h = HangUp::watch(&server).unwrap();
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        // Wait until the bytes are there for the server to read, then look.
        server.readable().await.unwrap();
        assert!(poll_once(&mut h).await.is_pending());
        let mut buf = [0u8; 64];
        let n = server.try_read(&mut buf).unwrap();
        assert_eq!(
            &buf[..n],
            b"GET / HTTP/1.1\r\n\r\n",
            "the watch read nothing"
        );
    }

    #[tokio::test]
    async fn a_client_that_shuts_its_side_or_goes_away_is_seen() {
        for shut_only in [true, false] {
            let (mut client, server) = pair().await;
            let mut h = HangUp::watch(&server).unwrap();
            assert!(poll_once(&mut h).await.is_pending());
            if shut_only {
                client.shutdown().await.unwrap();
            } else {
                drop(client);
            }
            // Resolves (the test's own timeout is the bound).
            std::future::poll_fn(|cx| h.poll(cx)).await;
        }
    }
}
