//! Socket writes held back over one round of the event loop and sent together at its end, as
//! haproxy and nginx do.
//!
//! Why: on one CPU the gateway shares its core with whatever it talks to, and the order of its
//! sends decides how often the others are woken. A response written to the client as soon as
//! its connection's task has it goes out between the parsing of other requests; a client on
//! another core reads it before the next one comes, sleeps, and is woken again by the next
//! send (a cross-core interrupt). A request head written to the upstream at once used to be
//! made to wait for the end of the round by polling its task once more
//! (`tokio::task::yield_now`), which costs a whole poll of the connection's future per request.
//! Here the bytes go into the connection's [`Outbox`] and the connection is listed in its
//! thread's [`FlushQueue`]; the queue's task, woken by the first listing of a round, runs once
//! the tasks queued before it have run and sends every listed outbox back to back: client
//! responses first (they wake the other core, which can start its next requests meanwhile),
//! then upstream requests (which wake processes on this core).
//!
//! On Linux the queue's task hands the whole round to io_uring in one system call
//! (`uring_send.rs`, which says why that matters when the gateway shares its core with its
//! upstreams); where io_uring is unavailable, or with `PORTCULLIS_IO_URING=0`, it sends with one
//! `sendto` per connection.
//!
//! Only on a current-thread runtime (the gateway's runtime on one CPU), where the queue's task
//! runs on the thread of the connections it serves. On a multi-threaded runtime [`queue`]
//! gives `None` and connections write as before.
//!
//! What the queue's task cannot send at once (the peer's window is full) or an error it meets
//! is left in the outbox and the connection's task is woken for it; the connection then sends
//! the rest itself, with the socket's back-pressure, or reports the error.

use std::{
    cell::RefCell,
    future::Future,
    io::{self, IoSlice},
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    task::{Context, Poll, Waker, ready},
};

use futures_util::task::AtomicWaker;
use parking_lot::{Mutex, MutexGuard};
use tokio::{
    net::TcpStream,
    runtime::{Handle, RuntimeFlavor},
};

/// Which list of the queue an outbox goes on: clients are sent to first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Client,
    Upstream,
}

/// The outboxes with bytes held back in this round, and the task that sends them.
#[derive(Default)]
pub(crate) struct FlushQueue {
    lists: Mutex<Lists>,
    waker: AtomicWaker,
    /// Whether the queue's task is alive; once it is gone, connections send themselves.
    running: AtomicBool,
}

#[derive(Default)]
struct Lists {
    clients: Vec<Arc<dyn Held>>,
    upstreams: Vec<Arc<dyn Held>>,
}

impl std::fmt::Debug for FlushQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlushQueue")
            .field("running", &self.running.load(Relaxed))
            .finish_non_exhaustive()
    }
}

impl FlushQueue {
    /// Whether listed outboxes will be sent.
    pub(crate) fn running(&self) -> bool {
        self.running.load(Relaxed)
    }

    fn list(&self, side: Side, held: Arc<dyn Held>) {
        let mut lists = self.lists.lock();
        let first = lists.clients.is_empty() && lists.upstreams.is_empty();
        match side {
            Side::Client => lists.clients.push(held),
            Side::Upstream => lists.upstreams.push(held),
        }
        drop(lists);
        if first {
            self.waker.wake();
        }
    }

    /// Sends everything listed now: through `batched` when given, else one socket at a time.
    fn send_all(&self, batch: &mut Lists, batched: Option<&mut Batched>) {
        {
            let mut lists = self.lists.lock();
            std::mem::swap(&mut batch.clients, &mut lists.clients);
            std::mem::swap(&mut batch.upstreams, &mut lists.upstreams);
        }
        // A request whose connection is gone (its client hung up in this round) is not sent.
        batch.upstreams.retain(|held| Arc::strong_count(held) > 1);
        #[cfg(target_os = "linux")]
        if let Some(batched) = batched {
            batched.send(batch);
            return;
        }
        #[cfg(not(target_os = "linux"))]
        let _ = batched;
        for held in batch.clients.drain(..).chain(batch.upstreams.drain(..)) {
            held.send_held();
        }
    }
}

/// A round's sends through io_uring: the ring and the buffers reused from round to round.
#[cfg(target_os = "linux")]
struct Batched {
    ring: crate::uring_send::Ring,
    sends: Vec<crate::uring_send::Send>,
    owners: Vec<Arc<dyn Held>>,
    /// Set when the ring failed; the task then sends one socket at a time.
    failed: bool,
}

#[cfg(not(target_os = "linux"))]
struct Batched;

#[cfg(target_os = "linux")]
impl Batched {
    /// A ring for this thread, unless io_uring is unavailable or turned off.
    fn new() -> Option<Self> {
        if std::env::var_os("PORTCULLIS_IO_URING").is_some_and(|v| v == "0") {
            tracing::debug!("io_uring turned off by PORTCULLIS_IO_URING=0");
            return None;
        }
        match crate::uring_send::Ring::new() {
            Ok(ring) => Some(Self {
                ring,
                sends: Vec::new(),
                owners: Vec::new(),
                failed: false,
            }),
            Err(e) => {
                tracing::debug!(error = %e, "io_uring unavailable; sending one socket at a time");
                None
            }
        }
    }

    /// Sends the clients' outboxes, then the upstreams', in one system call.
    fn send(&mut self, batch: &mut Lists) {
        for held in batch.clients.drain(..).chain(batch.upstreams.drain(..)) {
            if let Some((fd, buf)) = held.take_held() {
                self.sends.push(crate::uring_send::Send::new(fd, buf));
                self.owners.push(held);
            }
        }
        if self.sends.is_empty() {
            return;
        }
        if let Err(e) = self.ring.send_all(&mut self.sends) {
            tracing::warn!(error = %e, "io_uring failed; sending one socket at a time from now on");
            self.failed = true;
        }
        for (held, send) in self.owners.drain(..).zip(self.sends.drain(..)) {
            held.sent_held(send.buf, send.result);
        }
    }
}

/// The queue's task: sends what is listed whenever something is; when it is dropped (its
/// runtime ends), sends what is left and marks the queue stopped.
struct Flusher {
    queue: Arc<FlushQueue>,
    batch: Lists,
    batched: Option<Batched>,
}

impl Future for Flusher {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        this.queue.waker.register(cx.waker());
        this.queue.send_all(&mut this.batch, this.batched.as_mut());
        #[cfg(target_os = "linux")]
        if this.batched.as_ref().is_some_and(|b| b.failed) {
            this.batched = None;
        }
        Poll::Pending
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.queue.running.store(false, Relaxed);
        self.queue.send_all(&mut self.batch, None);
    }
}

thread_local! {
    /// This thread's queue and the runtime whose task serves it.
    static QUEUE: RefCell<Option<(tokio::runtime::Id, Arc<FlushQueue>)>> =
        const { RefCell::new(None) };
}

/// The flush queue of the current-thread runtime running on this thread, its task started on
/// first use; `None` outside a runtime or on a multi-threaded one (module docs).
pub(crate) fn queue() -> Option<Arc<FlushQueue>> {
    let handle = Handle::try_current().ok()?;
    if handle.runtime_flavor() != RuntimeFlavor::CurrentThread {
        return None;
    }
    let id = handle.id();
    QUEUE.with(|cell| {
        let mut slot = cell.borrow_mut();
        if let Some((owner, queue)) = slot.as_ref()
            && *owner == id
            && queue.running()
        {
            return Some(Arc::clone(queue));
        }
        let queue = Arc::new(FlushQueue::default());
        queue.running.store(true, Relaxed);
        drop(handle.spawn(Flusher {
            queue: Arc::clone(&queue),
            batch: Lists::default(),
            #[cfg(target_os = "linux")]
            batched: Batched::new(),
            #[cfg(not(target_os = "linux"))]
            batched: None,
        }));
        *slot = Some((id, Arc::clone(&queue)));
        Some(queue)
    })
}

/// What the queue's task does with a listed outbox.
trait Held: Send + Sync {
    fn send_held(&self);
    /// Takes the held bytes for a batched send, with the socket's descriptor; `None` when
    /// nothing is held.
    #[cfg(target_os = "linux")]
    fn take_held(&self) -> Option<(std::os::fd::RawFd, Vec<u8>)>;
    /// Gives back what a batched send of [`Held::take_held`]'s bytes left, with its outcome.
    #[cfg(target_os = "linux")]
    fn sent_held(&self, buf: Vec<u8>, result: io::Result<usize>);
}

/// Bytes a connection has written but not yet sent, and the socket they go to.
#[derive(Debug)]
pub(crate) struct Outbox<W> {
    io: W,
    state: Mutex<State>,
}

/// The part of an outbox that changes, under its lock.
#[derive(Debug, Default)]
pub(crate) struct State {
    /// Bytes not yet sent.
    pub(crate) held: Vec<u8>,
    /// On its queue's list.
    listed: bool,
    /// What the queue's task met, for the connection to report.
    error: Option<io::Error>,
    /// The connection's task, woken when the queue's task leaves something behind.
    waker: Option<Waker>,
}

impl State {
    /// Takes an error the queue's task met, if any.
    pub(crate) fn take_error(&mut self) -> io::Result<()> {
        self.error.take().map_or(Ok(()), Err)
    }
}

impl<W: AsRef<TcpStream> + Send + Sync + 'static> Outbox<W> {
    /// An empty outbox for `io`.
    pub(crate) fn new(io: W) -> Arc<Self> {
        Arc::new(Self {
            io,
            state: Mutex::new(State::default()),
        })
    }

    /// The socket.
    pub(crate) fn io(&self) -> &W {
        &self.io
    }

    /// The outbox's state, to add bytes to `held` or look at it.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }

    /// Lists this outbox on `queue` for the end of the round, unless it is already listed.
    /// `state` is this outbox's, locked.
    pub(crate) fn list(
        self: &Arc<Self>,
        mut state: MutexGuard<'_, State>,
        queue: &FlushQueue,
        side: Side,
    ) {
        if state.listed {
            return;
        }
        state.listed = true;
        drop(state);
        queue.list(side, Arc::clone(self) as Arc<dyn Held>);
    }

    /// Whether what is held has been sent: `Pending` while it waits on the queue or on the
    /// socket. Sends the rest itself when the queue's task left some.
    pub(crate) fn poll_sent(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut state = self.state.lock();
        state.take_error()?;
        if state.held.is_empty() {
            return Poll::Ready(Ok(()));
        }
        remember(&mut state, cx);
        if state.listed {
            return Poll::Pending;
        }
        self.poll_send_locked(&mut state, cx)
    }

    /// A flush: ready when what is held has been sent or is listed (the queue's task sends it
    /// at the end of the round); sends the rest itself when the queue's task left some.
    pub(crate) fn poll_flushed(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut state = self.state.lock();
        state.take_error()?;
        if state.held.is_empty() || state.listed {
            return Poll::Ready(Ok(()));
        }
        remember(&mut state, cx);
        self.poll_send_locked(&mut state, cx)
    }

    /// Sends what is held now, listed or not, waiting for the socket as needed.
    pub(crate) fn poll_send(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut state = self.state.lock();
        state.take_error()?;
        self.poll_send_locked(&mut state, cx)
    }

    /// [`Self::poll_send`] with the state already locked.
    pub(crate) fn poll_send_locked(
        &self,
        state: &mut State,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if self.send_now(state)? {
                return Poll::Ready(Ok(()));
            }
            ready!(self.io.as_ref().poll_write_ready(cx))?;
        }
    }

    /// Sends as much of what is held as the socket takes now, without waiting, and drops what
    /// went out: `Ok(true)` once nothing is left.
    fn send_now(&self, state: &mut State) -> io::Result<bool> {
        let io = self.io.as_ref();
        let mut sent = 0;
        let result = loop {
            if sent == state.held.len() {
                break Ok(true);
            }
            match io.try_write(&state.held[sent..]) {
                Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(false),
                Err(e) => break Err(e),
            }
        };
        if sent == state.held.len() {
            empty(state);
        } else {
            state.held.drain(..sent);
        }
        result
    }

    /// Writes `bufs` straight to the socket (nothing may be held), waiting for it as needed.
    pub(crate) fn poll_write_through(
        &self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let io = self.io.as_ref();
        loop {
            match io.try_write_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(io.poll_write_ready(cx))?;
                }
                done => return Poll::Ready(done),
            }
        }
    }
}

/// Capacity an empty outbox keeps for the next writes; a bigger buffer (after a large
/// response) is given back, so idle keep-alive connections stay small.
const KEEP: usize = 4096;

fn empty(state: &mut State) {
    if state.held.capacity() > KEEP {
        state.held = Vec::new();
    } else {
        state.held.clear();
    }
}

/// Keeps `cx`'s waker to be woken when the queue's task leaves something behind.
pub(crate) fn remember(state: &mut State, cx: &Context<'_>) {
    if !state
        .waker
        .as_ref()
        .is_some_and(|w| w.will_wake(cx.waker()))
    {
        state.waker = Some(cx.waker().clone());
    }
}

impl<W: AsRef<TcpStream> + Send + Sync + 'static> Held for Outbox<W> {
    /// The queue's send: as much as the socket takes now. What is left, or the error, stays
    /// for the connection, whose task is woken for it.
    fn send_held(&self) {
        let mut state = self.state.lock();
        state.listed = false;
        let outcome = self.send_now(&mut state);
        left_behind(&mut state, outcome);
    }

    #[cfg(target_os = "linux")]
    fn take_held(&self) -> Option<(std::os::fd::RawFd, Vec<u8>)> {
        use std::os::fd::AsRawFd;
        let mut state = self.state.lock();
        state.listed = false;
        if state.held.is_empty() {
            return None;
        }
        Some((
            self.io.as_ref().as_raw_fd(),
            std::mem::take(&mut state.held),
        ))
    }

    #[cfg(target_os = "linux")]
    fn sent_held(&self, mut buf: Vec<u8>, result: io::Result<usize>) {
        let mut state = self.state.lock();
        let outcome = match result {
            Ok(0) if !buf.is_empty() => Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                buf.drain(..n.min(buf.len()));
                Ok(buf.is_empty())
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        };
        // Bytes written since the take (none on the queue's own thread) go after the rest.
        buf.extend_from_slice(&state.held);
        state.held = buf;
        let all_sent = state.held.is_empty();
        if all_sent {
            empty(&mut state);
        }
        left_behind(&mut state, outcome.map(|sent| sent && all_sent));
    }
}

/// After a send by the queue's task: nothing more to do when everything went (`Ok(true)`);
/// otherwise the rest, or the error, stays for the connection, whose task is woken for it.
fn left_behind(state: &mut State, outcome: io::Result<bool>) {
    match outcome {
        Ok(true) => return,
        Ok(false) => {}
        Err(e) => {
            empty(state);
            state.error = Some(e);
        }
    }
    if let Some(waker) = state.waker.take() {
        waker.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection to `listener`: the connecting end (the peer), then the accepted one.
    async fn connected(listener: &tokio::net::TcpListener) -> (TcpStream, TcpStream) {
        let peer = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        (peer, stream)
    }

    /// Reads from `peer` until at least `len` bytes have come; fails if it ends first.
    async fn read_at_least(peer: &mut TcpStream, len: usize) -> Vec<u8> {
        use tokio::io::AsyncReadExt;
        let mut got = Vec::with_capacity(len);
        while got.len() < len {
            let mut chunk = vec![0u8; 64 * 1024];
            let n = peer.read(&mut chunk).await.unwrap();
            assert_ne!(n, 0, "the connection ended early");
            got.extend_from_slice(&chunk[..n]);
        }
        got
    }

    #[tokio::test]
    async fn a_current_thread_runtime_has_one_queue_per_thread() {
        let first = queue().expect("a current-thread runtime has a queue");
        let second = queue().expect("a current-thread runtime has a queue");
        assert!(Arc::ptr_eq(&first, &second));
        assert!(first.running());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_multi_threaded_runtime_has_none() {
        assert!(queue().is_none());
    }

    #[tokio::test]
    async fn a_send_the_socket_takes_only_part_of_goes_on_where_it_stopped() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (mut peer, stream) = connected(&listener).await;
        let out = Outbox::new(stream);
        // More than the socket buffers take, so the first send stops part-way.
        let data: Vec<u8> = (0..8 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
        out.lock().held.extend_from_slice(&data);
        let first = std::future::poll_fn(|cx| Poll::Ready(out.poll_send(cx))).await;
        assert!(first.is_pending(), "the socket took everything at once");
        assert!(out.lock().held.len() < data.len());
        let sending = std::future::poll_fn(|cx| out.poll_send(cx));
        let reading = read_at_least(&mut peer, data.len());
        let (sent, got) = tokio::join!(sending, reading);
        sent.unwrap();
        assert!(got == data, "bytes were sent twice or out of order");
    }

    #[tokio::test]
    async fn what_the_round_could_not_send_the_connection_sends_in_order() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (mut peer, stream) = connected(&listener).await;
        let queue = queue().unwrap();
        let out = Outbox::new(stream);
        // More than the socket takes at once: the queue's task (io_uring where the kernel
        // has it) sends part, and the connection the rest.
        let data: Vec<u8> = (0..8 * 1024 * 1024).map(|i| (i % 253) as u8).collect();
        {
            let mut state = out.lock();
            state.held.extend_from_slice(&data);
            out.list(state, &queue, Side::Upstream);
        }
        // The connection waits as the inline client does: woken only when the round left
        // something for it (a full send wakes nobody; the reader sees it).
        let sending = async {
            std::future::poll_fn(|cx| out.poll_sent(cx)).await.unwrap();
            std::future::pending::<()>().await;
        };
        let reading = read_at_least(&mut peer, data.len());
        let got = tokio::select! {
            got = reading => got,
            () = sending => Vec::new(),
        };
        assert!(got == data, "bytes were lost, sent twice or out of order");
        let mut state = out.lock();
        assert!(state.held.is_empty());
        state.take_error().unwrap();
    }

    #[tokio::test]
    async fn a_round_sends_every_listed_outbox() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let queue = queue().unwrap();
        let mut peers = Vec::new();
        let mut outs = Vec::new();
        for i in 0..20u8 {
            let (peer, stream) = connected(&listener).await;
            let out = Outbox::new(stream);
            let mut state = out.lock();
            state.held.extend_from_slice(&[i; 100]);
            let side = if i % 2 == 0 {
                Side::Client
            } else {
                Side::Upstream
            };
            out.list(state, &queue, side);
            peers.push(peer);
            outs.push(out);
        }
        // The round's task sends them all; each peer gets its own bytes.
        for (i, peer) in peers.iter_mut().enumerate() {
            let mut got = [0u8; 100];
            peer.read_exact(&mut got).await.unwrap();
            assert_eq!(got, [u8::try_from(i).unwrap(); 100]);
        }
        for out in &outs {
            let mut state = out.lock();
            assert!(state.held.is_empty());
            state.take_error().unwrap();
        }
    }

    #[test]
    fn a_new_runtime_on_the_same_thread_gets_a_new_queue() {
        let rt = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        };
        let first = rt().block_on(async { queue().unwrap() });
        // The first runtime is gone, and its queue's task with it.
        assert!(!first.running());
        let second = rt().block_on(async { queue().unwrap() });
        assert!(!Arc::ptr_eq(&first, &second));
    }
}
