//! One Redis handle for the whole gateway: standalone or Redis Cluster, multiplexed, with a
//! breaker in front of it and metrics.
//!
//! The cache and the rate limiter share it without depending on each other (DESIGN.md). Every
//! command runs under a time budget; a failure or a missed budget opens the breaker
//! ([`health`]), after which callers get [`Unavailable`] at once and use their local fallback
//! until a single probe finds Redis answering again. The underlying redis-rs connections
//! reconnect by themselves; no pool is needed (redis-rs multiplexes, STACK.md row 9).

mod connection;
mod health;
mod metrics;
mod sentinel;
mod subscribe;

use std::{sync::Arc, time::Duration};

use redis::{FromRedisValue, RedisResult, Script, ScriptInvocation, ToRedisArgs};

pub use connection::Connection;
pub use health::{HealthState, RedisHealth};
pub use metrics::RedisCollector;
pub use subscribe::Notice;

/// Where Redis is and how the gateway talks to it.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// A standalone server (`redis://`, `rediss://` for TLS, with user and password in the URL).
    pub url: Option<String>,
    /// Redis Cluster seed nodes; used instead of `url` when not empty.
    pub cluster: Vec<String>,
    /// Sentinels to ask for the master of `sentinel_master`; used instead of `url` when not
    /// empty (then `url`, if set, gives only the data nodes' scheme, credentials and
    /// database).
    pub sentinels: Vec<String>,
    /// The master's name at the Sentinels.
    pub sentinel_master: Option<String>,
    /// CA certificates (PEM) trusted for `rediss://` servers instead of the system's roots.
    pub tls_ca: Option<Vec<u8>>,
    /// Prefix of every key the gateway writes (`pc:` by default).
    pub prefix: String,
    /// Budget for one command, network included. Beyond it the call fails as unavailable.
    pub timeout: Duration,
    /// Budget for establishing a connection.
    pub connect_timeout: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: None,
            cluster: Vec::new(),
            sentinels: Vec::new(),
            sentinel_master: None,
            tls_ca: None,
            prefix: "pc:".to_owned(),
            timeout: Duration::from_millis(50),
            connect_timeout: Duration::from_secs(1),
        }
    }
}

/// Why a Redis call produced no answer.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    /// The breaker is open: recent calls failed, so this one was not attempted.
    #[error("redis is unavailable (breaker open)")]
    BreakerOpen,
    /// The call exceeded its time budget.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// Redis or the network answered with an error.
    #[error("redis: {0}")]
    Failed(#[from] redis::RedisError),
    /// The configuration could not be turned into a client.
    #[error("redis configuration: {0}")]
    Config(String),
}

/// A cheaply cloneable handle to Redis.
#[derive(Clone)]
pub struct Redis {
    inner: Arc<Inner>,
}

struct Inner {
    connection: Connection,
    prefix: Arc<str>,
    timeout: Duration,
    health: RedisHealth,
    metrics: metrics::RedisMetrics,
    describe: String,
    /// Kept for subscriptions, which need connections of their own.
    config: RedisConfig,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: only the redacted description is shown.
        f.debug_struct("Redis")
            .field("servers", &self.inner.describe)
            .field("state", &self.inner.health.state())
            .finish_non_exhaustive()
    }
}

impl Redis {
    /// A handle for `config`. Connecting happens in the background: this never waits for
    /// Redis, so a gateway starts (and serves with its fallbacks) while Redis is down.
    pub fn connect(config: &RedisConfig) -> Result<Self, Unavailable> {
        let connection = Connection::lazy(config)?;
        let describe = connection::describe(config);
        Ok(Self {
            inner: Arc::new(Inner {
                connection,
                prefix: config.prefix.as_str().into(),
                timeout: config.timeout,
                health: RedisHealth::new(),
                metrics: metrics::RedisMetrics::default(),
                describe,
                config: config.clone(),
            }),
        })
    }

    /// Whether `other` is this same handle (a clone of it).
    pub fn same(&self, other: &Redis) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// The key prefix (`pc:` by default).
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The servers, with any password removed, for logs and the admin API.
    pub fn describe(&self) -> &str {
        &self.inner.describe
    }

    /// Whether calls are currently being attempted.
    pub fn health(&self) -> &RedisHealth {
        &self.inner.health
    }

    /// A collector for the handle's metrics (state, latency, errors by operation).
    pub fn collector(&self) -> RedisCollector {
        RedisCollector::new(self.clone())
    }

    /// Subscribes to `channel` on a connection of its own that reconnects by itself (see
    /// [`Notice`]). The subscription ends when the receiver is dropped.
    pub fn subscribe(&self, channel: &str) -> tokio::sync::mpsc::Receiver<Notice> {
        let (config, connection) = (self.inner.config.clone(), self.inner.connection.clone());
        let endpoints = move || match &connection {
            Connection::Sentinel(s) => s.master_url().into_iter().collect(),
            _ if config.cluster.is_empty() => config.url.iter().cloned().collect(),
            _ => config.cluster.clone(),
        };
        subscribe::spawn(&self.inner.config, channel.to_owned(), endpoints)
    }

    /// Publishes `payload` on `channel` (under the budget and the breaker); returns how many
    /// subscribers received it (in a cluster: those of the node that took it).
    pub async fn publish(&self, channel: &str, payload: &[u8]) -> Result<u64, Unavailable> {
        self.query("publish", redis::cmd("PUBLISH").arg(channel).arg(payload))
            .await
    }

    /// Runs `script` with `keys` and `args` (EVALSHA, falling back to EVAL when the server
    /// does not know the script yet), under the time budget and the breaker. `op` names the
    /// caller in metrics (`rate_limit`, `cache_get`, ...).
    pub async fn run_script<T: FromRedisValue>(
        &self,
        op: &'static str,
        script: &Script,
        keys: &[impl ToRedisArgs],
        args: &[impl ToRedisArgs],
    ) -> Result<T, Unavailable> {
        let mut invocation: ScriptInvocation<'_> = script.prepare_invoke();
        for key in keys {
            invocation.key(key);
        }
        for arg in args {
            invocation.arg(arg);
        }
        self.call(op, |mut conn| async move {
            invocation.invoke_async(&mut conn).await
        })
        .await
    }

    /// Runs one command under the time budget and the breaker.
    pub async fn query<T: FromRedisValue>(
        &self,
        op: &'static str,
        cmd: &redis::Cmd,
    ) -> Result<T, Unavailable> {
        self.call(
            op,
            |mut conn| async move { cmd.query_async(&mut conn).await },
        )
        .await
    }

    /// Runs `f` on a connection under the time budget and the breaker, recording the outcome.
    pub async fn call<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T, Unavailable>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let inner = &*self.inner;
        let Some(permit) = inner.health.try_acquire() else {
            inner.metrics.skipped(op);
            return Err(Unavailable::BreakerOpen);
        };
        let started = std::time::Instant::now();
        let outcome = tokio::time::timeout(inner.timeout, f(inner.connection.clone())).await;
        let elapsed = started.elapsed();
        match outcome {
            Ok(Ok(value)) => {
                permit.succeeded();
                inner.metrics.observe(op, elapsed, true);
                Ok(value)
            }
            Ok(Err(e)) => {
                if permit.failed() {
                    tracing::warn!(servers = %inner.describe, error = %e, "redis failed; using local fallbacks");
                }
                inner.metrics.observe(op, elapsed, false);
                Err(Unavailable::Failed(e))
            }
            Err(_) => {
                if permit.failed() {
                    tracing::warn!(servers = %inner.describe, budget = ?inner.timeout, "redis timed out; using local fallbacks");
                }
                inner.metrics.observe(op, elapsed, false);
                Err(Unavailable::Timeout(inner.timeout))
            }
        }
    }
}
