//! Redis behind Sentinel: the master's address comes from the Sentinels and is checked again
//! every second, so after a failover the gateway talks to the new master within about a
//! second of the Sentinels naming it.
//!
//! Asked directly (`SENTINEL get-master-addr-by-name`, one Sentinel after another) rather than
//! through redis-rs's `Sentinel` client: that one resolves once per call, while the gateway
//! needs one long-lived multiplexed connection that follows the master.

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use arc_swap::ArcSwapOption;
use redis::{
    Client, Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
};

use crate::{RedisConfig, Unavailable};

/// How often the Sentinels are asked who the master is.
const RESOLVE_EVERY: Duration = Duration::from_secs(1);

/// A connection to whichever server the Sentinels name as master.
#[derive(Clone)]
pub struct SentinelConnection {
    current: Arc<ArcSwapOption<Master>>,
}

impl std::fmt::Debug for SentinelConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: only whether a master is known.
        f.debug_struct("SentinelConnection")
            .field("master_known", &self.current.load().is_some())
            .finish()
    }
}

/// The master in use.
pub(crate) struct Master {
    /// Its URL (with the configured credentials).
    pub(crate) url: String,
    manager: ConnectionManager,
}

impl SentinelConnection {
    /// Starts resolving in the background; commands fail until a master is known.
    pub(crate) fn lazy(config: &RedisConfig) -> Result<Self, Unavailable> {
        let name = config
            .sentinel_master
            .clone()
            .ok_or_else(|| Unavailable::Config("sentinel_master is not set".into()))?;
        let sentinels: Vec<Client> = config
            .sentinels
            .iter()
            .map(|u| crate::connection::client(u, config))
            .collect::<Result<_, _>>()
            .map_err(|e| Unavailable::Config(e.to_string()))?;
        let template = master_template(config.url.as_deref())?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Unavailable::Config("sentinel needs a tokio runtime".into()))?;
        let current = Arc::new(ArcSwapOption::empty());
        runtime.spawn(follow(
            Arc::downgrade(&current),
            sentinels,
            name,
            template,
            config.clone(),
        ));
        Ok(Self { current })
    }

    /// The master's URL, once known.
    pub(crate) fn master_url(&self) -> Option<String> {
        self.current.load().as_ref().map(|m| m.url.clone())
    }
}

/// Scheme, credentials and database of the data nodes, from `url` (host and port are the
/// master's): `("redis", "user:pass@", "/2")`.
fn master_template(url: Option<&str>) -> Result<(String, String, String), Unavailable> {
    let Some(url) = url else {
        return Ok(("redis".into(), String::new(), String::new()));
    };
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| Unavailable::Config("url must be redis:// or rediss://".into()))?;
    let (userinfo, hostpart) = match rest.rsplit_once('@') {
        Some((u, h)) => (format!("{u}@"), h),
        None => (String::new(), rest),
    };
    let db = hostpart
        .find('/')
        .map_or(String::new(), |i| hostpart[i..].to_owned());
    Ok((scheme.to_owned(), userinfo, db))
}

async fn follow(
    current: Weak<ArcSwapOption<Master>>,
    sentinels: Vec<Client>,
    name: String,
    (scheme, userinfo, db): (String, String, String),
    config: RedisConfig,
) {
    let connect_timeout = config.connect_timeout;
    loop {
        let Some(slot) = current.upgrade() else {
            return;
        };
        if let Some((host, port)) = ask(&sentinels, &name, connect_timeout).await {
            let url = format!("{scheme}://{userinfo}{host}:{port}{db}");
            let changed = slot.load().as_ref().is_none_or(|m| m.url != url);
            if changed {
                match crate::connection::client(&url, &config).and_then(|client| {
                    let config = ConnectionManagerConfig::new()
                        .set_connection_timeout(Some(connect_timeout))
                        .set_number_of_retries(1)
                        .set_max_delay(Duration::from_millis(100));
                    ConnectionManager::new_lazy_with_config(client, config)
                }) {
                    Ok(manager) => {
                        tracing::info!(master = %format!("{host}:{port}"), sentinel_master = %name, "redis master (from sentinel)");
                        slot.store(Some(Arc::new(Master { url, manager })));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot use the master the sentinels name")
                    }
                }
            }
        }
        drop(slot);
        tokio::time::sleep(RESOLVE_EVERY).await;
    }
}

/// The master's address from the first Sentinel that answers.
async fn ask(sentinels: &[Client], name: &str, timeout: Duration) -> Option<(String, u16)> {
    for sentinel in sentinels {
        let asked = tokio::time::timeout(timeout, async {
            let mut conn = sentinel.get_multiplexed_async_connection().await?;
            redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(name)
                .query_async::<Option<(String, u16)>>(&mut conn)
                .await
        })
        .await;
        match asked {
            Ok(Ok(Some(addr))) => return Some(addr),
            Ok(Ok(None)) => {
                tracing::warn!(sentinel_master = %name, "a sentinel does not know this master")
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "a sentinel did not answer"),
            Err(_) => tracing::debug!("a sentinel timed out"),
        }
    }
    None
}

fn no_master() -> RedisError {
    RedisError::from((ErrorKind::Io, "no redis master known yet (sentinel)"))
}

impl ConnectionLike for SentinelConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        let master = self.current.load_full();
        Box::pin(async move {
            let Some(master) = master else {
                return Err(no_master());
            };
            let mut manager = master.manager.clone();
            manager.req_packed_command(cmd).await
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        let master = self.current.load_full();
        Box::pin(async move {
            let Some(master) = master else {
                return Err(no_master());
            };
            let mut manager = master.manager.clone();
            manager.req_packed_commands(pipeline, offset, count).await
        })
    }

    fn get_db(&self) -> i64 {
        self.current
            .load()
            .as_ref()
            .map_or(0, |m| m.manager.get_db())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_nodes_keep_the_configured_scheme_credentials_and_database() {
        assert_eq!(
            master_template(Some("rediss://gw:pw@ignored:1/2")).unwrap(),
            ("rediss".into(), "gw:pw@".into(), "/2".into())
        );
        assert_eq!(
            master_template(None).unwrap(),
            ("redis".into(), String::new(), String::new())
        );
    }
}
