//! Zero-downtime restart: a new process takes the listening sockets over from the running one.
//!
//! The running gateway listens on `server.handover_socket` (a Unix socket). A new process
//! started with `serve --takeover` connects, asks for the listeners, and receives duplicates of
//! the very same sockets (SCM_RIGHTS): both processes now accept from one queue, so no
//! connection is refused or reset in between (unlike binding a second socket with
//! SO_REUSEPORT, whose queued connections are reset when the old socket closes). The new
//! process starts serving, says READY; the old one releases the hand-over socket, answers DONE,
//! stops accepting and drains its in-flight requests, then exits 0.
//!
//! Protocol (one line each way, then the ancillary data): new `TAKEOVER\n`; old `public\n` or
//! `public,admin\n` with the listener descriptors; new `READY\n`; old `DONE\n`.

use std::{
    io::{self, IoSlice, IoSliceMut, Read, Write},
    mem::MaybeUninit,
    os::{fd::OwnedFd, unix::net::UnixStream},
    path::{Path, PathBuf},
    time::Duration,
};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, recvmsg, sendmsg,
};
use tracing::{info, warn};

const TAKEOVER: &[u8] = b"TAKEOVER\n";
const READY: &[u8] = b"READY\n";
const DONE: &[u8] = b"DONE\n";
/// How long either side waits for the other at each step.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// Listeners received from the previous process, not yet confirmed.
pub(crate) struct Inherited {
    pub(crate) public: std::net::TcpListener,
    pub(crate) admin: Option<std::net::TcpListener>,
    /// To confirm once this process serves.
    pub(crate) pending: Pending,
}

/// A take-over whose listeners are in use, to confirm once this process serves.
pub(crate) struct Pending {
    conn: UnixStream,
}

/// The new process's side: asks the process serving `path` for its listeners.
pub(crate) fn take_over(path: &Path) -> io::Result<Inherited> {
    let mut conn = UnixStream::connect(path)?;
    conn.set_read_timeout(Some(STEP_TIMEOUT))?;
    conn.set_write_timeout(Some(STEP_TIMEOUT))?;
    conn.write_all(TAKEOVER)?;
    let mut header = [0u8; 64];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received = recvmsg(
        &conn,
        &mut [IoSliceMut::new(&mut header)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds: Vec<OwnedFd> = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    let names = std::str::from_utf8(&header[..received.bytes]).unwrap_or("");
    let names: Vec<&str> = names.trim_end().split(',').collect();
    if names.len() != fds.len() || names.first() != Some(&"public") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "unexpected hand-over: {names:?} with {} descriptors",
                fds.len()
            ),
        ));
    }
    let mut fds = fds.into_iter();
    let public = fds.next().map(std::net::TcpListener::from);
    let admin = fds.next().map(std::net::TcpListener::from);
    Ok(Inherited {
        public: public.ok_or_else(|| io::Error::other("no public listener"))?,
        admin,
        pending: Pending { conn },
    })
}

impl Pending {
    /// Tells the previous process this one serves, and waits until it has released the
    /// hand-over socket (so this process can listen there in turn).
    pub(crate) fn confirm(mut self) -> io::Result<()> {
        self.conn.write_all(READY)?;
        let mut answer = [0u8; DONE.len()];
        self.conn.read_exact(&mut answer)?;
        if answer != DONE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "previous process did not confirm",
            ));
        }
        Ok(())
    }
}

/// The running process's side: answers take-over requests on `path` with `listeners` (the
/// public one first, then the admin one if any) and resolves once one completed, when this
/// process should stop accepting and drain. Never resolves if `path` cannot be listened on.
pub(crate) async fn serve(path: PathBuf, listeners: Vec<OwnedFd>, admin: bool) {
    let listener = match bind(&path) {
        Ok(l) => l,
        Err(e) => {
            warn!(path = %path.display(), error = %e, "cannot listen for a hand-over; zero-downtime restart is off");
            return std::future::pending().await;
        }
    };
    let names: &'static [u8] = if admin {
        b"public,admin\n"
    } else {
        b"public\n"
    };
    let listeners = std::sync::Arc::new(listeners);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                warn!(error = %e, "hand-over accept failed");
                continue;
            }
        };
        let Ok(stream) = stream.into_std() else {
            continue;
        };
        let fds = std::sync::Arc::clone(&listeners);
        let handshake = tokio::task::spawn_blocking(move || send_listeners(stream, &fds, names));
        match handshake.await {
            Ok(Ok(mut stream)) => {
                drop(listener);
                let _ = std::fs::remove_file(&path);
                let _ = stream.write_all(DONE);
                info!("listeners handed over to a new process; draining");
                return;
            }
            Ok(Err(e)) => warn!(error = %e, "hand-over failed; still serving"),
            Err(e) => warn!(error = %e, "hand-over task failed; still serving"),
        }
    }
}

/// Binds `path`, replacing a stale socket file nobody listens on.
fn bind(path: &Path) -> io::Result<tokio::net::UnixListener> {
    match tokio::net::UnixListener::bind(path) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "another process serves this hand-over socket",
                ));
            }
            std::fs::remove_file(path)?;
            tokio::net::UnixListener::bind(path)
        }
        other => other,
    }
}

/// One hand-over, blocking: TAKEOVER in, names and descriptors out, READY in.
fn send_listeners(
    mut stream: UnixStream,
    listeners: &[OwnedFd],
    names: &[u8],
) -> io::Result<UnixStream> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(STEP_TIMEOUT))?;
    stream.set_write_timeout(Some(STEP_TIMEOUT))?;
    let mut request = [0u8; TAKEOVER.len()];
    stream.read_exact(&mut request)?;
    if request != TAKEOVER {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a take-over request",
        ));
    }
    let borrowed: Vec<_> = listeners.iter().map(std::os::fd::AsFd::as_fd).collect();
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&borrowed)) {
        return Err(io::Error::other("too many listeners to hand over"));
    }
    sendmsg(
        &stream,
        &[IoSlice::new(names)],
        &mut control,
        SendFlags::empty(),
    )?;
    let mut ready = [0u8; READY.len()];
    stream.read_exact(&mut ready)?;
    if ready != READY {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "new process not ready",
        ));
    }
    Ok(stream)
}
