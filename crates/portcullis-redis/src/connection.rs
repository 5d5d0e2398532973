//! The connection: a redis-rs `ConnectionManager` (standalone) or a Cluster connection, both
//! multiplexed and reconnecting by themselves, behind one `ConnectionLike`.

use redis::{
    Client, Cmd, Pipeline, RedisFuture, Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
    cluster::{ClusterClient, ClusterConfig},
    cluster_async::ClusterConnection,
};

use crate::{RedisConfig, Unavailable, sentinel::SentinelConnection};

/// A multiplexed connection to a server or a cluster. Cloning is cheap and shares the socket(s).
#[derive(Clone)]
pub enum Connection {
    /// One server.
    Single(ConnectionManager),
    /// A Redis Cluster; commands go to the node owning their keys' slot.
    Cluster(ClusterConnection),
    /// Whichever server the Sentinels name as master.
    Sentinel(SentinelConnection),
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Single(_) => "Connection::Single",
            Self::Cluster(_) => "Connection::Cluster",
            Self::Sentinel(_) => "Connection::Sentinel",
        })
    }
}

impl Connection {
    /// Connects in the background; the first commands wait for (or fail with) the connection.
    pub(crate) fn lazy(config: &RedisConfig) -> Result<Self, Unavailable> {
        if !config.sentinels.is_empty() {
            SentinelConnection::lazy(config).map(Self::Sentinel)
        } else if config.cluster.is_empty() {
            let url = config
                .url
                .as_deref()
                .ok_or_else(|| Unavailable::Config("neither url nor cluster is set".into()))?;
            let client = client(url, config).map_err(|e| Unavailable::Config(e.to_string()))?;
            // Reconnects are paced by our breaker (one probe at a time), so the manager itself
            // retries briefly and gives up fast rather than holding callers.
            let manager_config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(config.connect_timeout))
                .set_number_of_retries(1)
                .set_max_delay(std::time::Duration::from_millis(100));
            ConnectionManager::new_lazy_with_config(client, manager_config)
                .map(Self::Single)
                .map_err(|e| Unavailable::Config(e.to_string()))
        } else {
            let mut builder = ClusterClient::builder(config.cluster.iter().map(String::as_str))
                .connection_timeout(config.connect_timeout)
                .retries(1);
            if let Some(ca) = &config.tls_ca {
                builder = builder.certs(redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca.clone()),
                });
            }
            let client = builder
                .build()
                .map_err(|e| Unavailable::Config(e.to_string()))?;
            Ok(Self::Cluster(
                client.get_pending_async_connection_with_config(ClusterConfig::new()),
            ))
        }
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
            Self::Sentinel(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Sentinel(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
            Self::Sentinel(c) => c.get_db(),
        }
    }
}

/// A client for `url`, trusting `config.tls_ca` for `rediss://` when it is set.
pub(crate) fn client(url: &str, config: &RedisConfig) -> redis::RedisResult<Client> {
    match &config.tls_ca {
        Some(ca) if url.starts_with("rediss://") => Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(ca.clone()),
            },
        ),
        _ => Client::open(url),
    }
}

/// The configured servers without credentials: `redis://host:port` or `cluster(h1:p1, ...)`.
pub(crate) fn describe(config: &RedisConfig) -> String {
    fn strip(url: &str) -> String {
        // `scheme://user:password@host:port/db` → `scheme://host:port/db`.
        match (url.find("://"), url.rfind('@')) {
            (Some(s), Some(at)) if at > s => format!("{}{}", &url[..s + 3], &url[at + 1..]),
            _ => url.to_owned(),
        }
    }
    if !config.sentinels.is_empty() {
        let nodes: Vec<String> = config.sentinels.iter().map(|u| strip(u)).collect();
        format!(
            "sentinel({} @ {})",
            config.sentinel_master.as_deref().unwrap_or("?"),
            nodes.join(", ")
        )
    } else if config.cluster.is_empty() {
        config.url.as_deref().map(strip).unwrap_or_default()
    } else {
        let nodes: Vec<String> = config.cluster.iter().map(|u| strip(u)).collect();
        format!("cluster({})", nodes.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn description_never_holds_the_password() {
        let config = RedisConfig {
            url: Some("rediss://gw:s3cret@redis.internal:6380/2".into()),
            ..RedisConfig::default()
        };
        assert_eq!(describe(&config), "rediss://redis.internal:6380/2");
        let cluster = RedisConfig {
            cluster: vec!["redis://:pw@a:7000".into(), "redis://b:7001".into()],
            ..RedisConfig::default()
        };
        assert_eq!(
            describe(&cluster),
            "cluster(redis://a:7000, redis://b:7001)"
        );
    }
}
