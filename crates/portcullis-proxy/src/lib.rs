//! The Portcullis data plane: listeners, router, upstream pools, balancers and forwarding.
//!
//! [`Gateway::from_config`] lowers a validated [`portcullis_config::Config`] into routes and
//! upstreams; [`Gateway::bind`] opens the listener; [`BoundGateway::serve`] runs until a shutdown
//! future resolves, then drains.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = portcullis_config::load("portcullis.toml".as_ref())?;
//! let gateway = portcullis_proxy::Gateway::from_config(&config)?.bind().await?;
//! println!("listening on {}", gateway.local_addr());
//! gateway.serve(async { let _ = tokio::signal::ctrl_c().await; }).await;
//! # Ok(()) }
//! ```

mod alerts;
pub mod balance;
mod body;
mod breaker;
mod client_writes;
mod connections;
mod error;
mod fallback;
mod h1_client;
mod handle;
mod hangup;
pub mod headers;
mod health;
mod limit;
mod metrics;
mod parse_error;
pub mod path;
mod pool;
mod round_flush;
mod route;
pub mod router;
mod security;
mod server;
mod service;
mod stack;
mod tls;
mod try_timeout;
mod upstream;
mod upstream_head;
mod upstream_metrics;
#[cfg(target_os = "linux")]
mod uring_send;
mod version;
mod warm;
mod watchdog;

pub use breaker::{BreakerScope, NamedBreaker};
pub use error::{ProxyError, UpstreamFailure};
pub use handle::{GatewayHandle, ReloadReport};
pub use route::Route;
pub use service::{ConnInfo, ProxyService, Shared};
pub use stack::{BoundGateway, BuildError, Gateway};
pub use upstream::Upstream;
pub use warm::{WarmFailure, WarmReport, warm};
