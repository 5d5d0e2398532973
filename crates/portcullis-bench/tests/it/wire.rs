//! The generator's own HTTP/1.1 client against raw TCP servers that answer with scripted
//! bytes: close-delimited bodies, interim 1xx responses, broken heads and truncated bodies.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

use crate::report;

/// A server that answers every request head with `reply`, closing after each one if `close`.
/// Returns its URL and the number of connections accepted.
async fn raw_server(reply: &'static [u8], close: bool) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = stream.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&chunk[..n]);
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        if stream.write_all(reply).await.is_err() {
                            return;
                        }
                        if close {
                            return;
                        }
                    }
                }
            });
        }
    });
    (format!("http://{addr}/"), accepted)
}

#[tokio::test]
async fn a_body_delimited_by_the_close_is_read_to_the_end() {
    let (url, accepted) = raw_server(b"HTTP/1.1 200 OK\r\n\r\nuntil close", true).await;
    let r = report(&[&url, "-n", "5", "-c", "1"]).await;
    assert_eq!(
        r.overall.errors.total(),
        0,
        "{:?}",
        r.overall.error_examples
    );
    assert_eq!(r.overall.status.get(&200), Some(&5));
    assert_eq!(r.overall.bytes_received, 5 * 11);
    assert_eq!(accepted.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn interim_responses_are_skipped_and_the_connection_kept() {
    let (url, accepted) = raw_server(
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n\
          HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Cache: HIT\r\n\r\nok",
        false,
    )
    .await;
    let r = report(&[&url, "-n", "5", "-c", "1"]).await;
    assert_eq!(r.overall.status.get(&200), Some(&5));
    assert_eq!(r.overall.status.get(&103), None);
    assert_eq!(r.overall.cache_hit_rate, Some(1.0));
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn broken_heads_and_truncated_bodies_are_transport_errors() {
    let (url, _) = raw_server(b"garbage\r\n\r\n", true).await;
    let r = report(&[&url, "-n", "3", "-c", "1"]).await;
    assert_eq!(r.overall.errors.transport, 3);
    assert!(
        r.overall.error_examples["transport"].contains("invalid response head"),
        "{:?}",
        r.overall.error_examples
    );

    let (url, _) = raw_server(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", true).await;
    let r = report(&[&url, "-n", "3", "-c", "1"]).await;
    assert_eq!(r.overall.errors.transport, 3);
    assert!(
        r.overall.error_examples["transport"].contains("7 bytes before the body's end"),
        "{:?}",
        r.overall.error_examples
    );
}
