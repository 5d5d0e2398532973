//! A round's sends in one system call, through io_uring (Linux).
//!
//! Why: the gateway on one CPU usually shares its core with its upstreams, and the kernel's
//! fair scheduler lets a woken process preempt one that has had more than its share of the
//! CPU. A proxy does more work per request than the origin behind it, so it is the one over
//! its share, and each request head it sent with `sendto` woke the origin, which preempted the
//! gateway at once, answered that one request and slept again: two context switches per
//! request for most of a round (measured with `perf` on the benchmark harness: 93% of the
//! origin's runs handled exactly one request). The same sends submitted to io_uring go out in
//! one `io_uring_enter`; the origin is woken by the first but runs only when the call returns,
//! and then finds the whole round's requests waiting. It also saves a system call per send,
//! which costs about 270 ns on the virtual machines we measure on.
//!
//! No crate sends a batch of borrowed buffers to many sockets this way: tokio has no io_uring
//! sockets, and tokio-uring (a runtime of its own) owns its buffers per operation. So this
//! module holds the one `unsafe` block of the workspace; see its SAFETY comment.
//!
//! Where io_uring is not available (an old kernel, `io_uring_disabled`, a seccomp profile that
//! forbids it) [`Ring::new`] fails and the caller sends with `sendto` as before.
#![allow(unsafe_code)]

use std::{io, os::fd::RawFd};

use io_uring::{IoUring, opcode, types};

/// Entries in the submission queue; a bigger round is sent in several calls.
const ENTRIES: u32 = 256;

/// One socket's bytes for a batched send, and what became of them.
#[derive(Debug)]
pub(crate) struct Send {
    /// The socket, open for as long as the send is in a batch (its owner holds it).
    pub(crate) fd: RawFd,
    /// The bytes; owned here so that a batch that cannot be waited for can give them up
    /// without freeing memory the kernel may still read.
    pub(crate) buf: Vec<u8>,
    /// Bytes sent, or the error, once [`Ring::send_all`] returns.
    pub(crate) result: io::Result<usize>,
    /// Completed (its result is the kernel's).
    done: bool,
}

impl Send {
    /// A send of `buf` to `fd`, not yet made.
    pub(crate) fn new(fd: RawFd, buf: Vec<u8>) -> Self {
        Self {
            fd,
            buf,
            result: Ok(0),
            done: false,
        }
    }
}

/// An io_uring instance for sends, one per flushing thread.
pub(crate) struct Ring {
    ring: IoUring,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring").finish_non_exhaustive()
    }
}

impl Ring {
    /// A ring, or the reason there is none.
    pub(crate) fn new() -> io::Result<Self> {
        Ok(Self {
            ring: IoUring::new(ENTRIES)?,
        })
    }

    /// Sends each of `sends` once, without waiting for a socket: each result is the bytes the
    /// socket took (perhaps fewer than all), `WouldBlock` when it took none, or the error.
    /// `Err` when the ring itself failed; the batch's results are then errors too, and the
    /// ring should not be used again.
    pub(crate) fn send_all(&mut self, sends: &mut [Send]) -> io::Result<()> {
        for chunk in sends.chunks_mut(ENTRIES as usize) {
            if let Err(e) = self.send_chunk(chunk) {
                for send in sends.iter_mut().filter(|s| !s.done) {
                    send.result = Err(io::Error::other("io_uring failed"));
                }
                return Err(e);
            }
        }
        Ok(())
    }

    fn send_chunk(&mut self, chunk: &mut [Send]) -> io::Result<()> {
        let mut pushed = 0;
        {
            let mut queue = self.ring.submission();
            if queue.capacity() - queue.len() < chunk.len() {
                return Err(io::Error::other("io_uring submission queue full"));
            }
            for (index, send) in chunk.iter_mut().enumerate() {
                // A send longer than u32 goes in part; the caller sends the rest later.
                let len = u32::try_from(send.buf.len()).unwrap_or(u32::MAX);
                let entry = opcode::Send::new(types::Fd(send.fd), send.buf.as_ptr(), len)
                    // Never wait for the socket: a full one answers EAGAIN at once, and
                    // the connection waits for it itself.
                    .flags(libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
                    .build()
                    .user_data(index as u64);
                // SAFETY: the entry points into `send.buf`, which lives in `chunk` and is
                // neither moved nor freed until the kernel has completed the entry: this
                // function reaps the completion of every entry it pushed before it returns,
                // and if it cannot, it leaks the buffers of those still in flight (below) and
                // the caller drops the ring. The queue was checked for room above.
                if unsafe { queue.push(&entry) }.is_ok() {
                    pushed += 1;
                } else {
                    send.result = Err(io::Error::other("io_uring submission queue full"));
                    send.done = true;
                }
            }
        }
        let mut reaped = 0;
        while reaped < pushed {
            match self.ring.submit_and_wait(pushed - reaped) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Entries may still be in flight: their buffers must outlive them.
                    for send in chunk.iter_mut().filter(|s| !s.done) {
                        std::mem::forget(std::mem::take(&mut send.buf));
                    }
                    return Err(e);
                }
            }
            for completion in self.ring.completion() {
                let Some(send) = usize::try_from(completion.user_data())
                    .ok()
                    .and_then(|i| chunk.get_mut(i))
                    .filter(|s| !s.done)
                else {
                    continue;
                };
                let res = completion.result();
                send.result = if res >= 0 {
                    Ok(usize::try_from(res).unwrap_or(0))
                } else {
                    Err(io::Error::from_raw_os_error(-res))
                };
                send.done = true;
                reaped += 1;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::Read,
        net::{TcpListener, TcpStream},
        os::fd::AsRawFd,
    };

    use super::*;

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let sender = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (receiver, _) = listener.accept().unwrap();
        sender.set_nonblocking(true).unwrap();
        (sender, receiver)
    }

    #[test]
    fn a_batch_reaches_every_socket_in_one_call() {
        let Ok(mut ring) = Ring::new() else {
            eprintln!("io_uring is not available here; nothing to test");
            return;
        };
        let pairs: Vec<_> = (0..3).map(|_| pair()).collect();
        let mut sends: Vec<Send> = pairs
            .iter()
            .enumerate()
            .map(|(i, (s, _))| Send::new(s.as_raw_fd(), format!("hello {i}").into_bytes()))
            .collect();
        ring.send_all(&mut sends).unwrap();
        for (i, ((_, mut receiver), send)) in pairs.into_iter().zip(&sends).enumerate() {
            assert_eq!(*send.result.as_ref().unwrap(), 7);
            let mut got = [0u8; 7];
            receiver.read_exact(&mut got).unwrap();
            assert_eq!(got, format!("hello {i}").as_bytes());
        }
    }

    #[test]
    fn a_full_socket_takes_part_and_then_would_block() {
        let Ok(mut ring) = Ring::new() else {
            return;
        };
        let (sender, _receiver) = pair();
        let big = vec![7u8; 16 * 1024 * 1024];
        let mut sends = vec![Send::new(sender.as_raw_fd(), big.clone())];
        ring.send_all(&mut sends).unwrap();
        let took = *sends[0].result.as_ref().unwrap();
        assert!(took > 0 && took < big.len(), "took {took}");
        let mut again = vec![Send::new(sender.as_raw_fd(), big)];
        ring.send_all(&mut again).unwrap();
        assert_eq!(
            again[0].result.as_ref().unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }

    #[test]
    fn a_closed_socket_gives_its_error_and_the_others_still_go() {
        let Ok(mut ring) = Ring::new() else {
            return;
        };
        let (good, mut receiver) = pair();
        let mut sends = vec![
            Send::new(-1, b"nowhere".to_vec()),
            Send::new(good.as_raw_fd(), b"here".to_vec()),
        ];
        ring.send_all(&mut sends).unwrap();
        assert!(sends[0].result.is_err());
        assert_eq!(*sends[1].result.as_ref().unwrap(), 4);
        let mut got = [0u8; 4];
        receiver.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"here");
    }
}
