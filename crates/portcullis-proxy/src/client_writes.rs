//! A plain-TCP client connection whose writes are sent at the end of the event loop's round
//! (`round_flush.rs` says why).
//!
//! hyper writes a response and then flushes; here the write goes into the connection's outbox
//! and the flush reports success while the outbox is listed for the round's end. A write that
//! would hold more than [`MAX_HELD`] bytes sends what is held and then goes straight to the
//! socket, with its back-pressure, so large bodies stream as before and memory stays bounded.
//! What the queue's task could not send is sent by the next flush, which hyper makes on every
//! poll of the connection, and the connection's task is woken for it.

use std::{
    io::{self, IoSlice},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{
        TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
};

use crate::round_flush::{FlushQueue, Outbox, Side, remember};

/// Most bytes a connection holds back; a write beyond this goes out at once.
const MAX_HELD: usize = 16 * 1024;

/// A plain-TCP client connection whose writes wait for the end of the round (module docs).
#[derive(Debug)]
pub(crate) struct Batched {
    read: OwnedReadHalf,
    out: Arc<Outbox<OwnedWriteHalf>>,
    queue: Arc<FlushQueue>,
}

impl Batched {
    /// Wraps `stream`, whose writes `queue` sends.
    pub(crate) fn new(stream: TcpStream, queue: Arc<FlushQueue>) -> Self {
        let (read, write) = stream.into_split();
        Self {
            read,
            out: Outbox::new(write),
            queue,
        }
    }

    /// Holds the `len` bytes of `bufs` back for the round's end if they fit: `Some(len)`.
    /// Otherwise sends what is held and gives `None`, for the caller to write through.
    fn poll_hold(
        &self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
        len: usize,
    ) -> Poll<io::Result<Option<usize>>> {
        let mut state = self.out.lock();
        state.take_error()?;
        if state.held.len() + len <= MAX_HELD && self.queue.running() {
            remember(&mut state, cx);
            state.held.reserve(len);
            for buf in bufs {
                state.held.extend_from_slice(buf);
            }
            self.out.list(state, &self.queue, Side::Client);
            return Poll::Ready(Ok(Some(len)));
        }
        ready!(self.out.poll_send_locked(&mut state, cx))?;
        Poll::Ready(Ok(None))
    }
}

impl AsyncRead for Batched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl AsyncWrite for Batched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let len = bufs.iter().map(|b| b.len()).sum();
        if len == 0 {
            return Poll::Ready(Ok(0));
        }
        match ready!(self.poll_hold(cx, bufs, len))? {
            Some(n) => Poll::Ready(Ok(n)),
            None => self.out.poll_write_through(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.out.poll_flushed(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.out.poll_send(cx))?;
        // The write half shuts down when it is dropped; a shutdown through the socket itself
        // keeps the read half open, as a half-close must.
        Poll::Ready(
            socket2::SockRef::from(self.out.io().as_ref()).shutdown(std::net::Shutdown::Write),
        )
    }
}

#[cfg(test)]
mod tests {
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    use super::*;
    use crate::round_flush;

    /// A connected pair: the gateway's side wrapped, and the client's.
    async fn pair() -> (Batched, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let queue = round_flush::queue().expect("a current-thread runtime has a flush queue");
        (Batched::new(server, queue), client)
    }

    #[tokio::test]
    async fn writes_wait_for_the_end_of_the_round_and_arrive_in_order() {
        let (mut server, mut client) = pair().await;
        server.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
        server
            .write_all(b"content-length: 0\r\n\r\n")
            .await
            .unwrap();
        server.flush().await.unwrap();
        // Nothing has yielded to the queue's task yet, so nothing was sent.
        let mut probe = [0u8; 64];
        assert_eq!(
            client.try_read(&mut probe).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        let mut got = vec![0u8; 38];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(got, b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
    }

    #[tokio::test]
    async fn many_small_and_large_writes_to_a_slow_reader_all_arrive_in_order() {
        let (mut server, mut client) = pair().await;
        let total = 3 * 1024 * 1024;
        let data: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
        let writer = async {
            // Writes of 1,000 bytes (held, more than the socket takes at times) and of 40 KiB
            // (straight through, after what is held).
            let mut at = 0;
            let mut big = false;
            while at < total {
                let len = if big { 40 * 1024 } else { 1000 }.min(total - at);
                server.write_all(&data[at..at + len]).await.unwrap();
                server.flush().await.unwrap();
                at += len;
                big = !big;
            }
            server.shutdown().await.unwrap();
        };
        let reader = async {
            let mut got = Vec::with_capacity(total);
            let mut chunk = [0u8; 4096];
            loop {
                let n = client.read(&mut chunk).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&chunk[..n]);
                tokio::task::yield_now().await;
            }
            got
        };
        let ((), got) = tokio::join!(writer, reader);
        assert_eq!(got.len(), total);
        assert!(got == data, "bytes arrived out of order");
    }

    #[tokio::test]
    async fn shutdown_sends_what_is_held_and_keeps_the_read_side_open() {
        let (mut server, mut client) = pair().await;
        server.write_all(b"bye").await.unwrap();
        server.shutdown().await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"bye");
        client.write_all(b"still here").await.unwrap();
        drop(client);
        let mut back = Vec::new();
        server.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"still here");
    }

    #[tokio::test]
    async fn a_write_to_a_peer_that_reset_fails_at_a_later_write_or_flush() {
        let (mut server, client) = pair().await;
        // Unread data at close makes the peer reset the connection.
        let sock = socket2::SockRef::from(&client);
        sock.set_linger(Some(std::time::Duration::ZERO)).unwrap();
        drop(client);
        let mut failed = false;
        for _ in 0..100 {
            let wrote = server.write_all(&[b'x'; 1000]).await;
            let flushed = server.flush().await;
            if wrote.is_err() || flushed.is_err() {
                failed = true;
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(failed, "writes to a reset connection kept succeeding");
    }
}
