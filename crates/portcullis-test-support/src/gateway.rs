//! The real gateway, in-process, from a TOML string.

use std::net::SocketAddr;

use tokio::{sync::oneshot, task::JoinHandle};

/// A running gateway.
#[derive(Debug)]
pub struct TestGateway {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where its admin listener listens, when the config has `[admin]`.
    pub admin_addr: Option<SocketAddr>,
    handle: portcullis_proxy::GatewayHandle,
    cache: portcullis_cache::Cache,
    stop: Option<oneshot::Sender<()>>,
    done: Option<JoinHandle<()>>,
}

impl TestGateway {
    /// Starts the gateway from `toml`. Without a `[server]` table, it listens on `127.0.0.1:0`.
    pub async fn start(toml: &str) -> Self {
        let text = if toml.contains("[server]") {
            toml.to_owned()
        } else {
            format!("[server]\nlisten = \"127.0.0.1:0\"\n\n{toml}")
        };
        let config = portcullis_config::parse(&text, "test.toml".as_ref())
            .unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
        let gateway = portcullis_proxy::Gateway::from_config(&config).expect("gateway builds");
        let cache = gateway.shared().cache().clone();
        let handle = gateway.handle();
        let gateway = gateway.bind().await.expect("gateway binds");
        let addr = gateway.local_addr();
        let admin = match &config.admin {
            Some(admin) => Some(
                portcullis_admin::Admin::bind(admin, gateway.handle(), None)
                    .await
                    .expect("admin binds"),
            ),
            None => None,
        };
        let admin_addr = admin.as_ref().map(portcullis_admin::Admin::local_addr);
        let (stop, stopped) = oneshot::channel::<()>();
        let done = tokio::spawn(async move {
            let (stop_admin, admin_stopped) = oneshot::channel::<()>();
            let admin = admin.map(|a| {
                tokio::spawn(a.serve(async move {
                    let _ = admin_stopped.await;
                }))
            });
            gateway
                .serve(async move {
                    let _ = stopped.await;
                })
                .await;
            let _ = stop_admin.send(());
            if let Some(admin) = admin {
                let _ = admin.await;
            }
        });
        Self {
            addr,
            admin_addr,
            handle,
            cache,
            stop: Some(stop),
            done: Some(done),
        }
    }

    /// `http://addr` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `http://admin_addr` followed by `path`; panics without an `[admin]` table.
    pub fn admin_url(&self, path: &str) -> String {
        let admin = self.admin_addr.expect("the config has no [admin] table");
        format!("http://{admin}{path}")
    }

    /// Reloads the gateway with `toml` (completed like [`TestGateway::start`]'s); the errors as
    /// text when it is refused.
    pub fn reload(&self, toml: &str) -> Result<portcullis_proxy::ReloadReport, String> {
        let text = if toml.contains("[server]") {
            toml.to_owned()
        } else {
            format!("[server]\nlisten = \"127.0.0.1:0\"\n\n{toml}")
        };
        let config =
            portcullis_config::parse(&text, "test.toml".as_ref()).map_err(|e| e.to_string())?;
        self.handle.reload(&config).map_err(|e| e.to_string())
    }

    /// The gateway's response cache (stats, purges).
    pub fn cache(&self) -> &portcullis_cache::Cache {
        &self.cache
    }

    /// Signals shutdown and returns a handle that completes when draining is done.
    pub fn begin_shutdown(&mut self) -> JoinHandle<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.done.take().expect("shutdown once")
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(done) = &self.done {
            done.abort();
        }
    }
}
