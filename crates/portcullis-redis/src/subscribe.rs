//! Pub/sub subscriptions that survive Redis restarts.
//!
//! A subscription needs a connection of its own (a subscribed connection can run no other
//! command), so it does not go through the multiplexed handle or its breaker. A background task
//! connects, subscribes, forwards messages, pings now and then to notice a dead peer, and
//! reconnects with a back-off when the connection breaks. Messages published while it was
//! disconnected are lost (that is pub/sub), so after every reconnection it delivers
//! [`Notice::Resubscribed`]: the receiver must assume it missed something.
//!
//! In Redis Cluster, classic `PUBLISH` reaches every node, so subscribing to any one seed is
//! enough; the task moves on to the next seed when one is unreachable.

use std::time::Duration;

use futures_util::StreamExt as _;
use tokio::sync::mpsc;

use crate::RedisConfig;

/// What a subscription delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A message published on the channel.
    Message(Vec<u8>),
    /// The subscription was re-established after a break: messages may have been missed.
    Resubscribed,
}

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const PING_EVERY: Duration = Duration::from_secs(5);

/// Starts the subscription task; it runs until the receiver is dropped.
/// `endpoints` gives the servers to try, asked again before each connection (behind Sentinel
/// the master changes).
pub(crate) fn spawn(
    config: &RedisConfig,
    channel: String,
    endpoints: impl Fn() -> Vec<String> + Send + 'static,
) -> mpsc::Receiver<Notice> {
    let (tx, rx) = mpsc::channel(1024);
    let connect_timeout = config.connect_timeout;
    let config = config.clone();
    let describe = crate::connection::describe(&config);
    tokio::spawn(async move {
        let mut backoff = FIRST_BACKOFF;
        let mut subscribed_before = false;
        let mut next = 0usize;
        loop {
            let urls = endpoints();
            let connected = if urls.is_empty() {
                // Not known yet (a Sentinel setup before its first answer): try again later.
                Err(())
            } else {
                let url = &urls[next % urls.len()];
                next += 1;
                tokio::select! {
                    () = tx.closed() => return,
                    r = tokio::time::timeout(connect_timeout, connect(url, &config, &channel)) => r.map_err(|_| ()),
                }
            };
            match connected {
                Ok(Ok(pubsub)) => {
                    backoff = FIRST_BACKOFF;
                    if subscribed_before {
                        tracing::info!(servers = %describe, %channel, "redis subscription re-established");
                        if tx.send(Notice::Resubscribed).await.is_err() {
                            return;
                        }
                    }
                    subscribed_before = true;
                    if !forward(pubsub, &tx).await {
                        return;
                    }
                    tracing::warn!(servers = %describe, %channel, "redis subscription lost; reconnecting");
                }
                Ok(Err(e)) => {
                    tracing::debug!(servers = %describe, error = %e, "redis subscription failed");
                }
                Err(()) => {
                    tracing::debug!(servers = %describe, "redis subscription: no server reached in time");
                }
            }
            tokio::select! {
                () = tx.closed() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    });
    rx
}

async fn connect(
    url: &str,
    config: &RedisConfig,
    channel: &str,
) -> redis::RedisResult<redis::aio::PubSub> {
    let client = crate::connection::client(url, config)?;
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    Ok(pubsub)
}

/// Forwards messages until the connection breaks (false: the receiver is gone).
async fn forward(pubsub: redis::aio::PubSub, tx: &mpsc::Sender<Notice>) -> bool {
    let (mut sink, mut stream) = pubsub.split();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    loop {
        tokio::select! {
            () = tx.closed() => return false,
            msg = stream.next() => match msg {
                Some(msg) => {
                    let payload = msg.get_payload_bytes().to_vec();
                    if tx.send(Notice::Message(payload)).await.is_err() {
                        return false;
                    }
                }
                None => return true,
            },
            _ = ping.tick() => {
                let alive = tokio::time::timeout(
                    Duration::from_secs(2),
                    sink.ping::<redis::Value>(),
                )
                .await;
                if !matches!(alive, Ok(Ok(_))) {
                    return true;
                }
            }
        }
    }
}
